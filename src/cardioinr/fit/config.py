"""Settings of one per-sequence fit (:class:`FitConfig`) and the settings a file changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from cardioinr.core.config import check_setting_types, config_from_file, read_config_table
from cardioinr.core.errors import ConfigError
from cardioinr.fit.fields import FieldConfig
from cardioinr.fit.losses import SIMILARITIES


@dataclass(frozen=True)
class FitConfig:
    """Settings of one per-sequence fit.

    Weights multiply dimensionless terms (intensities normalised to [0, 1], gradients in
    mm/mm, temporal acceleration in mm per (cycle / 20)^2, whatever the frame count).
    """

    field: FieldConfig = field(default_factory=FieldConfig)
    steps: int = 800
    lr: float = 3e-4
    lr_final: float = 0.1  # cosine decay to lr * lr_final
    points: int = 4096
    reg_points: int = 1024
    similarity: str = "ncc"
    # Compare each frame with the one before it (cycle order from the reference) instead of with
    # the reference. For cines whose reference shows what no later frame does: a tagged (SPAMM)
    # cine tags the blood at end-diastole and flowing blood washes it out within ~100 ms. On
    # phantoms with that washout the radial strain peaks were 8-11 points off against the
    # reference and within -0.9..+2.4 this way (8 seeds); on plain cines it costs accuracy (2D
    # groups EPE 0.593 -> 0.778 mm), so it is off unless asked (``fit --tagged``; docs/multiview.md).
    # In a multi-view fit it applies to the stack; the long-axis views keep their reference.
    sequential: bool = False
    patch: int = 5  # local NCC patch width, voxels
    edge_fraction: float = 0.4
    heart_fraction: float = 0.3
    w_smooth: float = 0.02
    w_fold: float = 10.0  # only acts below det 0.2; 1.0 left rare folds on tagged cines
    # After the fit, where its grid folds: up to three rounds of this many steps with the folding
    # barrier on the folded voxels and the field held where the fit ended elsewhere (the sampled
    # regulariser points rarely land on a fold of a few voxels); 0: off. Costs nothing when
    # nothing folded (docs/groups.md, "Mending folds").
    mend_steps: int = 30
    w_incompress: float = 0.05
    # 3D: the cavity's motion along k follows its slice's wall (cavity and wall from the LV and
    # MYO labels, or without labels from the outlines that located the heart). 0 here
    # (fits from scratch, which it harms); fits of stacks from a prior turn it on
    # (cardioinr.priors.config.ADAPT_3D; docs/groups.md)
    w_cavity_follow: float = 0.0
    rv_wall_mm: float = 0.0  # >0: incompressibility also on an RV free-wall band this thick (from the RV label)
    w_temporal: float = 0.01
    w_labels: float = 0.0  # >0 uses labels of non-reference frames when present
    latent_steps: int = 0  # modulated fields: steps that move only the latent code first (<= steps / 3)
    latent_lr: float = 1e-2
    encoding_lr_scale: float = 30.0  # rate multiplier of trainable encodings (hash-grid tables)
    blur_px: tuple[float, ...] = (2.0, 1.0, 0.0)
    blur_until: tuple[float, ...] = (0.3, 0.6, 1.0)  # fraction of the steps each level lasts to
    patience: int = 150  # steps without improvement (EMA of the loss, relative min_delta) that end a scale
    min_delta: float = 1e-4
    plateau_advance: bool = False  # a coarse scale's plateau starts the next one (else only the schedule does)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"unknown similarity {self.similarity!r} (choose from {', '.join(SIMILARITIES)})")
        if self.steps < 0 or self.points < 16 or self.reg_points < 0 or self.mend_steps < 0:
            raise ConfigError("steps, reg_points and mend_steps must be >= 0 and points >= 16")
        if not self.lr > 0:
            raise ConfigError("learning rate must be positive")
        if self.w_cavity_follow < 0 or self.rv_wall_mm < 0:
            raise ConfigError("w_cavity_follow and rv_wall_mm must be >= 0")
        if len(self.blur_px) != len(self.blur_until):
            raise ConfigError("blur_px and blur_until must have the same length")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        """Build from a plain dict (e.g. parsed TOML/JSON); unknown keys and values of the
        wrong type are a :class:`ConfigError`."""
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown fit setting(s): {', '.join(sorted(unknown))}")
        if isinstance(d.get("field"), dict):
            fknown = {f.name for f in fields(FieldConfig)}
            bad = set(d["field"]) - fknown
            if bad:
                raise ConfigError(f"unknown field setting(s): {', '.join(sorted(bad))}")
            check_setting_types(FieldConfig, d["field"], "field setting")
            d["field"] = FieldConfig(**d["field"])
        elif "field" in d and not isinstance(d["field"], FieldConfig):
            raise ConfigError(f"fit setting 'field' must be a table of field settings, got {d['field']!r}")
        check_setting_types(cls, {k: v for k, v in d.items() if k != "field"}, "fit setting")
        for k in ("blur_px", "blur_until"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "FitConfig":
        """Load from a TOML or JSON file (a ``[fit]`` table in TOML is accepted too)."""
        return config_from_file(cls, path, "fit")


def explicit_settings(path: str | Path) -> dict:
    """The settings a fit config file names (validated), so that a prior's adaptation defaults
    apply to everything the file leaves alone and what it names wins, even at FitConfig's
    default value (``w_cavity_follow = 0`` turns off what stacks adapting from a prior use).
    The field architecture counts only where it differs from the default one (a different one
    sets the built-in prior aside)."""
    given = FitConfig.from_file(path)
    named = set(read_config_table(path, "fit"))
    out = {k: getattr(given, k) for k in sorted(named) if k != "field"}
    if given.field != FitConfig().field:
        out["field"] = given.field
    return out


__all__ = ["FitConfig", "explicit_settings"]
