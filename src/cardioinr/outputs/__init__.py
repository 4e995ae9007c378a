"""What a fit hands back: the output contract (:mod:`~cardioinr.outputs.contract`: file names,
writing, reading, completeness), the strain tables, scoring against ground truth, the HTML report,
and :func:`save_fit`, which writes all of it.

The functions below are imported on first use, so that ``cardioinr.outputs.contract`` (file names
and checks, used by the command line and the cohort driver) stays light to import.
"""

from importlib import import_module

_LAZY = {"build_report": "cardioinr.outputs.report", "evaluate_folder": "cardioinr.outputs.evaluate",
         "save_fit": "cardioinr.outputs.save"}

__all__ = ["build_report", "evaluate_folder", "save_fit"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cardioinr.outputs' has no attribute {name!r}")
