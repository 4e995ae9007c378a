"""Settings of prior training (:class:`PriorConfig`), the kinds of prior, and how a fit
adapts from each kind by default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from dataclasses import field as dc_field
from pathlib import Path

from cardioinr.core.config import check_setting_types, config_from_file
from cardioinr.core.errors import ConfigError
from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import FieldConfig

KINDS = ("population", "consensus", "autodecoder", "meta", "encoder")

# How a fit adapts from each kind by default (FitConfig overrides). The prior already holds
# the coarse motion, so the step budget is small (8x fewer steps than a scratch fit).
ADAPT_DEFAULTS: dict[str, dict] = {
    # Priors keep the scratch fit's coarse-to-fine blur: it denoises and widens the capture
    # range at every start point (measured: without it, EPE under noise is 0.52 instead of 0.42
    # mm after 100 steps). What a prior changes is how many steps are needed.
    "random": {},
    "population": {"steps": 100, "patience": 40},
    # Stops at a plateau of each scale (patience 15, measured on 4 held-out 2D phantoms of the
    # built-in population: 94 of 100 steps on average, Dice and EPE unchanged within 0.001 / 0.03 mm).
    "consensus": {"steps": 100, "patience": 15, "plateau_advance": True},
    "meta": {"steps": 100, "patience": 40},
    "autodecoder": {"steps": 100, "latent_steps": 30, "patience": 40},
    "encoder": {"steps": 60, "latent_steps": 10, "patience": 30},
}

# Step budgets of 3D priors (stacks), which replace the ones above. At the 2D budgets the 3D
# priors stop short of an 800-step scratch fit on 12 held-out 3D phantoms (EPE 0.78-0.91 mm
# against 0.73); at 200 steps they come within 0.05 mm of it (0.71-0.78, MYO Dice level) in
# a third of its time (docs/priors.md, eighth session).
ADAPT_STEPS_3D: dict[str, int] = {kind: 200 for kind in KINDS}

# What a fit of a stack (3D) changes when it adapts from a prior. The LV cavity follows its
# wall along k: on 10 mm stacks of the five heart groups, mean LV Dice at end-systole 0.835 ->
# 0.971 and LV EF within 1.5 points (before up to 23), myocardial EPE 1.365 -> 1.112 mm, no
# folding; it costs 0.04 mm of EPE on an 8 mm stack whose cavity was already carried right
# (docs/groups.md). Not from scratch: there the wall's descent is still being found while the
# term pulls the cavity toward it (held-out phantom 20000: LV Dice 0.959 -> 0.896).
ADAPT_3D: dict[str, float] = {"w_cavity_follow": 0.03}


def adapt_settings(kind: str, dim: int) -> dict:
    """The FitConfig changes a fit of a ``dim``-D sequence makes when it adapts from a ``kind``
    of prior (none for ``random``, a fresh field: that is a fit from scratch)."""
    changes = dict(ADAPT_DEFAULTS.get(kind, {}))
    steps = adapt_steps(kind, dim)
    if steps is not None:
        changes["steps"] = steps
    if dim == 3 and kind != "random":
        changes.update(ADAPT_3D)
    return changes


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


__all__ = ["ADAPT_DEFAULTS", "ADAPT_STEPS_3D", "KINDS", "PriorConfig", "adapt_steps"]
