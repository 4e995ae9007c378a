"""The ``meta`` prior: a meta-learned initialisation (Reptile with an Adam inner loop that
mirrors the adaptation used at fit time)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from cardioinr.core.console import progress_bar
from cardioinr.fit.fields import MotionField
from cardioinr.priors.checkpoint import TrainState
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.engine import TrainingCohort, batch_indices, record_step, step_generator
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import Prior


def train_meta(f: MotionField, cohort: TrainingCohort, cfg: PriorConfig, state: TrainState, progress: bool,
               callback: Callable[[int, dict], None] | None, dist: DistContext) -> Prior:
    """Reptile: theta <- theta + meta_lr * mean_i(theta_i - theta), theta_i after an inner
    Adam loop of ``inner_steps`` on sequence i (the same optimiser as adaptation)."""
    history: list[dict] = []
    start = 0
    st = state.load()
    if st is not None:
        f.load_state_dict(st["field"])
        history, start = st["history"], st["step"]
    bar = progress_bar(cfg.steps, "meta", progress and dist.rank == 0)
    try:
        for step in range(start, cfg.steps):
            frac = step / max(cfg.steps - 1, 1)
            level = cohort.level_at(min(1.0, 0.5 + frac))  # adaptation works at fine scales
            batch = batch_indices(len(cohort), cfg.batch, step, cfg.seed)
            theta = {k: v.detach().clone() for k, v in f.named_parameters()}
            delta = {k: torch.zeros_like(v) for k, v in theta.items()}
            total = 0.0
            for pos, i in dist.mine(batch):
                g = copy.deepcopy(f)
                opt = torch.optim.Adam(g.parameters(), lr=cfg.inner_lr)
                gen = step_generator(cfg.seed, step, pos)
                for _ in range(cfg.inner_steps):
                    opt.zero_grad(set_to_none=True)
                    loss, _ = cohort.loss(g, i, level, gen)
                    loss.backward()
                    opt.step()
                total += loss.item()
                for k, v in g.named_parameters():
                    delta[k] += v.detach() - theta[k]
            for k in delta:
                dist.sum_(delta[k])
            meta_lr = cfg.meta_lr * (1 - frac) + 0.05 * frac
            with torch.no_grad():
                for k, v in f.named_parameters():
                    v.add_(delta[k], alpha=meta_lr / len(batch))
            record_step("meta", step, total, level, len(batch), dist, history, callback, bar)
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                state.save(step + 1, {"field": f.state_dict(), "history": history})
    finally:
        if bar:
            bar[0].stop()
    return Prior("meta", f, history=history)


__all__ = ["train_meta"]
