"""Stage 2 of the phantom motion (3D only): base descent.

``u_z = b(t) (Z_apex - Z) / (Z_apex - Z_base)`` inside the heart (the base moves toward the apex;
uniform longitudinal stretch ``lambda = 1 - b / L``), fading out radially beyond the heart. With
an RV gain ``g`` the RV free wall descends further, by up to ``(1 + g)`` times the LV's (the
tricuspid annulus moves 1.5-2 times as far as the mitral annulus in healthy hearts: TAPSE about
20-25 mm against MAPSE 12-16 mm), rising across the RV cavity from the septum, so the RV also
shortens along the long axis. Linear in ``Z`` along each in-plane position, so its inverse is
closed form.
See :mod:`cardioinr.phantoms` for the whole map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.motion.lv import epi_reach_r2
from cardioinr.phantoms.motion.rv import rv_band_weight
from cardioinr.phantoms.profiles import falloff

__all__ = ["BaseDescent"]


@dataclass(frozen=True)
class BaseDescent:
    """Stage 2, forward and inverse, at a contraction state ``p`` in [0, 1].

    Attributes (as in :class:`cardioinr.phantoms.PhantomMotion`):
        geometry: the reference anatomy (3D).
        base_descent_mm: peak base-to-apex motion of the base plane ``b``, mm.
        falloff_mm: distance over which the descent fades outside the heart, mm.
        cavity_shrink, regional_min_scale: the LV cavity shrink and the least motion scale over
            angles of a regional abnormality (1: none). Below 1 the LV wall ends beyond the
            normal epicardium in the segment, and the fade starts beyond the farthest LV wall,
            so that the whole wall descends uniformly (incompressibility).
        rv_descent_gain: extra descent of the RV region as a multiple of ``b``
            (:func:`~cardioinr.phantoms.motion.rv.rv_band_weight`; 0: the RV descends with the
            fading LV term only).
    """

    geometry: HeartGeometry
    base_descent_mm: float
    falloff_mm: float
    cavity_shrink: float = 0.0
    regional_min_scale: float = 1.0
    rv_descent_gain: float = 0.0

    def amount(self, xy: np.ndarray, p: float) -> np.ndarray:
        """``b p g(rho)``: descent of the base plane at in-plane positions ``(N, 2)``, mm; ``g`` is
        1 within the (deformed) heart and fades over ``falloff_mm`` beyond it."""
        c = self.geometry.center_mm
        rho = np.hypot(xy[:, 0] - c[0], xy[:, 1] - c[1])
        reach = self.geometry.epi_radius_mm
        if self.regional_min_scale != 1.0:
            reach = math.sqrt(epi_reach_r2(self.geometry, self.cavity_shrink, self.base_descent_mm,
                                           self.regional_min_scale, p))
        beta = self.base_descent_mm * p * falloff((rho - reach - 1.0) / self.falloff_mm)
        if self.rv_descent_gain > 0.0:
            # zero on the LV and its wall (the LV descends uniformly), so only the RV gains
            beta = beta + self.base_descent_mm * p * self.rv_descent_gain * rv_band_weight(
                self.geometry, xy, reach + 1.0, self.falloff_mm)
        return beta

    def forward(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 2 forward: ``(N, 3)`` mm -> ``(N, 3)`` mm (only z changes)."""
        g = self.geometry
        beta = self.amount(x[:, :2], p)
        out = x.copy()
        out[:, 2] += beta * np.maximum(g.z_apex_mm - x[:, 2], 0.0) / g.long_axis_mm
        return out

    def inverse(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 2 inverse, closed form: ``(N, 3)`` mm -> ``(N, 3)`` mm."""
        g = self.geometry
        beta = self.amount(x[:, :2], p) / g.long_axis_mm
        z = x[:, 2]
        out = x.copy()
        # z = Z + beta (Z_apex - Z) for Z < Z_apex (and z < Z_apex iff Z < Z_apex): linear in Z
        out[:, 2] = np.where(z < g.z_apex_mm, (z - beta * g.z_apex_mm) / (1.0 - beta), z)
        return out
