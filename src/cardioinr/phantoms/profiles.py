"""Smooth scalar building blocks of the phantom's motion (pure functions): the fall-off step that
every motion stage fades out with, and the contraction state over the cardiac cycle."""

from __future__ import annotations

import numpy as np

__all__ = ["contraction_profile", "falloff", "falloff_slope", "segment_weight", "segment_weight_slope"]

def falloff(s: np.ndarray | float) -> np.ndarray:
    """Smooth step down: 1 for ``s <= 0``, 0 for ``s >= 1``, ``1 - s^2 (3 - 2 s)`` between.

    C1 (zero slope at both ends), monotone (slope >= -1.5) and, being a polynomial, cheap and
    exact in float64 (numpy's float64 ``cos`` costs ~30 ns per element here), so maps built
    from it are smooth, fold-free and fast.
    """
    s = np.minimum(np.maximum(np.asarray(s, dtype=np.float64), 0.0), 1.0)
    return 1.0 - s * s * (3.0 - 2.0 * s)


def falloff_slope(s: np.ndarray | float) -> np.ndarray:
    """Derivative of :func:`falloff` with respect to ``s`` (in ``[-1.5, 0]``)."""
    s = np.minimum(np.maximum(np.asarray(s, dtype=np.float64), 0.0), 1.0)
    return -6.0 * s * (1.0 - s)


_FALLOFF_MAX_SLOPE = 1.5  # max |falloff_slope|: bounds the gradient of every fall-off (see draw_motion)


def segment_weight(delta: np.ndarray | float, extent: float) -> np.ndarray:
    """Angular bump of a regional wall-motion abnormality: 1 in the core, 0 far from it.

    ``w = falloff((|delta| - extent / 4) / (extent / 2))``: 1 for ``|delta| <= extent / 4``, 1/2 at
    ``extent / 2`` and 0 from ``3 extent / 4`` on, so ``extent`` is the full width at half maximum.
    The fall-off is point-symmetric about its midpoint, so the bump's integral over the circle is
    exactly ``extent`` (for ``extent <= 4 pi / 3``, where its support fits): the segment takes the
    fraction ``extent / (2 pi)`` of the circumference. C1, and its slope is at most
    ``1.5 / (extent / 2)`` (a wide transition keeps the border zone's shear small).

    Args:
        delta: angular distance to the segment centre, rad, any shape (taken in absolute value).
        extent: full width at half maximum, rad, > 0.

    Returns:
        ``w`` in [0, 1], shape of ``delta``.
    """
    return falloff((np.abs(np.asarray(delta, dtype=np.float64)) - 0.25 * extent) / (0.5 * extent))


def segment_weight_slope(delta: np.ndarray | float, extent: float) -> np.ndarray:
    """Derivative of :func:`segment_weight` with respect to ``|delta|``, 1/rad (in ``[-3 / extent, 0]``)."""
    return falloff_slope((np.abs(np.asarray(delta, dtype=np.float64)) - 0.25 * extent) / (0.5 * extent)) / (0.5 * extent)


def contraction_profile(phase: np.ndarray | float, systole: float) -> np.ndarray:
    """Contraction state ``p`` in [0, 1] over the cycle: 0 at ED, 1 at ES.

    Args:
        phase: cycle phase, any real (taken modulo 1); 0 is end-diastole.
        systole: duration of systole as a fraction of the cycle, in (0, 1).

    Returns:
        ``p``, same shape as ``phase``: a cosine rise over systole and a cosine fall over
        diastole; continuous and exactly periodic (``p(0) = p(1) = 0`` exactly).
    """
    ph = np.mod(np.asarray(phase, dtype=np.float64), 1.0)
    rise = 0.5 * (1.0 - np.cos(np.pi * np.minimum(ph / systole, 1.0)))
    fall = 0.5 * (1.0 + np.cos(np.pi * np.clip((ph - systole) / (1.0 - systole), 0.0, 1.0)))
    return np.where(ph <= systole, rise, fall)
