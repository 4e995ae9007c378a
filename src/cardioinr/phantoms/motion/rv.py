"""Stage 3 of the phantom motion: the RV free wall.

Along each ray from the LV centre through the RV crescent, the band between the (deformed) LV
epicardium and the RV free wall shortens by a fraction of its width (the free wall moves toward
the septum); zero on the LV, fading beyond the free wall. The inverse solves one monotone scalar
equation per ray by Newton. See :mod:`cardioinr.phantoms` for the whole map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.motion.lv import epi_reach_r2
from cardioinr.phantoms.profiles import falloff, falloff_slope

__all__ = ["RVShortening", "effective_rv_width", "rv_band_weight", "widest_rv_width"]


def _polar(geometry: HeartGeometry, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane offsets ``(N, 2)`` of ``x`` (``(N, >= 2)`` mm) from the LV centre, their lengths
    ``(N,)`` mm and unit directions ``(N, 2)`` (0 at the centre)."""
    d = x[:, :2] - np.asarray(geometry.center_mm)[None, :]
    R = np.hypot(d[:, 0], d[:, 1])
    u = d / np.where(R > 0, R, 1.0)[:, None]
    return d, R, u


def widest_rv_width(geometry: HeartGeometry) -> float:
    """The largest RV ray width at the base plane, mm: the crescent's width, or more along a
    triangular RV's corner (found on rays every half degree)."""
    g = geometry
    if g.dim == 2 or g.rv_corner_mm <= 0.0:
        return float(g.rv_width_mm)
    ang = np.radians(np.arange(-180.0, 180.0, 0.5))
    e = np.asarray(g.rv_direction, dtype=np.float64)
    u = np.stack([e[0] * np.cos(ang) - e[1] * np.sin(ang), e[0] * np.sin(ang) + e[1] * np.cos(ang)], axis=1)
    ones = np.ones(len(ang))
    return float(max(g.rv_width_mm, g.rv_ray_width(u, g.z_base_mm * ones, g.epi_radius_mm**2 * ones, ones).max()))


def effective_rv_width(w: np.ndarray | float) -> np.ndarray | float:
    """``w^2 / (w + 3)``: the ray width taken to 0 smoothly (C1 at w = 0: no kink in the field at
    the insertion points)."""
    return w * w / (w + 3.0)


