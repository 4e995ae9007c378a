"""LV cavity size per frame from label maps, and the ejection fraction.

LV cavity area (2D, mm^2) or volume (3D, ml) per frame is counted from the propagated labels
``(X, Y, Z, T)``. EF (%) is ``(max - min) / max``; ED and ES are the frames of the largest and
smallest cavity. (The cavity size integrated from the motion, ``sum det F * voxel size`` over the
reference cavity, comes with the strain: ``StrainResult.cavity_jacobian`` in
:mod:`cardioinr.analysis.strain`.)
"""

from __future__ import annotations

import numpy as np

from cardioinr.core.errors import InputError
from cardioinr.geometry import spatial_dim

__all__ = ["cavity_sizes", "ejection_fraction"]


def cavity_sizes(labels: np.ndarray, spacing: np.ndarray, lv_code: int) -> tuple[np.ndarray, str]:
    """LV cavity size per frame from label maps.

    Args:
        labels: ``(X, Y, Z, T)`` labels of every frame.
        spacing: ``(3,)`` mm.
        lv_code: the LV cavity code.

    Returns:
        ``(T,)`` sizes and their unit: area in ``"mm^2"`` for a single slice (``Z == 1``),
        volume in ``"ml"`` otherwise.
    """
    lab = np.asarray(labels)
    if lab.ndim != 4:
        raise InputError(f"labels must be (X, Y, Z, T), got shape {lab.shape}")
    sp = np.asarray(spacing, dtype=np.float64).reshape(3)
    counts = (lab == lv_code).reshape(-1, lab.shape[3]).sum(0).astype(np.float64)
    if spatial_dim(lab.shape) == 2:
        return counts * sp[0] * sp[1], "mm^2"
    return counts * float(np.prod(sp)) / 1000.0, "ml"


def ejection_fraction(sizes: np.ndarray) -> tuple[float, int, int]:
    """EF (%) = ``(max - min) / max`` of cavity sizes ``(T,)``, with the ED (largest) and ES
    (smallest) frames. NaN and ``-1`` frames when the cavity is empty."""
    v = np.asarray(sizes, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).any() or np.nanmax(v) <= 0:
        return float("nan"), -1, -1
    ed, es = int(np.nanargmax(v)), int(np.nanargmin(v))
    return float(100.0 * (v[ed] - v[es]) / v[ed]), ed, es
