"""Similarity and regularisation terms, as pure functions on sampled points.

Shapes: N sampled points, T frames, D spatial dimensions. Intensities are normalised to
about [0, 1]; gradients ``J = du/dx`` are dimensionless (mm per mm).
"""

from __future__ import annotations

import torch

SIMILARITIES = ("ncc", "lncc", "mse")


def ncc_loss(fixed: torch.Tensor, moving: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - normalised cross-correlation over points, averaged over frames.

    Args:
        fixed: ``(N, T)`` reference intensities at the sampled points (broadcastable).
        moving: ``(N, T)`` frame-t intensities at the displaced points.
    """
    f = fixed - fixed.mean(0, keepdim=True)
    m = moving - moving.mean(0, keepdim=True)
    num = (f * m).mean(0)
    den = torch.sqrt((f * f).mean(0) * (m * m).mean(0) + eps)
    return 1.0 - (num / den).mean()


def lncc_loss(fixed: torch.Tensor, moving: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - local NCC: NCC within each sampled patch, averaged over patches and frames.

    Args:
        fixed: ``(M, P, T)`` reference intensities, M patches of P points each.
        moving: ``(M, P, T)`` frame-t intensities at the displaced patch points.
    """
    f = fixed - fixed.mean(1, keepdim=True)
    m = moving - moving.mean(1, keepdim=True)
    num = (f * m).mean(1)
    den = torch.sqrt((f * f).mean(1) * (m * m).mean(1) + eps)
    return 1.0 - (num / den).mean()


def mse_loss(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Mean squared intensity difference, ``(N, T)`` inputs."""
    return (fixed - moving).pow(2).mean()


def f_from_grad_u(jac_u: torch.Tensor) -> torch.Tensor:
    """F = I + du/dx from a batch of displacement Jacobians, ``(..., D, D)``."""
    d = jac_u.shape[-1]
    return jac_u + torch.eye(d, dtype=jac_u.dtype, device=jac_u.device)


def det_f_from_grad_u(jac_u: torch.Tensor) -> torch.Tensor:
    """det(I + du/dx) from a batch of displacement Jacobians, ``(..., D, D)`` -> ``(...)``;
    closed forms for D = 2, 3 (faster and better conditioned for autograd than a generic LU).

    The differentiable counterpart, in torch, of :mod:`cardioinr.geometry.kinematics` (which owns
    ``F`` and ``det F`` of fields and grids in NumPy); it stays here as part of the objective."""
    f = f_from_grad_u(jac_u)
    if f.shape[-1] == 2:
        return f[..., 0, 0] * f[..., 1, 1] - f[..., 0, 1] * f[..., 1, 0]
    return (
        f[..., 0, 0] * (f[..., 1, 1] * f[..., 2, 2] - f[..., 1, 2] * f[..., 2, 1])
        - f[..., 0, 1] * (f[..., 1, 0] * f[..., 2, 2] - f[..., 1, 2] * f[..., 2, 0])
        + f[..., 0, 2] * (f[..., 1, 0] * f[..., 2, 1] - f[..., 1, 1] * f[..., 2, 0])
    )


def folding_loss(det: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Penalise determinants below ``margin`` (folds have det <= 0): mean relu(margin - det)^2."""
    return torch.relu(margin - det).pow(2).mean()


def volume_change_loss(det: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Near-incompressibility: mean log(det)^2, optionally weighted (e.g. a myocardium mask).
    log keeps compression and expansion symmetric; det is clamped so folds stay finite (the
    folding term handles them)."""
    val = torch.log(det.clamp(min=1e-3)).pow(2)
    if weight is None:
        return val.mean()
    w = weight.expand_as(val)
    return (val * w).sum() / w.sum().clamp(min=1.0)


def gradient_smoothness_loss(jac_u: torch.Tensor) -> torch.Tensor:
    """Diffusion regulariser: mean squared Frobenius norm of du/dx."""
    return jac_u.pow(2).sum((-2, -1)).mean()


def temporal_smoothness_loss(coeffs: torch.Tensor, unit_frames: float = 20.0) -> torch.Tensor:
    """Mean squared acceleration over the cycle, (mm / unit^2)^2, from the Fourier coefficients,
    where the time unit is ``1 / unit_frames`` of the cardiac cycle.

    Time is measured in fractions of the cycle, not in frames, so that the same motion costs the
    same whatever the temporal resolution: a cine with half the frames is not smoothed 16 times
    harder (per frame, acceleration scales with the frame interval squared). The default unit is
    a twentieth of the cycle, one frame of a typical 20-phase cine.

    For ``u(s) = sum_k (a_k sin(k phi) + b_k (1 - cos(k phi))) / k`` with phi = 2 pi s / S
    (S = ``unit_frames``), ``<|d2u/ds2|^2>_s = sum_k (2 pi / S)^4 k^2 (|a_k|^2 + |b_k|^2) / 2``
    exactly (Parseval).

    Args:
        coeffs: ``(N, 2K, D)`` in mm (as returned by ``MotionField.coefficients``).
        unit_frames: time units per cycle.
    """
    k2 = coeffs.shape[1] // 2
    k = torch.arange(1, k2 + 1, dtype=coeffs.dtype, device=coeffs.device).repeat(2)
    w = (2 * torch.pi / unit_frames) ** 4 * k.pow(2) / 2
    return (coeffs.pow(2).sum(-1) * w).sum(-1).mean()


def label_overlap_loss(fixed_onehot: torch.Tensor, moving_onehot: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice between the reference labels and frame-t labels pulled to the reference,
    ``(N, T, C)`` one-hot (or soft) inputs, averaged over classes and frames."""
    inter = (fixed_onehot * moving_onehot).sum(0)
    den = fixed_onehot.sum(0) + moving_onehot.sum(0)
    return 1.0 - (2 * inter / den.clamp(min=1e-6)).mean()
