"""Stage 1 of the phantom motion: the LV in-plane map (radial contraction and twist), per material slice.

In polar coordinates about the LV axis, ``r^2 = r_en^2 + (R^2 - R_en^2) / lambda`` in the wall
(area scales by ``1/lambda``, so with the base descent the myocardium keeps its volume exactly),
uniform scaling of the blood pool, and a smooth fall-off of the change in ``r^2`` outside the
epicardium; plus a twist (rotation by an angle that decreases from endo- to epicardium and fades
outside the heart). ``z`` is unchanged. See :mod:`cardioinr.phantoms` for the whole map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.profiles import falloff, falloff_slope

__all__ = ["LVInPlane"]


def _rotate(z: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate complex in-plane offsets ``z`` by ``angle`` (rad), skipping zero angles (most
    points far from the heart), since float64 ``exp(i a)`` is costly here."""
    out = z.copy()
    nz = angle != 0.0
    if nz.any():
        out[nz] = z[nz] * np.exp(1j * angle[nz])
    return out


@dataclass(frozen=True)
class LVInPlane:
    """Stage 1, forward and inverse, at a contraction state ``p`` in [0, 1].

    Attributes (as in :class:`cardioinr.phantoms.PhantomMotion`):
        geometry: the reference anatomy.
        cavity_shrink: peak fraction of the cavity cross-sectional area lost at ES (per slice).
        base_descent_mm: peak base descent ``b`` (sets the longitudinal stretch ``lambda``; 0 in 2D).
        twist_base_deg, twist_apex_deg: peak endocardial rotation at the base and the apex.
        epi_twist_weight: epicardial rotation as a fraction of endocardial.
        falloff_mm: distance over which the motion fades outside the heart.
        base_fade_mm: distance over which it fades above the base plane and below the apex (3D).
    """

    geometry: HeartGeometry
    cavity_shrink: float
    base_descent_mm: float
    twist_base_deg: float
    twist_apex_deg: float
    epi_twist_weight: float
    falloff_mm: float
    base_fade_mm: float

    @property
    def q_scale(self) -> float:
        """``Q``, mm^2: outside the epicardium the change in ``r^2`` fades over ``R^2 - R_ep^2 in [0, Q]``,
        i.e. over about ``falloff_mm`` beyond the widest epicardium."""
        w = self.falloff_mm
        return w * w + 2.0 * w * self.geometry.epi_radius_mm

    def z_weight(self, Z: np.ndarray) -> np.ndarray:
        """1 between base plane and apex, fading to 0 over ``base_fade_mm`` beyond them (3D)."""
        if self.geometry.dim == 2:
            return np.ones(np.shape(Z))
        g = self.geometry
        above = falloff((g.z_base_mm - Z) / self.base_fade_mm)
        below = falloff((Z - g.z_apex_mm) / self.base_fade_mm)
        return above * below

    def radial_state(self, Z: np.ndarray, p: float) -> dict[str, np.ndarray]:
        """Per-slice quantities of the radial map at contraction ``p``.

        Returns squared reference radii ``ren2, rep2``, the cavity shrink ``k``, the in-plane
        area factor ``lam`` (the longitudinal stretch, so that area x length is conserved),
        squared deformed radii ``sen2, sep2`` and ``D = sep2 - rep2``, all shaped like ``Z``.
        """
        g = self.geometry
        m = self.z_weight(Z)
        ren2, rep2 = g.endo_r2(Z), g.epi_r2(Z)
        k = self.cavity_shrink * p * m
        lam = 1.0 - (self.base_descent_mm * p / g.long_axis_mm) * m
        sen2 = ren2 * (1.0 - k)
        sep2 = sen2 + (rep2 - ren2) / lam
        return {"m": m, "ren2": ren2, "rep2": rep2, "k": k, "lam": lam, "sen2": sen2, "sep2": sep2, "D": sep2 - rep2}

    def twist(self, R2: np.ndarray, Z: np.ndarray, st: dict[str, np.ndarray], p: float) -> np.ndarray:
        """Rotation angle (rad) of material points at squared radius ``R2``: the endocardial twist
        of the slice times a weight that is 1 in the cavity, falls linearly in ``R^2`` to
        ``epi_twist_weight`` at the epicardium and fades to 0 outside."""
        g = self.geometry
        if g.dim == 2:
            amp = np.full(np.shape(Z), math.radians(self.twist_base_deg))
        else:
            s = np.clip((Z - g.z_base_mm) / g.long_axis_mm, 0.0, 1.0)
            amp = np.radians(self.twist_base_deg + (self.twist_apex_deg - self.twist_base_deg) * s)
        ren2, rep2 = st["ren2"], st["rep2"]
        frac = np.clip((R2 - ren2) / np.maximum(rep2 - ren2, 1e-9), 0.0, 1.0)
        w = np.where(
            R2 < rep2,
            1.0 - (1.0 - self.epi_twist_weight) * frac,
            self.epi_twist_weight * falloff((R2 - rep2) / self.q_scale),
        )
        return amp * p * st["m"] * w

    def support_mask(self, x: np.ndarray) -> np.ndarray:
        """Points where stage 1 can differ from the identity: ``R^2 < max R_ep^2 + Q``
        (beyond, both the radial fall-off and the twist weight are exactly 0)."""
        c = self.geometry.center_mm
        r2 = (x[:, 0] - c[0]) ** 2 + (x[:, 1] - c[1]) ** 2
        return r2 < self.geometry.epi_radius_mm**2 + self.q_scale

    def forward(self, X: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 forward: material ``(N, 3)`` -> ``(N, 3)`` (z unchanged; identity far out)."""
        act = self.support_mask(X)
        out = X.copy()
        out[act] = self._forward_core(X[act], p)
        return out

    def inverse(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 inverse (the support is the same set before and after the map)."""
        act = self.support_mask(x)
        out = x.copy()
        out[act] = self._inverse_core(x[act], p)
        return out

    def _forward_core(self, X: np.ndarray, p: float) -> np.ndarray:
        c = self.geometry.center_mm
        Z = X[:, 2]
        zc = (X[:, 0] - c[0]) + 1j * (X[:, 1] - c[1])
        R2 = zc.real**2 + zc.imag**2
        st = self.radial_state(Z, p)
        ren2, rep2, lam = st["ren2"], st["rep2"], st["lam"]
        blood = R2 < ren2
        wall = ~blood & (R2 < rep2)
        # squared radial stretch (r / R)^2 per region; the limits at R = 0 are finite
        safe = np.where(R2 > 0, R2, 1.0)
        ratio2 = np.where(
            blood,
            1.0 - st["k"],
            np.where(
                wall,
                np.where(R2 > 0, (st["sen2"] + (R2 - ren2) / lam) / safe, 1.0 / lam),
                np.where(R2 > 0, 1.0 + st["D"] * falloff((R2 - rep2) / self.q_scale) / safe, 1.0),
            ),
        )
        zc = _rotate(zc * np.sqrt(ratio2), self.twist(R2, Z, st, p))
        out = np.empty_like(X)
        out[:, 0] = zc.real + c[0]
        out[:, 1] = zc.imag + c[1]
        out[:, 2] = Z
        return out

    def _inverse_core(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 inverse, closed form in cavity and wall, Newton outside."""
        c = self.geometry.center_mm
        Z = x[:, 2]
        zc = (x[:, 0] - c[0]) + 1j * (x[:, 1] - c[1])
        r2 = zc.real**2 + zc.imag**2
        st = self.radial_state(Z, p)
        blood = r2 < st["sen2"]
        wall = ~blood & (r2 < st["sep2"])
        out = ~blood & ~wall
        R2 = np.empty_like(r2)
        R2[blood] = r2[blood] / (1.0 - st["k"][blood])
        R2[wall] = st["lam"][wall] * (r2[wall] - st["sen2"][wall]) + st["ren2"][wall]
        if out.any():
            # q = R^2 - R_ep^2 solves q + D f(q / Q) = r^2 - R_ep^2, monotone in q (slope >= 1 -
            # 1.5 |D| / Q >= 0.5, checked when drawing), so Newton converges.
            Q = self.q_scale
            D = st["D"][out]
            y = r2[out] - st["rep2"][out]
            q = np.maximum(y - D, 0.0)
            for _ in range(30):
                step = (q + D * falloff(q / Q) - y) / (1.0 + D * falloff_slope(q / Q) / Q)
                q = np.maximum(q - step, 0.0)
                if np.max(np.abs(step)) < 1e-10:
                    break
            R2[out] = q + st["rep2"][out]
        safe = np.where(r2 > 0, r2, 1.0)
        ratio2 = np.where(r2 > 0, R2 / safe, np.where(blood, 1.0 / (1.0 - st["k"]), st["lam"]))
        zc = _rotate(zc * np.sqrt(ratio2), -self.twist(R2, Z, st, p))
        res = np.empty_like(x)
        res[:, 0] = zc.real + c[0]
        res[:, 1] = zc.imag + c[1]
        res[:, 2] = Z
        return res
