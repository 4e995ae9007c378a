"""Learned motion priors: train once on a cohort, start every new fit from them.

Kinds (arXiv 2607.00955; Alvarez-Florez et al. 2026), plus an amortised encoder:

* ``population``  one field fitted jointly to many sequences (weights shared, each sequence
  in its own heart-centred normalised frame);
* ``consensus``   per-subject fits from one common initialisation, then the trimmed
  element-wise mean of their weights;
* ``autodecoder`` a shared field modulated by a per-sequence latent code (Functa-style shift
  modulations); a new sequence is fitted by optimising its code first, then all weights;
* ``meta``        a meta-learned initialisation (Reptile with an Adam inner loop that mirrors
  the adaptation used at fit time);
* ``encoder``     the auto-decoder plus a small CNN that predicts the code from the images in
  one forward pass, followed by a few refinement steps.

All kinds share the per-sequence loss of :mod:`cardioinr.fit.fitter`: the prior is learned without
ground-truth motion, so phantoms and real cines can be mixed freely.

Checkpoints are one self-describing torch file (format name, version, kind, field
architecture, weights, training settings and a summary of the training data), written
atomically; loading checks all of it and fails with a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import struct
import time
from collections.abc import Callable, Sequence as Seq
from dataclasses import asdict, dataclass, fields, replace
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from cardioinr.core.errors import CheckpointError, ConfigError
from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.fit.fitter import (FitConfig, Fitter, _Problem, check_setting_types, evaluate_losses, frame_of_reference,
                  frame_reflection, normalise_intensity, config_from_file, resolve_device)
from cardioinr.io import Sequence, atomic_path
from cardioinr.fit.warp import sample

KINDS = ("population", "consensus", "autodecoder", "meta", "encoder")
FORMAT = "cardioinr-prior"
VERSION = 1

# How a fit adapts from each kind by default (FitConfig overrides). The prior already holds
# the coarse motion, so the step budget is small (8x fewer steps than a scratch fit).
ADAPT_DEFAULTS: dict[str, dict] = {
    # Priors keep the scratch fit's coarse-to-fine blur: it denoises and widens the capture
    # range at every start point (measured: without it, EPE under noise is 0.52 instead of 0.42
    # mm after 100 steps). What a prior changes is how many steps are needed.
    "random": {},
    "population": {"steps": 100, "patience": 40},
    "consensus": {"steps": 100, "patience": 40},
    "meta": {"steps": 100, "patience": 40},
    "autodecoder": {"steps": 100, "latent_steps": 30, "patience": 40},
    "encoder": {"steps": 60, "latent_steps": 10, "patience": 30},
}

# Step budgets of 3D priors (stacks), which replace the ones above. At the 2D budgets the 3D
# priors stop short of an 800-step scratch fit on 12 held-out 3D phantoms (EPE 0.78-0.91 mm
# against 0.73); at 200 steps they come within 0.05 mm of it (0.71-0.78, MYO Dice level) in
# a third of its time (docs/priors.md, eighth session).
ADAPT_STEPS_3D: dict[str, int] = {kind: 200 for kind in KINDS}


def adapt_steps(kind: str, dim: int) -> int | None:
    """Default adaptation budget of a ``kind`` of prior for ``dim``-D sequences (None: the kind
    keeps the fit's own step count, as a random initialisation does)."""
    if dim == 3 and kind in ADAPT_STEPS_3D:
        return ADAPT_STEPS_3D[kind]
    return ADAPT_DEFAULTS.get(kind, {}).get("steps")


@dataclass(frozen=True)
class PriorConfig:
    """Settings of prior training.

    Attributes:
        kind: one of :data:`KINDS`.
        field: architecture of the field (``latent_dim`` is set for auto-decoder kinds).
        fit: the per-sequence loss settings used during training (weights, point budget).
        steps: outer steps (population, auto-decoder, meta, encoder).
        batch: sequences per outer step.
        lr: learning rate of the shared weights.
        subject_steps: steps of each per-subject fit (consensus).
        trim: fraction trimmed at each end for the consensus mean.
        latent_dim, latent_lr, latent_reg: auto-decoder code size, rate and L2 penalty.
        inner_steps, inner_lr, meta_lr: Reptile inner loop and outer step size.
        encoder_steps, encoder_size, encoder_phases: amortised encoder training and input.
        save_every: training state written every this many steps (for ``--resume``).
    """

    kind: str = "population"
    field: FieldConfig = dc_field(default_factory=FieldConfig)
    fit: FitConfig = dc_field(default_factory=lambda: FitConfig(points=2048, reg_points=512))
    steps: int = 600
    batch: int = 4
    lr: float = 3e-4
    subject_steps: int = 300
    trim: float = 0.2
    latent_dim: int = 32
    latent_lr: float = 3e-3
    latent_reg: float = 1e-3
    inner_steps: int = 10
    inner_lr: float = 3e-4
    meta_lr: float = 0.5
    encoder_steps: int = 300
    encoder_size: int = 48
    encoder_phases: int = 12
    save_every: int = 50
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown prior kind {self.kind!r} (choose from {', '.join(KINDS)})")
        if self.steps < 1 or self.batch < 1 or self.subject_steps < 1 or self.inner_steps < 1:
            raise ConfigError("prior steps, batch, subject_steps and inner_steps must be >= 1")
        if not 0 <= self.trim < 0.5:
            raise ConfigError("trim must be in [0, 0.5)")

    @property
    def uses_latent(self) -> bool:
        return self.kind in ("autodecoder", "encoder")

    def field_config(self) -> FieldConfig:
        return replace(self.field, latent_dim=self.latent_dim if self.uses_latent else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown prior setting(s): {', '.join(sorted(unknown))}")
        for key, sub in (("field", FieldConfig), ("fit", FitConfig)):
            if key in d and not isinstance(d[key], (dict, sub)):
                raise ConfigError(f"prior setting {key!r} must be a table of {key} settings, got {d[key]!r}")
        if isinstance(d.get("field"), dict):
            bad = set(d["field"]) - {f.name for f in fields(FieldConfig)}
            if bad:
                raise ConfigError(f"unknown field setting(s): {', '.join(sorted(bad))}")
            check_setting_types(FieldConfig, d["field"], "field setting")
            d["field"] = FieldConfig(**d["field"])
        if isinstance(d.get("fit"), dict):
            d["fit"] = FitConfig.from_dict(d["fit"])
        check_setting_types(cls, {k: v for k, v in d.items() if k not in ("field", "fit")}, "prior setting")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "PriorConfig":
        """Load from a TOML or JSON file (a ``[prior]`` table is accepted too)."""
        return config_from_file(cls, path, "prior")


# ---------------------------------------------------------------------------------------------
# Amortised encoder
# ---------------------------------------------------------------------------------------------


class CodeEncoder(nn.Module):
    """Small CNN: heart-centred image phases ``(B, C, S, S)`` -> latent code ``(B, L)``."""

    def __init__(self, in_channels: int, latent_dim: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, 2 * width), nn.SiLU(),
            nn.Linear(2 * width, latent_dim),
        )
        self.in_channels, self.latent_dim, self.width = in_channels, latent_dim, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def encoder_input(seq: Sequence, centre: np.ndarray, scale: float, size: int, phases: int,
                  reflect: np.ndarray | None = None) -> torch.Tensor:
    """Heart-centred, phase-resampled image stack for the encoder, ``(C, size, size)``.

    The in-plane window spans the normalised frame [-1, 1] (so it is the same anatomy for
    every patient); time is resampled to ``phases`` phases of the cycle starting at the
    reference frame; channels are the reference image then each phase minus the reference
    (the motion lives in the differences). 3D stacks contribute three slices about the centre.
    ``reflect`` mirrors the window as the field's normalised frame is (:func:`frame_reflection`).
    """
    rf = np.ones(seq.ndim_space) if reflect is None else np.asarray(reflect, dtype=np.float64)
    img = torch.from_numpy(normalise_intensity(seq.image))  # (X, Y, Z, T)
    sp = torch.as_tensor(seq.spacing, dtype=torch.float32)
    r = torch.linspace(-1.0, 1.0, size) * float(scale)
    gx, gy = torch.meshgrid(r * float(rf[0]) + float(centre[0]), r * float(rf[1]) + float(centre[1]), indexing="ij")
    if seq.is_2d:
        z_offsets = [0.0]
    else:
        z_offsets = [-0.25 * float(scale) * float(rf[2]), 0.0, 0.25 * float(scale) * float(rf[2])]
    t = (seq.ref_frame + torch.arange(phases) * seq.n_frames / phases) % seq.n_frames
    t0 = torch.floor(t).long()
    w = (t - t0).float()
    t1 = (t0 + 1) % seq.n_frames
    frames = img.permute(3, 0, 1, 2)  # (T, X, Y, Z)
    chans = []
    for dz in z_offsets:
        if seq.is_2d:
            pts = torch.stack([gx, gy], -1).reshape(-1, 2)
        else:
            zc = float(centre[2]) + dz
            pts = torch.stack([gx, gy, torch.full_like(gx, zc)], -1).reshape(-1, 3)
        vals = sample(frames, pts, sp).t().reshape(seq.n_frames, size, size)  # (T, S, S)
        ph = vals[t0] * (1 - w)[:, None, None] + vals[t1] * w[:, None, None]
        chans.append(torch.cat([ph[:1], ph[1:] - ph[:1]], 0))
    return torch.cat(chans, 0)


# ---------------------------------------------------------------------------------------------
# The prior object and checkpoints
# ---------------------------------------------------------------------------------------------


THROUGH_PLANE_AUTO = "auto"
THROUGH_PLANE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def check_through_plane(through_plane: float | str, with_prior: bool = True) -> float | str:
    """Validate a through-plane start scale (:meth:`Prior.start`): ``"auto"`` or a number in
    [0, 1] (also as text, as the CLI gives it); return it as ``"auto"`` or a float. A number
    needs a prior to scale. One-line :class:`ConfigError` otherwise."""
    if isinstance(through_plane, str):
        if through_plane.strip().lower() == THROUGH_PLANE_AUTO:
            return THROUGH_PLANE_AUTO
        try:
            through_plane = float(through_plane)
        except ValueError:
            raise ConfigError(
                f"through_plane (--prior-through-plane) must be 'auto' or a number in [0, 1], got {through_plane!r}"
            ) from None
    through_plane = float(through_plane)
    if not 0.0 <= through_plane <= 1.0:
        raise ConfigError(f"through_plane (--prior-through-plane) must be in [0, 1], got {through_plane:g}")
    if not with_prior:
        raise ConfigError("--prior-through-plane scales a prior's starting motion; give --prior as well")
    return through_plane


def _scale_through_plane(f: MotionField, s: float) -> None:
    """Scale ``f``'s motion along k by ``s`` in place (exact: the output layer is linear)."""
    if s != 1.0 and f.dim == 3:
        with torch.no_grad():  # head rows are ordered (harmonic, axis): every third is along k
            f.mlp.head.weight[2::3] *= s
            f.mlp.head.bias[2::3] *= s


@dataclass
class Prior:
    """A trained prior (or ``kind='random'`` for a fresh initialisation)."""

    kind: str
    field: MotionField
    encoder: CodeEncoder | None = None
    config: dict = dc_field(default_factory=dict)
    data_summary: dict = dc_field(default_factory=dict)
    history: list = dc_field(default_factory=list)
    codes: torch.Tensor | None = None

    def init_field(self, seq: Sequence, through_plane: float | str = THROUGH_PLANE_AUTO,
                   config: FitConfig | None = None) -> MotionField:
        """The starting field of an adaptation to ``seq`` (:meth:`start` without the scale)."""
        return self.start(seq, through_plane, config)[0]

    def start(self, seq: Sequence, through_plane: float | str = THROUGH_PLANE_AUTO,
              config: FitConfig | None = None) -> tuple[MotionField, float]:
        """A copy of the prior's field bound to ``seq``'s normalised frame and cycle (for the
        encoder kind its code is predicted from the images), and the through-plane scale used.

        ``through_plane`` scales the starting motion along k (3D; exact, as the output layer
        is linear): 0 starts from the prior's in-plane motion only. A prior learned on
        phantoms carries their base descent (8-12 mm), which 8-10 mm short-axis slices barely
        observe and real hearts need not share. ``"auto"`` lets the images decide: the scale of
        :data:`THROUGH_PLANE_GRID` whose start has the lowest fitting loss (``config``'s, at
        the finest scale, fixed point draws; ties go to the larger scale). It uses no labels,
        so it runs on any case, at the cost of five loss evaluations (under 1 s for an 80 x 80
        x 12 x 20 stack on 2 CPU threads). The phantom-trained consensus prior keeps its full
        start on 23 of 24 held-out 3D phantom stacks (on the other it wrongly picks 0) and
        picks 0-0.75 on the Sunnybrook stacks (docs/priors.md)."""
        through_plane = check_through_plane(through_plane)
        if self.field.dim != seq.ndim_space:
            raise ConfigError(
                f"{seq.name}: the prior is for {self.field.dim}D fields but the sequence is {seq.ndim_space}D"
            )
        f = copy.deepcopy(self.field)
        centre, scale = frame_of_reference(seq)
        reflect = frame_reflection(seq)
        f.set_frame(torch.as_tensor(centre, dtype=torch.float32), scale, seq.n_frames, seq.ref_frame,
                    torch.as_tensor(reflect))
        if self.encoder is not None:
            enc = self.config.get("encoder", {})
            x = encoder_input(seq, centre, scale, enc.get("size", 48), enc.get("phases", 12), reflect)
            x = x.to(next(self.encoder.parameters()).device)
            with torch.no_grad():
                f.latent.copy_(self.encoder(x.unsqueeze(0))[0])
        if f.dim != 3:
            return f, 1.0
        if through_plane == THROUGH_PLANE_AUTO:
            through_plane = self._best_through_plane(f, seq, config)
        _scale_through_plane(f, through_plane)
        return f, float(through_plane)

    def through_plane_losses(self, seq: Sequence, config: FitConfig | None = None) -> dict[float, float]:
        """Fitting loss of the start at each scale of :data:`THROUGH_PLANE_GRID` (3D priors)."""
        f, _ = self.start(seq, 1.0)
        return self._losses(f, seq, config)

    def _losses(self, f: MotionField, seq: Sequence, config: FitConfig | None) -> dict[float, float]:
        starts = []
        for s in THROUGH_PLANE_GRID:
            g = copy.deepcopy(f)
            _scale_through_plane(g, s)
            starts.append(g)
        # Four draws suffice: on the Sunnybrook stacks and 3D phantoms two already pick the same scale.
        losses = evaluate_losses(starts, seq, config or self.fit_config(), repeats=4)
        return dict(zip(THROUGH_PLANE_GRID, losses))

    def _best_through_plane(self, f: MotionField, seq: Sequence, config: FitConfig | None) -> float:
        losses = self._losses(f, seq, config)
        return min(losses, key=lambda s: (losses[s], -s))

    def fit_config(self, base: FitConfig | None = None, **overrides) -> FitConfig:
        """The adaptation settings for this kind and dimension on top of ``base`` (explicit
        overrides win)."""
        base = base or FitConfig()
        changes = dict(ADAPT_DEFAULTS.get(self.kind, {}))
        steps = adapt_steps(self.kind, self.field.dim)
        if steps is not None:
            changes["steps"] = steps
        changes.update(overrides)
        changes["field"] = self.field.config  # the architecture is the prior's, whatever was asked
        return replace(base, **changes)


def random_prior(config: FieldConfig, dim: int, seed: int = 0) -> Prior:
    """The baseline: a freshly initialised field (what a fit from scratch starts from)."""
    torch.manual_seed(seed)
    return Prior("random", MotionField(config, dim, 2, 0, seed=seed))


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
        f = MotionField(FieldConfig(**d["config"]), d["dim"], d["n_frames"], d["ref_frame"],
                        centre=torch.tensor(d["centre"]), scale=d["scale"])
        f.load_state_dict(obj["state_dict"])
        enc = None
        if "encoder" in obj:
            e = obj["encoder"]
            enc = CodeEncoder(e["in_channels"], e["latent_dim"], e["width"])
            enc.load_state_dict(e["state_dict"])
            enc.eval()
    except Exception as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__  # a state-dict error spans lines
        raise CheckpointError(f"{path}: checkpoint content does not match its description ({detail})") from None
    dev = resolve_device(device)
    return Prior(obj["kind"], f.to(dev), enc.to(dev) if enc is not None else None, obj.get("config", {}),
                 obj.get("data_summary", {}), obj.get("history", []), obj.get("codes"))


def _load_problem(e: BaseException) -> str:
    """What went wrong in torch.load, in a few words (its weights-only message is a page long)."""
    text = str(e)
    if "Weights only load failed" in text or "UnpicklingError" in type(e).__name__:
        return "not a torch checkpoint, or it holds objects a safe load refuses"
    if "PytorchStreamReader" in text:
        return "damaged torch archive: " + text.split(":", 1)[-1].split(".")[0].strip()
    if isinstance(e, (EOFError, struct.error)):
        return f"ends too early or is not a torch file: {_first(e)}"
    return _first(e)


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:160]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


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


