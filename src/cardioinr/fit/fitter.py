"""Fitting a motion field to one cine sequence.

Direction: points X are sampled in the *reference* frame and every frame is pulled back,
``I_t(X + u(X, t)) ~ I_ref(X)``. The field is therefore Lagrangian and lives on the
reference grid, which is exactly the output contract (no inversion needed for the field;
labels are carried to each frame by inverting it on the grid, see :mod:`cardioinr.fit.warp`).

One step minimises the :class:`~cardioinr.fit.objective.Objective` of the sequence on a fresh
draw of points. A Gaussian scale-space schedule (coarse to fine) makes the fit robust to large
motion; the learning rate decays on a cosine, a non-finite loss restarts from the last good
weights at half the rate, and the fit stops early once the finest scale stops improving.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cardioinr.core.console import progress_bar
from cardioinr.core.errors import FitDivergedError, InputError
from cardioinr.fit.config import FitConfig
from cardioinr.fit.device import resolve_device
from cardioinr.fit.fields import MotionField
from cardioinr.fit.objective import Objective
from cardioinr.fit.optim import Adam
from cardioinr.fit.preprocess import frame_of_reference, frame_reflection, heart_frame, located_outline
from cardioinr.fit.warp import propagate_labels
from cardioinr.geometry.kinematics import HEART_MARGIN_MM, folding_stats_regions, jacobian_determinant_grid, within_margin
from cardioinr.io import Sequence


@dataclass
class FitResult:
    """What a fit returns.

    Attributes:
        field: the fitted continuous field (query it anywhere: ``field(x_mm, t)``).
        displacement: ``(X, Y, Z, T, 3)`` float32 mm on the reference grid (output contract).
        labels: ``(X, Y, Z, T)`` uint8 reference labels carried to every frame, or None.
        history: one dict of losses per step.
        metrics: fit time, steps, final losses, folding.
    """

    field: MotionField
    displacement: np.ndarray
    labels: np.ndarray | None
    history: list[dict]
    metrics: dict
    config: FitConfig
    sequence: Sequence


class Fitter:
    """Fits a :class:`MotionField` to one sequence. Reusable across sequences."""

    def __init__(self, config: FitConfig | None = None) -> None:
        self.config = config or FitConfig()

    def new_field(self, seq: Sequence) -> MotionField:
        centre, scale = frame_of_reference(seq)
        torch.manual_seed(self.config.seed)
        return MotionField(self.config.field, seq.ndim_space, seq.n_frames, seq.ref_frame,
                           centre=torch.as_tensor(centre, dtype=torch.float32), scale=scale,
                           seed=self.config.seed, reflect=torch.as_tensor(frame_reflection(seq)))

    def fit(
        self,
        seq: Sequence,
        init: MotionField | None = None,
        callback: Callable[[int, dict], None] | None = None,
        progress: bool = False,
    ) -> FitResult:
        """Fit the field and return it with the dense outputs.

        Args:
            seq: the cine (its ``ref_frame`` is the reference; ``labels[ref_frame]`` optional).
            init: start from this field (a prior); a fresh field otherwise. Not modified.
            callback: called as ``callback(step, logs)`` after every step.
            progress: show a progress bar.
        """
        cfg = self.config
        t0 = time.perf_counter()
        field_ = self.new_field(seq) if init is None else copy.deepcopy(init)
        problem = self._problem(seq, field_)
        history = self._optimise(field_, problem, callback, progress)
        disp, folding, mended = self.fitted_grid(field_, problem, history)
        fit_seconds = time.perf_counter() - t0
        labels = carried_labels(seq, disp)
        metrics = _fit_metrics(seq, cfg, history, disp, fit_seconds, time.perf_counter() - t0, folding)
        if mended is not None:
            metrics["mended_folds"] = mended
        return FitResult(field_.cpu(), disp, labels, history, metrics, cfg, seq)

    def fitted_grid(self, field_: MotionField, problem: Objective, history: list[dict]
                    ) -> tuple[np.ndarray, dict[str, dict], dict | None]:
        """The fitted field on ``problem.seq``'s grid ``(X, Y, Z, T, 3)`` mm, its folding
        (:func:`_folding`) and, where it folded, what mending did (:meth:`_mend_folds`; None
        when nothing folded or mending is off)."""
        cfg = self.config
        with torch.no_grad():
            disp = dense_displacement(field_, problem.seq)
        folding = _folding(problem.seq, disp)
        mended = None
        if folding["all"]["percent_folded"] > 0 and cfg.mend_steps > 0 and cfg.w_fold > 0:
            disp, mended = self._mend_folds(field_, problem, history, disp)
            folding = _folding(problem.seq, disp)
        return disp, folding, mended

    def _mend_folds(self, field_: MotionField, problem: Objective, history: list[dict],
                    disp: np.ndarray) -> tuple[np.ndarray, dict]:
        """The fitted grid ``disp`` ``(X, Y, Z, T, 3)``, which folds somewhere, with its folds
        mended, and what was done.

        The folding barrier acts on regulariser points drawn each step, most of them on the
        heart; a fold of a few voxels elsewhere (unlabelled tissue next to a strongly
        contracting ventricle, a compressed RV corner) is rarely drawn, and a fit can end with
        it. Up to ``_MEND_ROUNDS`` rounds of ``mend_steps`` steps: the barrier on points at and
        around the voxels that fold, the field held to where the fit ended elsewhere
        (:meth:`Objective.mend_loss`); each round adds the folds the last one left. ``history``
        is extended by the steps (``"mend": True``)."""
        cfg = self.config
        seq = problem.seq
        pts, before = _folded_points(disp, seq.spacing, seq.ndim_space, cfg.seed)
        fitted = copy.deepcopy(field_)
        for p in fitted.parameters():
            p.requires_grad_(False)
        latent = None if field_.modulator is None else field_.latent.detach()
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
        opt = Adam([{"params": [p for p in field_.parameters() if p.requires_grad], "lr": cfg.lr * cfg.lr_final}])
        n, steps = before, 0
        fold_points = torch.zeros(0, seq.ndim_space, device=problem.device)
        for r in range(_MEND_ROUNDS):
            # the folds of earlier rounds stay under the barrier: the pull back toward the fitted
            # field would fold them again
            fold_points = torch.cat([fold_points, torch.as_tensor(pts, dtype=torch.float32, device=problem.device)])
            for _ in range(cfg.mend_steps):
                opt.zero_grad(set_to_none=True)
                total, logs = problem.mend_loss(field_, fitted, fold_points, gen, latent)
                if not torch.isfinite(total):  # leave the field as the last finite step made it
                    break
                total.backward()
                opt.step()
                logs.update(step=len(history), mend=True)
                history.append(logs)
                steps += 1
            with torch.no_grad():
                disp = dense_displacement(field_, seq)
            pts, n = _folded_points(disp, seq.spacing, seq.ndim_space, cfg.seed + r + 1)
            if n == 0:
                break
        return disp, {"folded_voxels_before": int(before), "folded_voxels_after": int(n), "steps": steps}

    # -- optimisation loop -------------------------------------------------------------------
    def optimise(self, seq: Sequence, field_: MotionField, callback: Callable[[int, dict], None] | None = None,
                 progress: bool = False) -> list[dict]:
        """Optimise ``field_`` in place on ``seq`` (no dense outputs); returns the loss history.

        For a field with a latent code, the first ``latent_steps`` steps move only the code
        (auto-decoder adaptation), then all weights and the code together."""
        return self._optimise(field_, self._problem(seq, field_), callback, progress)

    def _problem(self, seq: Sequence, field_: MotionField) -> Objective:
        """The loss of fitting ``field_`` to ``seq``, on the configured device (``field_`` is
        checked against ``seq`` and moved there)."""
        device = resolve_device(self.config.device)
        _check_compatible(field_, seq)
        field_.to(device)
        return Objective(seq, self.config, device)

    def _optimise(self, field_: MotionField, problem: Objective, callback, progress: bool) -> list[dict]:
        cfg = self.config
        history: list[dict] = []
        if cfg.steps == 0:
            return history
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        z = torch.nn.Parameter(field_.latent.detach().clone()) if field_.modulator is not None else None
        # The code-only phase takes at most a third of the budget, so that short fits still
        # move the weights (a code alone cannot leave the training distribution).
        latent_steps = min(cfg.latent_steps, cfg.steps // 3)
        latent_only = z is not None and latent_steps > 0

        def make_optimiser(lr: float) -> Adam:
            if latent_only:
                return Adam([{"params": [z], "lr": cfg.latent_lr}])
            enc = list(field_.encoding.parameters())
            enc_ids = {id(p) for p in enc}
            groups = [{"params": [p for p in field_.parameters() if id(p) not in enc_ids], "base": lr}]
            if enc:
                # Hash-grid tables are sparse lookups: each entry sees few gradients, so they
                # need a much larger rate than the MLP (as in instant-NGP).
                groups.append({"params": enc, "base": lr * cfg.encoding_lr_scale})
            if z is not None:
                groups.append({"params": [z], "base": cfg.latent_lr})
            # what the problem learns besides the field (a multi-view fit's slice offsets)
            groups.extend(dict(g) for g in getattr(problem, "param_groups", lambda _lr: [])(lr))
            for g in groups:
                g["lr"] = g["base"]
            return Adam(groups)

        def snapshot() -> tuple[dict, torch.Tensor | None]:
            return copy.deepcopy(field_.state_dict()), None if z is None else z.detach().clone()

        lr = cfg.lr
        retries = 1
        good = snapshot()
        opt = make_optimiser(lr)
        best, since_best = math.inf, 0
        ema, ema_level = None, -1
        forced_level = 0  # with plateau_advance: the blur level reached early by converging
        bar = progress_bar(cfg.steps, "fit", progress)
        step = 0
        try:
            while step < cfg.steps:
                if latent_only and step >= latent_steps:
                    latent_only = False
                    opt = make_optimiser(lr)
                frac = step / max(cfg.steps - 1, 1)
                level = max(problem.level_at(frac), forced_level)
                if not latent_only:
                    decay = cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac))
                    for g in opt.param_groups:
                        g["lr"] = g["base"] * decay
                opt.zero_grad(set_to_none=True)
                total, logs = problem.loss(field_, level, gen, latent=z)
                if not torch.isfinite(total):
                    if retries == 0:
                        raise FitDivergedError(
                            f"{problem.seq.name}: the fit diverged (non-finite loss at step {step}) even after "
                            "restarting with half the learning rate; try a lower --lr or stronger regularisation"
                        )
                    retries -= 1
                    lr *= 0.5
                    field_.load_state_dict(good[0])
                    if z is not None:
                        with torch.no_grad():
                            z.copy_(good[1])
                    opt = make_optimiser(lr)
                    history.append({"restart": step, "lr": lr})
                    continue
                total.backward()
                opt.step()
                logs["step"] = step
                logs["level"] = level
                history.append(logs)
                if step % 50 == 0:
                    good = snapshot()
                if callback is not None:
                    callback(step, logs)
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=f"fit loss {logs['loss']:.4f}")
                step += 1
                # Convergence is judged per scale (losses of different blur levels differ): the
                # finest scale's plateau ends the fit; with plateau_advance a coarser scale's
                # plateau starts the next scale at once, so a fit that starts close (from a
                # prior) does not spend the steps its schedule reserved for coarse motion.
                if level != ema_level:
                    ema, ema_level, best, since_best = None, level, math.inf, 0
                ema = logs["loss"] if ema is None else 0.9 * ema + 0.1 * logs["loss"]
                finest = level == problem.n_levels - 1
                if (finest or cfg.plateau_advance) and not latent_only:
                    if not math.isfinite(best) or ema < best - cfg.min_delta * abs(best):
                        best, since_best = ema, 0
                    else:
                        since_best += 1
                        if since_best >= cfg.patience:
                            if finest:
                                break
                            forced_level = level + 1
        finally:
            if bar is not None:
                bar[0].stop()
            if z is not None:
                with torch.no_grad():
                    field_.latent.copy_(z.detach())
        return history


def fit_steps(history: list[dict]) -> list[dict]:
    """The entries of a fit's ``history`` that are its own steps: not restarts, not the steps
    that mended folds afterwards (``"mend": True``)."""
    return [h for h in history if "loss" in h and not h.get("mend")]


def dense_displacement(field_: MotionField, seq: Sequence) -> np.ndarray:
    """The fitted field on ``seq``'s grid: ``(X, Y, Z, T, 3)`` float32 mm."""
    return field_.dense(seq.shape, torch.as_tensor(seq.spacing)).cpu().numpy().astype(np.float32)