def _radial_profile(R: np.ndarray, r_in: np.ndarray | float, length: np.ndarray, falloff_mm: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Radial weight and its derivative d/dR: rises 0 -> 1 across the band ``[r_in, r_in +
    length]`` (0 before it), falls back to 0 over ``falloff_mm`` beyond it."""
    s_in = (R - r_in) / length
    s_out = (R - r_in - length) / falloff_mm
    inside = s_in < 1.0
    val = np.where(inside, 1.0 - falloff(s_in), falloff(s_out))
    der = np.where(inside, -falloff_slope(s_in) / length, falloff_slope(s_out) / falloff_mm)
    return val, der


def rv_band_weight(geometry: HeartGeometry, xy: np.ndarray, r_in: float, falloff_mm: float) -> np.ndarray:
    """A smooth in-plane weight of the RV region at ``xy`` ``(N, 2)`` mm -> ``(N,)`` in [0, 1].

    Along each ray from the LV centre: 0 up to ``r_in`` (the LV and its wall), rising across the
    RV cavity at the base plane to 1 at its free wall, 1 across the wall, fading to 0
    over ``falloff_mm`` beyond it; scaled by the ray's share of the crescent's width (``w_eff /
    w_eff`` on the RV direction), so it goes to 0 smoothly at the insertion points. A triangular
    RV's corner is wider than the crescent: there the share saturates smoothly at 1 (C1, from
    0.8), so its free wall descends as the crescent's does on the RV direction. The same
    radial profile as the in-plane shortening (:class:`RVShortening`), independent of ``z`` so
    that a stage moving only ``z`` by it keeps a closed-form inverse.
    """
    g = geometry
    _, R, u = _polar(g, np.asarray(xy, dtype=np.float64))
    ones = np.ones(R.shape)
    w_eff = effective_rv_width(g.rv_ray_width(u, g.z_base_mm * ones, g.epi_radius_mm**2 * ones, ones))
    val, _ = _radial_profile(R, r_in, w_eff + g.rv_wall_mm, falloff_mm)
    share = w_eff / effective_rv_width(g.rv_width_mm)
    if g.dim == 3 and g.rv_corner_mm > 0.0:
        share = _saturate(share, _SATURATE_FROM)
    return val * share


# where the RV descent's share of a triangular RV's ray width starts to saturate
_SATURATE_FROM = 0.8


def _saturate(r: np.ndarray, lo: float) -> np.ndarray:
    """``r`` below ``lo``, 1 above ``2 - lo``, and between them the quadratic that joins the two
    with matching slopes (C1, monotone)."""
    d = 1.0 - lo
    mid = r - (r - lo) ** 2 / (4.0 * d)
    return np.where(r <= lo, r, np.where(r >= 2.0 - lo, 1.0, mid))


@dataclass(frozen=True)
class RVShortening:
    """Stage 3, forward and inverse, at a contraction state ``p`` in [0, 1].

    Attributes (as in :class:`cardioinr.phantoms.PhantomMotion`):
        geometry: the reference anatomy.
        rv_shortening: peak fractional shortening of the RV cavity along rays from the LV centre.
        cavity_shrink: peak LV cavity area shrink (locates the deformed LV epicardium in 2D).
        base_descent_mm: peak base descent ``b``, mm (locates it in 3D; 0 in 2D).
        falloff_mm: distance over which the motion fades beyond the free wall, mm.
        regional_min_scale: the least motion scale of the LV cavity shrink over angles (``s`` of
            a regional abnormality, 1 without): below 1 the LV wall ends beyond the normal
            epicardium in the segment, and the band starts beyond the farthest LV wall.
    """

    geometry: HeartGeometry
    rv_shortening: float
    cavity_shrink: float
    base_descent_mm: float
    falloff_mm: float
    regional_min_scale: float = 1.0

    def band(self, u: np.ndarray, z: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the RV motion acts along rays from the LV centre.

        Args:
            u: ``(N, 2)`` unit in-plane directions from the LV centre. z: ``(N,)`` positions, mm.
            p: contraction state.

        Returns:
            ``r_in`` (start of the band: just beyond the LV epicardium as deformed at ``p``),
            ``length`` (RV width on the ray plus the free wall) and ``w_eff`` (the RV width on
            the ray, smoothly taken to 0 at the insertion points and outside the RV), mm, ``(N,)``.
        """
        g = self.geometry
        rep2 = g.epi_r2(z)
        w_eff = effective_rv_width(g.rv_ray_width(u, z, rep2, g.rv_scale(z)))
        if g.dim == 2:
            # the deformed epicardium is exactly the circle r_ep(p)^2 = R_ep^2 - k R_en^2
            # (with a segment: the circle of the least shrink bounds it)
            shrink = self.cavity_shrink if self.regional_min_scale == 1.0 else self.cavity_shrink * self.regional_min_scale
            r_ep2 = g.epi_radius_mm**2 - shrink * p * g.endo_radius_mm**2
            r_in = np.full(z.shape, math.sqrt(r_ep2) + 0.5)
        else:
            # material now at z came from Z in [z - b p, z] (descent), whose deformed epicardial
            # radius is at most R_ep(Z) / sqrt(lambda) <= R_ep(z - b p) / sqrt(lambda)
            lam = 1.0 - self.base_descent_mm * p / g.long_axis_mm
            if self.regional_min_scale == 1.0:
                r_ep = np.sqrt(g.epi_r2(z - self.base_descent_mm * p) / lam)
                r_in = np.minimum(r_ep, g.epi_radius_mm) + 1.0
            else:
                # r_ep^2 = R_ep^2 / lambda - R_en^2 (1 / lambda - 1 + k): where the least shrink k
                # makes the bracket negative the endocardial term adds; and the heart's widest
                # deformed epicardium may exceed R_ep (the segment's wall ends farther out)
                zz = z - self.base_descent_mm * p
                c = 1.0 / lam - 1.0 + self.cavity_shrink * p * self.regional_min_scale
                r_ep = np.sqrt(g.epi_r2(zz) / lam + max(-c, 0.0) * g.endo_r2(zz))
                reach = math.sqrt(epi_reach_r2(g, self.cavity_shrink, self.base_descent_mm, self.regional_min_scale, p))
                r_in = np.minimum(r_ep, reach) + 1.0
        return r_in, w_eff + g.rv_wall_mm, w_eff

    def profile(self, R: np.ndarray, r_in: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radial weight of the RV motion and its derivative d/dR: rises 0 -> 1 across the band
        ``[r_in, r_in + length]``, falls back to 0 over ``falloff_mm`` beyond it."""
        return _radial_profile(R, r_in, length, self.falloff_mm)

    def polar(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """In-plane offsets ``(N, 2)`` from the LV centre, their lengths ``(N,)`` mm and unit
        directions ``(N, 2)`` (0 at the centre)."""
        return _polar(self.geometry, x)

    def sector(self, x: np.ndarray) -> np.ndarray:
        """Indices of points within the RV's angular sector about the LV centre (the crescent
        lies within +-rv_insertion_deg of the RV direction, a triangular RV's corner within 45
        degrees beyond; elsewhere ``w_eff = 0``)."""
        g = self.geometry
        dx = x[:, 0] - g.center_mm[0]
        dy = x[:, 1] - g.center_mm[1]
        along = dx * g.rv_direction[0] + dy * g.rv_direction[1]
        cos_lim = math.cos(math.radians(min(g.rv_insertion_deg + (5.0 if g.rv_corner_mm <= 0.0 else 45.0), 180.0)))
        return np.flatnonzero(along > cos_lim * np.hypot(dx, dy))

    def forward(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 3 forward: along each ray from the LV centre, ``R -> R - a B(R)`` with
        ``a = rv_shortening p w_eff``: the RV band shortens, the LV (inside ``r_in``) stays."""
        out = x.copy()
        if self.rv_shortening * p == 0.0:
            return out
        idx = self.sector(x)
        xs = x[idx]
        _, R, u = self.polar(xs)
        r_in, length, w_eff = self.band(u, xs[:, 2], p)
        val, _ = self.profile(R, r_in, length)
        out[idx, :2] -= (self.rv_shortening * p * w_eff * val)[:, None] * u
        return out

    def inverse(self, x: np.ndarray, p: float, tol: float = 1e-11, max_iter: int = 50) -> np.ndarray:
        """Stage 3 inverse: per ray, solve ``R - a B(R) = r`` by Newton (the left side is
        increasing with slope >= 1 - 1.5 rv_shortening > 0, so the root is unique)."""
        y = x.copy()
        if self.rv_shortening * p == 0.0:
            return y
        idx = self.sector(x)
        xs = x[idx]
        _, r, u = self.polar(xs)
        r_in, length, w_eff = self.band(u, xs[:, 2], p)
        amp = self.rv_shortening * p * w_eff
        act = (amp > 0) & (r > r_in - amp)
        idx, a, rr, ri, ln, u = idx[act], amp[act], r[act], r_in[act], length[act], u[act]
        R = rr.copy()
        for _ in range(max_iter):
            if idx.size == 0:
                break
            val, der = self.profile(R, ri, ln)
            step = (R - a * val - rr) / (1.0 - a * der)
            R = np.clip(R - step, rr, rr + a)
            if np.max(np.abs(step)) < tol:
                break
        # move along the ray by the solved radius change (points elsewhere keep their bits)
        y[idx, :2] += u * (R - rr)[:, None]
        return y