class _Cohort:
    """The training sequences on the device, each with its loss and normalised frame."""

    def __init__(self, seqs: Seq[Sequence], fit_cfg: FitConfig, device: torch.device) -> None:
        if not seqs:
            raise ConfigError("no training sequences")
        dims = {s.ndim_space for s in seqs}
        if len(dims) != 1:
            raise ConfigError("training sequences mix 2D and 3D; train one prior per dimension")
        self.dim = dims.pop()
        self.seqs = list(seqs)
        self.problems = [_Problem(s, fit_cfg, device) for s in seqs]
        self.frames = [frame_of_reference(s) for s in seqs]
        self.reflections = [frame_reflection(s) for s in seqs]

    def __len__(self) -> int:
        return len(self.seqs)

    def bind(self, f: MotionField, i: int) -> None:
        c, s = self.frames[i]
        f.set_frame(torch.as_tensor(c, dtype=torch.float32), s, self.seqs[i].n_frames, self.seqs[i].ref_frame,
                    torch.as_tensor(self.reflections[i]))

    def loss(self, f: MotionField, i: int, level: int, gen: torch.Generator,
             latent: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        self.bind(f, i)
        return self.problems[i].loss(f, level, gen, latent=latent)


def _level(cohort: _Cohort, frac: float) -> int:
    return cohort.problems[0].level_at(frac)


def _step_generator(seed: int, step: int, index: int) -> torch.Generator:
    """Point sampling depends only on (seed, step, sequence), not on which process runs it,
    so data-parallel training reproduces single-process training."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 10_007 + index) % (2**63))


def _batch_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    rng = random.Random(seed * 7919 + step)
    return [rng.randrange(n) for _ in range(batch)]


def train_prior(
    seqs: Seq[Sequence],
    config: PriorConfig,
    *,
    progress: bool = False,
    callback: Callable[[int, dict], None] | None = None,
    state_path: str | Path | None = None,
    dist: "DistContext | None" = None,
    clear_state: bool = True,
) -> Prior:
    """Train a prior of ``config.kind`` on ``seqs`` and return it (see :func:`save_prior`).

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
    cohort = _Cohort(seqs, config.fit, device)
    torch.manual_seed(config.seed)
    fcfg = config.field_config()
    f = MotionField(fcfg, cohort.dim, seqs[0].n_frames, seqs[0].ref_frame, seed=config.seed).to(device)
    trainer = {
        "population": _train_population,
        "consensus": _train_consensus,
        "autodecoder": _train_autodecoder,
        "meta": _train_meta,
        "encoder": _train_encoder,
    }[config.kind]
    t0 = time.perf_counter()
    state = _TrainState(Path(state_path) if state_path else None, config, dist)
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


class DistContext:
    """torch.distributed helpers; a no-op for a single process."""

    def __init__(self) -> None:
        import torch.distributed as td

        self.active = td.is_available() and td.is_initialized()
        self.rank = td.get_rank() if self.active else 0
        self.world_size = td.get_world_size() if self.active else 1

    def mine(self, items: list[int]) -> list[tuple[int, int]]:
        """(position, item) pairs this rank handles (round-robin over the global batch)."""
        return [(p, it) for p, it in enumerate(items) if p % self.world_size == self.rank]

    def sum_grads(self, params: list[torch.Tensor]) -> None:
        if not self.active:
            return
        import torch.distributed as td

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            td.all_reduce(p.grad, op=td.ReduceOp.SUM)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.SUM)
        return t

    def mean_float(self, value: float) -> float:
        if not self.active:
            return value
        t = self.sum_(torch.tensor([value], dtype=torch.float64))
        return float(t) / self.world_size


