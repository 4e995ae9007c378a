"""Stage 4 of the phantom motion: global in-plane translation (bulk motion, 1-2 mm).

``s(t) = s_sys p(t) + s_osc sin(2 pi phase)``: a part that follows the contraction and a small
oscillating part, both 0 at the reference frame. See :mod:`cardioinr.phantoms` for the whole map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GlobalTranslation"]


@dataclass(frozen=True)
class GlobalTranslation:
    """Stage 4, forward and inverse, at a contraction state ``p`` and cycle phase ``phase``.

    Attributes:
        translation_sys_mm, translation_osc_mm: ``s_sys`` and ``s_osc``, in-plane mm.
    """

    translation_sys_mm: tuple[float, float]
    translation_osc_mm: tuple[float, float]

    def shift(self, p: float, phase: float) -> np.ndarray:
        """The translation ``s`` ``(2,)`` mm at contraction ``p`` and cycle phase ``phase`` in [0, 1)."""
        return p * np.asarray(self.translation_sys_mm) + math.sin(2.0 * math.pi * phase) * np.asarray(self.translation_osc_mm)

    def forward(self, x: np.ndarray, p: float, phase: float) -> np.ndarray:
        """``(N, 3)`` mm -> ``(N, 3)`` mm, shifted in-plane by ``s``."""
        out = x.copy()
        out[:, :2] += self.shift(p, phase)[None, :]
        return out

    def inverse(self, x: np.ndarray, p: float, phase: float) -> np.ndarray:
        """``(N, 3)`` mm -> ``(N, 3)`` mm, shifted in-plane by ``-s``."""
        out = x.copy()
        out[:, :2] -= self.shift(p, phase)[None, :]
        return out
