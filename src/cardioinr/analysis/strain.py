"""Myocardial strain, LV cavity size, ejection fraction and twist from a motion field.

Everything is Lagrangian and lives on the reference frame: the material points are the
myocardial voxel centres of the reference labels, ``X = index * spacing`` in array-aligned
millimetres (see :mod:`cardioinr.io`), and the motion is the displacement ``u(X, t)`` of the
output contract (mm along the array axes, zero at the reference frame).

Strain
------
``F = I + du/dX`` is the deformation gradient and ``E = (F^T F - I) / 2`` the Green-Lagrange
strain tensor. Two routes give ``du/dX``:

* :func:`analyse_fit`: from the continuous field, *exactly* (forward-mode autodiff through
  :meth:`cardioinr.fit.fields.MotionField.displacement_and_jacobian`), all frames at once;
* :func:`analyse_displacement`: from a dense ``(X, Y, Z, T, 3)`` array by central finite
  differences in mm (``np.gradient``; one-sided at the array border), so that any method's
  output (a peer's registration, the phantom's truth) is analysed identically.

For a unit direction ``e`` in the reference configuration two numbers are reported:

* the *Green* normal strain ``E_ee = e^T E e`` (columns ``E_rr``, ``E_cc``, ``E_ll``), and
* the *engineering* (Lagrangian, "clinical") strain ``sqrt(1 + 2 E_ee) - 1 = |F e| - 1``, the
  relative change of length of a fibre along ``e`` (columns ``radial_pct``,
  ``circumferential_pct``, ``longitudinal_pct``, in percent). Healthy values: radial +29..+36 %,
  circumferential -17..-21 %, longitudinal -17..-22 %.

Both are first computed per voxel and then averaged over a region (so ``radial_pct`` is the mean
of per-voxel engineering strains, not ``sqrt(1 + 2 mean E_rr) - 1``).

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

Angles and AHA segments
-----------------------
The angle ``theta`` of a point about the LV centre is measured counter-clockwise *as seen from
the apex* (right-handed about the base -> apex axis in physical space; the affine's handedness is
taken into account), which is how the AHA bull's eye is drawn (anterior up, septum left,
segments numbered counter-clockwise). The septum direction is the direction from the LV centre to
the RV centroid of the slice (or of the whole stack for slices without RV, or, with no RV label at
all, ``septum_direction_deg``: an angle in the array (i, j) plane measured from +i toward +j).
Relative to it, the six segments of a basal or mid slice are 60 degrees wide and centred at
-90 (anterior), -30 (anteroseptal), +30 (inferoseptal), +90 (inferior), +150 (inferolateral) and
-150 degrees (anterolateral); the four apical segments are 90 degrees wide and centred at -90
(anterior), 0 (septal), +90 (inferior) and 180 (lateral).

Levels: in a 3D stack, the myocardium's extent along the long axis (voxel edges included) is cut
into thirds: basal (segments 1-6), mid (7-12) and apical (13-16); with
``StrainConfig(apex_segment=True)`` myocardium beyond the apical end of the LV cavity is the
apex (17) and the thirds cover the cavity's extent. A single slice is one level, ``mid``
(segments 7-12) by default because 2D cines are usually mid-ventricular
(``StrainConfig(slice_level_2d="basal" | "apical")`` otherwise).

Cavity, EF, rotation and twist
------------------------------
LV cavity area (2D, mm^2) or volume (3D, ml) per frame is counted from the propagated labels
``(X, Y, Z, T)``; it is also integrated from the motion, ``sum det F * voxel size`` over the
reference cavity (``cavity_jacobian``), which needs no labels beyond the reference frame. EF (%) is
``(max - min) / max``; ED and ES are the frames of the largest and smallest cavity.
The rotation of a myocardial point is the signed angle (degrees, counter-clockwise seen from the
apex) between its position relative to its slice's myocardial centroid at the reference frame and
at frame ``t`` (both perpendicular to the long axis; the centroid moves with the tissue, so bulk
translation does not count). Rotations are averaged over the whole myocardium and per level;
twist (3D) is apical minus basal rotation and torsion is twist divided by the reference distance
between the basal and apical levels (degrees per cm).

Outputs: :class:`StrainResult` (per-frame tables, peaks, EF, JSON summary),
rows for ``strain.csv`` of the output contract (columns :data:`CSV_COLUMNS`, written by
:mod:`cardioinr.outputs.tables`) and for the per-frame cavity, rotation and twist table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cardioinr.core.errors import ConfigError, InputError
from cardioinr.io import ACDC, LabelMap, Sequence, spacing_from_affine

__all__ = [
    "AHA_NAMES",
    "CSV_COLUMNS",
    "CYCLE_COLUMNS",
    "CardiacFrame",
    "StrainConfig",
    "StrainResult",
    "aha_segments",
    "analyse_displacement",
    "analyse_field",
    "analyse_fit",
    "analyse_fit_result",
    "cardiac_frame",
    "cavity_sizes",
    "deformation_gradient_dense",
    "deformation_gradient_field",
    "ejection_fraction",
    "engineering_strain",
    "green_strain",
    "normal_strain",
    "region_name",
    "segment_of_angle",
]

#: Columns of ``strain.csv``, in order. ``E_*`` are mean Green-Lagrange normal strains
#: (dimensionless), ``*_pct`` mean engineering strains in percent; ``E_ll`` and
#: ``longitudinal_pct`` are empty for a single slice.
CSV_COLUMNS = ("frame", "time_ms", "region", "n_voxels", "E_rr", "E_cc", "E_ll",
               "radial_pct", "circumferential_pct", "longitudinal_pct")

#: Columns of the per-frame cycle table (:func:`cardioinr.outputs.tables.write_cycle_csv`).
CYCLE_COLUMNS = ("frame", "time_ms", "lv_cavity", "lv_cavity_jacobian", "cavity_unit", "rotation_deg",
                 "rotation_basal_deg", "rotation_mid_deg", "rotation_apical_deg", "twist_deg",
                 "torsion_deg_per_cm")

AHA_NAMES: dict[int, str] = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral",
    7: "mid anterior", 8: "mid anteroseptal", 9: "mid inferoseptal", 10: "mid inferior",
    11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral",
    17: "apex",
}

GLOBAL = "global"
_LEVEL_FIRST = {"basal": 1, "mid": 7, "apical": 13}
_COMPONENTS = ("radial", "circumferential", "longitudinal")
# Physical base -> apex direction of a typical heart in RAS world coordinates (left, anterior, inferior).
_APEX_RAS = np.array([-1.0, 1.0, -1.0]) / math.sqrt(3.0)


def region_name(segment: int) -> str:
    """CSV region name of an AHA segment: ``aha01`` .. ``aha17`` (``global`` is the whole myocardium)."""
    return f"aha{int(segment):02d}"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrainConfig:
    """How local directions and AHA segments are defined (see the module docstring).

    Attributes:
        long_axis: ``"k"`` (array k axis; short-axis stacks) or ``"fit"`` (line through the
            per-slice LV centres; 3D only, falls back to ``"k"`` with fewer than 2 slices).
        apex_direction: ``"auto"``, ``"+k"`` or ``"-k"``: which way along k the apex lies.
        centre: ``"lv+myo"`` or ``"lv"``: what the per-slice centre is the centroid of.
        septum_from_rv: take the septum direction from the RV label when present.
        septum_direction_deg: septum direction without an RV label: angle in the array (i, j)
            plane from +i toward +j, degrees (180 = toward -i).
        slice_level_2d: AHA level of a single slice: ``"basal"``, ``"mid"`` or ``"apical"``.
        apex_segment: in 3D, label myocardium beyond the LV cavity's apical end as segment 17.
        chunk: points per forward-mode evaluation of a field (memory bound).
    """

    long_axis: str = "k"
    apex_direction: str = "auto"
    centre: str = "lv+myo"
    septum_from_rv: bool = True
    septum_direction_deg: float = 180.0
    slice_level_2d: str = "mid"
    apex_segment: bool = False
    chunk: int = 8192

    def __post_init__(self) -> None:
        checks = {"long_axis": ("k", "fit"), "apex_direction": ("auto", "+k", "-k"), "centre": ("lv+myo", "lv"),
                  "slice_level_2d": ("basal", "mid", "apical")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"strain {name} {getattr(self, name)!r}: choose from {', '.join(allowed)}")
        if not math.isfinite(float(self.septum_direction_deg)):
            raise ConfigError("strain septum_direction_deg must be a finite angle")
        if int(self.chunk) < 1:
            raise ConfigError("strain chunk must be positive")


# ---------------------------------------------------------------------------------------------
# Tensor maths (pure, any leading shape)
# ---------------------------------------------------------------------------------------------


def green_strain(F: np.ndarray) -> np.ndarray:
    """Green-Lagrange strain ``E = (F^T F - I) / 2``.

    Args:
        F: deformation gradients ``(..., D, D)`` (``F[..., i, j] = dx_i / dX_j``).

    Returns:
        ``(..., D, D)`` symmetric, dimensionless; zero for any rigid motion.
    """
    F = np.asarray(F, dtype=np.float64)
    if F.ndim < 2 or F.shape[-1] != F.shape[-2]:
        raise InputError(f"deformation gradients must be (..., D, D), got shape {F.shape}")
    C = np.einsum("...ki,...kj->...ij", F, F)
    return 0.5 * (C - np.eye(F.shape[-1]))


def normal_strain(E: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Green normal strain along unit directions, ``e^T E e``.

    Args:
        E: ``(..., D, D)`` strain tensors.
        e: ``(..., D)`` unit directions (reference configuration), broadcast against ``E``.

    Returns:
        ``(...)`` dimensionless.
    """
    E = np.asarray(E, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    return np.einsum("...i,...ij,...j->...", e, E, e)


def engineering_strain(E_ee: np.ndarray) -> np.ndarray:
    """Engineering (Lagrangian) strain ``sqrt(1 + 2 E_ee) - 1`` from a Green normal strain.

    This is the relative change of length ``|F e| - 1`` of a fibre along ``e``: a fibre
    shortened by 20 % has ``E_ee = -0.18`` and engineering strain ``-0.20``. Round-off below -1/2
    is clipped (a fibre cannot have negative length).
    """
    return np.sqrt(np.maximum(1.0 + 2.0 * np.asarray(E_ee, dtype=np.float64), 0.0)) - 1.0


# ---------------------------------------------------------------------------------------------
# Deformation gradients: from a continuous field (exact) or a dense array (finite differences)
# ---------------------------------------------------------------------------------------------


class _FieldLike(Protocol):
    dim: int

    def displacement_and_jacobian(self, x_mm: Any, t: Any = None) -> tuple[Any, Any]: ...


def deformation_gradient_field(field_: _FieldLike, points_mm: np.ndarray, chunk: int = 8192
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Displacement and exact deformation gradient of a continuous field at reference points.

    Args:
        field_: a :class:`~cardioinr.fit.fields.MotionField` (or anything with ``dim`` and
            ``displacement_and_jacobian(x_mm (N, D)) -> (u (N, T, D), du/dx (N, T, D, D))``).
        points_mm: ``(N, 3)`` (or ``(N, D)``) reference points, array-aligned mm.
        chunk: points per evaluation.

    Returns:
        ``u`` ``(N, T, D)`` mm and ``F = I + du/dX`` ``(N, T, D, D)``, float64, every frame.
    """
    import torch

    d = int(field_.dim)
    pts = np.asarray(points_mm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < d:
        raise InputError(f"points must be (N, {d}) or (N, 3) mm, got shape {pts.shape}")
    ref = getattr(field_, "centre", None)
    device = ref.device if isinstance(ref, torch.Tensor) else torch.device("cpu")
    us, Fs = [], []
    with torch.no_grad():
        for i in range(0, max(len(pts), 1), chunk):
            x = torch.as_tensor(pts[i:i + chunk, :d], dtype=torch.float32, device=device)
            if x.shape[0] == 0:
                break
            u, g = field_.displacement_and_jacobian(x)
            us.append(u.detach().double().cpu().numpy())
            Fs.append(g.detach().double().cpu().numpy())
    if not us:
        t = int(getattr(field_, "n_frames", 0))
        return np.zeros((0, t, d)), np.zeros((0, t, d, d))
    u = np.concatenate(us)
    F = np.concatenate(Fs) + np.eye(d)
    return u, F


def _masked_derivative(comp: np.ndarray, inside: np.ndarray, h: float, axis: int) -> np.ndarray:
    """Derivative of ``comp`` along ``axis`` (step ``h`` mm) using, where possible, only
    neighbours inside ``inside``: central if both neighbours are inside, one-sided if one is,
    plain central (``np.gradient``) if neither is. Same shape as ``comp``."""
    g = np.gradient(comp, h, axis=axis)
    n = comp.shape[axis]
    if n < 2:
        return g
    lo = [slice(None)] * comp.ndim
    hi = [slice(None)] * comp.ndim
    lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
    lo, hi = tuple(lo), tuple(hi)
    step = (comp[hi] - comp[lo]) / h  # forward difference of the lower voxel = backward of the upper
    fwd = np.zeros(comp.shape)
    bwd = np.zeros(comp.shape)
    fwd_ok = np.zeros(comp.shape, bool)
    bwd_ok = np.zeros(comp.shape, bool)
    fwd[lo], fwd_ok[lo] = step, inside[hi]
    bwd[hi], bwd_ok[hi] = step, inside[lo]
    return np.where(fwd_ok & bwd_ok, 0.5 * (fwd + bwd), np.where(fwd_ok, fwd, np.where(bwd_ok, bwd, g)))


def deformation_gradient_dense(displacement: np.ndarray, spacing: np.ndarray, mask: np.ndarray,
                               inside_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Displacement and finite-difference deformation gradient at the voxels of ``mask``.

    Derivatives are differences in mm, computed one frame at a time (memory ``O(X Y Z)``). With
    ``inside_only`` (default) they use only voxels of ``mask`` where possible: central inside,
    one-sided at the tissue boundary, so that the different motion of the blood pool or the
    background does not leak into the tissue's gradient (the true gradient jumps there); plain
    central differences (``np.gradient``, one-sided at the array border) otherwise. A single
    slice (``Z == 1``) is 2D: the in-plane components and derivatives only.

    Args:
        displacement: ``(X, Y, Z, T, 3)`` mm along the array axes.
        spacing: ``(3,)`` voxel size, mm.
        mask: ``(X, Y, Z)`` bool; points are taken in ``np.argwhere(mask)`` order.
        inside_only: mask-aware differences (see above).

    Returns:
        ``u`` ``(N, T, D)`` and ``F`` ``(N, T, D, D)`` float64 with ``F[..., i, j] = dx_i / dX_j``.
    """
    disp = np.asarray(displacement)
    if disp.ndim != 5 or disp.shape[-1] != 3:
        raise InputError(f"displacement must be (X, Y, Z, T, 3), got shape {disp.shape}")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != disp.shape[:3]:
        raise InputError(f"mask has shape {mask.shape}, displacement grid is {disp.shape[:3]}")
    sp = np.asarray(spacing, dtype=np.float64).reshape(3)
    d = 2 if disp.shape[2] == 1 else 3
    if any(n < 2 for n in disp.shape[:d]):
        raise InputError(f"finite differences need at least 2 voxels along each axis, got {disp.shape[:3]}")
    n_t = disp.shape[3]
    n = int(mask.sum())
    u = np.empty((n, n_t, d))
    F = np.empty((n, n_t, d, d))
    m2 = mask[:, :, 0] if d == 2 else mask
    for t in range(n_t):
        for c in range(d):
            comp = disp[:, :, 0, t, c] if d == 2 else disp[:, :, :, t, c]
            comp = comp.astype(np.float64)
            u[:, t, c] = comp[m2]
            for a in range(d):
                g = _masked_derivative(comp, m2, sp[a], a) if inside_only else np.gradient(comp, sp[a], axis=a)
                F[:, t, c, a] = g[m2] + (1.0 if a == c else 0.0)
    return u, F


# ---------------------------------------------------------------------------------------------
# Local cardiac frame
# ---------------------------------------------------------------------------------------------


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


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to ``[-pi, pi)``."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


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
    dim = 2 if lab.shape[2] == 1 else 3
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


def segment_of_angle(rel_theta: np.ndarray, level: str) -> np.ndarray:
    """AHA segment numbers ``(N,)`` from angles relative to the septum (radians, ``theta``
    convention) at one level (``"basal"``, ``"mid"``: 6 segments; ``"apical"``: 4)."""
    deg = np.degrees(_wrap(np.asarray(rel_theta, dtype=np.float64)))
    if level == "apical":
        k4 = np.floor((deg + 45.0) / 90.0).astype(int) % 4  # 0 septal, 1 inferior, 2 lateral, 3 anterior
        return 13 + (k4 + 1) % 4
    k6 = np.floor((deg + 60.0) / 60.0).astype(int) % 6  # 0 anteroseptal ... 5 anterior
    return _LEVEL_FIRST[level] + (k6 + 1) % 6


def aha_segments(
    ref_labels: np.ndarray,
    frame: CardiacFrame,
    label_map: LabelMap = ACDC,
    config: StrainConfig | None = None,
) -> np.ndarray:
    """AHA segment of every myocardial voxel of the reference frame.

    Args:
        ref_labels: ``(X, Y, Z)`` reference labels.
        frame: from :func:`cardiac_frame` on the same labels.
        label_map: codes of LV, MYO, RV.
        config: see :class:`StrainConfig` (2D level, apex segment).

    Returns:
        ``(X, Y, Z)`` int16: 1..16 (17 with ``apex_segment``) on the myocardium, 0 elsewhere.
    """
    cfg = config or StrainConfig()
    lab = _check_ref_labels(ref_labels)
    myo = lab == label_map.myo
    out = np.zeros(lab.shape, dtype=np.int16)
    if not myo.any():
        return out
    pts = _voxel_points(myo, frame.spacing)
    rel = frame.theta(pts) - frame.septum_theta[frame.slice_of(pts)]
    if frame.dim == 2:
        seg = segment_of_angle(rel, cfg.slice_level_2d)
    else:
        s = frame.axial_position(pts)
        half = 0.5 * float(np.abs(frame.long_axis) @ frame.spacing)
        lo, hi = s.min() - half, s.max() + half
        apex = np.zeros(len(pts), bool)
        if cfg.apex_segment and label_map.lv is not None and np.any(lab == label_map.lv):
            s_cav = frame.axial_position(_voxel_points(lab == label_map.lv, frame.spacing)).max() + half
            apex = s > s_cav
            hi = min(hi, s_cav)
        frac = np.clip((s - lo) / max(hi - lo, 1e-9), 0.0, 1.0 - 1e-9)
        level = np.minimum((3.0 * frac).astype(int), 2)
        seg = np.zeros(len(pts), dtype=int)
        for i, name in enumerate(("basal", "mid", "apical")):
            sel = level == i
            seg[sel] = segment_of_angle(rel[sel], name)
        seg[apex] = 17
    out[myo] = seg
    return out


# ---------------------------------------------------------------------------------------------
# Cavity size and EF
# ---------------------------------------------------------------------------------------------


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
    if lab.shape[2] == 1:
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


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass
class StrainResult:
    """Strain, cavity and rotation of one sequence over the cycle.

    Attributes:
        dim: 2 or 3.
        source: ``"field"`` (exact gradients of the continuous field) or ``"displacement"``
            (finite differences of a dense array).
        ref_frame: the reference frame.
        times_ms: ``(T,)`` nominal frame times from frame 0, ms.
        regions: ``["global", "aha07", ...]`` (segments with at least one voxel, ascending).
        n_voxels: ``(R,)`` myocardial voxels per region.
        green: ``(T, R, 3)`` mean Green strain ``E_rr, E_cc, E_ll`` (``E_ll`` NaN in 2D).
        engineering: ``(T, R, 3)`` mean engineering strain (fraction, not %), same layout.
        cavity: ``(T,)`` LV cavity size from the propagated labels, or None without them.
        cavity_jacobian: ``(T,)`` LV cavity size integrated from ``det F`` over the reference
            cavity, or None without an LV label.
        cavity_unit: ``"mm^2"`` (2D) or ``"ml"`` (3D).
        rotation_deg: ``{"global": (T,), and in 3D "basal", "mid", "apical"}``, counter-clockwise
            seen from the apex.
        twist_deg, torsion_deg_per_cm: ``(T,)`` (3D with basal and apical levels) or None.
        segments: ``(X, Y, Z)`` int16 AHA segment map of the reference myocardium.
        frame: the :class:`CardiacFrame` used.
        spacing: ``(3,)`` mm.
        label_map: codes used.
    """

    dim: int
    source: str
    ref_frame: int
    times_ms: np.ndarray
    regions: list[str]
    n_voxels: np.ndarray
    green: np.ndarray
    engineering: np.ndarray
    cavity: np.ndarray | None
    cavity_jacobian: np.ndarray | None
    cavity_unit: str
    rotation_deg: dict[str, np.ndarray]
    twist_deg: np.ndarray | None
    torsion_deg_per_cm: np.ndarray | None
    segments: np.ndarray
    frame: CardiacFrame
    spacing: np.ndarray
    label_map: LabelMap = ACDC
    config: StrainConfig = field(default_factory=StrainConfig)

    @property
    def n_frames(self) -> int:
        return int(self.green.shape[0])

    def region_index(self, region: str) -> int:
        try:
            return self.regions.index(region)
        except ValueError:
            raise InputError(f"no strain region {region!r} (have: {', '.join(self.regions)})") from None

    def curve(self, component: str, region: str = GLOBAL, kind: str = "engineering") -> np.ndarray:
        """``(T,)`` mean strain of a region over the cycle.

        Args:
            component: ``"radial"``, ``"circumferential"`` or ``"longitudinal"``.
            region: ``"global"`` or ``"aha01"`` ...
            kind: ``"engineering"`` (fraction) or ``"green"``.
        """
        if component not in _COMPONENTS:
            raise InputError(f"strain component {component!r}: choose from {', '.join(_COMPONENTS)}")
        arr = self.engineering if kind == "engineering" else self.green
        return arr[:, self.region_index(region), _COMPONENTS.index(component)]

    @property
    def cavity_best(self) -> np.ndarray | None:
        """The cavity curve used for EF: from labels when present, else from ``det F``."""
        return self.cavity if self.cavity is not None else self.cavity_jacobian

    def ejection(self) -> tuple[float, int, int]:
        """``(EF %, ED frame, ES frame)`` from :attr:`cavity_best` (NaN, -1, -1 without a cavity)."""
        c = self.cavity_best
        return ejection_fraction(c) if c is not None else (float("nan"), -1, -1)

    def peaks(self, region: str = GLOBAL) -> dict[str, Any]:
        """Peak engineering strains (%) of a region over the cycle and their frames: the largest
        radial (thickening), the most negative circumferential and longitudinal (shortening).
        Undefined components are NaN with frame -1."""
        out: dict[str, Any] = {}
        for comp in _COMPONENTS:
            c = self.curve(comp, region)
            if not np.isfinite(c).any():
                out[f"{comp}_pct"], out[f"{comp}_frame"] = float("nan"), -1
                continue
            t = int(np.nanargmax(c)) if comp == "radial" else int(np.nanargmin(c))
            out[f"{comp}_pct"], out[f"{comp}_frame"] = float(100.0 * c[t]), t
        return out

    def peak_frame(self) -> int:
        """The frame of peak global strain used for bull's-eye plots: of the most negative
        circumferential strain (peak systole), else of the largest radial strain."""
        p = self.peaks()
        return p["circumferential_frame"] if p["circumferential_frame"] >= 0 else p["radial_frame"]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per frame and region with the :data:`CSV_COLUMNS` keys (NaN where undefined)."""
        out = []
        for t in range(self.n_frames):
            for r, name in enumerate(self.regions):
                g, e = self.green[t, r], self.engineering[t, r]
                out.append({
                    "frame": t, "time_ms": float(self.times_ms[t]), "region": name,
                    "n_voxels": int(self.n_voxels[r]),
                    "E_rr": float(g[0]), "E_cc": float(g[1]), "E_ll": float(g[2]),
                    "radial_pct": float(100 * e[0]), "circumferential_pct": float(100 * e[1]),
                    "longitudinal_pct": float(100 * e[2]),
                })
        return out

    def cycle_rows(self) -> list[dict[str, Any]]:
        """One dict per frame with the :data:`CYCLE_COLUMNS` keys."""
        nan = float("nan")
        out = []
        for t in range(self.n_frames):
            rot = self.rotation_deg
            out.append({
                "frame": t, "time_ms": float(self.times_ms[t]),
                "lv_cavity": float(self.cavity[t]) if self.cavity is not None else nan,
                "lv_cavity_jacobian": float(self.cavity_jacobian[t]) if self.cavity_jacobian is not None else nan,
                "cavity_unit": self.cavity_unit,
                "rotation_deg": float(rot[GLOBAL][t]),
                "rotation_basal_deg": float(rot["basal"][t]) if "basal" in rot else nan,
                "rotation_mid_deg": float(rot["mid"][t]) if "mid" in rot else nan,
                "rotation_apical_deg": float(rot["apical"][t]) if "apical" in rot else nan,
                "twist_deg": float(self.twist_deg[t]) if self.twist_deg is not None else nan,
                "torsion_deg_per_cm": float(self.torsion_deg_per_cm[t]) if self.torsion_deg_per_cm is not None else nan,
            })
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for ``metrics.json`` (NaN -> None): EF, ED/ES frames, cavity curve,
        global peaks, per-segment peaks, peak twist/torsion, how directions were defined."""
        ef, ed, es = self.ejection()
        seg_peaks = {r: self.peaks(r) for r in self.regions if r != GLOBAL}
        out: dict[str, Any] = {
            "source": self.source,
            "dim": self.dim,
            "ef_pct": ef,
            "ed_frame": ed,
            "es_frame": es,
            "cavity_unit": self.cavity_unit,
            "cavity": None if self.cavity is None else self.cavity.tolist(),
            "cavity_jacobian": None if self.cavity_jacobian is None else self.cavity_jacobian.tolist(),
            "peak": self.peaks(),
            "segment_peaks": seg_peaks,
            "regions": list(self.regions),
            "n_voxels": {r: int(n) for r, n in zip(self.regions, self.n_voxels)},
            "peak_rotation_deg": {k: _abs_peak(v) for k, v in self.rotation_deg.items()},
            "peak_twist_deg": None if self.twist_deg is None else _abs_peak(self.twist_deg),
            "peak_torsion_deg_per_cm": None if self.torsion_deg_per_cm is None else _abs_peak(self.torsion_deg_per_cm),
            "directions": {
                "long_axis": self.frame.long_axis.tolist(), "apex_from": self.frame.apex_from,
                "septum_from": self.frame.septum_source, "handedness": self.frame.handedness,
                "long_axis_mode": self.config.long_axis, "centre": self.config.centre,
                "slice_level_2d": self.config.slice_level_2d if self.dim == 2 else None,
            },
        }
        return _json_ready(out)


def _abs_peak(v: np.ndarray) -> float:
    """The value of largest magnitude (sign kept)."""
    v = np.asarray(v, dtype=np.float64)
    if not np.isfinite(v).any():
        return float("nan")
    return float(v[int(np.nanargmax(np.abs(v)))])


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


def _analyse(
    u: np.ndarray,
    F: np.ndarray,
    n_myo: int,
    myo_pts: np.ndarray,
    cav_voxel_count: int,
    ref_labels: np.ndarray,
    frame: CardiacFrame,
    segments: np.ndarray,
    *,
    labels: np.ndarray | None,
    label_map: LabelMap,
    ref_frame: int,
    times_ms: np.ndarray,
    source: str,
    config: StrainConfig,
) -> StrainResult:
    """Shared core: ``u`` ``(N, T, D)`` and ``F`` ``(N, T, D, D)`` at the myocardial points
    (first ``n_myo`` rows, ``np.argwhere`` order) followed by the reference LV cavity voxels."""
    d = frame.dim
    sp = frame.spacing
    n_t = F.shape[1]
    Fm = F[:n_myo]
    E = green_strain(Fm)  # (N, T, D, D)
    r, c, l_ = frame.directions(myo_pts)
    comps = np.full((n_myo, n_t, 3), np.nan)
    comps[..., 0] = normal_strain(E, r[:, None, :d])
    comps[..., 1] = normal_strain(E, c[:, None, :d])
    if d == 3:
        comps[..., 2] = normal_strain(E, l_[:, None, :])
    eng = engineering_strain(comps)

    seg = segments[segments > 0]  # argwhere order matches myo points
    present = sorted(int(s) for s in np.unique(seg))
    regions = [GLOBAL] + [region_name(s) for s in present]
    masks = [np.ones(n_myo, bool)] + [seg == s for s in present]
    n_vox = np.array([int(m.sum()) for m in masks])
    green = np.stack([comps[m].mean(0) for m in masks], axis=1)  # (T, R, 3)
    engm = np.stack([eng[m].mean(0) for m in masks], axis=1)

    # Rotation about each slice's moving myocardial centroid.
    um = np.zeros((n_myo, n_t, 3))
    um[..., :d] = u[:n_myo]
    k_of = frame.slice_of(myo_pts)
    rot = np.zeros((n_myo, n_t))
    for k in np.unique(k_of):
        sel = k_of == k
        p0 = myo_pts[sel]
        c0 = p0.mean(0)
        d0 = frame.in_plane(p0 - c0)  # (n, 3)
        pt = p0[:, None, :] + um[sel]  # (n, T, 3)
        dt = frame.in_plane(pt - pt.mean(0, keepdims=True))
        cross = np.cross(d0[:, None, :], dt) @ frame.long_axis
        dot = np.einsum("nc,ntc->nt", d0, dt)
        rot[sel] = frame.handedness * np.degrees(np.arctan2(cross, dot))
    rotation = {GLOBAL: rot.mean(0)}
    twist = torsion = None
    if d == 3:
        s = frame.axial_position(myo_pts)
        level_pos = {}
        for name, lo, hi in (("basal", 1, 6), ("mid", 7, 12), ("apical", 13, 17)):
            sel = (seg >= lo) & (seg <= hi)
            if sel.any():
                rotation[name] = rot[sel].mean(0)
                level_pos[name] = float(s[sel].mean())
        if "basal" in rotation and "apical" in rotation:
            twist = rotation["apical"] - rotation["basal"]
            dist_cm = abs(level_pos["apical"] - level_pos["basal"]) / 10.0
            torsion = twist / dist_cm if dist_cm > 0 else None

    voxel = float(sp[0] * sp[1]) if d == 2 else float(np.prod(sp)) / 1000.0
    unit = "mm^2" if d == 2 else "ml"
    cav_j = None
    if cav_voxel_count > 0:
        det = np.linalg.det(F[n_myo:n_myo + cav_voxel_count])  # (Nc, T)
        cav_j = det.sum(0) * voxel
    cav = None
    if labels is not None and label_map.lv is not None:
        cav, unit = cavity_sizes(labels, sp, label_map.lv)

    return StrainResult(dim=d, source=source, ref_frame=int(ref_frame), times_ms=np.asarray(times_ms, dtype=np.float64),
                        regions=regions, n_voxels=n_vox, green=green, engineering=engm, cavity=cav,
                        cavity_jacobian=cav_j, cavity_unit=unit, rotation_deg=rotation, twist_deg=twist,
                        torsion_deg_per_cm=torsion, segments=segments, frame=frame, spacing=sp,
                        label_map=label_map, config=config)


def _prepare(ref_labels: np.ndarray, spacing: np.ndarray, label_map: LabelMap, affine: np.ndarray | None,
             config: StrainConfig) -> tuple[np.ndarray, CardiacFrame, np.ndarray, np.ndarray, np.ndarray]:
    lab = _check_ref_labels(ref_labels)
    frame = cardiac_frame(lab, spacing, label_map, affine, config)
    segments = aha_segments(lab, frame, label_map, config)
    myo = lab == label_map.myo
    cav = (lab == label_map.lv) if label_map.lv is not None else np.zeros_like(myo)
    return lab, frame, segments, myo, cav


def _labels_4d(labels: np.ndarray | None, shape3: tuple[int, ...], n_t: int) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.ndim == 3 and shape3[2] == 1 and lab.shape == (shape3[0], shape3[1], n_t):
        lab = lab[:, :, None, :]
    if lab.shape != tuple(shape3) + (n_t,):
        raise InputError(f"propagated labels have shape {lab.shape}, expected {tuple(shape3) + (n_t,)}")
    return lab


def analyse_displacement(
    displacement: np.ndarray,
    spacing: np.ndarray,
    ref_labels: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int | None = None,
    frame_interval_ms: float = 1.0,
    affine: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> StrainResult:
    """Strain of a dense displacement array (finite differences in mm): any method's output.

    Args:
        displacement: ``(X, Y, Z, T, 3)`` mm, output-contract convention.
        spacing: ``(3,)`` voxel size, mm.
        ref_labels: ``(X, Y, Z)`` labels of the reference frame (defines the myocardium).
        labels: ``(X, Y, Z, T)`` propagated (or true) labels for the cavity curve, optional.
        label_map: codes of LV, MYO, RV.
        ref_frame: reference frame (default: the first all-zero frame, else 0).
        frame_interval_ms: time between frames, ms.
        affine: voxel-to-world matrix (orientation conventions; see :func:`cardiac_frame`).
        config: see :class:`StrainConfig`.
    """
    cfg = config or StrainConfig()
    disp = np.asarray(displacement)
    if disp.ndim != 5 or disp.shape[-1] != 3:
        raise InputError(f"displacement must be (X, Y, Z, T, 3), got shape {disp.shape}")
    lab, frame, segments, myo, cav = _prepare(ref_labels, spacing, label_map, affine, cfg)
    if lab.shape != disp.shape[:3]:
        raise InputError(f"reference labels have shape {lab.shape}, displacement grid is {disp.shape[:3]}")
    n_t = disp.shape[3]
    if ref_frame is None:
        zero = [t for t in range(n_t) if not np.any(disp[:, :, :, t])]
        ref_frame = zero[0] if zero else 0
    u_m, F_m = deformation_gradient_dense(disp, frame.spacing, myo)
    u_c, F_c = deformation_gradient_dense(disp, frame.spacing, cav)
    u = np.concatenate([u_m, u_c])
    F = np.concatenate([F_m, F_c])
    return _analyse(u, F, int(myo.sum()), _voxel_points(myo, frame.spacing), int(cav.sum()), lab, frame, segments,
                    labels=_labels_4d(labels, lab.shape, n_t), label_map=label_map, ref_frame=int(ref_frame),
                    times_ms=np.arange(n_t) * float(frame_interval_ms), source="displacement", config=cfg)


def analyse_field(
    field_: _FieldLike,
    spacing: np.ndarray,
    ref_labels: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float = 1.0,
    affine: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> StrainResult:
    """Strain from a continuous field with exact gradients (forward-mode autodiff).

    Args:
        field_: a :class:`~cardioinr.fit.fields.MotionField` (any device) or anything with ``dim``,
            ``n_frames`` and ``displacement_and_jacobian``; its frames are the sequence's.
        spacing: ``(3,)`` voxel size, mm (the reference points are ``index * spacing``).
        ref_labels: ``(X, Y, Z)`` labels of the reference frame (defines the myocardium).
        labels, label_map, ref_frame, frame_interval_ms, affine, config: as in
            :func:`analyse_displacement`.

    Raises:
        InputError: no myocardium, or a field whose dimension does not match the labels.
    """
    cfg = config or StrainConfig()
    lab, frame, segments, myo, cav = _prepare(ref_labels, spacing, label_map, affine, cfg)
    if int(field_.dim) != frame.dim:
        raise InputError(f"the field is {field_.dim}D but the labels are {frame.dim}D {lab.shape}")
    pts_m = _voxel_points(myo, frame.spacing)
    pts_c = _voxel_points(cav, frame.spacing)
    u, F = deformation_gradient_field(field_, np.concatenate([pts_m, pts_c]), chunk=cfg.chunk)
    n_t = F.shape[1]
    return _analyse(u, F, len(pts_m), pts_m, len(pts_c), lab, frame, segments,
                    labels=_labels_4d(labels, lab.shape, n_t), label_map=label_map, ref_frame=int(ref_frame),
                    times_ms=np.arange(n_t) * float(frame_interval_ms), source="field", config=cfg)


def analyse_fit(
    field_: _FieldLike | None,
    seq: Sequence,
    displacement: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    ref_labels: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> StrainResult:
    """Strain of a fitted sequence: exact gradients of the continuous field.

    This is the entry point for ``cardioinr fit``: ``analyse_fit(result.field, result.sequence,
    result.displacement, result.labels)``.

    Args:
        field_: the fitted :class:`~cardioinr.fit.fields.MotionField` (any device). ``None``: fall
            back to finite differences of ``displacement``.
        seq: the sequence (geometry, frame interval, reference frame and label map; its
            ``ref_labels`` define the myocardium unless ``ref_labels`` is given).
        displacement: ``(X, Y, Z, T, 3)`` mm; used only when ``field_`` is None.
        labels: ``(X, Y, Z, T)`` propagated labels (cavity curve and EF), optional.
        ref_labels: ``(X, Y, Z)`` reference labels overriding ``seq.ref_labels`` (default:
            ``seq.ref_labels``, else ``labels[..., seq.ref_frame]``).
        config: see :class:`StrainConfig`.

    Raises:
        InputError: no reference labels with a myocardium, or a field that does not match the
            sequence (dimension or frame count).
    """
    ref = ref_labels if ref_labels is not None else seq.ref_labels
    if ref is None and labels is not None:
        ref = np.asarray(labels)[..., seq.ref_frame]
    if ref is None:
        raise InputError(f"{seq.name}: strain needs labels of the reference frame (fit with --seg)")
    common = dict(labels=labels, label_map=seq.label_map, ref_frame=seq.ref_frame,
                  frame_interval_ms=seq.frame_interval_ms, affine=seq.affine, config=config)
    if field_ is None:
        if displacement is None:
            raise InputError(f"{seq.name}: strain needs a field or a displacement array")
        return analyse_displacement(displacement, seq.spacing, ref, **common)
    if int(field_.dim) != seq.ndim_space:
        raise InputError(f"{seq.name}: the field is {field_.dim}D but the sequence is {seq.ndim_space}D")
    n_t = int(getattr(field_, "n_frames", seq.n_frames))
    if n_t != seq.n_frames:
        raise InputError(f"{seq.name}: the field has {n_t} frames, the sequence {seq.n_frames}")
    if _check_ref_labels(ref).shape != seq.shape:
        raise InputError(f"{seq.name}: reference labels have shape {np.asarray(ref).shape}, frames have {seq.shape}")
    return analyse_field(field_, seq.spacing, ref, **common)


def analyse_fit_result(result: Any, *, config: StrainConfig | None = None) -> StrainResult | None:
    """The ``cardioinr fit`` hook: strain of a :class:`~cardioinr.fit.FitResult`.

    Returns None when the sequence has no reference labels with a myocardium, which is not an
    error for a fit: strain is simply undefined then. :func:`cardioinr.outputs.save_fit` writes
    ``result.rows()`` as the contract's strain table and ``result.summary()`` into the metrics,
    and passes the result to the report to avoid recomputing it.
    """
    seq = result.sequence
    ref = seq.ref_labels
    if ref is None or seq.label_map.myo is None or not np.any(ref == seq.label_map.myo):
        return None
    return analyse_fit(result.field, seq, result.displacement, result.labels, config=config)