class _TrainState:
    """Resumable training state: written atomically every few steps by rank 0."""

    def __init__(self, path: Path | None, config: PriorConfig, dist: DistContext) -> None:
        self.path, self.config, self.dist = path, config, dist

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
        return st

    def save(self, step: int, payload: dict) -> None:
        if self.path is None or self.dist.rank != 0:
            return
        payload = dict(payload, step=step, config=self.config.to_dict())
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    def clear(self) -> None:
        if self.path is not None and self.dist.rank == 0 and self.path.exists():
            self.path.unlink()


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                 TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
    task = p.add_task(desc, total=total)
    p.start()
    return p, task


def _shared_step_loop(f: MotionField, cohort: _Cohort, cfg: PriorConfig, state: _TrainState, progress: bool,
                      callback, dist: DistContext, codes: nn.Parameter | None, kind: str) -> list[dict]:
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
    bar = _bar(cfg.steps, kind, progress and dist.rank == 0)
    try:
        for step in range(start, cfg.steps):
            frac = step / max(cfg.steps - 1, 1)
            level = _level(cohort, frac)
            decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
            for g, base in zip(opt.param_groups, [cfg.lr, cfg.latent_lr]):
                g["lr"] = base * decay
            opt.zero_grad(set_to_none=True)
            batch = _batch_indices(len(cohort), cfg.batch, step, cfg.seed)
            total = 0.0
            for pos, i in dist.mine(batch):
                z = codes[i] if codes is not None else None
                loss, _ = cohort.loss(f, i, level, _step_generator(cfg.seed, step, pos), latent=z)
                if z is not None:
                    loss = loss + cfg.latent_reg * z.pow(2).sum()
                (loss / len(batch)).backward()
                total += loss.item()
            all_params = params + ([codes] if codes is not None else [])
            dist.sum_grads(all_params)
            opt.step()
            logs = {"step": step, "loss": dist.mean_float(total) * dist.world_size / len(batch), "level": level}
            history.append(logs)
            if callback:
                callback(step, logs)
            if bar:
                bar[0].update(bar[1], advance=1, description=f"{kind} loss {logs['loss']:.4f}")
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                state.save(step + 1, {"field": f.state_dict(), "optimiser": opt.state_dict(), "history": history,
                                      "codes": None if codes is None else codes.detach().clone()})
    finally:
        if bar:
            bar[0].stop()
    return history


