"""The machinery every kind of prior trains with: the cohort of per-sequence objectives, the
per-step draws of batch and points, and the shared step loop of the population and
auto-decoder kinds.

All kinds share the per-sequence loss of :mod:`cardioinr.fit.objective`: the prior is learned
without ground-truth motion, so phantoms and real cines can be mixed freely.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch
import torch.nn as nn

from cardioinr.core.console import progress_bar
from cardioinr.core.errors import ConfigError
from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import MotionField
from cardioinr.fit.objective import Objective
from cardioinr.fit.preprocess import frame_of_reference, frame_reflection
from cardioinr.io import Sequence
from cardioinr.priors.checkpoint import TrainState
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.parallel import DistContext


class TrainingCohort:
    """The training sequences on the device, each with its loss and normalised frame."""

    def __init__(self, seqs: Seq[Sequence], fit_cfg: FitConfig, device: torch.device) -> None:
        if not seqs:
            raise ConfigError("no training sequences")
        dims = {s.ndim_space for s in seqs}
        if len(dims) != 1:
            raise ConfigError("training sequences mix 2D and 3D; train one prior per dimension")
        self.dim = dims.pop()
        self.seqs = list(seqs)
        self.objectives = [Objective(s, fit_cfg, device) for s in seqs]
        self.frames = [frame_of_reference(s) for s in seqs]
        self.reflections = [frame_reflection(s) for s in seqs]

    def __len__(self) -> int:
        return len(self.seqs)

    def bind(self, f: MotionField, i: int) -> None:
        """Put ``f`` in sequence ``i``'s normalised frame and cycle (in place)."""
        c, s = self.frames[i]
        f.set_frame(torch.as_tensor(c, dtype=torch.float32), s, self.seqs[i].n_frames, self.seqs[i].ref_frame,
                    torch.as_tensor(self.reflections[i]))

    def level_at(self, frac: float) -> int:
        """The blur level in force at fraction ``frac`` of training (every sequence shares the schedule)."""
        return self.objectives[0].level_at(frac)

    def loss(self, f: MotionField, i: int, level: int, gen: torch.Generator,
             latent: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The loss of ``f`` on sequence ``i`` (:meth:`Objective.loss`), ``f`` bound to its frame first."""
        self.bind(f, i)
        return self.objectives[i].loss(f, level, gen, latent=latent)


def step_generator(seed: int, step: int, index: int) -> torch.Generator:
    """Point sampling depends only on (seed, step, sequence), not on which process runs it,
    so data-parallel training reproduces single-process training."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 10_007 + index) % (2**63))


def batch_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    """The ``batch`` sequence indices (of ``n``, drawn with replacement) of one step's global
    batch; they depend only on (seed, step), so every rank draws the same batch."""
    rng = random.Random(seed * 7919 + step)
    return [rng.randrange(n) for _ in range(batch)]


def record_step(kind: str, step: int, total: float, level: int, n_batch: int, dist: DistContext,
                history: list[dict], callback, bar) -> dict:
    """End of one outer step: the mean loss per sequence over all ranks (``total`` is this
    rank's summed loss over its part of a batch of ``n_batch``), appended to ``history``,
    reported to ``callback`` and shown on the progress bar."""
    logs = {"step": step, "loss": dist.mean_float(total) * dist.world_size / n_batch, "level": level}
    history.append(logs)
    if callback:
        callback(step, logs)
    if bar:
        bar[0].update(bar[1], advance=1, description=f"{kind} loss {logs['loss']:.4f}")
    return logs


def shared_step_loop(f: MotionField, cohort: TrainingCohort, cfg: PriorConfig, state: TrainState, progress: bool,
                     callback: Callable[[int, dict], None] | None, dist: DistContext, codes: nn.Parameter | None,
                     kind: str) -> list[dict]:
    """Joint training of shared weights (population) and, if given, per-sequence codes
    (auto-decoder): gradient of the batch-mean loss, data-parallel over ranks."""
    params = list(f.parameters())
    groups = [{"params": params, "lr": cfg.lr}]
    if codes is not None:
        groups.append({"params": [codes], "lr": cfg.latent_lr})
    opt = torch.optim.Adam(groups)
    history: list[dict] = []
    start = 0
    st = state.load()
    if st is not None:
        f.load_state_dict(st["field"])
        opt.load_state_dict(st["optimiser"])
        if codes is not None:
            with torch.no_grad():
                codes.copy_(st["codes"])
        history, start = st["history"], st["step"]
    bar = progress_bar(cfg.steps, kind, progress and dist.rank == 0)
    try:
        for step in range(start, cfg.steps):
            frac = step / max(cfg.steps - 1, 1)
            level = cohort.level_at(frac)
            decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
            for g, base in zip(opt.param_groups, [cfg.lr, cfg.latent_lr]):
                g["lr"] = base * decay
            opt.zero_grad(set_to_none=True)
            batch = batch_indices(len(cohort), cfg.batch, step, cfg.seed)
            total = 0.0
            for pos, i in dist.mine(batch):
                z = codes[i] if codes is not None else None
                loss, _ = cohort.loss(f, i, level, step_generator(cfg.seed, step, pos), latent=z)
                if z is not None:
                    loss = loss + cfg.latent_reg * z.pow(2).sum()
                (loss / len(batch)).backward()
                total += loss.item()
            all_params = params + ([codes] if codes is not None else [])
            dist.sum_grads(all_params)
            opt.step()
            record_step(kind, step, total, level, len(batch), dist, history, callback, bar)
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                state.save(step + 1, {"field": f.state_dict(), "optimiser": opt.state_dict(), "history": history,
                                      "codes": None if codes is None else codes.detach().clone()})
    finally:
        if bar:
            bar[0].stop()
    return history


__all__ = ["TrainingCohort", "batch_indices", "record_step", "shared_step_loop", "step_generator"]
