"""Property-based checks (hypothesis) of the geometry: voxel <-> mm <-> world round trips; an
orthogonal affine (oblique or not, mirrored or not) maps array-aligned mm to the world
isometrically and is accepted; a sheared or singular affine is refused; voxel centres sampled at
their mm position give the voxel values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import PROPS, orthogonal_affines, spacings, voxels

from cardioinr.core.errors import InputError
from cardioinr.geometry import (
    mm_to_voxel,
    spacing_from_affine,
    validate_affine,
    voxel_to_mm,
    voxel_to_world,
    world_to_voxel,
)

# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@PROPS
@given(orthogonal_affines(), st.lists(voxels, min_size=1, max_size=8))
def test_voxel_world_round_trip(aff, ijk) -> None:
    ijk = np.array(ijk)
    back = world_to_voxel(aff, voxel_to_world(aff, ijk))
    np.testing.assert_allclose(back, ijk, rtol=0, atol=1e-8 * (1 + np.abs(ijk).max()))


@PROPS
@given(spacings, st.lists(voxels, min_size=1, max_size=8))
def test_voxel_mm_round_trip(sp, ijk) -> None:
    ijk = np.array(ijk)
    np.testing.assert_allclose(mm_to_voxel(voxel_to_mm(ijk, sp), sp), ijk, rtol=1e-12, atol=1e-10)


@PROPS
@given(orthogonal_affines(), voxels, voxels)
def test_orthogonal_affine_is_accepted_and_mm_space_is_an_isometry(aff, a, b) -> None:
    """Distances (hence strain, Jacobians) measured in array-aligned mm equal world distances."""
    validate_affine(aff, "oblique")
    sp = spacing_from_affine(aff)
    a, b = np.array(a), np.array(b)
    d_mm = np.linalg.norm(voxel_to_mm(a, sp) - voxel_to_mm(b, sp))
    d_world = np.linalg.norm(voxel_to_world(aff, a) - voxel_to_world(aff, b))
    assert d_mm == pytest.approx(d_world, rel=1e-9, abs=1e-9)


@PROPS
@given(orthogonal_affines(), st.sampled_from([(0, 1), (0, 2), (1, 2), (1, 0), (2, 0), (2, 1)]),
       st.floats(0.01, 2.0), st.sampled_from([1.0, -1.0]))
def test_sheared_affine_is_refused(aff, pair, amount, sign) -> None:
    """Adding a fraction of one voxel axis to another (a shear of at least 1 %) is refused."""
    i, j = pair
    sheared = aff.copy()
    sheared[:3, j] = aff[:3, j] + sign * amount * aff[:3, i] * np.linalg.norm(aff[:3, j]) / np.linalg.norm(aff[:3, i])
    with pytest.raises(InputError, match="sheared"):
        validate_affine(sheared, "sheared")


@PROPS
@given(orthogonal_affines(), st.floats(0.0, 1e-5))
def test_rounding_noise_in_the_affine_is_tolerated(aff, noise) -> None:
    """Affines written with a few decimals (DICOM strings, float32 sform) are not 'sheared'."""
    noisy = aff.copy()
    noisy[:3, 1] += noise * np.linalg.norm(aff[:3, 1]) * aff[:3, 0] / np.linalg.norm(aff[:3, 0])
    validate_affine(noisy, "noisy")


@PROPS
@given(orthogonal_affines(), st.integers(0, 2), st.sampled_from(["zero", "collinear"]))
def test_singular_affine_is_refused(aff, k, how) -> None:
    bad = aff.copy()
    bad[:3, k] = 0.0 if how == "zero" else 2.0 * aff[:3, (k + 1) % 3]
    with pytest.raises(InputError, match="not invertible"):
        validate_affine(bad, "singular")


@PROPS
@given(spacings, st.integers(0, 2**31 - 1))
def test_voxel_centres_sample_to_their_values(sp, seed) -> None:
    """The mm convention of the sampler matches the array: voxel (i, j, k) lives at ijk * spacing."""
    from cardioinr.fit.warp import sample

    rng = np.random.default_rng(seed)
    vol = rng.normal(size=(1, 7, 6, 5)).astype(np.float32)
    ijk = np.stack([rng.integers(0, n, size=20) for n in vol.shape[1:]], -1)
    pts = torch.as_tensor(voxel_to_mm(ijk, sp), dtype=torch.float32)
    got = sample(torch.from_numpy(vol), pts, torch.as_tensor(sp, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(got, vol[0][tuple(ijk.T)], rtol=0, atol=1e-4)
