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

All kinds share the per-sequence loss of :mod:`cardioinr.fit.objective`: the prior is learned
without ground-truth motion, so phantoms and real cines can be mixed freely.

Checkpoints are one self-describing torch file (format name, version, kind, field
architecture, weights, training settings, a summary of the training data, the
training-distribution record case by case and, for a fine-tuned prior, its lineage), written
atomically; loading checks all of it and fails with a one-line :class:`CheckpointError`.
Any prior can be fine-tuned on a new cohort (:func:`train_prior` with ``parent``), and a fit
says whether its case lies inside what the prior was trained on
(:mod:`~cardioinr.priors.distribution`).

Modules: :mod:`~cardioinr.priors.config` (settings, kinds, adaptation defaults),
:mod:`~cardioinr.priors.builtin` (the priors shipped in the package; which prior a fit starts from),
:mod:`~cardioinr.priors.distribution` (the training-distribution record, applicability),
:mod:`~cardioinr.priors.describe` (a prior in words: ``cardioinr priors show``),
:mod:`~cardioinr.priors.prior` (the prior and the fit from it), :mod:`~cardioinr.priors.encoder`
(the code encoder), :mod:`~cardioinr.priors.checkpoint` (checkpoint and training state on disk),
:mod:`~cardioinr.priors.training` (:func:`train_prior`) with :mod:`~cardioinr.priors.engine`
(the cohort, per-step draws, the shared step loop) and :mod:`~cardioinr.priors.parallel`
(data-parallel context), and one module per kind: :mod:`~cardioinr.priors.population`,
:mod:`~cardioinr.priors.consensus`, :mod:`~cardioinr.priors.autodecoder`,
:mod:`~cardioinr.priors.meta`, :mod:`~cardioinr.priors.amortised` (the ``encoder`` kind).
"""

from cardioinr.priors.builtin import (
                                      BUILTIN,
                                      NO_PRIOR,
                                      PriorChoice,
                                      builtin_name,
                                      builtin_path,
                                      choose_start,
                                      list_builtin,
                                      resolve_prior,
)
from cardioinr.priors.checkpoint import FORMAT, VERSION, load_prior, save_prior, summarise_data
from cardioinr.priors.config import ADAPT_3D, ADAPT_DEFAULTS, ADAPT_STEPS_3D, KINDS, PriorConfig, adapt_settings, adapt_steps
from cardioinr.priors.consensus import trimmed_mean
from cardioinr.priors.describe import show_prior
from cardioinr.priors.distribution import applicability, case_record
from cardioinr.priors.encoder import CodeEncoder, encoder_input
from cardioinr.priors.parallel import DistContext
from cardioinr.priors.prior import (
                                    THROUGH_PLANE_AUTO,
                                    THROUGH_PLANE_GRID,
                                    Prior,
                                    check_through_plane,
                                    fit_from_prior,
                                    random_prior,
)
from cardioinr.priors.training import train_prior

__all__ = ["ADAPT_3D", "ADAPT_DEFAULTS", "ADAPT_STEPS_3D", "BUILTIN", "FORMAT", "NO_PRIOR", "PriorChoice", "applicability",
           "builtin_name", "case_record", "show_prior",
           "builtin_path", "choose_start", "list_builtin", "resolve_prior", "KINDS", "THROUGH_PLANE_AUTO", "THROUGH_PLANE_GRID", "VERSION",
           "CodeEncoder", "DistContext", "Prior", "PriorConfig", "adapt_settings", "adapt_steps", "check_through_plane", "encoder_input",
           "fit_from_prior", "load_prior", "random_prior", "save_prior", "summarise_data", "train_prior",
           "trimmed_mean"]
