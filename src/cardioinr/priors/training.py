"""Training a prior of any kind on a cohort of sequences (:func:`train_prior`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path

import torch

from cardioinr.fit.device import resolve_device
from cardioinr.fit.fields import MotionField
from cardioinr.io import Sequence
from cardioinr.priors.amortised import train_encoder
from cardioinr.priors.autodecoder import train_autodecoder
from cardioinr.priors.checkpoint import TrainState, summarise_data
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.consensus import train_consensus
from cardioinr.priors.engine import TrainingCohort
from cardioinr.priors.meta import train_meta
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.population import train_population
from cardioinr.priors.prior import Prior


def train_prior(
    seqs: Seq[Sequence],
    config: PriorConfig,
    *,
    progress: bool = False,
    callback: Callable[[int, dict], None] | None = None,
    state_path: str | Path | None = None,
    dist: DistContext | None = None,
    clear_state: bool = True,
) -> Prior:
    """Train a prior of ``config.kind`` on ``seqs`` and return it (to write with
    :func:`~cardioinr.priors.checkpoint.save_prior`).

    Args:
        seqs: training sequences (one dimension); reference labels make the normalised frame
            heart-centred, which is what lets the prior transfer.
        config: training settings.
        progress: show a progress bar.
        callback: ``callback(step, logs)`` after each outer step.
        state_path: where to keep resumable training state (written atomically every
            ``save_every`` steps and resumed from when present).
        dist: data-parallel context (torch.distributed); None for one process.
        clear_state: delete the training state on success. Pass False when the caller still
            has to write the checkpoint, and delete the state once it is written, so that a
            crash inside that write can still be resumed.
    """
    device = resolve_device(config.device)
    dist = dist or DistContext()
    cohort = TrainingCohort(seqs, config.fit, device)
    torch.manual_seed(config.seed)
    fcfg = config.field_config()
    f = MotionField(fcfg, cohort.dim, seqs[0].n_frames, seqs[0].ref_frame, seed=config.seed).to(device)
    trainer = {
        "population": train_population,
        "consensus": train_consensus,
        "autodecoder": train_autodecoder,
        "meta": train_meta,
        "encoder": train_encoder,
    }[config.kind]
    t0 = time.perf_counter()
    state = TrainState(Path(state_path) if state_path else None, config, dist)
    prior = trainer(f, cohort, config, state, progress, callback, dist)
    prior.config = {"train": config.to_dict(), "train_seconds": round(time.perf_counter() - t0, 2),
                    "encoder": {"size": config.encoder_size, "phases": config.encoder_phases},
                    "world_size": dist.world_size}
    prior.data_summary = summarise_data(seqs)
    f.set_frame(torch.zeros(cohort.dim), 1.0, seqs[0].n_frames, seqs[0].ref_frame, torch.ones(cohort.dim))
    if clear_state:
        state.clear()
    return prior.__class__(prior.kind, prior.field.cpu(), None if prior.encoder is None else prior.encoder.cpu(),
                           prior.config, prior.data_summary, prior.history,
                           None if prior.codes is None else prior.codes.cpu())


__all__ = ["train_prior"]
