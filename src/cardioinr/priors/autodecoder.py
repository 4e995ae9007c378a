"""The ``autodecoder`` prior: a shared field modulated by a per-sequence latent code
(Functa-style shift modulations); a new sequence is fitted by optimising its code first, then
all weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from cardioinr.fit.fields import MotionField
from cardioinr.priors.checkpoint import TrainState
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.engine import TrainingCohort, shared_step_loop
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import Prior


def train_autodecoder(f: MotionField, cohort: TrainingCohort, cfg: PriorConfig, state: TrainState, progress: bool,
                      callback: Callable[[int, dict], None] | None, dist: DistContext) -> Prior:
    """The shared field and one code per sequence trained jointly (:func:`shared_step_loop`);
    the prior keeps the codes, and its field starts from their mean."""
    g = torch.Generator().manual_seed(cfg.seed)
    # Codes start near the field's own code: zero for a fresh field, the mean code of a prior
    # being fine-tuned (so its decoder starts from the motion it already knows).
    codes = nn.Parameter(f.latent.detach() + torch.randn(len(cohort), cfg.latent_dim, generator=g).to(f.latent.device) * 0.01)
    history = shared_step_loop(f, cohort, cfg, state, progress, callback, dist, codes, "autodecoder")
    with torch.no_grad():
        f.latent.copy_(codes.mean(0))  # a new heart starts from the mean code
    return Prior("autodecoder", f, history=history, codes=codes.detach().clone())


__all__ = ["train_autodecoder"]