def carried_labels(seq: Sequence, disp: np.ndarray) -> np.ndarray | None:
    """``seq``'s reference labels carried to every frame by ``disp`` ``(X, Y, Z, T, 3)``:
    ``(X, Y, Z, T)`` (None without reference labels)."""
    if seq.ref_labels is None:
        return None
    return propagate_labels(seq.ref_labels, disp, seq.spacing, sorted(seq.label_map.codes()))


# Rounds of fold mending (Fitter._mend_folds) and the most points one round puts the barrier on.
_MEND_ROUNDS = 3
_MEND_MAX_POINTS = 2048
# Points per folded voxel: its centre and this many more, jittered within the voxel (the grid's
# determinant is a central difference over the neighbours, the barrier's is exact at a point).
_MEND_JITTER = 7


def _folded_points(disp: np.ndarray, spacing: np.ndarray, dim: int, seed: int) -> tuple[np.ndarray, int]:
    """Points ``(N, dim)`` mm at and around the voxels of ``disp`` ``(X, Y, Z, T, 3)`` that fold
    in any frame (grid ``det F <= 0``), at most ``_MEND_MAX_POINTS``, and how many voxels fold
    (summed over frames)."""
    folded = np.zeros(disp.shape[:3], dtype=bool)
    count = 0
    for t in range(disp.shape[3]):
        bad = jacobian_determinant_grid(disp[..., t, :], spacing) <= 0
        count += int(bad.sum())
        folded |= bad
    if count == 0:
        return np.zeros((0, dim)), 0
    rng = np.random.default_rng(seed)
    idx = np.argwhere(folded).astype(np.float64)
    jit = rng.uniform(-0.5, 0.5, size=(len(idx), _MEND_JITTER, 3))
    if dim == 2:
        jit[..., 2] = 0.0
    pts = np.concatenate([idx[:, None, :], idx[:, None, :] + jit], axis=1).reshape(-1, 3)
    hi = np.asarray(disp.shape[:3], dtype=np.float64) - 1.0
    pts = np.clip(pts, 0.0, hi) * np.asarray(spacing, dtype=np.float64)[:3]
    if len(pts) > _MEND_MAX_POINTS:
        pts = pts[rng.choice(len(pts), _MEND_MAX_POINTS, replace=False)]
    return pts[:, :dim], count


