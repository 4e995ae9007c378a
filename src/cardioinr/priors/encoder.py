"""The amortised encoder: a small CNN that predicts a field's latent code from the images,
and the heart-centred image stack it reads (trained by :mod:`cardioinr.priors.amortised`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from cardioinr.fit.preprocess import normalise_intensity
from cardioinr.fit.warp import sample
from cardioinr.io import Sequence


class CodeEncoder(nn.Module):
    """Small CNN: heart-centred image phases ``(B, C, S, S)`` -> latent code ``(B, L)``."""

    def __init__(self, in_channels: int, latent_dim: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, 2 * width), nn.SiLU(),
            nn.Linear(2 * width, latent_dim),
        )
        self.in_channels, self.latent_dim, self.width = in_channels, latent_dim, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def encoder_input(seq: Sequence, centre: np.ndarray, scale: float, size: int, phases: int,
                  reflect: np.ndarray | None = None) -> torch.Tensor:
    """Heart-centred, phase-resampled image stack for the encoder, ``(C, size, size)``.

    The in-plane window spans the normalised frame [-1, 1] (so it is the same anatomy for
    every patient); time is resampled to ``phases`` phases of the cycle starting at the
    reference frame; channels are the reference image then each phase minus the reference
    (the motion lives in the differences). 3D stacks contribute three slices about the centre.
    ``reflect`` mirrors the window as the field's normalised frame is
    (:func:`~cardioinr.fit.preprocess.frame_reflection`).
    """
    rf = np.ones(seq.ndim_space) if reflect is None else np.asarray(reflect, dtype=np.float64)
    img = torch.from_numpy(normalise_intensity(seq.image))  # (X, Y, Z, T)
    sp = torch.as_tensor(seq.spacing, dtype=torch.float32)
    r = torch.linspace(-1.0, 1.0, size) * float(scale)
    gx, gy = torch.meshgrid(r * float(rf[0]) + float(centre[0]), r * float(rf[1]) + float(centre[1]), indexing="ij")
    if seq.is_2d:
        z_offsets = [0.0]
    else:
        z_offsets = [-0.25 * float(scale) * float(rf[2]), 0.0, 0.25 * float(scale) * float(rf[2])]
    t = (seq.ref_frame + torch.arange(phases) * seq.n_frames / phases) % seq.n_frames
    t0 = torch.floor(t).long()
    w = (t - t0).float()
    t1 = (t0 + 1) % seq.n_frames
    frames = img.permute(3, 0, 1, 2)  # (T, X, Y, Z)
    chans = []
    for dz in z_offsets:
        if seq.is_2d:
            pts = torch.stack([gx, gy], -1).reshape(-1, 2)
        else:
            zc = float(centre[2]) + dz
            pts = torch.stack([gx, gy, torch.full_like(gx, zc)], -1).reshape(-1, 3)
        vals = sample(frames, pts, sp).t().reshape(seq.n_frames, size, size)  # (T, S, S)
        ph = vals[t0] * (1 - w)[:, None, None] + vals[t1] * w[:, None, None]
        chans.append(torch.cat([ph[:1], ph[1:] - ph[:1]], 0))
    return torch.cat(chans, 0)


__all__ = ["CodeEncoder", "encoder_input"]
