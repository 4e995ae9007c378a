"""The built-in priors shipped inside the package, and how a fit chooses its prior.

``weights/`` holds one ``consensus`` prior per dimension (``consensus-2d``, ``consensus-3d``)
and ``manifest.json`` with each one's version, SHA-256, size and model card. They are made by
``benchmarks/builtin_priors.py`` (``make priors``), never downloaded: a fit works offline.

A fit's ``--prior`` is one of: ``builtin`` (the default: the built-in prior of the sequence's
dimension), ``none`` (random initialisation, a fit from scratch) or a checkpoint path
(:func:`resolve_prior`). A built-in file whose bytes differ from its manifest is refused with a
one-line :class:`~cardioinr.core.errors.CheckpointError` (a damaged install), not used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

from cardioinr.core.errors import CheckpointError, ConfigError
from cardioinr.core.files import file_sha256
from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.fit.preprocess import heart_frame
from cardioinr.io import Sequence
from cardioinr.priors.checkpoint import load_prior
from cardioinr.priors.prior import Prior

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
BUILTIN = "builtin"
NO_PRIOR = "none"


def builtin_name(dim: int) -> str:
    """Name (and file stem) of the built-in prior for ``dim``-D sequences."""
    return f"consensus-{int(dim)}d"


def manifest() -> dict[str, dict]:
    """The built-in priors' manifest: name -> ``{file, dim, kind, version, sha256, bytes, ...}``
    (empty when the package ships none)."""
    path = WEIGHTS_DIR / MANIFEST
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("priors", {}))


def builtin_path(dim: int) -> Path:
    """Path of the built-in prior for ``dim``-D sequences, checked against its manifest."""
    name = builtin_name(dim)
    entry = manifest().get(name)
    if entry is None:
        raise CheckpointError(f"this cardioinr install ships no built-in {dim}D prior ({name}); "
                              "pass --prior PATH or --prior none")
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"{path}: the built-in {dim}D prior is missing from this install; reinstall cardioinr")
    if file_sha256(path) != entry["sha256"]:
        raise CheckpointError(f"{path}: the built-in {dim}D prior does not match its checksum (damaged install); "
                              "reinstall cardioinr")
    return path


@dataclass(frozen=True)
class PriorChoice:
    """What a fit starts from.

    Attributes:
        spec: as asked: ``builtin``, ``none`` or a checkpoint path.
        prior: the loaded prior; None for a fit from scratch.
        record: what metrics.json says about it (``source``, ``path``, ``name``, ``version``,
            ``kind``, ``sha256``; ``reason`` when a built-in prior was set aside).
        explicit: the fit settings the user gave (they win over the prior's adaptation defaults).
    """

    spec: str
    prior: Prior | None
    record: dict
    explicit: dict = dc_field(default_factory=dict)

    def fit_config(self, base: FitConfig) -> FitConfig:
        """The fit's settings: ``base`` for a fit from scratch; with a prior, the kind's
        adaptation defaults under the user's explicit settings, and the prior's architecture."""
        if self.prior is None:
            return base
        return self.prior.fit_config(FitConfig(), **{k: v for k, v in self.explicit.items() if k != "field"})

    def init_field(self, seq: Sequence, through_plane: float | str,
                   config: FitConfig) -> tuple[MotionField | None, dict]:
        """The starting field (None: random weights) and the ``prior`` entry of metrics.json."""
        if self.prior is None:
            return None, {"prior": dict(self.record)}
        init, used = self.prior.start(seq, through_plane, config)
        record = dict(self.record)
        if seq.ndim_space == 3:
            record.update(through_plane=used, through_plane_requested=through_plane)
        record["applicability"] = self.prior.applicability(self.prior.describe_case(seq))
        return init, {"prior": record}


def resolve_prior(spec: str | Path | None, dim: int, device: str = "cpu") -> PriorChoice:
    """Load the prior a fit of a ``dim``-D sequence starts from.

    Args:
        spec: ``None`` or ``"builtin"`` (the built-in prior of ``dim``), ``"none"`` (scratch),
            or a checkpoint path.
        dim: 2 or 3, the sequence's spatial dimension.
    """
    text = BUILTIN if spec is None else str(spec)
    if text == NO_PRIOR:
        return PriorChoice(NO_PRIOR, None, {"source": NO_PRIOR, "kind": "random"})
    if text == BUILTIN:
        path = builtin_path(dim)
        prior = load_prior(path, device=device)
        entry = manifest()[builtin_name(dim)]
        return PriorChoice(BUILTIN, prior, {"source": BUILTIN, "name": builtin_name(dim), "version": entry["version"],
                                            "kind": prior.kind, "path": str(path), "sha256": entry["sha256"]})
    path = Path(text)
    prior = load_prior(path, device=device)
    record = {"source": "file", "path": str(path), "kind": prior.kind, "sha256": file_sha256(path)}
    if prior.lineage:  # a fine-tuned prior: say what it was fine-tuned from
        top = prior.lineage[-1]
        record["fine_tuned_from"] = {k: top.get(k) for k in ("name", "source", "version", "sha256")}
    return PriorChoice(text, prior, record)


def choose_start(seq: Sequence, spec: str | Path | None, explicit: dict | None = None, device: str = "cpu",
                 log: Callable[[str], None] | None = None) -> PriorChoice:
    """The prior a fit of ``seq`` starts from, given ``--prior`` (``spec``; None: the default).

    The default (``spec`` None) is the built-in prior of the sequence's dimension, set aside
    with a one-line notice (``log``) and a scratch fit when it cannot apply: the user's
    ``explicit`` settings ask for another field architecture, or, without labels, no beating
    heart was found in the images to place it on (a prior placed at random would start the fit
    from a motion that belongs elsewhere). Asked for by name or path, a prior that cannot apply
    is a :class:`~cardioinr.core.errors.ConfigError` instead.
    """
    explicit = dict(explicit or {})
    choice = resolve_prior(spec, seq.ndim_space, device)
    choice = PriorChoice(choice.spec, choice.prior, choice.record, explicit)
    if choice.prior is None:
        return choice
    what = "the built-in prior" if choice.spec == BUILTIN else f"the prior {choice.spec}"
    reason = None
    source = seq.meta.get("source") or seq.name
    if choice.prior.field.dim != seq.ndim_space:
        reason = (f"{what}: a {choice.prior.field.dim}D prior cannot start a fit of the {seq.ndim_space}D sequence "
                  f"{source}; train one on {seq.ndim_space}D data")
    elif "field" in explicit and explicit["field"] != choice.prior.field.config:
        reason = (f"{what} has a {describe_field(choice.prior.field.config)} field, the settings ask for a "
                  f"{describe_field(explicit['field'])} one")
    else:
        frame = heart_frame(seq)
        if not frame.found:
            reason = f"no beating heart was found in the images of {source} to place {what} on ({frame.detail})"
    if reason is None:
        return choice
    if spec is not None:
        raise ConfigError(f"{reason}; use --prior none to fit from scratch")
    if log is not None:
        log(f"{reason}: fitting from scratch")
    return PriorChoice(NO_PRIOR, None, {"source": NO_PRIOR, "kind": "random", "reason": reason}, explicit)


def describe_field(cfg: FieldConfig) -> str:
    """``siren 3 x 128`` and the like."""
    return f"{cfg.model} {cfg.layers} x {cfg.hidden}"


def list_builtin() -> list[dict]:
    """One row per built-in prior: name, dimension, kind, version, size, checksum state, card."""
    rows = []
    for name, e in sorted(manifest().items()):
        path = WEIGHTS_DIR / e["file"]
        state = "missing" if not path.is_file() else ("ok" if file_sha256(path) == e["sha256"] else "damaged")
        rows.append(dict(e, name=name, path=str(path), state=state))
    return rows


__all__ = ["BUILTIN", "MANIFEST", "NO_PRIOR", "WEIGHTS_DIR", "PriorChoice", "builtin_name", "builtin_path",
           "choose_start", "describe_field", "list_builtin", "manifest", "resolve_prior"]
