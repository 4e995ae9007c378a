"""What prior training writes to disk: the prior checkpoint and the resumable training state.

A checkpoint is one self-describing torch file (format name, version, kind, field architecture,
weights, training settings, a summary of the training data, the training-distribution record
case by case, and the lineage of the priors it was fine-tuned from), written atomically; loading
checks all of it and fails with a one-line :class:`CheckpointError`. The training state is
written atomically every few steps by rank 0 and resumed from when present.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Sequence as Seq
from pathlib import Path

import numpy as np
import torch

from cardioinr.core.console import collapse_whitespace, first_line
from cardioinr.core.errors import CheckpointError
from cardioinr.core.files import atomic_path
from cardioinr.fit.device import resolve_device
from cardioinr.fit.fields import MotionField
from cardioinr.io import Sequence
from cardioinr.priors.config import KINDS, PriorConfig
from cardioinr.priors.encoder import CodeEncoder
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import Prior

FORMAT = "cardioinr-prior"
VERSION = 1


def save_prior(path: str | Path, prior: Prior) -> Path:
    """Write a prior checkpoint atomically (only kinds :func:`load_prior` reads back)."""
    from cardioinr import __version__

    if prior.kind not in KINDS:
        raise CheckpointError(f"{path}: cannot save a prior of kind {prior.kind!r} (kinds: {', '.join(KINDS)}); "
                              "a random initialisation needs no checkpoint")

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": prior.kind,
        "cardioinr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "field": prior.field.describe(),
        "state_dict": {k: v.detach().cpu() for k, v in prior.field.state_dict().items()},
        "config": prior.config,
        "data_summary": prior.data_summary,
        "history": prior.history,
        "lineage": prior.lineage,
        "distribution": prior.distribution,
    }
    if prior.encoder is not None:
        payload["encoder"] = {
            "in_channels": prior.encoder.in_channels, "latent_dim": prior.encoder.latent_dim,
            "width": prior.encoder.width,
            "state_dict": {k: v.detach().cpu() for k, v in prior.encoder.state_dict().items()},
        }
    if prior.codes is not None:
        payload["codes"] = prior.codes.detach().cpu()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_prior(path: str | Path, device: str = "cpu", kind: str | None = None) -> Prior:
    """Read and check a prior checkpoint; any problem is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a prior checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: prior checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated: {_load_problem(e)})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cardioinr prior checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {obj.get('version')} is not supported (expected {VERSION})")
    if obj.get("kind") not in KINDS:
        raise CheckpointError(f"{path}: unknown prior kind {obj.get('kind')!r}")
    if kind is not None and obj["kind"] != kind:
        raise CheckpointError(f"{path}: expected a {kind!r} prior, found {obj['kind']!r}")
    try:
        d = obj["field"]
        f = MotionField.from_description(d)
        f.load_state_dict(obj["state_dict"])
        enc = None
        if "encoder" in obj:
            e = obj["encoder"]
            enc = CodeEncoder(e["in_channels"], e["latent_dim"], e["width"])
            enc.load_state_dict(e["state_dict"])
            enc.eval()
    except Exception as e:
        detail = collapse_whitespace(str(e))[:200] or type(e).__name__  # a state-dict error spans lines
        raise CheckpointError(f"{path}: checkpoint content does not match its description ({detail})") from None
    dev = resolve_device(device)
    return Prior(obj["kind"], f.to(dev), enc.to(dev) if enc is not None else None, obj.get("config", {}),
                 obj.get("data_summary", {}), obj.get("history", []), obj.get("codes"),
                 list(obj.get("lineage") or []), dict(obj.get("distribution") or {}))


def _load_problem(e: BaseException) -> str:
    """What went wrong in torch.load, in a few words (its weights-only message is a page long)."""
    text = str(e)
    if "Weights only load failed" in text or "UnpicklingError" in type(e).__name__:
        return "not a torch checkpoint, or it holds objects a safe load refuses"
    if "PytorchStreamReader" in text:
        return "damaged torch archive: " + text.split(":", 1)[-1].split(".")[0].strip()
    if isinstance(e, (EOFError, struct.error)):
        return f"ends too early or is not a torch file: {first_line(e, 160)}"
    return first_line(e, 160)


def summarise_data(seqs: Seq[Sequence]) -> dict:
    """What the prior was trained on (stored in the checkpoint)."""
    h = hashlib.sha256()
    for s in seqs:
        h.update(s.name.encode())
        h.update(np.ascontiguousarray(s.image[::4, ::4]).tobytes())
    return {
        "n_sequences": len(seqs),
        "names": [s.name for s in seqs][:1000],
        "dims": sorted({s.ndim_space for s in seqs}),
        "shapes": sorted({str(tuple(s.image.shape)) for s in seqs})[:20],
        "spacings_mm": sorted({str(tuple(np.round(s.spacing, 3))) for s in seqs})[:20],
        "n_frames": sorted({s.n_frames for s in seqs}),
        "with_reference_labels": sum(s.ref_labels is not None for s in seqs),
        "fingerprint": h.hexdigest()[:16],
    }


class TrainState:
    """Resumable training state: written atomically every few steps by rank 0."""

    def __init__(self, path: Path | None, config: PriorConfig, dist: DistContext, parent: str | None = None) -> None:
        """``parent``: SHA-256 of the prior a fine-tuning starts from (a state left by a run
        from another parent, or from scratch, is not resumed)."""
        self.path, self.config, self.dist, self.parent = path, config, dist, parent

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            st = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{self.path}: training state is unreadable ({_load_problem(e)}); "
                                  "delete it to restart") from None
        if not isinstance(st, dict) or not isinstance(st.get("step"), int):
            raise CheckpointError(f"{self.path}: not a cardioinr training state; delete it to restart")
        if st.get("config") != self.config.to_dict():
            raise CheckpointError(f"{self.path}: training state was made with other settings; delete it to restart")
        if st.get("parent") != self.parent:
            what = f"the prior {st['parent'][:12]}" if st.get("parent") else "random weights"
            raise CheckpointError(f"{self.path}: training state started from {what}, not from this run's start; "
                                  "delete it to restart")
        return st

    def save(self, step: int, payload: dict) -> None:
        if self.path is None or self.dist.rank != 0:
            return
        payload = dict(payload, step=step, config=self.config.to_dict(), parent=self.parent)
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    def clear(self) -> None:
        if self.path is not None and self.dist.rank == 0 and self.path.exists():
            self.path.unlink()


__all__ = ["FORMAT", "VERSION", "TrainState", "load_prior", "save_prior", "summarise_data"]
