"""One motion field fitted to every view of a study: the short-axis stack and long-axis cines.

The field lives in the short-axis (SAX) stack's array-aligned millimetres (the reference grid of
the output contract). A long-axis (LAX) view ``v`` is one oblique slice with its own affine; a
point ``X_v`` of its plane (its own array-aligned mm, ``k = 0``) is the SAX point
``X = A_v X_v + b_v`` (both maps go through world, so ``A_v`` is a rotation), and a displacement
``u`` along the SAX axes is ``A_v^T u`` along the view's axes. Each view contributes the same
similarity as a single cine: its reference frame against each of its frames pulled back by the
shared field, ``I_v,t(X_v + A_v^T u(X, t)) ~ I_v,ref(X_v)``, with the view's frames placed on the
SAX cycle by phase (:func:`cardioinr.io.phase_to_sax_frame`). The component of ``u`` along a LAX
view's normal is not seen by that view (it has one slice): it is what the SAX stack and the
other views see. Conversely a LAX view sees what thick SAX slices miss: motion along the long
axis (base descent).

Breath-hold misalignment (:class:`ViewsConfig` ``align``): each SAX slice ``k`` and each LAX view
``v`` may be translated in its own plane by a rigid offset ``s`` (mm, along its first two array
axes): the acquired slice shows at ``p`` what the aligned one shows at ``p - s``, so the anatomy
at ``y`` is read at ``y + s``. The offsets are learned jointly with the field: the similarity
terms read every slice through its offset, and an *intersection* term asks every LAX view and
every SAX slice to agree where their planes cross (normalised cross-correlation of the two
images at shared world points, all frames), which is what pins the offsets down. Only offsets
relative to the stack matter, so the SAX offsets have zero mean (the stack's mean position is
the reference) and a small L2 penalty keeps them from drifting where the data say nothing.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from cardioinr.core.errors import InputError
from cardioinr.fit.config import FitConfig
from cardioinr.fit.device import resolve_device
from cardioinr.fit.fields import MotionField
from cardioinr.fit.fitter import Fitter, FitResult, _check_compatible, _fit_metrics, carried_labels
from cardioinr.fit.losses import lncc_loss, mse_loss, ncc_loss
from cardioinr.fit.objective import Objective
from cardioinr.fit.optim import Adam
from cardioinr.fit.warp import propagate_labels, sample, sample_frames
from cardioinr.io import Sequence, Study, phase_to_sax_frame

_SLAB_SAMPLES = 5  # samples across the other image's slab in the intersection term

__all__ = ["StudyFitResult", "StudyObjective", "ViewFit", "ViewsConfig", "fit_study", "view_transform",
           "views_config"]


@dataclass(frozen=True)
class ViewsConfig:
    """Settings of a multi-view fit (on top of the per-sequence :class:`FitConfig`).

    Attributes:
        w_lax: weight of each long-axis view's similarity, relative to the stack's (1). At 1 the
            views cost 0.03-0.13 mm of 3D EPE on phantoms (the 8 mm slab of a view moves through
            its own plane, which its 2D similarity cannot model); at 0.5 the EPE is as low as or
            lower than the stack's alone, with the same end-systolic Dice gain.
        lax_points: points drawn per long-axis view per step.
        align: learn a rigid in-plane offset per SAX slice and per LAX view (breath-hold
            misalignment), jointly with the field.
        w_intersection: weight of the intersection term (views agree where they cross). At 1
            the similarity terms pulled the offsets during the joint fit (3 mm shifts recovered
            to 0.19 mm mean, 0.65 mm worst); at 3, 0.05-0.11 mm mean, 0.16-0.39 mm worst.
        intersection_points: points drawn per LAX view per step for that term (on the lines
            where the view cuts the slices' central planes).
        w_shift: L2 penalty on the offsets, per mm^2: only a tie-breaker where the data say
            nothing (the intersection term is ~0.01-0.06; 1e-3 already pulled 3 mm offsets ~0.2 mm short).
        shift_lr: Adam rate of the offsets, mm per step (decays with the field's rate).
        align_steps: steps that move only the offsets, by the intersection term alone, before
            the joint fit (cheap: no field evaluation; coarse to fine over the blur levels), so
            the field starts from aligned data.
        w_incompress: the myocardium's incompressibility weight in a fit with long-axis views
            (replaces :attr:`FitConfig.w_incompress`; None keeps the fit's). The views show the
            longitudinal shortening a thick stack misses, so volume conservation then ties the
            wall's thickening to the right shortening; at the stack's 0.05 the myocardium of
            the mid-apical slices gained 3-21 % of volume at end-systole and the radial peak was
            up to 2.3 points high. At 0.1, on 8 held-out 10 mm phantom hearts: radial peaks
            within -1.4..+1.9 points (before -1.4..+2.3), 3D EPE 0.44-0.78 mm (0.49-0.83). Not
            for the stack alone, whose longitudinal shortening is too short: a stronger term
            carries that into too little thickening (docs/multiview.md).
    """

    w_lax: float = 0.5
    lax_points: int = 2048
    align: bool = False
    w_intersection: float = 3.0
    intersection_points: int = 4096
    w_shift: float = 1e-5
    shift_lr: float = 0.1
    align_steps: int = 450
    w_incompress: float | None = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def views_config(explicit: dict, **changes) -> ViewsConfig:
    """:class:`ViewsConfig` with ``changes``, under the fit settings a user named (``explicit``,
    e.g. :func:`cardioinr.fit.explicit_settings` of a settings file): a ``w_incompress`` the user
    set wins over the views' own weight."""
    if "w_incompress" in explicit:
        changes.setdefault("w_incompress", None)
    return ViewsConfig(**changes)


def view_transform(view: Sequence, sax: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with ``X_sax = A @ X_view + b`` for points in array-aligned mm; ``A`` (3, 3) is a
    rotation (or a reflection), so a SAX vector ``u`` is ``A.T @ u`` along the view's axes."""
    origin = view.grid.mm_to(sax.grid, np.zeros(3))
    cols = view.grid.mm_to(sax.grid, np.eye(3)) - origin
    return cols.T, origin


class _ViewTerm:
    """The similarity of one long-axis view, with its frames on the SAX cycle."""

    def __init__(self, name: str, view: Sequence, sax: Sequence, cfg: FitConfig, device: torch.device) -> None:
        self.name, self.view = name, view
        self.obj = Objective(view, cfg, device)  # normalised, blurred frames and sampling weights
        a, b = view_transform(view, sax)
        self.A = torch.as_tensor(a, dtype=torch.float32, device=device)
        self.b = torch.as_tensor(b, dtype=torch.float32, device=device)
        others = [t for t in range(view.n_frames) if t != view.ref_frame]
        self.others = torch.tensor(others, device=device)
        self.t_sax = torch.as_tensor(phase_to_sax_frame(np.array(others), view, sax), dtype=torch.float32, device=device)
        self.device = device

    def to_sax(self, x_view: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` view mm -> ``(N, 3)`` SAX mm."""
        return x_view @ self.A.T + self.b

    def points(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``(n, 3)`` reference points in the view's plane (its mm, k = 0)."""
        xy = self.obj.sample_points(n, gen, jitter_z=False)
        return torch.cat([xy, torch.zeros(n, 1, device=self.device)], 1)

    def loss(self, field_: MotionField, level: int, gen: torch.Generator, n: int, shift: torch.Tensor,
             latent: torch.Tensor | None) -> torch.Tensor:
        cfg = self.obj.cfg
        frames = self.obj.levels[level]
        spacing = self.obj.spacing
        if cfg.similarity == "lncc":
            off = self.obj.patch_offsets
            m = max(1, n // off.shape[0])
            c = self.points(m, gen)
            x = (c[:, None, :2] + off[None]).reshape(-1, 2)
            x = torch.cat([x, torch.zeros(x.shape[0], 1, device=self.device)], 1)
        else:
            x = self.points(n, gen)
        coeffs = field_.coefficients(self.to_sax(x), latent)
        u = torch.einsum("nkd,tk->tnd", coeffs, field_.basis(self.t_sax)) @ self.A  # (T-1, N, 3) view axes
        read = x[:, :2] + shift  # where the acquired slice shows the anatomy at x
        fixed = sample(frames[self.view.ref_frame].unsqueeze(0), read, spacing)  # (N, 1)
        moving = sample_frames(frames[self.others], read.unsqueeze(0) + u[..., :2], spacing)  # (T-1, N)
        return _similarity(cfg.similarity, fixed, moving, None if cfg.similarity != "lncc" else self.obj.patch_offsets.shape[0])


def _similarity(kind: str, fixed: torch.Tensor, moving: torch.Tensor, patch: int | None) -> torch.Tensor:
    """The fit's similarity of ``fixed`` ``(N, 1)`` to each row of ``moving`` ``(T', N)``."""
    if kind == "ncc":
        return ncc_loss(fixed, moving.t())
    if kind == "mse":
        return mse_loss(fixed, moving.t())
    return lncc_loss(fixed.reshape(-1, patch, 1), moving.t().reshape(-1, patch, moving.shape[0]))


class StudyObjective:
    """The loss of a multi-view fit: the stack's :class:`Objective`, plus each long-axis view's
    similarity, plus (with ``align``) the intersection term and the offsets' penalty.

    Has the interface :class:`~cardioinr.fit.fitter.Fitter` optimises (``seq``, ``n_levels``,
    ``level_at``, ``loss``) and :meth:`param_groups` for the offsets it learns.
    """

    def __init__(self, study: Study, cfg: FitConfig, views: ViewsConfig, device: torch.device) -> None:
        self.study, self.cfg, self.views_cfg, self.device = study, cfg, views, device
        self.seq = study.sax
        self.sax = Objective(study.sax, cfg, device)
        self.n_levels = self.sax.n_levels
        self.terms = [_ViewTerm(n, s, study.sax, cfg, device) for n, s in study.views()[1:]]
        nz = study.sax.shape[2]
        self.sax_shift_raw = torch.nn.Parameter(torch.zeros(nz, 2, device=device))
        self.lax_shift = torch.nn.Parameter(torch.zeros(max(len(self.terms), 1), 2, device=device))
        # raw frames (finest level, no blur) for the intersection term
        self._inter = [self._intersection_setup(t) for t in self.terms]

    # -- offsets ---------------------------------------------------------------------------------
    def sax_shift(self) -> torch.Tensor:
        """``(Z, 2)`` mm offsets of the SAX slices (zero mean: the stack's mean position is the reference)."""
        return self.sax_shift_raw - self.sax_shift_raw.mean(0, keepdim=True)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups of the offsets (none without ``align``)."""
        if not self.views_cfg.align:
            return []
        return [{"params": [self.sax_shift_raw, self.lax_shift], "base": self.views_cfg.shift_lr}]

    def shifts(self) -> dict[str, list]:
        """The learned offsets, mm: ``{"sax": [[di, dj] per slice], view: [du, dv]}``."""
        out: dict[str, list] = {"sax": [[round(float(v), 4) for v in r] for r in self.sax_shift().detach().cpu()]}
        for i, t in enumerate(self.terms):
            out[t.name] = [round(float(v), 4) for v in self.lax_shift[i].detach().cpu()]
        return out

    # -- intersection term -----------------------------------------------------------------------
    def _intersection_setup(self, term: _ViewTerm) -> dict | None:
        """Points on the lines where the view's plane cuts each SAX slice's central plane (every
        half pixel, inside both fields of view), and the frames of the view matched by phase to
        each SAX frame; None when the view is (nearly) parallel to the slices."""
        sax = self.seq
        view = term.view
        nx, ny, _ = view.shape
        a, b = view_transform(view, sax)
        cu, cv = a[2, 0], a[2, 1]  # how the SAX height changes along the view's two axes
        if max(abs(cu), abs(cv)) < 0.2:
            return None
        # Exactly on the slice centres: a point off the centre would compare the slice with
        # tissue a few mm above or below it.
        pts = []
        for k in range(sax.shape[2]):
            zk = k * sax.spacing[2]
            if abs(cv) >= abs(cu):  # walk along u, solve for v
                u = np.arange(0.0, (nx - 1) * view.spacing[0], 0.5 * view.spacing[0])
                v = (zk - b[2] - cu * u) / cv
            else:
                v = np.arange(0.0, (ny - 1) * view.spacing[1], 0.5 * view.spacing[1])
                u = (zk - b[2] - cv * v) / cu
            pts.append(np.stack([u, v, np.zeros_like(u)], 1))
        xv = np.concatenate(pts)
        xs = xv @ a.T + b
        keep = (xv[:, 0] >= 0) & (xv[:, 0] <= (nx - 1) * view.spacing[0])
        keep &= (xv[:, 1] >= 0) & (xv[:, 1] <= (ny - 1) * view.spacing[1])
        for d in range(2):
            keep &= (xs[:, d] >= 0) & (xs[:, d] <= (sax.shape[d] - 1) * sax.spacing[d])
        if keep.sum() < 32:
            return None
        xv, xs = xv[keep], xs[keep]
        xs[:, 2] = np.round(xs[:, 2] / sax.spacing[2]) * sax.spacing[2]  # round-off only
        # view frame nearest in phase to each SAX frame
        phase_sax = np.mod((np.arange(sax.n_frames) - sax.ref_frame) / sax.n_frames, 1.0)
        tv = np.mod(np.round(view.ref_frame + phase_sax * view.n_frames), view.n_frames).astype(int)
        # Each image averages over its own slab: a SAX slice over its thickness along k, a LAX
        # view over its thickness along its normal. Comparing a SAX pixel with a LAX pixel would
        # compare two different averages wherever the anatomy changes along either (the base, the
        # apex) and bias the offsets; so each side is averaged over the other's slab too, and both
        # then stand for the same box of tissue.
        f = (np.arange(_SLAB_SAMPLES) + 0.5) / _SLAB_SAMPLES - 0.5
        along_k = (a.T @ np.array([0.0, 0.0, 1.0]))[:2] * sax.spacing[2]  # SAX thickness, in the view's plane
        across_view = a[:2, 2] * view.spacing[2]  # the view's thickness, in the SAX plane
        return {
            "xv": torch.as_tensor(xv, dtype=torch.float32, device=self.device),
            "xs": torch.as_tensor(xs, dtype=torch.float32, device=self.device),
            "tv": torch.as_tensor(tv, device=self.device),
            "slab_v": torch.as_tensor(f[:, None] * along_k, dtype=torch.float32, device=self.device),  # (S, 2)
            "slab_s": torch.as_tensor(np.c_[f[:, None] * across_view, np.zeros(len(f))], dtype=torch.float32,
                                      device=self.device),  # (S, 3)
        }

    def intersection_loss(self, gen: torch.Generator, level: int | None = None) -> torch.Tensor:
        """Mean over LAX views of ``1 - NCC`` between the view and the SAX slices at shared world
        points (both read through their offsets), over every frame."""
        level = self.n_levels - 1 if level is None else level
        sax_frames = self.sax.levels[level]
        total, n = torch.zeros((), device=self.device), 0
        for i, (term, setup) in enumerate(zip(self.terms, self._inter)):
            if setup is None:
                continue
            m = setup["xv"].shape[0]
            idx = torch.randint(0, m, (min(self.views_cfg.intersection_points, m),), generator=gen).to(self.device)
            xv, xs = setup["xv"][idx], setup["xs"][idx]
            n_pts, n_slab = xv.shape[0], setup["slab_v"].shape[0]
            read_v = (xv[:, None, :2] + setup["slab_v"] + self.lax_shift[i]).reshape(-1, 2)
            read_s = (xs[:, None, :] + setup["slab_s"]).reshape(-1, 3)  # on slice centres
            t_v, t_s = len(setup["tv"]), sax_frames.shape[0]
            lv = sample_frames(term.obj.levels[level][setup["tv"]], read_v.unsqueeze(0).expand(t_v, -1, -1),
                               term.obj.spacing).reshape(t_v, n_pts, n_slab).mean(2)  # (T, N)
            ls = self.sax.sample_shifted(sax_frames, read_s.unsqueeze(0).expand(t_s, -1, -1),
                                         self.sax_shift()).reshape(t_s, n_pts, n_slab).mean(2)
            total = total + ncc_loss(lv.t(), ls.t())
            n += 1
        return total / max(n, 1)

    # -- the loss --------------------------------------------------------------------------------
    def level_at(self, frac: float) -> int:
        return self.sax.level_at(frac)

    def loss(self, field_: MotionField, level: int, gen: torch.Generator,
             latent: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        vc = self.views_cfg
        shift = self.sax_shift() if vc.align else None
        total, logs = self.sax.loss(field_, level, gen, latent=latent, slice_shift=shift)
        n_pts = max(16, vc.lax_points)
        for i, term in enumerate(self.terms):
            s = self.lax_shift[i] if vc.align else torch.zeros(2, device=self.device)
            sim = term.loss(field_, level, gen, n_pts, s, latent)
            total = total + vc.w_lax * sim
            logs[f"sim_{term.name}"] = sim.item()
        if vc.align and self.terms:
            inter = self.intersection_loss(gen, level)
            pen = (self.sax_shift() ** 2).sum(1).mean() + (self.lax_shift ** 2).sum(1).mean()
            total = total + vc.w_intersection * inter + vc.w_shift * pen
            logs["intersection"] = inter.item()
        logs["loss"] = total.item()
        return total, logs

    def align_only(self, steps: int, seed: int = 0) -> list[float]:
        """Move only the offsets for ``steps`` steps by the intersection term (and the penalty);
        returns the loss history. Cheap: no field is evaluated.

        Coarse to fine: the steps are split over the blur levels, the rate restarting at each (a
        single pass at the finest level stalled with offsets ~1 mm off where the truth's loss was
        lower: the sharp images' basin is narrow)."""
        if not self.views_cfg.align or not self.terms or steps <= 0:
            return []
        gen = torch.Generator().manual_seed(seed)
        hist = []
        per = max(1, steps // self.n_levels)
        for level in range(self.n_levels):
            opt = Adam([{"params": [self.sax_shift_raw, self.lax_shift], "lr": self.views_cfg.shift_lr}])
            for s in range(per):
                for g in opt.param_groups:
                    g["lr"] = self.views_cfg.shift_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / per)))
                opt.zero_grad(set_to_none=True)
                loss = self.intersection_loss(gen, level) + self.views_cfg.w_shift * (
                    (self.sax_shift() ** 2).sum(1).mean() + (self.lax_shift ** 2).sum(1).mean())
                loss.backward()
                opt.step()
                hist.append(loss.item())
        return hist


@dataclass
class ViewFit:
    """The fit's outputs on one long-axis view's own grid.

    Attributes:
        name: the view (``"2ch"``, ...).
        sequence: the view's cine.
        displacement: ``(X, Y, 1, T_v, 3)`` float32 mm along the view's array axes, from its
            reference frame (the component along its normal included: the field is 3D).
        labels: ``(X, Y, 1, T_v)`` uint8 reference labels of the view carried by the in-plane
            motion, or None when the view has none.
    """

    name: str
    sequence: Sequence
    displacement: np.ndarray
    labels: np.ndarray | None


@dataclass
class StudyFitResult(FitResult):
    """A :class:`FitResult` on the SAX grid (the output contract) plus every long-axis view's
    outputs (:attr:`views`) and the learned offsets (in ``metrics["views"]``)."""

    study: Study | None = None
    views: list[ViewFit] = field(default_factory=list)


@torch.no_grad()
def view_displacement(field_: MotionField, view: Sequence, sax: Sequence, chunk: int = 32768) -> np.ndarray:
    """The field on a view's pixel centres at the view's frames, along the view's axes:
    ``(X, Y, 1, T_v, 3)`` float32 mm."""
    a, b = view_transform(view, sax)
    dev = field_.scale.device
    A = torch.as_tensor(a, dtype=torch.float32, device=dev)
    nx, ny, _ = view.shape
    xv = view.grid.points_mm().reshape(-1, 3)  # the view's pixel centres (k = 0)
    xs = torch.as_tensor(xv @ a.T + b, dtype=torch.float32, device=dev)
    t_sax = torch.as_tensor(phase_to_sax_frame(np.arange(view.n_frames), view, sax), dtype=torch.float32, device=dev)
    out = torch.zeros(xs.shape[0], view.n_frames, 3, device=dev)
    for i in range(0, xs.shape[0], chunk):
        out[i:i + chunk] = field_(xs[i:i + chunk], t_sax) @ A
    disp = out.reshape(nx, ny, 1, view.n_frames, 3).cpu().numpy().astype(np.float32)
    disp[:, :, :, view.ref_frame] = 0.0  # the reference phase is exact (phases match to round-off)
    return disp


def fit_study(study: Study, config: FitConfig | None = None, views: ViewsConfig | None = None,
              init: MotionField | None = None, progress: bool = False) -> StudyFitResult:
    """Fit one 3D+t field to every view of ``study`` and return the outputs on every grid.

    Args:
        study: the SAX stack (reference grid, ``ref_frame`` the reference phase) and LAX views.
        config: the per-sequence fit settings (steps, weights, field; as for a single cine).
        views: the multi-view settings (LAX weight, misalignment correction).
        init: start from this field (a 3D prior bound to the SAX stack); a fresh field otherwise.
        progress: show a progress bar.
    """
    cfg = config or FitConfig()
    vcfg = views or ViewsConfig()
    if vcfg.w_incompress is not None and study.lax:
        cfg = replace(cfg, w_incompress=vcfg.w_incompress)
    sax = study.sax
    t0 = time.perf_counter()
    fitter = Fitter(cfg)
    field_ = fitter.new_field(sax) if init is None else copy.deepcopy(init)
    if field_.dim != 3:
        raise InputError(f"{study.name}: a multi-view fit needs a 3D field")
    _check_compatible(field_, sax)
    device = resolve_device(cfg.device)
    field_.to(device)
    problem = StudyObjective(study, cfg, vcfg, device)
    align_hist = problem.align_only(vcfg.align_steps, cfg.seed)
    history = fitter._optimise(field_, problem, None, progress)
    # the stack's grid is the contract's: its folds are mended (the views are not read again)
    disp, folding, mended = fitter.fitted_grid(field_, problem.sax, history)
    fit_seconds = time.perf_counter() - t0
    labels = carried_labels(sax, disp)
    view_fits = []
    for name, view in study.views()[1:]:
        vd = view_displacement(field_, view, sax)
        vl = None
        if view.ref_labels is not None:
            inplane = vd.copy()
            inplane[..., 2] = 0.0  # a single slice carries its labels in its plane
            vl = propagate_labels(view.ref_labels, inplane, view.spacing, sorted(view.label_map.codes()))
        view_fits.append(ViewFit(name, view, vd, vl))
    metrics = _fit_metrics(sax, cfg, history, disp, fit_seconds, time.perf_counter() - t0, folding)
    if mended is not None:
        metrics["mended_folds"] = mended
    metrics["views"] = {
        "names": study.view_names,
        "settings": vcfg.to_dict(),
        "aligned": vcfg.align,
        "alignment_steps": len(align_hist),
        "shifts_mm": problem.shifts() if vcfg.align else None,
        "sources": {n: v.meta.get("source") for n, v in study.views()[1:]},
    }
    return StudyFitResult(field_.cpu(), disp, labels, history, metrics, cfg, sax, study=study, views=view_fits)
