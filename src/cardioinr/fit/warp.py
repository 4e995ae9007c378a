"""Pure functions for sampling images and label maps at physical points, and for carrying
labels with a displacement field.

Arrays follow the package layout: volumes ``(X, Y, Z)`` (array axes i, j, k), points and
displacements in array-aligned millimetres ``p = index * spacing`` (see :mod:`cardioinr.io`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cardioinr.geometry.grid import spatial_dim, voxel_grid_mm_torch
from cardioinr.geometry.kinematics import displacement_gradient_grid


def to_sampling_layout(volume: torch.Tensor) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> the ``(1, C, Z, Y, X)`` layout that :func:`torch.nn.functional.grid_sample` wants."""
    return volume.permute(0, 3, 2, 1).unsqueeze(0).contiguous()


def mm_to_grid(points_mm: torch.Tensor, shape: tuple[int, ...], spacing: torch.Tensor) -> torch.Tensor:
    """Map mm points ``(..., D)`` to grid_sample's ``[-1, 1]`` (align_corners=True) coordinates.

    Axes of size 1 map to 0 (the only slice)."""
    size = torch.as_tensor(shape[: points_mm.shape[-1]], dtype=points_mm.dtype, device=points_mm.device)
    extent = (size - 1).clamp(min=1) * spacing[: points_mm.shape[-1]].to(points_mm)
    g = 2.0 * points_mm / extent - 1.0
    return torch.where(size > 1, g, torch.zeros_like(g))


