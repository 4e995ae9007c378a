"""Old path of the report and ``save_fit``, kept for one release: use :mod:`cardioinr.outputs`."""

from cardioinr.outputs import build_report, save_fit

__all__ = ["build_report", "save_fit"]
