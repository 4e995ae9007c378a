"""Local cardiac frame of the reference anatomy: LV long axis, centres, septum direction and angles.

Points are the reference frame's voxel centres ``X = index * spacing`` in array-aligned
millimetres (see :mod:`cardioinr.io`). How the frame is defined is set by
:class:`~cardioinr.analysis.config.StrainConfig`; the AHA segments built on it are in
:mod:`cardioinr.analysis.aha`.

Local cardiac directions (:class:`CardiacFrame`)
-----------------------------------------------
* *long axis* ``l``: the array k axis (short-axis stacks, the default) or a line fitted through
  the per-slice LV centres (``StrainConfig(long_axis="fit")``); oriented base -> apex. In 3D the
  base is the end of the stack with the larger LV cross-section (``apex_direction="auto"``),
  else, and for a single slice, the scanner geometry decides (the apex points to the patient's
  left, anterior and inferior, ``(-1, 1, -1)`` in RAS world coordinates); ``"+k"``/``"-k"`` force it.
* *centre*: per slice, the centroid of the LV cavity and myocardium together (``centre="lv+myo"``,
  robust at apical slices without a cavity) or of the cavity only (``"lv"``); on the fitted line
  in ``long_axis="fit"`` mode.
* *radial* ``r``: from the centre to the point, perpendicular to ``l``; *circumferential*
  ``c = l x r``; *longitudinal* ``l``. In 2D ``l`` is normal to the slice and only ``r`` and ``c``
  are used (the field's 2 x 2 gradient).

Angles and the septum
---------------------
The angle ``theta`` of a point about the LV centre is measured counter-clockwise *as seen from
the apex* (right-handed about the base -> apex axis in physical space; the affine's handedness is
taken into account), which is how the AHA bull's eye is drawn (anterior up, septum left,
segments numbered counter-clockwise). The septum direction is the direction from the LV centre to
the RV centroid of the slice (or of the whole stack for slices without RV, or, with no RV label at
all, ``septum_direction_deg``: an angle in the array (i, j) plane measured from +i toward +j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardioinr.analysis.config import StrainConfig
from cardioinr.core.errors import InputError
from cardioinr.geometry import spacing_from_affine, spatial_dim
from cardioinr.io import ACDC, LabelMap

__all__ = ["CardiacFrame", "cardiac_frame"]

# Physical base -> apex direction of a typical heart in RAS world coordinates (left, anterior, inferior).
_APEX_RAS = np.array([-1.0, 1.0, -1.0]) / math.sqrt(3.0)


@dataclass(frozen=True)
class CardiacFrame:
    """Long axis, LV centres and septum direction of the reference anatomy (array-aligned mm).

    Attributes:
        dim: 2 (single slice) or 3.
        spacing: ``(3,)`` voxel size, mm.
        long_axis: ``(3,)`` unit vector, base -> apex.
        basis: ``(2, 3)`` in-plane unit vectors ``a, b`` with ``a x b = long_axis``.
        handedness: ``+1``, or ``-1`` when the affine mirrors (array space is left-handed in the
            world); multiplies angles so that they are counter-clockwise seen from the apex.
        slice_centres: ``(Z, 3)`` per-slice LV centre, mm (NaN rows where a slice has no LV).
        line_point: ``(3,)`` a point of the centre line (mean of the slice centres).
        use_line: radial directions from the fitted line rather than per-slice centres.
        septum_theta: ``(Z,)`` septum angle per slice, radians, in the ``theta`` convention.
        septum_source: ``"rv"`` or ``"fixed"``.
        apex_from: how the base -> apex orientation was decided (``"cavity"``, ``"geometry"``,
            ``"config"``, ``"default"``).
    """

    dim: int
    spacing: np.ndarray
    long_axis: np.ndarray
    basis: np.ndarray
    handedness: float
    slice_centres: np.ndarray
    line_point: np.ndarray
    use_line: bool
    septum_theta: np.ndarray
    septum_source: str
    apex_from: str

    def centre_of(self, points_mm: np.ndarray) -> np.ndarray:
        """LV centre ``(N, 3)`` for reference points ``(N, 3)`` mm (their slice's or the line's)."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        if self.use_line:
            s = (p - self.line_point) @ self.long_axis
            return self.line_point + s[:, None] * self.long_axis
        k = self.slice_of(p)
        c = self.slice_centres[k].copy()
        bad = ~np.isfinite(c[:, 0])
        if bad.any():
            s = (p[bad] - self.line_point) @ self.long_axis
            c[bad] = self.line_point + s[:, None] * self.long_axis
        return c

    def slice_of(self, points_mm: np.ndarray) -> np.ndarray:
        """Array slice index ``(N,)`` of points ``(N, 3)`` mm (nearest slice, clipped)."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        z = self.slice_centres.shape[0]
        return np.clip(np.rint(p[:, 2] / self.spacing[2]).astype(int), 0, z - 1)

    def in_plane(self, v: np.ndarray) -> np.ndarray:
        """Component of vectors ``(N, 3)`` perpendicular to the long axis."""
        v = np.asarray(v, dtype=np.float64)
        return v - (v @ self.long_axis)[..., None] * self.long_axis

    def angle_of(self, v: np.ndarray) -> np.ndarray:
        """Angle ``(N,)`` radians of vectors ``(N, 3)`` about the long axis, counter-clockwise
        seen from the apex, zero along ``basis[0]`` (times ``handedness``)."""
        v = np.asarray(v, dtype=np.float64)
        return self.handedness * np.arctan2(v @ self.basis[1], v @ self.basis[0])

    def theta(self, points_mm: np.ndarray) -> np.ndarray:
        """Angle ``(N,)`` radians of reference points about their LV centre (see :meth:`angle_of`)."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return self.angle_of(self.in_plane(p - self.centre_of(p)))

    def axial_position(self, points_mm: np.ndarray) -> np.ndarray:
        """Position ``(N,)`` mm along the long axis (base -> apex increasing)."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return (p - self.line_point) @ self.long_axis

    def directions(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit radial, circumferential and longitudinal directions ``(N, 3)`` each, at reference
        points ``(N, 3)`` mm. Circumferential is ``long x radial``."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        r = self.in_plane(p - self.centre_of(p))
        norm = np.linalg.norm(r, axis=1, keepdims=True)
        # a point on the centre line has no radial direction; any in-plane one will do
        r = np.where(norm > 1e-9, r / np.maximum(norm, 1e-12), self.basis[0])
        c = np.cross(self.long_axis, r)
        l_ = np.broadcast_to(self.long_axis, r.shape).copy()
        return r, c, l_


def _voxel_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``(N, 3)`` mm centres of the voxels of ``mask``, ``np.argwhere`` order."""
    return np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)


