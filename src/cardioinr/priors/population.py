"""The ``population`` prior: one field fitted jointly to many sequences (weights shared, each
sequence in its own heart-centred normalised frame)."""

from __future__ import annotations

from collections.abc import Callable

from cardioinr.fit.fields import MotionField
from cardioinr.priors.checkpoint import TrainState
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.engine import TrainingCohort, shared_step_loop
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import Prior


def train_population(f: MotionField, cohort: TrainingCohort, cfg: PriorConfig, state: TrainState, progress: bool,
                     callback: Callable[[int, dict], None] | None, dist: DistContext) -> Prior:
    """One field trained on the batch-mean loss of the cohort (:func:`shared_step_loop`)."""
    history = shared_step_loop(f, cohort, cfg, state, progress, callback, dist, None, "population")
    return Prior("population", f, history=history)


__all__ = ["train_population"]
