"""The prior object: a trained field (and encoder) that starts every new fit, the
through-plane scale of its start, and the fit from it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from dataclasses import field as dc_field

import torch

from cardioinr.core.errors import ConfigError
from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.fit.fitter import FitResult, Fitter, evaluate_losses
from cardioinr.fit.preprocess import frame_of_reference, frame_reflection
from cardioinr.io import Sequence
from cardioinr.priors.config import adapt_settings
from cardioinr.priors.distribution import applicability, case_record, start_losses
from cardioinr.priors.encoder import CodeEncoder, encoder_input

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
    # Where the weights come from: one entry per ancestor (oldest first) that they were
    # fine-tuned from (:func:`~cardioinr.priors.training.train_prior` with ``parent``).
    lineage: list = dc_field(default_factory=list)
    # What the last training stage saw, case by case (:mod:`cardioinr.priors.distribution`).
    distribution: dict = dc_field(default_factory=dict)

    def describe_case(self, seq: Sequence, truth: dict | None = None) -> dict:
        """``seq`` as the training-distribution record describes a case: geometry, heart, labelled
        volumes, truth (:func:`~cardioinr.priors.distribution.case_record`) and the fitting loss
        of this prior's unscaled start against no motion (the kind's adaptation settings)."""
        rec = case_record(seq, truth)
        start, _ = self.start(seq, 1.0)
        rec.update(start_losses(start, seq, self.fit_config()))
        return rec

    def applicability(self, case: dict) -> dict:
        """Whether ``case`` (:meth:`describe_case`) lies inside what this prior was trained on
        (:func:`~cardioinr.priors.distribution.applicability`)."""
        return applicability(case, self.distribution, self.lineage)

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
        changes = adapt_settings(self.kind, self.field.dim)
        changes.update(overrides)
        changes["field"] = self.field.config  # the architecture is the prior's, whatever was asked
        return replace(base, **changes)


def random_prior(config: FieldConfig, dim: int, seed: int = 0) -> Prior:
    """The baseline: a freshly initialised field (what a fit from scratch starts from)."""
    torch.manual_seed(seed)
    return Prior("random", MotionField(config, dim, 2, 0, seed=seed))


def fit_from_prior(seq: Sequence, prior: Prior, base: FitConfig | None = None, progress: bool = False,
                   **overrides) -> FitResult:
    """Fit ``seq`` starting from ``prior`` with the kind's adaptation defaults."""
    cfg = prior.fit_config(base, **overrides)
    return Fitter(cfg).fit(seq, init=prior.init_field(seq, config=cfg), progress=progress)


__all__ = ["THROUGH_PLANE_AUTO", "THROUGH_PLANE_GRID", "Prior", "check_through_plane", "fit_from_prior", "random_prior"]