def _train_population(f, cohort, cfg, state, progress, callback, dist) -> Prior:
    history = _shared_step_loop(f, cohort, cfg, state, progress, callback, dist, None, "population")
    return Prior("population", f, history=history)


def _train_autodecoder(f, cohort, cfg, state, progress, callback, dist) -> Prior:
    g = torch.Generator().manual_seed(cfg.seed)
    codes = nn.Parameter(torch.randn(len(cohort), cfg.latent_dim, generator=g).to(f.latent.device) * 0.01)
    history = _shared_step_loop(f, cohort, cfg, state, progress, callback, dist, codes, "autodecoder")
    with torch.no_grad():
        f.latent.copy_(codes.mean(0))  # a new heart starts from the mean code
    return Prior("autodecoder", f, history=history, codes=codes.detach().clone())


def _subject_fit_config(cfg: PriorConfig, steps: int, seed: int) -> FitConfig:
    return replace(cfg.fit, field=cfg.field_config(), steps=steps, seed=seed, device=cfg.device, patience=10**9)


def _train_consensus(f, cohort, cfg, state, progress, callback, dist) -> Prior:
    """Per-subject fits from one common initialisation; trimmed element-wise mean of weights."""
    init = copy.deepcopy(f.state_dict())
    st = state.load()
    weights: dict[int, dict] = dict(st["weights"]) if st is not None else {}
    history: list[dict] = list(st["history"]) if st is not None else []
    todo = [i for i in range(len(cohort)) if i not in weights]
    bar = _bar(len(cohort), "consensus", progress and dist.rank == 0)
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


