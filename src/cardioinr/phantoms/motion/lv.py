"""Stage 1 of the phantom motion: the LV in-plane map (radial contraction and twist), per material slice.

In polar coordinates about the LV axis, ``r^2 = r_en^2 + (R^2 - R_en^2) / lambda`` in the wall
(area scales by ``1/lambda``, so with the base descent the myocardium keeps its volume exactly),
uniform scaling of the blood pool, and a smooth fall-off of the change in ``r^2`` outside the
epicardium; plus a twist (rotation by an angle that decreases from endo- to epicardium and fades
outside the heart). ``z`` is unchanged. See :mod:`cardioinr.phantoms` for the whole map.

Regional wall-motion abnormality (optional): the cavity shrink of a slice becomes angle-dependent,
``k(theta) = k g(theta)`` with ``g = 1 - (1 - s) w(theta)`` (``w``:
:func:`~cardioinr.phantoms.profiles.segment_weight` of the angular distance to the segment
centre; ``s`` = 1 normal, 0 akinetic, < 0 dyskinetic), ``theta`` the material polar angle. The map
stays radial at each angle, with the formulas above at the local ``k(theta)``. Then the twist
must be a function of the *deformed* radius alone (a rotation ``psi -> psi + tau(r^2)`` keeps
areas; one by ``tau(R^2)`` of the material radius, as in the axisymmetric map, would not, since
``r`` now varies along ``theta``: the area factor would pick up ``- d(r^2)/d(theta) d(tau)/d(R^2)``,
~4 % in the border zone). So with a segment the twist weight is a fixed C1 profile of ``r^2`` (that
of the normal myocardium, see :meth:`LVInPlane.twist_deformed`), the wall's area still scales by
exactly ``1 / lambda``, and the inverse stays closed form: undo the rotation (``r`` is known), read
``theta``, then invert the radial map at ``theta``. Without a segment (``s == 1``) the original
axisymmetric code runs, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.profiles import falloff, falloff_slope, segment_weight

__all__ = ["LVInPlane", "epi_reach_r2"]


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
        regional_scale: motion scale ``s`` of the abnormal segment (1: none, 0: akinetic, < 0:
            dyskinetic); it multiplies the cavity shrink in the segment's core.
        regional_centre_deg: the segment's centre, degrees counter-clockwise from +i in the
            (i, j) plane, about the LV centre (material angle).
        regional_extent_deg: its full width at half maximum, degrees (0: no segment; <= 240).
    """

    geometry: HeartGeometry
    cavity_shrink: float
    base_descent_mm: float
    twist_base_deg: float
    twist_apex_deg: float
    epi_twist_weight: float
    falloff_mm: float
    base_fade_mm: float
    regional_scale: float = 1.0
    regional_centre_deg: float = 0.0
    regional_extent_deg: float = 0.0

    @property
    def regional(self) -> bool:
        """Whether a segment moves differently (``s != 1`` over a non-empty extent). If not, the
        map is axisymmetric and runs the original code path, bit for bit."""
        return self.regional_scale != 1.0 and self.regional_extent_deg > 0.0

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

    def motion_scale(self, zc: np.ndarray) -> np.ndarray:
        """``g(theta) = 1 - (1 - s) w(theta)``, the local factor on the cavity shrink, at complex
        in-plane offsets ``zc`` ``(N,)`` from the LV centre (only their angle matters): ``(N,)``."""
        c = math.radians(self.regional_centre_deg)
        delta = np.angle(zc * complex(math.cos(c), -math.sin(c)))  # angular distance, (-pi, pi]
        w = segment_weight(delta, math.radians(self.regional_extent_deg))
        return 1.0 - (1.0 - self.regional_scale) * w

    @staticmethod
    def local_state(st: dict[str, np.ndarray], g: np.ndarray) -> dict[str, np.ndarray]:
        """The radial map's per-point quantities at the local cavity shrink ``k g``: ``k``,
        squared deformed radii ``sen2, sep2`` and ``D = sep2 - rep2``, shaped like ``g``."""
        k = st["k"] * g
        sen2 = st["ren2"] * (1.0 - k)
        sep2 = sen2 + (st["rep2"] - st["ren2"]) / st["lam"]
        return {"k": k, "sen2": sen2, "sep2": sep2, "D": sep2 - st["rep2"]}

    def _twist_amplitude(self, Z: np.ndarray) -> np.ndarray:
        """Peak endocardial rotation (rad) of the material slices ``Z``."""
        g = self.geometry
        if g.dim == 2:
            return np.full(np.shape(Z), math.radians(self.twist_base_deg))
        s = np.clip((Z - g.z_base_mm) / g.long_axis_mm, 0.0, 1.0)
        return np.radians(self.twist_base_deg + (self.twist_apex_deg - self.twist_base_deg) * s)

    def twist_deformed(self, r2: np.ndarray, Z: np.ndarray, st: dict[str, np.ndarray], p: float) -> np.ndarray:
        """Rotation angle (rad) as a function of the *deformed* squared radius ``r2`` alone (used
        with a regional abnormality, so that the rotation keeps areas).

        The weight follows the normal myocardium after the radial map: 1 inside its deformed
        endocardium ``sen2``, easing in ``r^2`` to ``epi_twist_weight`` at its deformed
        epicardium ``sep2`` (a smoothstep: the same mid-wall value as the linear profile of
        :meth:`twist`, and C1, because in the abnormal segment the wall sits at other radii and
        a kink of the profile would fall inside its myocardium), then fading to 0 at
        ``r^2 = R_ep^2 + Q``, where the radial map becomes the identity (so the support is the
        same set before and after the map). The segment's endocardial weight thus differs a
        little from 1."""
        sen2, sep2 = st["sen2"], st["sep2"]
        ew = self.epi_twist_weight
        fade = np.maximum(st["rep2"] + self.q_scale - sep2, 1e-9)  # > 2 Q / 3: |D| <= Q / 3 (draw)
        w = np.where(
            r2 < sep2,
            ew + (1.0 - ew) * falloff((r2 - sen2) / np.maximum(sep2 - sen2, 1e-9)),
            ew * falloff((r2 - sep2) / fade),
        )
        return self._twist_amplitude(Z) * p * st["m"] * w

    def twist(self, R2: np.ndarray, Z: np.ndarray, st: dict[str, np.ndarray], p: float) -> np.ndarray:
        """Rotation angle (rad) of material points at squared radius ``R2``: the endocardial twist
        of the slice times a weight that is 1 in the cavity, falls linearly in ``R^2`` to
        ``epi_twist_weight`` at the epicardium and fades to 0 outside (axisymmetric map)."""
        amp = self._twist_amplitude(Z)
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

    def _forward_ratio2(self, R2: np.ndarray, st: dict[str, np.ndarray], loc: dict[str, np.ndarray]) -> np.ndarray:
        """Squared radial stretch ``(r / R)^2`` of material points at ``R2`` per region (cavity,
        wall, outside), with the shrink terms ``k, sen2, D`` of ``loc`` (``st`` itself for the
        axisymmetric map, :meth:`local_state` with a segment); the limits at R = 0 are finite."""
        ren2, rep2, lam = st["ren2"], st["rep2"], st["lam"]
        blood = R2 < ren2
        wall = ~blood & (R2 < rep2)
        safe = np.where(R2 > 0, R2, 1.0)
        return np.where(
            blood,
            1.0 - loc["k"],
            np.where(
                wall,
                np.where(R2 > 0, (loc["sen2"] + (R2 - ren2) / lam) / safe, 1.0 / lam),
                np.where(R2 > 0, 1.0 + loc["D"] * falloff((R2 - rep2) / self.q_scale) / safe, 1.0),
            ),
        )

    def _outer_R2(self, y: np.ndarray, D: np.ndarray) -> np.ndarray:
        """``q = R^2 - R_ep^2`` outside the epicardium from ``y = r^2 - R_ep^2``: solves
        ``q + D f(q / Q) = y``, monotone in q (slope >= 1 - 1.5 |D| / Q >= 0.5, checked when
        drawing), so Newton converges."""
        Q = self.q_scale
        q = np.maximum(y - D, 0.0)
        for _ in range(30):
            step = (q + D * falloff(q / Q) - y) / (1.0 + D * falloff_slope(q / Q) / Q)
            q = np.maximum(q - step, 0.0)
            if np.max(np.abs(step)) < 1e-10:
                break
        return q

    def _forward_core(self, X: np.ndarray, p: float) -> np.ndarray:
        if self.regional:
            return self._forward_regional(X, p)
        c = self.geometry.center_mm
        Z = X[:, 2]
        zc = (X[:, 0] - c[0]) + 1j * (X[:, 1] - c[1])
        R2 = zc.real**2 + zc.imag**2
        st = self.radial_state(Z, p)
        ratio2 = self._forward_ratio2(R2, st, st)
        zc = _rotate(zc * np.sqrt(ratio2), self.twist(R2, Z, st, p))
        out = np.empty_like(X)
        out[:, 0] = zc.real + c[0]
        out[:, 1] = zc.imag + c[1]
        out[:, 2] = Z
        return out

    def _inverse_core(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 inverse, closed form in cavity and wall, Newton outside."""
        if self.regional:
            return self._inverse_regional(x, p)
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
            R2[out] = self._outer_R2(r2[out] - st["rep2"][out], st["D"][out]) + st["rep2"][out]
        safe = np.where(r2 > 0, r2, 1.0)
        ratio2 = np.where(r2 > 0, R2 / safe, np.where(blood, 1.0 / (1.0 - st["k"]), st["lam"]))
        zc = _rotate(zc * np.sqrt(ratio2), -self.twist(R2, Z, st, p))
        res = np.empty_like(x)
        res[:, 0] = zc.real + c[0]
        res[:, 1] = zc.imag + c[1]
        res[:, 2] = Z
        return res

    # -- with a regional abnormality -------------------------------------------------------------
    def _forward_regional(self, X: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 forward with the angle-dependent shrink: the radial map of the material angle's
        ``k(theta)``, then the rotation by :meth:`twist_deformed` of the deformed radius."""
        c = self.geometry.center_mm
        Z = X[:, 2]
        zc = (X[:, 0] - c[0]) + 1j * (X[:, 1] - c[1])
        R2 = zc.real**2 + zc.imag**2
        st = self.radial_state(Z, p)
        loc = self.local_state(st, self.motion_scale(zc))
        zc = zc * np.sqrt(self._forward_ratio2(R2, st, loc))
        zc = _rotate(zc, self.twist_deformed(zc.real**2 + zc.imag**2, Z, st, p))
        out = np.empty_like(X)
        out[:, 0] = zc.real + c[0]
        out[:, 1] = zc.imag + c[1]
        out[:, 2] = Z
        return out

    def _inverse_regional(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 inverse with a segment: the rotation depends on the deformed radius only, so
        it is undone first in closed form; that gives the material angle ``theta`` (the radial
        map keeps angles), hence ``k(theta)``; then the radial map is inverted as in the
        axisymmetric case (closed form in cavity and wall, Newton outside)."""
        c = self.geometry.center_mm
        Z = x[:, 2]
        zc = (x[:, 0] - c[0]) + 1j * (x[:, 1] - c[1])
        r2 = zc.real**2 + zc.imag**2
        st = self.radial_state(Z, p)
        zc = _rotate(zc, -self.twist_deformed(r2, Z, st, p))
        loc = self.local_state(st, self.motion_scale(zc))
        blood = r2 < loc["sen2"]
        wall = ~blood & (r2 < loc["sep2"])
        out = ~blood & ~wall
        R2 = np.empty_like(r2)
        R2[blood] = r2[blood] / (1.0 - loc["k"][blood])
        R2[wall] = st["lam"][wall] * (r2[wall] - loc["sen2"][wall]) + st["ren2"][wall]
        if out.any():
            # per point with its own D(theta): the draw keeps 1.5 |D| / Q <= 0.5 at the worst
            # angle too, so the left side stays monotone
            R2[out] = self._outer_R2(r2[out] - st["rep2"][out], loc["D"][out]) + st["rep2"][out]
        safe = np.where(r2 > 0, r2, 1.0)
        ratio2 = np.where(r2 > 0, R2 / safe, np.where(blood, 1.0 / (1.0 - loc["k"]), st["lam"]))
        zc = zc * np.sqrt(ratio2)
        res = np.empty_like(x)
        res[:, 0] = zc.real + c[0]
        res[:, 1] = zc.imag + c[1]
        res[:, 2] = Z
        return res


def epi_reach_r2(geometry: HeartGeometry, cavity_shrink: float, base_descent_mm: float, min_scale: float,
                 p: float) -> float:
    """Squared radius, mm^2, that the deformed LV epicardium does not exceed at contraction ``p``:
    the largest ``r_ep^2 = R_en^2 (1 - k) + (R_ep^2 - R_en^2) / lambda`` over the slices between
    base and apex and over angles (the least shrink ``k = cavity_shrink p min_scale``), and at
    least ``R_ep^2``. With a hypokinetic or dyskinetic segment the wall there ends beyond the
    normal epicardium; the later stages (base descent, RV) start acting beyond this radius, so
    that they leave the whole LV wall as stage 1 made it (uniform descent, no RV motion).

    In 3D the taper is sampled on 257 slices: the later stages keep a 1 mm margin beyond this
    radius, far more than the sampling error of a smooth profile.
    """
    g = geometry
    Z = np.zeros(1) if g.dim == 2 else np.linspace(g.z_base_mm, g.z_apex_mm, 257)
    lam = 1.0 - base_descent_mm * p / g.long_axis_mm
    ren2, rep2 = g.endo_r2(Z), g.epi_r2(Z)
    sep2 = ren2 * (1.0 - cavity_shrink * p * min(min_scale, 1.0)) + (rep2 - ren2) / lam
    return float(max(np.max(sep2), g.epi_radius_mm**2))
