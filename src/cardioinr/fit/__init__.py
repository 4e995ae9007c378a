"""Fitting: motion-field models, losses, warping, and the per-sequence fitter."""

from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.fit.fitter import FitConfig, FitResult, Fitter, fit_sequence, load_field, save_field

__all__ = ["FieldConfig", "FitConfig", "FitResult", "Fitter", "MotionField", "fit_sequence", "load_field", "save_field"]