def evaluate_loss(field_: MotionField, seq: Sequence, config: FitConfig | None = None, repeats: int = 4,
                  seed: int = 12345) -> float:
    """The fitting loss of ``field_`` on ``seq`` at the finest scale, averaged over ``repeats``
    fixed point draws (deterministic: for comparing initialisations and adaptation curves)."""
    return evaluate_losses([field_], seq, config, repeats, seed)[0]


def evaluate_losses(fields: list[MotionField], seq: Sequence, config: FitConfig | None = None, repeats: int = 4,
                    seed: int = 12345) -> list[float]:
    """:func:`evaluate_loss` of several fields on the same point draws (common random numbers,
    so their differences are not sampling noise), building the problem once."""
    cfg = config or FitConfig()
    device = resolve_device(cfg.device)
    for f in fields:
        _check_compatible(f, seq)
    problem = Objective(seq, cfg, device)
    out = []
    for f in fields:
        gen = torch.Generator().manual_seed(seed)
        f = f.to(device)
        # Only the hash grid's Jacobian is forward-mode autodiff, which needs autograd enabled;
        # the others are plain tensor maths and need no graph.
        grad_mode = torch.enable_grad() if f.config.model == "hashgrid" else torch.no_grad()
        with grad_mode:
            vals = [problem.loss(f, problem.n_levels - 1, gen)[0].item() for _ in range(repeats)]
        out.append(float(np.mean(vals)))
    return out


