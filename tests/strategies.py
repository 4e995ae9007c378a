"""Hypothesis strategies shared by the property tests: voxel sizes, origins, rotations, and
orthogonal affines (oblique or not, mirrored or not): every scanner geometry."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

PROPS = settings(max_examples=200, deadline=None, database=None)

spacings = st.tuples(*[st.floats(0.2, 12.0) for _ in range(3)])
origins = st.tuples(*[st.floats(-500.0, 500.0) for _ in range(3)])
quaternions = st.tuples(*[st.floats(-1.0, 1.0) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.1)


def rotation(q) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@st.composite
def orthogonal_affines(draw) -> np.ndarray:
    """rotation @ (optional mirror) @ diag(spacing), any origin: every scanner geometry."""
    aff = np.eye(4)
    mirror = np.diag([draw(st.sampled_from([1.0, -1.0])) for _ in range(3)])
    aff[:3, :3] = rotation(draw(quaternions)) @ mirror @ np.diag(draw(spacings))
    aff[:3, 3] = draw(origins)
    return aff


voxels = st.tuples(*[st.floats(-50.0, 300.0) for _ in range(3)])
