"""Configuration of the strain analysis: :class:`StrainConfig`.

Its own module because the cardiac frame (:mod:`cardioinr.analysis.cardiac_frame`), the AHA
segments (:mod:`cardioinr.analysis.aha`) and the strain entry points
(:mod:`cardioinr.analysis.strain`, which re-exports it) all read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cardioinr.core.errors import ConfigError

__all__ = ["StrainConfig"]


@dataclass(frozen=True)
class StrainConfig:
    """How local directions and AHA segments are defined (see :mod:`cardioinr.analysis.cardiac_frame`
    and :mod:`cardioinr.analysis.aha`).

    Attributes:
        long_axis: ``"k"`` (array k axis; short-axis stacks) or ``"fit"`` (line through the
            per-slice LV centres; 3D only, falls back to ``"k"`` with fewer than 2 slices).
        apex_direction: ``"auto"``, ``"+k"`` or ``"-k"``: which way along k the apex lies.
        centre: ``"lv+myo"`` or ``"lv"``: what the per-slice centre is the centroid of.
        septum_from_rv: take the septum direction from the RV label when present.
        septum_direction_deg: septum direction without an RV label: angle in the array (i, j)
            plane from +i toward +j, degrees (180 = toward -i).
        slice_level_2d: AHA level of a single slice: ``"basal"``, ``"mid"`` or ``"apical"``.
        apex_segment: in 3D, label myocardium beyond the LV cavity's apical end as segment 17.
        chunk: points per forward-mode evaluation of a field (memory bound).
    """

    long_axis: str = "k"
    apex_direction: str = "auto"
    centre: str = "lv+myo"
    septum_from_rv: bool = True
    septum_direction_deg: float = 180.0
    slice_level_2d: str = "mid"
    apex_segment: bool = False
    chunk: int = 8192

    def __post_init__(self) -> None:
        checks = {"long_axis": ("k", "fit"), "apex_direction": ("auto", "+k", "-k"), "centre": ("lv+myo", "lv"),
                  "slice_level_2d": ("basal", "mid", "apical")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"strain {name} {getattr(self, name)!r}: choose from {', '.join(allowed)}")
        if not math.isfinite(float(self.septum_direction_deg)):
            raise ConfigError("strain septum_direction_deg must be a finite angle")
        if int(self.chunk) < 1:
            raise ConfigError("strain chunk must be positive")
