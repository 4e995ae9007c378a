"""Kinematics of a motion: the deformation gradient ``F = I + du/dX``, its determinant and Green strain.

This module is the one owner of ``F`` and ``det F`` in NumPy (the fit's differentiable
``det F`` of a batch of Jacobians, in torch, is :func:`cardioinr.fit.losses.det_f_from_grad_u`).
Everything is Lagrangian on the reference frame: material points ``X`` in array-aligned
millimetres, displacement ``u(X, t)`` in mm along the array axes (see :mod:`cardioinr.io`), and
``F[..., i, j] = dx_i / dX_j``.

Two routes give ``du/dX``:

* :func:`deformation_gradient_field`: from a continuous field, *exactly* (forward-mode autodiff
  through :meth:`cardioinr.fit.fields.MotionField.displacement_and_jacobian`), at any points;
* finite differences in mm of a displacement on its grid, all computed by
  :func:`displacement_gradient_grid`: plain central differences (``np.gradient``; one-sided at
  the array border) or, inside a mask, mask-aware ones (central inside, one-sided at the tissue
  boundary). :func:`deformation_gradient_dense` returns ``F`` at the voxels of a mask (strain),
  :func:`jacobian_determinant_grid` ``det F`` on the whole grid (folding).

Determinants: :func:`det_f` (LAPACK LU, any ``D``) serves ``F`` at points and the 3D grid. For a
single slice :func:`jacobian_determinant_grid` uses the closed form ``F00 F11 - F01 F10``
instead; the two 2 x 2 determinants can differ in the last bit, and both are kept so that every
number stays what it was (the folding statistics use the closed form, the strain's
cavity-from-``det F`` the LU one).

Strain: ``E = (F^T F - I) / 2`` (:func:`green_strain`), its normal component ``e^T E e`` along a
unit direction (:func:`normal_strain`) and the engineering strain ``sqrt(1 + 2 E_ee) - 1``
(:func:`engineering_strain`).

Folding: :func:`folding_stats` counts where ``det F <= 0`` over a displacement sequence (the fit
reports it, ``evaluate`` scores it), in a region grown around the labels by
:func:`within_margin` (the heart region both use).

A single slice (``Z == 1``) is 2D throughout: the in-plane components and derivatives only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from cardioinr.core.errors import InputError
from cardioinr.geometry.grid import spatial_dim

_NAN = float("nan")
#: Margin (mm) around the labelled structures of the "heart" region where folding is reported.
HEART_MARGIN_MM = 5.0

__all__ = [
    "HEART_MARGIN_MM",
    "as_spacing",
    "check_displacement",
    "deformation_gradient_dense",
    "deformation_gradient_field",
    "det_f",
    "displacement_gradient_grid",
    "engineering_strain",
    "folding_stats",
    "folding_stats_regions",
    "frame_list",
    "green_strain",
    "mask_over_frames",
    "jacobian_determinant_grid",
    "normal_strain",
    "within_margin",
]


def as_spacing(spacing: Iterable[float] | np.ndarray, ndim: int = 3) -> np.ndarray:
    """The first ``ndim`` entries of a voxel size (mm) as float64, checked finite and positive."""
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size < ndim or not np.all(np.isfinite(sp[:ndim])) or np.any(sp[:ndim] <= 0):
        raise InputError(f"spacing must hold {ndim} positive numbers (mm), got {np.asarray(spacing).tolist()}")
    return sp[:ndim]


# ---------------------------------------------------------------------------------------------
# Green strain (pure, any leading shape)
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
# Deformation gradients: from a continuous field (exact) or a grid (finite differences)
# ---------------------------------------------------------------------------------------------


class FieldLike(Protocol):
    dim: int

    def displacement_and_jacobian(self, x_mm: Any, t: Any = None) -> tuple[Any, Any]: ...


def deformation_gradient_field(field_: FieldLike, points_mm: np.ndarray, chunk: int = 8192
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


def displacement_gradient_grid(disp: np.ndarray, spacing: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """Displacement gradient ``du/dX`` of one frame on its grid, by finite differences in mm.

    The one implementation of grid differences: :func:`deformation_gradient_dense` and
    :func:`jacobian_determinant_grid` add the identity to it. The inputs are not validated here
    (each caller does, with its own message).

    Args:
        disp: ``(X, Y, Z, 3)`` displacement of one frame, mm along the array axes. A single slice
            (``Z == 1``) is 2D: the in-plane components and derivatives only.
        spacing: ``(3,)`` voxel size, mm.
        inside: ``None``: plain central differences (``np.gradient``, one-sided at the array
            border). ``(X, Y, Z)`` bool: mask-aware differences, using only neighbours inside
            the mask where possible (central inside, one-sided at the mask's boundary).

    Returns:
        ``J`` ``(X, Y, 2, 2)`` for a single slice, else ``(X, Y, Z, 3, 3)``, float64,
        ``J[..., c, a] = du_c / dX_a`` (dimensionless; the identity is not added).
    """
    sp = np.asarray(spacing, dtype=np.float64).reshape(3)
    d = spatial_dim(disp.shape)
    grid = tuple(disp.shape[:2]) if d == 2 else tuple(disp.shape[:3])
    m = None if inside is None else (inside[:, :, 0] if d == 2 else inside)
    J = np.empty(grid + (d, d))
    for c in range(d):
        comp = disp[:, :, 0, c] if d == 2 else disp[:, :, :, c]
        comp = comp.astype(np.float64)
        for a in range(d):
            J[..., c, a] = _masked_derivative(comp, m, sp[a], a) if m is not None else np.gradient(comp, sp[a], axis=a)
    return J


def deformation_gradient_dense(displacement: np.ndarray, spacing: np.ndarray, mask: np.ndarray,
                               inside_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Displacement and finite-difference deformation gradient at the voxels of ``mask``.

    Derivatives are differences in mm, computed one frame at a time (memory ``O(X Y Z)``). With
    ``inside_only`` (default) they use only voxels of ``mask`` where possible: central inside,
    one-sided at the tissue boundary, so that the different motion of the blood pool or the
    background does not leak into the tissue's gradient (the true gradient jumps there); plain
    central differences (``np.gradient``, one-sided at the array border) otherwise (both from
    :func:`displacement_gradient_grid`). A single slice (``Z == 1``) is 2D: the in-plane
    components and derivatives only.

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
    d = spatial_dim(disp.shape)
    if any(n < 2 for n in disp.shape[:d]):
        raise InputError(f"finite differences need at least 2 voxels along each axis, got {disp.shape[:3]}")
    n_t = disp.shape[3]
    n = int(mask.sum())
    u = np.empty((n, n_t, d))
    F = np.empty((n, n_t, d, d))
    m2 = mask[:, :, 0] if d == 2 else mask
    for t in range(n_t):
        frame = disp[:, :, :, t, :]
        u[:, t] = frame[:, :, 0, :d][m2] if d == 2 else frame[..., :d][m2]
        J = displacement_gradient_grid(frame, sp, mask if inside_only else None)
        F[:, t] = J[m2] + np.eye(d)
    return u, F


def jacobian_determinant_grid(disp: np.ndarray, spacing: Iterable[float] | np.ndarray) -> np.ndarray:
    """Determinant of the deformation gradient ``det(I + du/dX)`` on the grid.

    Derivatives are central finite differences in mm (``np.gradient`` with the spacing; one-sided
    at the array border; :func:`displacement_gradient_grid`). A single slice (``Z == 1``) is 2D:
    the in-plane 2 x 2 determinant in closed form, the k component of ``u`` ignored. ``det <= 0``
    marks folding; ``det < 1`` compression.

    Args:
        disp: ``(X, Y, Z, 3)`` displacement of one frame, mm along the array axes.
        spacing: ``(3,)`` voxel size, mm.

    Returns:
        ``(X, Y, Z)`` float64 determinant (dimensionless).
    """
    disp = np.asarray(disp, dtype=np.float64)
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise InputError(f"displacement must be (X, Y, Z, 3), got shape {disp.shape}")
    sp = as_spacing(spacing)
    shape = disp.shape[:3]
    dims = spatial_dim(shape)
    if any(n < 2 for n in shape[:dims]):
        raise InputError(f"Jacobian needs at least 2 voxels along each spatial axis, got {shape}")
    J = displacement_gradient_grid(disp, sp)
    if dims == 2:
        # F[..., c, a] = d u_c / d X_a + delta
        a, b = 1.0 + J[..., 0, 0], J[..., 0, 1]
        c, d = J[..., 1, 0], 1.0 + J[..., 1, 1]
        return (a * d - b * c)[:, :, None]
    J += np.eye(3)  # J is this call's own array: F in place, no second volume of 3 x 3s
    return det_f(J)


def det_f(F: np.ndarray) -> np.ndarray:
    """``det F`` of deformation gradients ``(..., D, D)`` -> ``(...)``.

    Dimensionless: the local volume (3D) or area (2D) ratio; ``<= 0`` marks folding. 2 x 2 and
    3 x 3 in closed form (cofactor expansion: about 3x faster than LAPACK's batched LU on a
    volume's worth of matrices, and equal to it within 1e-14 for deformation gradients); any
    other ``D`` by LU.
    """
    F = np.asarray(F)
    if F.shape[-2:] == (2, 2):
        return F[..., 0, 0] * F[..., 1, 1] - F[..., 0, 1] * F[..., 1, 0]
    if F.shape[-2:] == (3, 3):
        return (F[..., 0, 0] * (F[..., 1, 1] * F[..., 2, 2] - F[..., 1, 2] * F[..., 2, 1])
                - F[..., 0, 1] * (F[..., 1, 0] * F[..., 2, 2] - F[..., 1, 2] * F[..., 2, 0])
                + F[..., 0, 2] * (F[..., 1, 0] * F[..., 2, 1] - F[..., 1, 1] * F[..., 2, 0]))
    return np.linalg.det(F)


# ---------------------------------------------------------------------------------------------
# Folding of a displacement sequence, and regions around labels
# ---------------------------------------------------------------------------------------------


def check_displacement(disp: np.ndarray, what: str) -> np.ndarray:
    """``disp`` as an array, refused unless it is ``(X, Y, Z, T, 3)`` (``what`` names it in the error)."""
    disp = np.asarray(disp)
    if disp.ndim != 5 or disp.shape[-1] != 3:
        raise InputError(f"{what} must be (X, Y, Z, T, 3), got shape {disp.shape}")
    return disp


def frame_list(frames: Iterable[int] | None, n_frames: int) -> list[int]:
    """Frames as indices in ``[0, n_frames)`` (negative count from the end); ``None``: all frames."""
    if frames is None:
        return list(range(n_frames))
    out = []
    for t in frames:
        if not -n_frames <= int(t) < n_frames:
            raise InputError(f"frame {t} is out of range for {n_frames} frames")
        out.append(int(t) % n_frames)
    return out


def mask_over_frames(mask: np.ndarray | None, shape4: tuple[int, ...], frames: list[int]) -> np.ndarray | None:
    """A region mask ``(X, Y, Z)`` (same region every frame) or ``(X, Y, Z, T)`` as ``(X, Y, Z, len(frames))``."""
    if mask is None:
        return None
    mask = np.asarray(mask).astype(bool)
    if mask.shape == tuple(shape4[:3]):
        return np.broadcast_to(mask[..., None], tuple(shape4[:3]) + (len(frames),))
    if mask.shape == tuple(shape4):
        return mask[..., frames]
    raise InputError(f"mask has shape {mask.shape}, expected {tuple(shape4[:3])} or {tuple(shape4)}")


def folding_stats(
    disp: np.ndarray,
    spacing: Iterable[float] | np.ndarray,
    mask: np.ndarray | None = None,
    frames: Iterable[int] | None = None,
) -> dict[str, Any]:
    """How much of a displacement sequence folds (``det(I + du/dX) <= 0``).

    Args:
        disp: ``(X, Y, Z, T, 3)`` mm.
        spacing: ``(3,)`` mm.
        mask: region ``(X, Y, Z)`` (same every frame, e.g. a dilated heart mask) or
            ``(X, Y, Z, T)``; default the whole grid.
        frames: frames to include (default all).

    Returns:
        ``{"n_voxels": voxels x frames counted, "percent_folded": % with det <= 0 over all
        included frames, "min_det", "per_frame_percent": [...], "per_frame_min_det": [...],
        "frames": [...]}``. ``min_det`` is ``NaN`` for an empty region.
    """
    return folding_stats_regions(disp, spacing, {"": mask}, frames)[""]


def folding_stats_regions(
    disp: np.ndarray,
    spacing: Iterable[float] | np.ndarray,
    regions: Mapping[str, np.ndarray | None],
    frames: Iterable[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`folding_stats` of several regions at once (``{name: mask or None}``), computing
    each frame's ``det F`` once for all of them (a fit reports the whole grid and the heart)."""
    disp = check_displacement(disp, "displacement")
    fr = frame_list(frames, disp.shape[3])
    masks = {name: mask_over_frames(m, disp.shape[:4], fr) for name, m in regions.items()}
    acc = {name: {"folded": 0, "total": 0, "pct": [], "min": []} for name in regions}
    for n, t in enumerate(fr):
        det_all = jacobian_determinant_grid(disp[:, :, :, t, :], spacing)
        for name, m in masks.items():
            det = det_all[m[..., n]] if m is not None else det_all.reshape(-1)
            k = int(np.count_nonzero(det <= 0))
            a = acc[name]
            a["folded"] += k
            a["total"] += det.size
            a["pct"].append(100.0 * k / det.size if det.size else _NAN)
            a["min"].append(float(det.min()) if det.size else _NAN)
    out = {}
    for name, a in acc.items():
        finite_min = [v for v in a["min"] if math.isfinite(v)]
        out[name] = {
            "n_voxels": int(a["total"]),
            "percent_folded": 100.0 * a["folded"] / a["total"] if a["total"] else _NAN,
            "min_det": float(min(finite_min)) if finite_min else _NAN,
            "per_frame_percent": a["pct"],
            "per_frame_min_det": a["min"],
            "frames": fr,
        }
    return out


def within_margin(mask: np.ndarray, spacing: Iterable[float] | np.ndarray, margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (physical distance) of a region; ``(X, Y, Z)`` bool.

    The region is grown by the Euclidean distance in mm (the voxel size honoured), so the margin
    is round whatever the voxels' shape; a single slice (``Z == 1``) is grown in-plane only."""
    heart = np.asarray(mask, dtype=bool)
    sp = as_spacing(spacing)
    if not heart.any() or margin_mm <= 0:
        return heart
    if spatial_dim(heart.shape) == 2:
        dist = ndimage.distance_transform_edt(~heart[:, :, 0], sampling=sp[:2])[:, :, None]
    else:
        dist = ndimage.distance_transform_edt(~heart, sampling=sp)
    return dist <= margin_mm