def _train_meta(f, cohort, cfg, state, progress, callback, dist) -> Prior:
    """Reptile: theta <- theta + meta_lr * mean_i(theta_i - theta), theta_i after an inner
    Adam loop of ``inner_steps`` on sequence i (the same optimiser as adaptation)."""
    history: list[dict] = []
    start = 0
    st = state.load()
    if st is not None:
        f.load_state_dict(st["field"])
        history, start = st["history"], st["step"]
    bar = _bar(cfg.steps, "meta", progress and dist.rank == 0)
    try:
        for step in range(start, cfg.steps):
            frac = step / max(cfg.steps - 1, 1)
            level = _level(cohort, min(1.0, 0.5 + frac))  # adaptation works at fine scales
            batch = _batch_indices(len(cohort), cfg.batch, step, cfg.seed)
            theta = {k: v.detach().clone() for k, v in f.named_parameters()}
            delta = {k: torch.zeros_like(v) for k, v in theta.items()}
            total = 0.0
            for pos, i in dist.mine(batch):
                g = copy.deepcopy(f)
                opt = torch.optim.Adam(g.parameters(), lr=cfg.inner_lr)
                gen = _step_generator(cfg.seed, step, pos)
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
            logs = {"step": step, "loss": dist.mean_float(total) * dist.world_size / len(batch), "level": level}
            history.append(logs)
            if callback:
                callback(step, logs)
            if bar:
                bar[0].update(bar[1], advance=1, description=f"meta loss {logs['loss']:.4f}")
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                state.save(step + 1, {"field": f.state_dict(), "history": history})
    finally:
        if bar:
            bar[0].stop()
    return Prior("meta", f, history=history)


