"""The ``consensus`` prior: per-subject fits from one common initialisation, then the trimmed
element-wise mean of their weights."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace

import torch

from cardioinr.core.console import progress_bar
from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import MotionField
from cardioinr.fit.fitter import Fitter
from cardioinr.priors.checkpoint import TrainState
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.engine import TrainingCohort
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import Prior


def _subject_fit_config(cfg: PriorConfig, steps: int, seed: int) -> FitConfig:
    return replace(cfg.fit, field=cfg.field_config(), steps=steps, seed=seed, device=cfg.device, patience=10**9)


def train_consensus(f: MotionField, cohort: TrainingCohort, cfg: PriorConfig, state: TrainState, progress: bool,
                    callback: Callable[[int, dict], None] | None, dist: DistContext) -> Prior:
    """Per-subject fits from one common initialisation; trimmed element-wise mean of weights."""
    init = copy.deepcopy(f.state_dict())
    st = state.load()
    weights: dict[int, dict] = dict(st["weights"]) if st is not None else {}
    history: list[dict] = list(st["history"]) if st is not None else []
    todo = [i for i in range(len(cohort)) if i not in weights]
    bar = progress_bar(len(cohort), "consensus", progress and dist.rank == 0)
    if bar:
        bar[0].update(bar[1], advance=len(weights))
    try:
        for i in todo:
            if i % dist.world_size != dist.rank:
                continue
            g = copy.deepcopy(f)
            g.load_state_dict(init)
            cohort.bind(g, i)
            hist = Fitter(_subject_fit_config(cfg, cfg.subject_steps, cfg.seed + i)).optimise(cohort.seqs[i], g)
            weights[i] = {k: v.detach().cpu().clone() for k, v in g.state_dict().items()}
            logs = {"subject": i, "loss": hist[-1]["loss"] if hist else float("nan")}
            history.append(logs)
            if callback:
                callback(len(history), logs)
            if bar:
                bar[0].update(bar[1], advance=1)
            state.save(len(weights), {"weights": weights, "history": history})
    finally:
        if bar:
            bar[0].stop()
    weights = _gather_weights(weights, dist)
    stacked = {k: torch.stack([weights[i][k] for i in sorted(weights)]) for k in init}
    avg = {k: trimmed_mean(v, cfg.trim) if v.is_floating_point() else v[0] for k, v in stacked.items()}
    f.load_state_dict(avg)
    return Prior("consensus", f, history=history)


def trimmed_mean(x: torch.Tensor, trim: float) -> torch.Tensor:
    """Element-wise mean over dim 0 after dropping the ``trim`` fraction at each end."""
    n = x.shape[0]
    k = int(math.floor(trim * n))
    if k == 0 or n - 2 * k < 1:
        return x.mean(0)
    return x.sort(0).values[k:n - k].mean(0)


def _gather_weights(weights: dict[int, dict], dist: DistContext) -> dict[int, dict]:
    if not dist.active:
        return weights
    import torch.distributed as td

    out: list = [None] * dist.world_size
    td.all_gather_object(out, weights)
    merged: dict[int, dict] = {}
    for w in out:
        merged.update(w)
    return merged


__all__ = ["train_consensus", "trimmed_mean"]
