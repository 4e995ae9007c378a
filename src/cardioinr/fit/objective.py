"""The objective of a per-sequence fit: similarity of the reference frame to every frame
pulled back by the field, plus regularisers.

Points X are sampled in the *reference* frame (uniform + near image edges + inside the heart
when reference labels exist), the field is evaluated once for all frames (the time basis is
separable), all frames are sampled, and the regularisers are computed exactly by forward-mode
autodiff on a point subset.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from cardioinr.fit.preprocess import (
    blur_inplane,
    heart_mask,
    located_outline,
    normalise_intensity,
    rv_free_wall,
    sampling_weights,
)
from cardioinr.fit.warp import sample, sample_frames
from cardioinr.io import Sequence


# Wall points sampled per cavity point for the target of the cavity-follow term: their mean is
# the slice's wall motion along k (8 draws: the target's noise is below the fit's own).
_WALL_DRAWS = 8
# The cavity of a ventricle emptying to 15-25 % has det F ~ 0.2 throughout, so the folding
# term (margin 0.2) barely acts there; pulled along k by its wall, a collapsing apical cavity
# folded 0.04-0.11 % of its voxels. A steep barrier just above zero on cavity points keeps it
# folding-free without resisting the contraction (docs/groups.md).
_CAVITY_FOLD_MARGIN = 0.05
_CAVITY_FOLD_GAIN = 3.0
# The mending barrier (Objective.mend_loss) is a mean over every frame of a few points, most of
# them unfolded in most frames: a gain keeps it strong against staying where the fit ended.
_MEND_GAIN = 30.0
# points that hold the field where the fit ended while mending (a fit may run with few or no
# regulariser points)
_MEND_MIN_POINTS = 256


@dataclass(frozen=True)
class SliceWalls:
    """The ED wall of each slice, for the cavity-follow term.

    Attributes:
        cavity: ``(X, Y, Z)`` bool, LV cavity voxels of the slices that have a wall.
        xy: ``(Nw, 2)`` in-plane mm of every myocardial voxel, grouped by slice.
        start, count: ``(Z,)`` long, where each slice's voxels begin in ``xy`` and how many.
    """

    cavity: torch.Tensor
    xy: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor


def slice_walls(labels: np.ndarray, lv: int, myo: int, spacing: np.ndarray, device: torch.device) -> SliceWalls | None:
    """:class:`SliceWalls` of ``(X, Y, Z)`` reference labels, or None without a cavity on a slice
    with a wall."""
    return walls_of_masks(labels == lv, labels == myo, spacing, device)


def walls_of_masks(cavity: np.ndarray, myocardium: np.ndarray, spacing: np.ndarray,
                   device: torch.device) -> SliceWalls | None:
    """:class:`SliceWalls` of ``(X, Y, Z)`` bool cavity and wall masks (from labels, or from the
    outlines the images show), or None without a cavity on a slice with a wall."""
    wall = np.argwhere(myocardium)  # (Nw, 3) ijk
    wall = wall[np.argsort(wall[:, 2], kind="stable")]
    count = np.bincount(wall[:, 2], minlength=myocardium.shape[2])
    cavity = cavity & (count > 0)[None, None, :]
    if not cavity.any():
        return None
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return SliceWalls(torch.from_numpy(cavity).to(device),
                      torch.from_numpy((wall[:, :2] * np.asarray(spacing[:2])).astype(np.float32)).to(device),
                      torch.from_numpy(start).to(device), torch.from_numpy(count).to(device))


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
        # rows of ``others`` in cycle order from the reference (the sequential similarity's pairs)
        lag = [(t - seq.ref_frame) % seq.n_frames for t in self.others.tolist()]
        self.cycle_order = torch.tensor(sorted(range(len(lag)), key=lag.__getitem__), dtype=torch.long, device=device)
        mask = heart_mask(seq)
        # No labels: the LV cavity and wall the images show (the outlines that located the
        # heart) stand in for the labels' in what needs them: where points are sampled, the
        # incompressibility term and, in a stack, the cavity-follow term (docs/groups.md).
        located = None
        if seq.ref_labels is None:
            outline = located_outline(seq)
            if outline is not None:
                located = outline.masks(seq.shape, seq.spacing)
                if mask is None and (located[0] | located[1]).any():
                    mask = located[0] | located[1]
        self.weights = torch.from_numpy(sampling_weights(img[..., seq.ref_frame], mask, cfg)).to(device)
        self.shape = seq.shape
        self.stride = torch.tensor([seq.shape[1] * seq.shape[2], seq.shape[2], 1], device=device)
        # Through-plane, data exist only at slice centres: similarity points stay on slices when
        # slices are thick; regulariser points fill the gaps.
        self.jitter_z_similarity = self.dim == 3 and seq.spacing[2] <= 2.0 * seq.spacing[:2].max()
        self.myo = None
        self.walls = None
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
                self.walls = slice_walls(seq.ref_labels, lm.lv, lm.myo, seq.spacing, device)
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
        elif located is not None:
            cavity, wall = located
            if self.dim == 3 and cfg.w_cavity_follow > 0:
                self.walls = walls_of_masks(cavity, wall, seq.spacing, device)
            if cfg.w_incompress > 0 and wall.any():
                self.myo = torch.from_numpy(wall).float().to(device).unsqueeze(0)
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

    def _cavity_follow(self, field_: MotionField, xr: torch.Tensor, coeffs_r: torch.Tensor, det: torch.Tensor,
                       basis: torch.Tensor, gen: torch.Generator,
                       latent: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cavity-follow term and its fold barrier on the regulariser points ``xr`` ``(M, 3)``
        mm that lie in the LV cavity (None if none does).

        Blood is featureless, and the atrium that descends into a basal slice looks like the LV
        blood it replaces: on thick slices the similarity lets the cavity lag its wall's descent
        and the carried labels keep LV where the base has left (docs/groups.md). Each cavity
        point's motion along k is pulled toward the mean of its slice's wall, read at the
        point's own height and held fixed (the blood cannot drag the wall). The slice mean, not
        the nearest wall point, so the target is flat across the cavity: a target that varies
        around the wall shears the collapsing cavity and folds it.

        Returns ``(mean squared mm gap along k, folding barrier of the cavity points)``."""
        walls = self.walls
        ijk = torch.round(xr / self.spacing).long()
        for a in range(3):
            ijk[:, a] = ijk[:, a].clamp(0, self.shape[a] - 1)
        inside = walls.cavity[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        if not bool(inside.any()):
            return None
        xc, k = xr[inside], ijk[inside, 2]
        draw = (torch.rand(xc.shape[0], _WALL_DRAWS, generator=gen).to(self.device) * walls.count[k, None]).long()
        idx = walls.start[k, None] + torch.minimum(draw, walls.count[k, None] - 1)  # (Nc, draws)
        xw = torch.cat([walls.xy[idx].reshape(-1, 2), xc[:, 2:].repeat_interleave(_WALL_DRAWS, 0)], 1)
        with torch.no_grad():
            uw = torch.einsum("nkd,tk->tnd", field_.coefficients(xw, latent), basis)[..., 2]
            target = uw.reshape(uw.shape[0], -1, _WALL_DRAWS).mean(-1)  # (T-1, Nc)
        uc = torch.einsum("nkd,tk->tnd", coeffs_r[inside], basis)[..., 2]
        return (uc - target).pow(2).mean(), folding_loss(det[inside], margin=_CAVITY_FOLD_MARGIN)

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
        if cfg.sequential:  # frame k+1 against frame k along the cycle, the reference first
            chain = torch.cat([fixed, moving[self.cycle_order]], 0)  # (T, N)
            fixed, moving = chain[:-1], chain[1:]  # (T-1, N) each
        n_fixed = fixed.shape[0]
        if cfg.similarity == "ncc":
            sim = ncc_loss(fixed.t(), moving.t())
        elif cfg.similarity == "mse":
            sim = mse_loss(fixed.t(), moving.t())
        else:
            p = self.patch_offsets.shape[0]
            sim = lncc_loss(fixed.t().reshape(-1, p, n_fixed), moving.t().reshape(-1, p, moving.shape[0]))
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
            if self.walls is not None:
                fol = self._cavity_follow(field_, xr, coeffs_r, det, basis, gen, latent)
                if fol is not None:
                    total = total + cfg.w_cavity_follow * fol[0] + _CAVITY_FOLD_GAIN * cfg.w_fold * fol[1]
                    logs["cavity_follow"], logs["cavity_fold"] = fol[0].item(), fol[1].item()
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

    def mend_loss(self, field_: MotionField, fitted: MotionField, fold_points: torch.Tensor, gen: torch.Generator,
                  latent: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The loss of one fold-mending step (:class:`cardioinr.fit.fitter.Fitter`): the folding
        barrier on ``fold_points`` ``(N, D)`` mm (where the fitted grid folded), and on the
        regulariser points as in :meth:`loss`, plus the mean squared distance (mm^2) from the
        field ``fitted`` as the fit ended, at the regulariser points, every frame. The images
        are not read again: the fold is undone where it is and the rest of the motion kept,
        rather than fitted anew (more steps of the full loss moved Sunnybrook's end-systolic
        LV by 0.001-0.004 Dice)."""
        cfg = self.cfg
        xr = self.sample_points(max(cfg.reg_points, _MEND_MIN_POINTS), gen, jitter_z=True)
        u, jac_r = field_.displacement_and_jacobian(xr, self.others, latent)  # (M, T-1, D), (M, T-1, D, D)
        with torch.no_grad():
            target = fitted(xr, self.others, latent)
        stay = (u - target).pow(2).sum(-1).mean()
        det_r = det_f_from_grad_u(jac_r)
        _, jac_m = field_.displacement_and_jacobian(fold_points, self.others, latent)
        det_m = det_f_from_grad_u(jac_m)
        barrier = folding_loss(det_m)
        total = stay + cfg.w_fold * folding_loss(det_r) + _MEND_GAIN * cfg.w_fold * barrier
        return total, {"loss": total.item(), "stay": stay.item(), "mend_fold": barrier.item(),
                       "min_det": min(det_r.min().item(), det_m.min().item())}


__all__ = ["Objective"]