def sample(
    volume: torch.Tensor,
    points_mm: torch.Tensor,
    spacing: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Sample ``volume`` at mm points (linear interpolation, border padding).

    Args:
        volume: ``(C, X, Y, Z)`` channels of one 3D volume (Z may be 1).
        points_mm: ``(N, D)`` with D = 2 (in-plane, Z must be 1) or 3, array-aligned mm.
        spacing: ``(3,)`` voxel size in mm.

    Returns:
        ``(N, C)`` sampled values.
    """
    c, nx, ny, nz = volume.shape
    if points_mm.ndim != 2 or points_mm.shape[-1] not in (2, 3):
        raise ValueError(f"points must be (N, 2|3), got {tuple(points_mm.shape)}")
    if points_mm.shape[-1] == 2 or nz == 1:
        img = volume[..., 0].permute(0, 2, 1).unsqueeze(0)  # (1, C, Y, X)
        g = mm_to_grid(points_mm[:, :2], (nx, ny), spacing).view(1, 1, -1, 2)
        out = F.grid_sample(img, g, mode=mode, padding_mode=padding_mode, align_corners=True)
        return out.view(c, -1).t()
    g = mm_to_grid(points_mm, (nx, ny, nz), spacing).view(1, 1, 1, -1, 3)
    out = F.grid_sample(to_sampling_layout(volume), g, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out.view(c, -1).t()


def invert_displacement(u: torch.Tensor, spacing: torch.Tensor, iterations: int = 40, tol_mm: float = 1e-4,
                        where: torch.Tensor | None = None, fixed_point_steps: int = 10) -> torch.Tensor:
    """Invert a dense displacement field: fixed-point steps, then Newton's method for the
    points they leave unsettled.

    Given ``u`` with ``x = X + u(X)``, returns ``v`` on the same grid with ``X = x + v(x)``,
    i.e. the root of ``r(v) = v + u(x + v)``. The fixed point ``v <- -u(x + v)`` is cheap (three
    channels sampled per step) and settles most points within ten steps, but converges only
    where its slope, ``grad u``, is below 1 in norm: a strongly contracting ventricle breaks
    that at end-systole (next to the endocardium the wall is stretched radially ``1 /
    sqrt(keep)`` times when the cavity keeps ``keep`` of its cross-section: 2.9-3.5 for 8-12 %),
    and so does a rough field; there it left points 2-3 mm off (tests/fit/test_warp.py). The
    points still moving after ``fixed_point_steps`` therefore take Newton steps, solving
    ``(I + grad u) dv = -r`` with ``grad u`` interpolated at ``x + v``, which converge wherever
    the map is one-to-one (det F > 0). Where det F is near zero (folding, outside the heart at
    worst) a point keeps taking fixed-point steps, and every Newton step is capped at two voxels
    so that a poor linearisation cannot throw a point across the image.

    The iteration is pointwise, so a point stops once its update is below ``tol_mm`` and only
    the points still moving are sampled; ``where`` restricts the work to a region without
    changing any value in it.

    Args:
        u: ``(X, Y, Z, 3)`` displacement in mm along the array axes.
        spacing: ``(3,)`` mm.
        iterations: at most this many updates per point (both kinds together).
        tol_mm: a point whose update is below this (mm, largest component) is done.
        where: optional ``(X, Y, Z)`` bool mask of the points wanted; ``v`` is 0 elsewhere.
        fixed_point_steps: fixed-point updates before the unsettled points switch to Newton.

    Returns:
        ``(X, Y, Z, 3)`` inverse displacement in mm.
    """
    shape = tuple(u.shape[:3])
    dims = spatial_dim(shape)
    grid = voxel_grid_mm_torch(shape, spacing, u.dtype, u.device).reshape(-1, 3)
    field = u.permute(3, 0, 1, 2)  # (3, X, Y, Z) channels for sampling
    v = -u.reshape(-1, 3).clone()
    idx = torch.arange(grid.shape[0], device=u.device) if where is None else torch.nonzero(where.reshape(-1))[:, 0]
    n_fixed = min(fixed_point_steps, iterations)
    for _ in range(n_fixed):
        if idx.numel() == 0:
            break
        new = -sample(field, (grid[idx] + v[idx])[:, :dims], spacing)
        moving = (new - v[idx]).abs().amax(dim=1) >= tol_mm
        v[idx] = new
        idx = idx[moving]
    if idx.numel() > 0 and iterations > n_fixed:
        # u and its gradient as 12 channels, sampled together at each Newton step
        # (the one implementation of grid differences, geometry.kinematics; a single slice gives
        # its 2 x 2 in-plane block, the rest stays 0)
        grad = torch.zeros(*shape, 3, 3, dtype=u.dtype, device=u.device)
        j = torch.from_numpy(displacement_gradient_grid(u.detach().cpu().numpy(), np.asarray(torch.as_tensor(spacing).cpu())))
        grad[..., :dims, :dims] = j.reshape(*shape, dims, dims).to(grad)
        channels = torch.cat([u, grad.reshape(*shape, 9)], -1).permute(3, 0, 1, 2)
        eye = torch.eye(3, dtype=u.dtype, device=u.device)
        cap = 2.0 * float(torch.as_tensor(spacing)[:dims].max())
        for _ in range(iterations - n_fixed):
            if idx.numel() == 0:
                break
            s = sample(channels, (grid[idx] + v[idx])[:, :dims], spacing)
            r = v[idx] + s[:, :3]
            jac = eye + s[:, 3:].reshape(-1, 3, 3)
            if dims == 2:  # nothing moves or varies through a single slice
                jac[:, 2, :2] = 0.0
                jac[:, :2, 2] = 0.0
                jac[:, 2, 2] = 1.0
            ok = torch.linalg.det(jac) > 0.05
            step = r.clone()  # the fixed-point step where the Jacobian cannot be trusted
            if ok.any():
                step[ok] = torch.linalg.solve(jac[ok], r[ok].unsqueeze(-1)).squeeze(-1)
            size = step.abs().amax(dim=1)
            step = step * torch.clamp(cap / size.clamp(min=1e-12), max=1.0).unsqueeze(1)
            v[idx] = v[idx] - step
            idx = idx[size >= tol_mm]
    if where is not None:
        v[~where.reshape(-1)] = 0.0
    return v.reshape(*shape, 3)


def pullback_region(labels_ref: np.ndarray, u: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` bool: the grid points whose pulled-back label may be a structure.

    A point ``x`` takes the reference label at ``x + v(x)``, with ``|v(x)| = |u(X)| <= max|u|``;
    so every point farther than ``max|u|`` (plus two voxels for the interpolation of the
    carried scores) from the labelled box along each axis is background, whatever ``v`` is.
    """
    heart = np.argwhere(labels_ref != 0)
    region = np.zeros(labels_ref.shape, dtype=bool)
    if heart.size == 0:
        return region
    sp = np.asarray(spacing, dtype=np.float64)
    reach = float(np.abs(u).max()) + 2.0 * sp.max()
    pad = np.ceil(reach / sp).astype(int)
    lo = np.maximum(heart.min(0) - pad, 0)
    hi = np.minimum(heart.max(0) + pad + 1, labels_ref.shape)
    region[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return region


def structure_distances(labels: np.ndarray, codes: list[int], spacing: np.ndarray, smooth: bool = True) -> np.ndarray:
    """Smoothed negative signed distance (mm) to each structure, ``(K, X, Y, Z)`` for ``[0] + codes``.

    Interpolating signed distances instead of one-hot masks places carried boundaries with
    sub-voxel accuracy (a one-hot map is a step function, so its linear interpolation moves
    boundaries in whole-voxel jumps near thin or small structures). Positive inside.

    The distance of a voxel staircase still zig-zags by up to half a voxel around the smooth
    boundary it samples; a Gaussian of one voxel along the finely sampled axes (thick slices are
    left alone) recovers the smooth boundary. The result is clamped to within 0.49 of the
    smallest voxel size of the raw distance, so every voxel centre keeps its own label: carrying
    with a zero field gives the input back exactly, and thin structures cannot vanish. On the
    2D phantoms (1.6 mm) this raises the Dice of labels carried by the exact motion from
    0.93-0.96 to 0.956-0.977 (minimum over frames and structures). ``smooth=False`` gives the
    raw staircase distance.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    sp = np.asarray(spacing, dtype=np.float64)
    two_d = spatial_dim(labels.shape) == 2
    fine = sp <= 2.0 * sp.min()
    sigma = [1.0 if (smooth and f and n > 1) else 0.0 for f, n in zip(fine, labels.shape)]
    half = 0.5 * sp.min()
    out = []
    for c in codes:
        m = labels == c
        if not m.any():
            out.append(np.full(labels.shape, -1e6, np.float32))
            continue
        if m.all():
            out.append(np.full(labels.shape, 1e6, np.float32))
            continue
        if two_d:
            inside = distance_transform_edt(m[:, :, 0], sampling=sp[:2])[:, :, None]
            outside = distance_transform_edt(~m[:, :, 0], sampling=sp[:2])[:, :, None]
        else:
            inside = distance_transform_edt(m, sampling=sp)
            outside = distance_transform_edt(~m, sampling=sp)
        # Boundary halfway between the last voxel inside and the first outside.
        raw = np.where(m, inside - half, -(outside - half))
        blurred = gaussian_filter(raw, sigma, mode="nearest")
        out.append(np.clip(blurred, raw - 0.98 * half, raw + 0.98 * half).astype(np.float32))
    return np.stack(out)


def warp_labels(scores: torch.Tensor, codes: list[int], inverse: torch.Tensor, spacing: torch.Tensor,
                where: torch.Tensor | None = None) -> torch.Tensor:
    """Pull a label map through an inverse displacement: ``L_t(x) = L_ref(x + v(x))``.

    Args:
        scores: ``(K, X, Y, Z)`` per-structure scores of the reference frame (see
            :func:`structure_distances`), for ``codes`` (background included, first).
        codes: the K label codes, in the order of ``scores``.
        inverse: ``(X, Y, Z, 3)`` inverse displacement (mm), see :func:`invert_displacement`.
        where: optional ``(X, Y, Z)`` bool mask of the points to carry (:func:`pullback_region`);
            the others get ``codes[0]``.

    Returns:
        ``(X, Y, Z)`` uint8 labels: the structure with the highest interpolated score.
    """
    shape = tuple(scores.shape[1:])
    pts = (voxel_grid_mm_torch(shape, spacing, inverse.dtype, inverse.device) + inverse).reshape(-1, 3)
    lut = torch.tensor(codes, dtype=torch.uint8, device=scores.device)
    out = torch.full((pts.shape[0],), int(codes[0]), dtype=torch.uint8, device=scores.device)
    sel = slice(None) if where is None else where.reshape(-1)
    val = sample(scores.to(inverse.dtype), pts[sel][:, :spatial_dim(shape)], spacing, padding_mode="border")  # (N, K)
    out[sel] = lut[val.argmax(dim=1)]
    return out.reshape(shape)


def propagate_labels(
    labels_ref: np.ndarray,
    displacement: np.ndarray,
    spacing: np.ndarray,
    codes: list[int] | None = None,
    iterations: int = 40,
) -> np.ndarray:
    """Carry reference labels to every frame with a Lagrangian displacement field.

    Args:
        labels_ref: ``(X, Y, Z)`` uint8 labels of the reference frame.
        displacement: ``(X, Y, Z, T, 3)`` float mm, ``x_t = X + u[..., t, :]`` (output contract).
        spacing: ``(3,)`` voxel size, mm.
        codes: label codes to carry; default all non-zero codes present.

    Returns:
        ``(X, Y, Z, T)`` uint8 labels of every frame.
    """
    if displacement.ndim != 5 or displacement.shape[-1] != 3 or displacement.shape[:3] != labels_ref.shape:
        raise ValueError(
            f"displacement {displacement.shape} does not match labels {labels_ref.shape} (expected (X, Y, Z, T, 3))"
        )
    if codes is None:
        codes = sorted(int(c) for c in np.unique(labels_ref) if c != 0)
    all_codes = [0] + [int(c) for c in codes if c != 0]
    scores = torch.from_numpy(structure_distances(labels_ref, all_codes, spacing))
    sp = torch.as_tensor(np.asarray(spacing, dtype=np.float64))
    out = np.zeros(displacement.shape[:4], dtype=np.uint8)
    for t in range(displacement.shape[3]):
        u = torch.from_numpy(np.ascontiguousarray(displacement[:, :, :, t, :], dtype=np.float64))
        if not torch.any(u != 0):
            out[..., t] = labels_ref
            continue
        # Only where a structure can land: the rest is background, exactly (pullback_region).
        where = torch.from_numpy(pullback_region(labels_ref, displacement[:, :, :, t, :], spacing))
        v = invert_displacement(u, sp, iterations, where=where)
        out[..., t] = warp_labels(scores, all_codes, v, sp, where=where).numpy()
    return out


def sample_frames(frames: torch.Tensor, points_mm: torch.Tensor, spacing: torch.Tensor) -> torch.Tensor:
    """Sample each frame at its own points (linear, border padding).

    Args:
        frames: ``(T, X, Y, Z)`` intensities.
        points_mm: ``(T, N, D)`` mm points, D = 2 (then Z must be 1) or 3.
        spacing: ``(3,)`` mm.

    Returns:
        ``(T, N)`` values.
    """
    t, nx, ny, nz = frames.shape
    n, d = points_mm.shape[1], points_mm.shape[2]
    if d == 2 or nz == 1:
        img = frames[..., 0].transpose(1, 2).unsqueeze(1)  # (T, 1, Y, X)
        g = mm_to_grid(points_mm[..., :2], (nx, ny), spacing).view(t, 1, n, 2)
        return F.grid_sample(img, g, mode="bilinear", padding_mode="border", align_corners=True).view(t, n)
    vol = frames.permute(0, 3, 2, 1).unsqueeze(1)  # (T, 1, Z, Y, X)
    g = mm_to_grid(points_mm, (nx, ny, nz), spacing).view(t, 1, 1, n, 3)
    return F.grid_sample(vol, g, mode="bilinear", padding_mode="border", align_corners=True).view(t, n)