def _check_ref_labels(ref_labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(ref_labels)
    if lab.ndim == 2:
        lab = lab[:, :, None]
    if lab.ndim != 3:
        raise InputError(f"reference labels must be (X, Y, Z), got shape {lab.shape}")
    return lab


def cardiac_frame(
    ref_labels: np.ndarray,
    spacing: np.ndarray,
    label_map: LabelMap = ACDC,
    affine: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> CardiacFrame:
    """Local cardiac frame of the reference anatomy (see the module docstring).

    Args:
        ref_labels: ``(X, Y, Z)`` labels of the reference frame (a myocardium label required).
        spacing: ``(3,)`` voxel size, mm.
        label_map: codes of LV, MYO, RV.
        affine: ``(4, 4)`` voxel-to-world matrix; used for the handedness of angles and, where the
            anatomy cannot tell, the base -> apex orientation. ``None``: right-handed, apex at +k.
        config: see :class:`StrainConfig`.

    Raises:
        InputError: no myocardium in the reference labels.
    """
    cfg = config or StrainConfig()
    lab = _check_ref_labels(ref_labels)
    sp = np.asarray(spacing, dtype=np.float64).reshape(3)
    if label_map.myo is None or not np.any(lab == label_map.myo):
        raise InputError("strain needs a myocardium label in the reference frame (none found)")
    dim = spatial_dim(lab.shape)
    myo = lab == label_map.myo
    lv = lab == label_map.lv if label_map.lv is not None else np.zeros_like(myo)
    body = (myo | lv) if cfg.centre == "lv+myo" else lv
    n_z = lab.shape[2]

    centres = np.full((n_z, 3), np.nan)
    area = np.zeros(n_z)
    for k in range(n_z):
        m = body[:, :, k] if body[:, :, k].any() else myo[:, :, k]
        if m.any():
            ij = np.argwhere(m).astype(np.float64)
            centres[k] = [ij[:, 0].mean() * sp[0], ij[:, 1].mean() * sp[1], k * sp[2]]
        cav = lv[:, :, k] if lv.any() else (myo | lv)[:, :, k]
        area[k] = cav.sum()
    valid = np.isfinite(centres[:, 0])
    if not valid.any():  # cannot happen (a myocardium exists), kept for safety
        raise InputError("strain: no slice holds a myocardium")

    # Long axis (unoriented first), then orientation base -> apex.
    axis = np.array([0.0, 0.0, 1.0])
    use_line = False
    if dim == 3 and cfg.long_axis == "fit" and valid.sum() >= 2:
        pts = centres[valid]
        w = np.maximum(area[valid], 1.0)
        mean = (pts * w[:, None]).sum(0) / w.sum()
        _, _, vt = np.linalg.svd((pts - mean) * np.sqrt(w)[:, None])
        axis = vt[0] / np.linalg.norm(vt[0])
        use_line = True
    if axis[2] < 0:
        axis = -axis  # start from the +k sense
    apex_from = "default"
    if cfg.apex_direction in ("+k", "-k"):
        if cfg.apex_direction == "-k":
            axis = -axis
        apex_from = "config"
    else:
        decided = False
        if dim == 3 and valid.sum() >= 2:
            s = centres[valid] @ axis
            a = area[valid]
            if np.ptp(a) > 0 and np.ptp(s) > 0:
                corr = np.corrcoef(s, a)[0, 1]
                if abs(corr) > 1e-6:
                    if corr > 0:  # cavity grows toward +axis: that end is the base
                        axis = -axis
                    decided, apex_from = True, "cavity"
        if not decided and affine is not None:
            A = np.asarray(affine, dtype=np.float64)
            rot = A[:3, :3] / spacing_from_affine(A)
            proj = float((rot @ axis) @ _APEX_RAS)
            if abs(proj) > 0.3:
                if proj < 0:
                    axis = -axis
                apex_from = "geometry"
    handed = 1.0
    if affine is not None:
        handed = 1.0 if np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]) >= 0 else -1.0

    a = np.array([1.0, 0.0, 0.0]) - axis[0] * axis
    if np.linalg.norm(a) < 1e-6:
        a = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
    a = a / np.linalg.norm(a)
    b = np.cross(axis, a)
    line_point = centres[valid].mean(0)

    frame = CardiacFrame(dim=dim, spacing=sp, long_axis=axis, basis=np.stack([a, b]), handedness=handed,
                         slice_centres=centres, line_point=line_point, use_line=use_line,
                         septum_theta=np.zeros(n_z), septum_source="fixed", apex_from=apex_from)

    # Septum direction per slice.
    alpha = math.radians(float(cfg.septum_direction_deg))
    fixed = float(frame.angle_of(frame.in_plane(np.array([[math.cos(alpha), math.sin(alpha), 0.0]])))[0])
    theta_s = np.full(n_z, np.nan)
    weights = np.zeros(n_z)
    source = "fixed"
    if cfg.septum_from_rv and label_map.rv is not None:
        rv = lab == label_map.rv
        for k in range(n_z):
            if rv[:, :, k].any() and valid[k]:
                q = _voxel_points(rv[:, :, k:k + 1], sp)
                q[:, 2] = k * sp[2]
                v = frame.in_plane(q.mean(0, keepdims=True) - frame.centre_of(q.mean(0, keepdims=True)))
                if np.linalg.norm(v) > 1e-6:
                    theta_s[k] = frame.angle_of(v)[0]
                    weights[k] = rv[:, :, k].sum()
        if np.isfinite(theta_s).any():
            source = "rv"
            ok = np.isfinite(theta_s)
            mean = math.atan2(float((np.sin(theta_s[ok]) * weights[ok]).sum()),
                              float((np.cos(theta_s[ok]) * weights[ok]).sum()))
            theta_s[~ok] = mean
    if source == "fixed":
        theta_s[:] = fixed
    return CardiacFrame(dim=dim, spacing=sp, long_axis=axis, basis=np.stack([a, b]), handedness=handed,
                        slice_centres=centres, line_point=line_point, use_line=use_line,
                        septum_theta=theta_s, septum_source=source, apex_from=apex_from)
