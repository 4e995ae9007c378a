"""Training a prior of any kind on a cohort of sequences (:func:`train_prior`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path

import torch

from cardioinr.core.errors import ConfigError
from cardioinr.fit.device import resolve_device
from cardioinr.fit.fields import MotionField
from cardioinr.io import Sequence
from cardioinr.priors.amortised import train_encoder
from cardioinr.priors.autodecoder import train_autodecoder
from cardioinr.priors.checkpoint import TrainState, summarise_data
from cardioinr.priors.config import PriorConfig
from cardioinr.priors.consensus import train_consensus
from cardioinr.priors.distribution import training_record
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
    parent: Prior | None = None,
    parent_record: dict | None = None,
    truths: Seq[dict | None] | None = None,
    record_distribution: bool = True,
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
        parent: fine-tune this prior (its weights, and its encoder for the encoder kind, are
            where training starts; its architecture is kept) instead of random weights.
        parent_record: where ``parent`` came from (``name``, ``source``, ``version``, ``path``,
            ``sha256``): the new prior's lineage records it.
        truths: per sequence, a phantom's drawn parameters for the distribution record
            (default: ``seq.meta["params"]`` where present).
        record_distribution: evaluate the trained prior on every training case for the
            training-distribution record (:mod:`cardioinr.priors.distribution`; on rank 0,
            the one that writes the checkpoint).
    """
    device = resolve_device(config.device)
    dist = dist or DistContext()
    cohort = TrainingCohort(seqs, config.fit, device)
    torch.manual_seed(config.seed)
    fcfg = config.field_config()
    if parent is not None:
        check_parent(parent, config, cohort.dim)
        f = copy.deepcopy(parent.field).to(device)
        f.set_frame(f.centre, float(f.scale), seqs[0].n_frames, seqs[0].ref_frame)
    else:
        f = MotionField(fcfg, cohort.dim, seqs[0].n_frames, seqs[0].ref_frame, seed=config.seed).to(device)
    t0 = time.perf_counter()
    parent_sha = (parent_record or {}).get("sha256") if parent is not None else None
    state = TrainState(Path(state_path) if state_path else None, config, dist,
                       parent=(parent_sha or "parent") if parent is not None else None)
    if config.kind == "encoder":
        prior = train_encoder(f, cohort, config, state, progress, callback, dist,
                              parent_encoder=parent.encoder if parent is not None else None)
    else:
        trainer = {
            "population": train_population,
            "consensus": train_consensus,
            "autodecoder": train_autodecoder,
            "meta": train_meta,
        }[config.kind]
        prior = trainer(f, cohort, config, state, progress, callback, dist)
    prior.config = {"train": config.to_dict(), "train_seconds": round(time.perf_counter() - t0, 2),
                    "encoder": {"size": config.encoder_size, "phases": config.encoder_phases},
                    "world_size": dist.world_size}
    prior.data_summary = summarise_data(seqs)
    if parent is not None:
        prior.lineage = list(parent.lineage) + [lineage_entry(parent, parent_record or {})]
        prior.config["fine_tuned_from"] = {k: (parent_record or {}).get(k) for k in ("name", "source", "version", "sha256")}
    f.set_frame(torch.zeros(cohort.dim), 1.0, seqs[0].n_frames, seqs[0].ref_frame, torch.ones(cohort.dim))
    out = prior.__class__(prior.kind, prior.field.cpu(), None if prior.encoder is None else prior.encoder.cpu(),
                          prior.config, prior.data_summary, prior.history,
                          None if prior.codes is None else prior.codes.cpu(), prior.lineage)
    if record_distribution and dist.rank == 0:  # only rank 0 writes the checkpoint
        truths = list(truths) if truths is not None else [None] * len(seqs)
        out.distribution = training_record([out.describe_case(s, t) for s, t in zip(seqs, truths)],
                                           out.fit_config().to_dict())
    if clear_state:
        state.clear()
    return out


def check_parent(parent: Prior, config: PriorConfig, dim: int) -> None:
    """A fine-tuning keeps the parent's architecture and dimension; a latent kind needs a parent
    with codes of the same size (one-line :class:`ConfigError` otherwise)."""
    if parent.field.dim != dim:
        raise ConfigError(f"the prior to fine-tune is {parent.field.dim}D but the training sequences are {dim}D")
    want = config.field_config()
    if want != parent.field.config:
        raise ConfigError(f"fine-tuning keeps the parent prior's field ({parent.field.config.model} "
                          f"{parent.field.config.layers} x {parent.field.config.hidden}, latent "
                          f"{parent.field.config.latent_dim}); the settings ask for {want.model} {want.layers} x "
                          f"{want.hidden}, latent {want.latent_dim} (kind {config.kind!r}, parent {parent.kind!r})")


def lineage_entry(parent: Prior, record: dict) -> dict:
    """What a fine-tuned prior keeps about its parent: where it came from (name, source,
    version, path, SHA-256), its kind, recipe, data summary and training-distribution record."""
    return {
        "name": record.get("name") or (Path(record["path"]).stem if record.get("path") else None),
        "source": record.get("source"), "version": record.get("version"),
        "path": record.get("path"), "sha256": record.get("sha256"), "kind": parent.kind,
        "recipe": parent.config.get("train"), "train_seconds": parent.config.get("train_seconds"),
        "data_summary": parent.data_summary, "distribution": parent.distribution,
    }


__all__ = ["check_parent", "lineage_entry", "train_prior"]