def _train_encoder(f, cohort, cfg, state, progress, callback, dist) -> Prior:
    """Auto-decoder first, then a CNN that maps images to codes, trained on the decoder's
    fitting loss (amortised) plus a pull towards the auto-decoded codes."""
    ad_state = _TrainState(None, cfg, dist)
    prior = _train_autodecoder(f, cohort, cfg, ad_state, progress, callback, dist)
    codes = prior.codes.to(f.latent.device)
    device = f.latent.device
    inputs = torch.stack([
        encoder_input(s, c, sc, cfg.encoder_size, cfg.encoder_phases, r)
        for s, (c, sc), r in zip(cohort.seqs, cohort.frames, cohort.reflections)
    ]).to(device)
    torch.manual_seed(cfg.seed)
    enc = CodeEncoder(inputs.shape[1], cfg.latent_dim).to(device)
    for p in f.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    history = list(prior.history)
    bar = _bar(cfg.encoder_steps, "encoder", progress and dist.rank == 0)
    code_scale = codes.pow(2).mean().clamp(min=1e-8)
    try:
        for step in range(cfg.encoder_steps):
            frac = step / max(cfg.encoder_steps - 1, 1)
            level = cohort.problems[0].n_levels - 1
            batch = _batch_indices(len(cohort), cfg.batch, cfg.steps + step, cfg.seed)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for pos, i in dist.mine(batch):
                x = inputs[i:i + 1]
                # Mild augmentation, seeded by (step, position) so data-parallel runs match.
                gen = _step_generator(cfg.seed, cfg.steps + step, pos)
                x = x * (1 + 0.1 * torch.randn(1, generator=gen).to(device)) + 0.02 * torch.randn(x.shape, generator=gen).to(device)
                z = enc(x)[0]
                fit_loss, _ = cohort.loss(f, i, level, gen, latent=z)
                loss = fit_loss + (z - codes[i]).pow(2).mean() / code_scale * 0.1
                (loss / len(batch)).backward()
                total += loss.item()
            dist.sum_grads(list(enc.parameters()))
            for g in opt.param_groups:
                g["lr"] = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            opt.step()
            logs = {"step": cfg.steps + step, "encoder_loss": dist.mean_float(total) * dist.world_size / len(batch)}
            history.append(logs)
            if callback:
                callback(cfg.steps + step, logs)
            if bar:
                bar[0].update(bar[1], advance=1, description=f"encoder loss {logs['encoder_loss']:.4f}")
    finally:
        if bar:
            bar[0].stop()
        for p in f.parameters():
            p.requires_grad_(True)
    enc.eval()
    return Prior("encoder", f, encoder=enc, history=history, codes=prior.codes)


def fit_from_prior(seq: Sequence, prior: Prior, base: FitConfig | None = None, progress: bool = False, **overrides):
    """Fit ``seq`` starting from ``prior`` with the kind's adaptation defaults."""
    cfg = prior.fit_config(base, **overrides)
    return Fitter(cfg).fit(seq, init=prior.init_field(seq, config=cfg), progress=progress)


__all__ = ["ADAPT_DEFAULTS", "ADAPT_STEPS_3D", "KINDS", "THROUGH_PLANE_AUTO", "THROUGH_PLANE_GRID", "CodeEncoder", "DistContext", "Prior",
           "PriorConfig", "adapt_steps", "check_through_plane", "fit_from_prior", "load_prior", "random_prior", "save_prior",
           "summarise_data", "train_prior", "trimmed_mean"]
