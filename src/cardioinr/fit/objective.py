"""The objective of a per-sequence fit: similarity of the reference frame to every frame
pulled back by the field, plus regularisers.

Points X are sampled in the *reference* frame (uniform + near image edges + inside the heart
when reference labels exist), the field is evaluated once for all frames (the time basis is
separable), all frames are sampled, and the regularisers are computed exactly by forward-mode
autodiff on a point subset.
"""

from __future__ import annotations

import numpy as np
import torch

from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import MotionField
from cardioinr.fit.losses import (
    det_f_from_grad_u,
    folding_loss,
    gradient_smoothness_loss,
    label_overlap_loss,
    lncc_loss,
    mse_loss,
    ncc_loss,
    temporal_smoothness_loss,
    volume_change_loss,
)
from cardioinr.fit.preprocess import blur_inplane, heart_mask, normalise_intensity, rv_free_wall, sampling_weights
from cardioinr.fit.warp import sample, sample_frames
from cardioinr.io import Sequence


def _wall_partners(labels: np.ndarray, lv: int, myo: int, spacing: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """``(X, Y, Z, 2)`` in-plane mm of the nearest myocardial voxel of the same slice for every
    LV cavity voxel (NaN elsewhere), or None without a cavity next to a wall."""
    from scipy.ndimage import distance_transform_edt

    out = np.full(labels.shape + (2,), np.nan, np.float32)
    for k in range(labels.shape[2]):
        cav, wall = labels[:, :, k] == lv, labels[:, :, k] == myo
        if not (cav.any() and wall.any()):
            continue
        _, (ii, jj) = distance_transform_edt(~wall, sampling=spacing[:2], return_indices=True)
        out[:, :, k, 0] = np.where(cav, ii * spacing[0], np.nan)
        out[:, :, k, 1] = np.where(cav, jj * spacing[1], np.nan)
    if np.isnan(out[..., 0]).all():
        return None
    return torch.from_numpy(out).to(device)


class Objective:
    """The loss a fit minimises on one sequence, with that sequence's data on the device.

    Built once per sequence (normalised and blurred frames, sampling weights, label one-hots),
    then :meth:`loss` gives the loss of one step of any field bound to the sequence's frame:
    the fitter optimises it for one field, and prior training (:mod:`cardioinr.priors`) sums
    it over a cohort of sequences for shared weights.

    Attributes:
        seq, cfg, device: the sequence, the fit settings and the device.
        dim: spatial dimension D of the sequence (2 or 3).
        levels: one ``(T, X, Y, Z)`` tensor of frames per blur level, coarse to fine.
        n_levels: number of blur levels (the finest is ``n_levels - 1``).
    """

    def __init__(self, seq: Sequence, cfg: FitConfig, device: torch.device) -> None:
        self.seq, self.cfg, self.device = seq, cfg, device
        self.dim = seq.ndim_space
        self.spacing = torch.as_tensor(seq.spacing, dtype=torch.float32, device=device)
        img = normalise_intensity(seq.image)
        self.levels = []
        for s in cfg.blur_px:
            lvl = torch.from_numpy(np.ascontiguousarray(blur_inplane(img, s).transpose(3, 0, 1, 2))).to(device)
            self.levels.append(lvl)  # (T, X, Y, Z)
        self.n_levels = len(self.levels)
        self.others = torch.tensor([t for t in range(seq.n_frames) if t != seq.ref_frame], device=device)
        mask = heart_mask(seq)
        self.weights = torch.from_numpy(sampling_weights(img[..., seq.ref_frame], mask, cfg)).to(device)
        self.shape = seq.shape
        self.stride = torch.tensor([seq.shape[1] * seq.shape[2], seq.shape[2], 1], device=device)
        # Through-plane, data exist only at slice centres: similarity points stay on slices when
        # slices are thick; regulariser points fill the gaps.
        self.jitter_z_similarity = self.dim == 3 and seq.spacing[2] <= 2.0 * seq.spacing[:2].max()
        self.myo = None
        self.partner = None
        self.onehot = None
        if seq.ref_labels is not None:
            lm = seq.label_map
            codes = sorted(lm.codes())
            ref = torch.from_numpy(seq.ref_labels.astype(np.int64)).to(device)
            if lm.myo is not None and (seq.ref_labels == lm.myo).any():
                self.myo = (ref == lm.myo).float().unsqueeze(0)  # (1, X, Y, Z)
                # the RV's muscle is as incompressible as the LV's; labels leave it out
                wall = rv_free_wall(seq, cfg.rv_wall_mm)
                if wall is not None:
                    self.myo = torch.maximum(self.myo, torch.from_numpy(wall).float().to(device).unsqueeze(0))
            if self.dim == 3 and cfg.w_cavity_follow > 0 and lm.lv is not None and lm.myo is not None:
                self.partner = _wall_partners(seq.ref_labels, lm.lv, lm.myo, seq.spacing, device)
            extra = [t for t in seq.labels if t != seq.ref_frame]
            if cfg.w_labels > 0 and extra:
                self.label_frames = torch.tensor(extra, device=device)
                oh = []
                for t in extra:
                    lab = torch.from_numpy(seq.labels[t].astype(np.int64)).to(device)
                    oh.append(torch.stack([(lab == c).float() for c in codes]))
                self.onehot_frames = torch.stack(oh)  # (F, C, X, Y, Z)
                self.onehot_ref = torch.stack([(ref == c).float() for c in codes])
                self.onehot = True
        if cfg.similarity == "lncc":
            p = cfg.patch
            r = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2
            off = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2) * self.spacing[:2]
            if self.dim == 3:
                off = torch.cat([off, torch.zeros(off.shape[0], 1, device=device)], 1)
            self.patch_offsets = off  # (P, D)

    def level_at(self, frac: float) -> int:
        """The blur level in force at fraction ``frac`` in [0, 1] of the steps."""
        for i, until in enumerate(self.cfg.blur_until):
            if frac < until:
                return i
        return self.n_levels - 1

    def sample_shifted(self, frames: torch.Tensor, pts: torch.Tensor, slice_shift: torch.Tensor) -> torch.Tensor:
        """Frames ``(T', X, Y, Z)`` of a misaligned stack sampled at anatomical points ``(T', N, 3)``
        mm: each of the two slices around a point is read through its own offset (``(Z, 2)`` mm;
        the anatomy at ``y`` is at ``y + s`` in the slice) and the two are blended linearly in k,
        as trilinear sampling blends aligned slices. Returns ``(T', N)``."""
        nz = self.shape[2]
        k = (pts[..., 2] / self.spacing[2]).clamp(0, nz - 1)
        k0 = k.floor().long().clamp(max=nz - 1)
        k1 = (k0 + 1).clamp(max=nz - 1)
        w = k - k0.to(k.dtype)
        out = 0
        for kk, wk in ((k0, 1 - w), (k1, w)):
            p = torch.cat([pts[..., :2] + slice_shift[kk], (kk.to(pts.dtype) * self.spacing[2]).unsqueeze(-1)], -1)
            out = out + wk * sample_frames(frames, p, self.spacing)
        return out

    def sample_points(self, n: int, gen: torch.Generator, jitter_z: bool) -> torch.Tensor:
        """``(n, D)`` reference points in mm, drawn from the sampling weights, jittered in-voxel."""
        idx = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=gen).to(self.device)
        ijk = torch.stack([idx // self.stride[0], (idx // self.stride[1]) % self.shape[1], idx % self.shape[2]], -1).float()
        jit = torch.rand(n, 3, generator=gen).to(self.device) - 0.5
        if not jitter_z:
            jit[:, 2] = 0
        pts = (ijk + jit) * self.spacing
        hi = (torch.tensor(self.shape, device=self.device) - 1) * self.spacing
        pts = torch.minimum(pts.clamp(min=0), hi)
        return pts[:, : self.dim]

    def loss(self, field_: MotionField, level: int, gen: torch.Generator,
             latent: torch.Tensor | None = None, slice_shift: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Total loss of one step and its terms (floats); ``latent`` for modulated fields.

        ``slice_shift``: ``(Z, 2)`` mm in-plane offsets of the slices of a misaligned stack (the
        anatomy at ``y`` is read at ``y + s``; see :mod:`cardioinr.fit.multiview`), or None."""
        cfg = self.cfg
        frames = self.levels[level]
        ref_t = self.seq.ref_frame
        if cfg.similarity == "lncc":
            m = max(1, cfg.points // self.patch_offsets.shape[0])
            centres = self.sample_points(m, gen, self.jitter_z_similarity)
            x = (centres.unsqueeze(1) + self.patch_offsets.unsqueeze(0)).reshape(-1, self.dim)
        else:
            x = self.sample_points(cfg.points, gen, self.jitter_z_similarity)
        coeffs = field_.coefficients(x, latent)
        basis = field_.basis()[self.others]  # (T-1, 2K)
        u = torch.einsum("nkd,tk->tnd", coeffs, basis)  # (T-1, N, D)
        if slice_shift is not None:
            fixed = self.sample_shifted(frames[ref_t].unsqueeze(0), x.unsqueeze(0), slice_shift)  # (1, N)
            moving = self.sample_shifted(frames[self.others], x.unsqueeze(0) + u, slice_shift)  # (T-1, N)
        else:
            fixed = sample(frames[ref_t].unsqueeze(0), x, self.spacing).t()  # (1, N)
            moving = sample_frames(frames[self.others], x.unsqueeze(0) + u, self.spacing)  # (T-1, N)
        if cfg.similarity == "ncc":
            sim = ncc_loss(fixed.t(), moving.t())
        elif cfg.similarity == "mse":
            sim = mse_loss(fixed.t(), moving.t())
        else:
            p = self.patch_offsets.shape[0]
            sim = lncc_loss(fixed.t().reshape(-1, p, 1), moving.t().reshape(-1, p, moving.shape[0]))
        total = sim
        logs = {"sim": sim.item()}
        if cfg.w_temporal > 0:
            tem = temporal_smoothness_loss(coeffs)
            total = total + cfg.w_temporal * tem
            logs["temporal"] = tem.item()
        if cfg.reg_points > 0 and (cfg.w_smooth > 0 or cfg.w_fold > 0 or cfg.w_incompress > 0):
            xr = self.sample_points(cfg.reg_points, gen, jitter_z=True)
            coeffs_r, jac_c = field_.coefficients_and_jacobian(xr, latent)
            jac = torch.einsum("nkij,tk->ntij", jac_c, basis)  # (M, T-1, D, D)
            det = det_f_from_grad_u(jac)
            if cfg.w_smooth > 0:
                sm = gradient_smoothness_loss(jac)
                total = total + cfg.w_smooth * sm
                logs["smooth"] = sm.item()
            if cfg.w_fold > 0:
                fo = folding_loss(det)
                total = total + cfg.w_fold * fo
                logs["fold"] = fo.item()
            if cfg.w_incompress > 0 and self.myo is not None:
                w = sample(self.myo, xr, self.spacing, mode="nearest")  # (M, 1)
                inc = volume_change_loss(det, w)
                total = total + cfg.w_incompress * inc
                logs["incompress"] = inc.item()
            if self.partner is not None:
                # Blood is featureless, and the atrium that descends into a basal slice looks
                # like the LV blood it replaces: on thick slices the similarity lets the cavity
                # lag its wall's descent, and the carried labels keep LV where the base has
                # left (docs/groups.md). At each cavity point the motion along k is pulled
                # toward that of the nearest wall point of its slice, held fixed so the blood
                # cannot drag the wall.
                ijk = torch.round(xr / self.spacing[: self.dim]).long()
                for a in range(3):
                    ijk[:, a] = ijk[:, a].clamp(0, self.shape[a] - 1)
                part = self.partner[ijk[:, 0], ijk[:, 1], ijk[:, 2]]  # (M, 2) mm, NaN outside the cavity
                inside = torch.isfinite(part[:, 0])
                if bool(inside.any()):
                    xc = xr[inside]
                    xw = torch.cat([part[inside], xc[:, 2:]], 1)
                    with torch.no_grad():
                        uw = torch.einsum("nkd,tk->tnd", field_.coefficients(xw, latent), basis)[..., 2]
                    uc = torch.einsum("nkd,tk->tnd", coeffs_r[inside], basis)[..., 2]
                    fol = (uc - uw).pow(2).mean()
                    total = total + cfg.w_cavity_follow * fol
                    logs["cavity_follow"] = fol.item()
            logs["min_det"] = det.min().item()
        if self.onehot is not None and cfg.w_labels > 0:
            lab_u = torch.einsum("nkd,tk->tnd", coeffs, field_.basis()[self.label_frames])
            ref_oh = sample(self.onehot_ref, x, self.spacing).unsqueeze(0).expand(len(self.label_frames), -1, -1)
            mov_oh = torch.stack([
                sample(self.onehot_frames[i], x + lab_u[i], self.spacing) for i in range(len(self.label_frames))
            ])  # (F, N, C)
            lab = label_overlap_loss(ref_oh.permute(1, 0, 2), mov_oh.permute(1, 0, 2))
            total = total + cfg.w_labels * lab
            logs["labels"] = lab.item()
        logs["loss"] = total.item()
        return total, logs


__all__ = ["Objective"]