def _check_compatible(field_: MotionField, seq: Sequence) -> None:
    if field_.dim != seq.ndim_space:
        raise InputError(f"{seq.name}: the initial field is {field_.dim}D but the sequence is {seq.ndim_space}D")
    if field_.n_frames != seq.n_frames or field_.ref_frame != seq.ref_frame:
        # Time is continuous in cycle phase, so a field for another frame count is re-timed.
        field_.set_frame(field_.centre, float(field_.scale), seq.n_frames, seq.ref_frame)


def _folding(seq: Sequence, disp: np.ndarray) -> dict[str, dict]:
    """Folding of the fitted grid ``disp`` (:func:`folding_stats_regions`): ``"all"`` of it and,
    with reference labels, ``"heart"`` (the labelled heart and a margin)."""
    heart = None if seq.ref_labels is None else np.isin(seq.ref_labels, list(seq.label_map.codes()))
    regions = {"all": None}
    if heart is not None and heart.any():
        # The heart region of `cardioinr evaluate` too, so the two report the same figure.
        regions["heart"] = within_margin(heart, seq.spacing, HEART_MARGIN_MM)
    return folding_stats_regions(disp, seq.spacing, regions)


def _fit_metrics(seq: Sequence, cfg: FitConfig, history: list[dict], disp: np.ndarray, fit_seconds: float,
                 total_seconds: float, folding: dict[str, dict] | None = None) -> dict:
    """The fit's figures that metrics.json records (``folding``: :func:`_folding` of ``disp`` when already known)."""
    steps = fit_steps(history)  # mending says its own
    last = steps[-1] if steps else {}
    folding = _folding(seq, disp) if folding is None else folding
    fold_all = folding["all"]
    out = {
        "fit_seconds": round(fit_seconds, 3),
        "total_seconds": round(total_seconds, 3),
        "steps": len(steps),
        "restarts": sum(1 for h in history if "restart" in h),
        "final_losses": {k: v for k, v in last.items() if k not in ("step", "level")},
        "percent_negative_jacobian": fold_all["percent_folded"],
        "per_frame_percent_negative_jacobian": fold_all["per_frame_percent"],  # the report plots it
        "min_jacobian_determinant": fold_all["min_det"],
        "max_displacement_mm": float(np.abs(disp).max()),
        # How the normalised frame (where a prior's motion lands) was placed on the heart.
        "heart_location": heart_frame(seq).to_dict(),
    }
    used = [name for name, w in (("point sampling", cfg.heart_fraction),
                                 ("cavity follow", cfg.w_cavity_follow if seq.ndim_space == 3 else 0.0),
                                 ("incompressibility", cfg.w_incompress)) if w > 0]
    if (used and seq.ref_labels is None and out["heart_location"]["method"] == "images"
            and located_outline(seq) is not None):
        # no labels: the LV outlines found in the images stood in for them
        out["heart_location"]["outlines_used_by"] = used
    if "heart" in folding:
        out["percent_negative_jacobian_heart"] = folding["heart"]["percent_folded"]
    return out


def fit_sequence(seq: Sequence, config: FitConfig | None = None, init: MotionField | None = None,
                 progress: bool = False) -> FitResult:
    """Convenience wrapper: ``Fitter(config).fit(seq, init)``."""
    return Fitter(config).fit(seq, init=init, progress=progress)


__all__ = ["FitResult", "Fitter", "evaluate_loss", "evaluate_losses", "fit_sequence", "fit_steps"]
