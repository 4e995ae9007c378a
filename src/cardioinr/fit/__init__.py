"""Fitting: motion-field models, losses, warping, and the per-sequence fitter.

Modules, in pipeline order: :mod:`~cardioinr.fit.config` (the settings),
:mod:`~cardioinr.fit.preprocess` (normalised intensities, heart-centred frame, sampling
weights), :mod:`~cardioinr.fit.fields` (the field), :mod:`~cardioinr.fit.losses` and
:mod:`~cardioinr.fit.warp` (the terms and the sampling), :mod:`~cardioinr.fit.objective` (the
loss of one sequence), :mod:`~cardioinr.fit.fitter` (the optimisation and its dense outputs),
:mod:`~cardioinr.fit.fieldio` (a fitted field on disk), :mod:`~cardioinr.fit.device`.
"""

from cardioinr.fit.config import FitConfig, explicit_settings
from cardioinr.fit.device import resolve_device
from cardioinr.fit.fieldio import load_field, save_field
from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.fit.fitter import FitResult, Fitter, evaluate_loss, evaluate_losses, fit_sequence
from cardioinr.fit.objective import Objective
from cardioinr.fit.preprocess import frame_of_reference, frame_reflection, normalise_intensity

__all__ = ["FieldConfig", "FitConfig", "FitResult", "Fitter", "MotionField", "Objective", "evaluate_loss",
           "evaluate_losses", "explicit_settings", "fit_sequence", "frame_of_reference", "frame_reflection",
           "load_field", "normalise_intensity", "resolve_device", "save_field"]
