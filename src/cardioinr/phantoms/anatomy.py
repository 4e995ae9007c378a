"""The reference (end-diastolic) anatomy of a phantom: :class:`HeartGeometry` and its tissue
classes, as functions of the material position ``X`` (array-aligned mm)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["HeartGeometry"]

# Radius of the rounded corner of a triangular RV (mm): the free wall's two straight segments meet
# in an arc, so the RV motion (which moves the free wall along rays) has no crease there.
_RV_CORNER_RADIUS_MM = 4.0

# Internal tissue classes. 1..3 coincide with the ACDC codes that are written out; the RV free
# wall and the atrial blood above the base plane (3D) are drawn but, as in ACDC, not labelled.
_BG, _RV, _MYO, _LV, _RV_WALL, _ATRIUM = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class HeartGeometry:
    """Reference (ED) anatomy, in array-aligned mm.

    The LV is a body of revolution about the axis through ``center_mm`` along k. In 3D its
    radii are constant from the base plane ``z_base_mm`` to ``z_taper_mm`` and taper below as
    ``R(Z) = A (1 - zeta^2)`` (``zeta`` from 0 at the taper start to 1 at the tip), reaching 0
    at ``z_apex_endo_mm`` (cavity) and ``z_apex_mm`` (epicardium, the fixed apex): a rounded
    bullet with a conical tip. Unlike an ellipsoid, whose radius has an infinite slope at the
    tip, this keeps ``d R^2 / dZ -> 0`` there, so the per-slice contraction does not shear
    without bound along the long axis next to the cavity tip. Radii are handled as squares.

    The RV cavity at a slice is the part of a disc outside the LV epicardial disc: a crescent of
    width ``rv_width_mm`` (along ``rv_direction``, from the LV epicardium to the RV free wall)
    whose rim meets the LV epicardium at ``+-rv_insertion_deg`` about ``rv_direction``. It has a
    free wall of thickness ``rv_wall_mm`` (drawn with myocardial intensity, not labelled, as in
    ACDC) and, in 3D, ends at ``z_taper_mm + rv_length_fraction * (z_apex_mm - z_taper_mm)``.

    With ``rv_corner_mm > 0`` (3D) the basal RV is triangular, as real basal short-axis slices
    show it: the crescent gains a corner (the acute margin) in the direction ``rv_corner_deg``
    from the RV direction, ``rv_corner_mm`` beyond the crescent's rim at the base plane, fading
    smoothly to none at mid-ventricle. The cavity is then the convex hull of the crescent's disc
    and a small disc (radius ``_RV_CORNER_RADIUS_MM``) at the corner, outside the LV epicardium:
    two straight free-wall segments meet in a rounded apex, and the free wall (the hull of the
    two discs grown by its thickness) follows them.
    """

    dim: int
    center_mm: tuple[float, float]
    endo_radius_mm: float
    epi_radius_mm: float
    rv_direction: tuple[float, float]
    rv_width_mm: float
    rv_insertion_deg: float
    rv_wall_mm: float = 3.0
    z_base_mm: float = 0.0
    z_taper_mm: float = 0.0
    z_apex_endo_mm: float = 0.0
    z_apex_mm: float = 0.0
    rv_length_fraction: float = 0.75
    rv_corner_mm: float = 0.0
    rv_corner_deg: float = 0.0

    # -- LV radii along the long axis -----------------------------------------------------------
    def _taper(self, Z: np.ndarray, z_end: float) -> np.ndarray:
        """``(1 - zeta^2)^2`` clipped to [0, 1]: the squared-radius factor of the taper."""
        zeta = np.maximum(Z - self.z_taper_mm, 0.0) / max(z_end - self.z_taper_mm, 1e-9)
        f = np.minimum(np.maximum(1.0 - zeta * zeta, 0.0), 1.0)
        return f * f

    def endo_r2(self, Z: np.ndarray) -> np.ndarray:
        """Squared endocardial radius ``R_en(Z)^2``, mm^2, shape of ``Z``."""
        Z = np.asarray(Z, dtype=np.float64)
        if self.dim == 2:
            return np.full(Z.shape, self.endo_radius_mm**2)
        return self.endo_radius_mm**2 * self._taper(Z, self.z_apex_endo_mm)

    def epi_r2(self, Z: np.ndarray) -> np.ndarray:
        """Squared epicardial radius ``R_ep(Z)^2``, mm^2."""
        Z = np.asarray(Z, dtype=np.float64)
        if self.dim == 2:
            return np.full(Z.shape, self.epi_radius_mm**2)
        return self.epi_radius_mm**2 * self._taper(Z, self.z_apex_mm)

    def rv_scale(self, Z: np.ndarray) -> np.ndarray:
        """RV size factor in [0, 1] along the long axis (1 above the taper, 0 past the RV apex)."""
        Z = np.asarray(Z, dtype=np.float64)
        if self.dim == 2:
            return np.ones(Z.shape)
        z_end = self.z_taper_mm + self.rv_length_fraction * (self.z_apex_mm - self.z_taper_mm)
        return np.sqrt(self._taper(Z, z_end))

    @property
    def long_axis_mm(self) -> float:
        """Base-to-apex length ``L``, mm (3D); 1 in 2D, where nothing uses it."""
        return self.z_apex_mm - self.z_base_mm if self.dim == 3 else 1.0

    def in_heart_z(self, Z: np.ndarray) -> np.ndarray:
        """Whether a material slice position lies at or below the base plane (3D); all True in 2D."""
        Z = np.asarray(Z, dtype=np.float64)
        return np.ones(Z.shape, bool) if self.dim == 2 else Z >= self.z_base_mm

    def rv_circle(
        self, Z: np.ndarray, epi_r2: np.ndarray | None = None, scale: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Centre ``(N, 2)`` and radius ``(N,)`` of the RV disc at each material ``Z``, mm.

        From the crescent's width ``w`` and insertion angle ``theta`` at an LV epicardial radius
        ``A``: the disc rim passes through the LV centre + (A + w) along the RV direction and
        through the two insertion points, so with ``d`` the centre offset,
        ``d = ((A + w)^2 - A^2) / (2 (A + w - A cos theta))`` and radius ``A + w - d``.
        """
        a = np.sqrt(self.epi_r2(Z) if epi_r2 is None else epi_r2)
        w = self.rv_width_mm * (self.rv_scale(Z) if scale is None else scale)
        cth = math.cos(math.radians(self.rv_insertion_deg))
        den = np.maximum(2.0 * (a + w - a * cth), 1e-9)
        d = ((a + w) ** 2 - a * a) / den
        centre = np.asarray(self.center_mm)[None, :] + d[:, None] * np.asarray(self.rv_direction)[None, :]
        return centre, a + w - d

    def rv_corner_reach(self, Z: np.ndarray) -> np.ndarray:
        """How far the RV's corner sticks out beyond the crescent's rim at material ``Z``, mm:
        ``rv_corner_mm`` at and above the base plane, falling smoothly (C1) to 0 at mid-ventricle
        (and everywhere in 2D or without a corner)."""
        Z = np.asarray(Z, dtype=np.float64)
        if self.dim == 2 or self.rv_corner_mm <= 0.0:
            return np.zeros(Z.shape)
        z_mid = self.z_base_mm + 0.5 * (self.z_apex_mm - self.z_base_mm)
        f = np.clip((z_mid - Z) / max(z_mid - self.z_base_mm, 1e-9), 0.0, 1.0)
        return self.rv_corner_mm * f * f * (3.0 - 2.0 * f)

    def rv_discs(self, Z: np.ndarray, epi_r2: np.ndarray | None, scale: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The RV cavity's two discs at each ``Z`` ``(N,)``: the crescent's (centre ``(N, 2)``,
        radius ``(N,)``), the corner's (centre ``(N, 2)``, radius ``(N,)``), and where a corner
        sticks out ``(N,)`` bool (elsewhere the corner disc lies inside the crescent's)."""
        centre, radius = self.rv_circle(Z, epi_r2, scale)
        reach = self.rv_corner_reach(Z)
        a = math.radians(self.rv_corner_deg)
        e = np.asarray(self.rv_direction, dtype=np.float64)
        v = np.array([e[0] * math.cos(a) - e[1] * math.sin(a), e[0] * math.sin(a) + e[1] * math.cos(a)])
        # where the ray from the LV centre along v leaves the crescent's disc
        d = centre - np.asarray(self.center_mm)[None, :]
        b = d @ v
        rim = b + np.sqrt(np.maximum(radius**2 - (np.sum(d * d, axis=1) - b * b), 0.0))
        rc = np.minimum(_RV_CORNER_RADIUS_MM, radius)
        corner = np.asarray(self.center_mm)[None, :] + (rim + reach - rc)[:, None] * v[None, :]
        return centre, radius, corner, rc, reach > 0.0

    def rv_ray_width(self, u: np.ndarray, Z: np.ndarray, epi_r2: np.ndarray | None = None,
                     scale: np.ndarray | None = None) -> np.ndarray:
        """RV width ``(N,)`` mm along rays ``u`` ``(N, 2)`` (unit) from the LV centre at material
        ``Z`` ``(N,)``: from the LV epicardium (``sqrt(epi_r2)``, default ``epi_r2(Z)``) to where
        the ray leaves the RV cavity (of size ``scale``, default ``rv_scale(Z)``); 0 off it."""
        Z = np.asarray(Z, dtype=np.float64)
        rep2 = self.epi_r2(Z) if epi_r2 is None else epi_r2
        centre, radius, corner, rc, has = self.rv_discs(Z, rep2, scale)
        o = np.asarray(self.center_mm)[None, :]
        out = _ray_exit_disc(u, centre - o, radius)
        if np.any(has):
            h = np.flatnonzero(has)
            out[h] = np.maximum(out[h], _ray_exit_hull(u[h], centre[h] - o, radius[h], corner[h] - o, rc[h]))
        return np.where(np.isfinite(out), np.maximum(out - np.sqrt(rep2), 0.0), 0.0)

    def tissue(self, X: np.ndarray) -> np.ndarray:
        """Tissue class at material points: 0 background, 1 RV blood, 2 LV myocardium, 3 LV
        blood, 4 RV free wall, 5 left-atrial blood above the base plane (3D; 4 and 5 unlabelled).

        Args:
            X: ``(N, 3)`` material points, mm.

        Returns:
            ``(N,)`` uint8.
        """
        Z = X[:, 2]
        dx = X[:, 0] - self.center_mm[0]
        dy = X[:, 1] - self.center_mm[1]
        R2 = dx * dx + dy * dy
        ren2, rep2 = self.endo_r2(Z), self.epi_r2(Z)
        inz = self.in_heart_z(Z)
        out = np.zeros(X.shape[0], np.uint8)
        out[inz & (R2 < rep2)] = _MYO
        out[inz & (R2 < ren2)] = _LV
        # the RV (and its wall) lie within a sector about the RV direction: test only there (a
        # corner may lie up to 45 degrees beyond it)
        extra = 25.0 if self.rv_corner_mm <= 0.0 else 45.0
        cos_lim = math.cos(math.radians(min(self.rv_insertion_deg + extra, 180.0)))
        along = dx * self.rv_direction[0] + dy * self.rv_direction[1]
        idx = np.flatnonzero(inz & (R2 >= rep2) & (along > cos_lim * np.sqrt(R2)))
        Zs = Z[idx]
        scale = self.rv_scale(Zs)
        centre, radius, corner, rc, has = self.rv_discs(Zs, rep2[idx], scale)
        d2 = (X[idx, 0] - centre[:, 0]) ** 2 + (X[idx, 1] - centre[:, 1]) ** 2
        wall = self.rv_wall_mm * scale
        in_wall = d2 < (radius + wall) ** 2
        in_rv = d2 < radius**2
        if np.any(has):
            h = np.flatnonzero(has)
            p = X[idx[h], :2]
            in_wall[h] |= _in_hull(p, centre[h], radius[h] + wall[h], corner[h], rc[h] + wall[h])
            in_rv[h] |= _in_hull(p, centre[h], radius[h], corner[h], rc[h])
        out[idx[in_wall & (scale > 0)]] = _RV_WALL
        out[idx[in_rv & (scale > 0)]] = _RV
        if self.dim == 3:
            out[~inz & (R2 < ren2)] = _ATRIUM
        return out

    def labels(self, X: np.ndarray) -> np.ndarray:
        """ACDC label codes (1 RV, 2 MYO, 3 LV, 0 else) at material points ``(N, 3)`` -> ``(N,)`` uint8."""
        t = self.tissue(X)
        t[t > _LV] = 0
        return t



# --- the convex hull of two discs (the triangular RV) ------------------------------------------


def _in_hull(p: np.ndarray, c1: np.ndarray, r1: np.ndarray, c2: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Whether points ``p`` ``(N, 2)`` lie in the convex hull of the discs ``(c1, r1)`` and
    ``(c2, r2)`` (per point, centres ``(N, 2)``, radii ``(N,)``).

    The hull is the union of the discs whose centre and radius interpolate linearly between the
    two (``c(s), r(s)``, ``s`` in [0, 1]); ``|p - c(s)| - r(s)`` is convex in ``s``, so its minimum
    is at its stationary point clipped to [0, 1]: with ``q = p - c1``, ``D = c2 - c1``,
    ``a = |D|^2``, ``dr = r2 - r1``, ``s* = q.D / a + dr l / sqrt(a (a - dr^2))`` where ``l`` is
    the distance from ``p`` to the line through the centres.
    """
    q = p - c1
    D = c2 - c1
    a = np.maximum(np.sum(D * D, axis=1), 1e-12)
    b = np.sum(q * D, axis=1)
    dr = r2 - r1
    ell = np.sqrt(np.maximum(np.sum(q * q, axis=1) - b * b / a, 0.0))
    s = np.clip(b / a + dr * ell / np.sqrt(a * np.maximum(a - dr * dr, 1e-12)), 0.0, 1.0)
    off = q - s[:, None] * D
    return np.sqrt(np.sum(off * off, axis=1)) < r1 + s * dr


def _ray_exit_disc(u: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Distance ``(N,)`` along unit rays ``u`` ``(N, 2)`` from the origin to where they leave the
    discs ``(c (N, 2), r (N,))``; ``-inf`` for a ray that misses."""
    b = np.sum(c * u, axis=1)
    disc = r * r - (np.sum(c * c, axis=1) - b * b)
    return np.where(disc > 0.0, b + np.sqrt(np.maximum(disc, 0.0)), -np.inf)


def _ray_exit_hull(u: np.ndarray, c1: np.ndarray, r1: np.ndarray, c2: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Distance ``(N,)`` along unit rays ``u`` from the origin to where they leave the convex
    hull of two discs (``r1 >= r2``, neither inside the other): the farthest crossing of its
    boundary, the two arcs and the two outer tangent segments; ``-inf`` for a ray that misses."""
    out = np.maximum(_ray_exit_disc(u, c1, r1), _ray_exit_disc(u, c2, r2))
    D = c2 - c1
    L = np.maximum(np.sqrt(np.sum(D * D, axis=1)), 1e-12)
    Dh = D / L[:, None]
    Dp = np.stack([-Dh[:, 1], Dh[:, 0]], axis=1)
    cg = np.clip((r1 - r2) / L, -1.0, 1.0)  # outer tangents: n . D = r1 - r2 for the unit normal n
    sg = np.sqrt(1.0 - cg * cg)
    for sign in (1.0, -1.0):
        n = cg[:, None] * Dh + sign * sg[:, None] * Dp
        P, Q = c1 + r1[:, None] * n, c2 + r2[:, None] * n
        E = Q - P
        den = u[:, 0] * E[:, 1] - u[:, 1] * E[:, 0]
        ok = np.abs(den) > 1e-12
        den = np.where(ok, den, 1.0)
        t = (P[:, 0] * E[:, 1] - P[:, 1] * E[:, 0]) / den  # along the ray
        s = (P[:, 0] * u[:, 1] - P[:, 1] * u[:, 0]) / den  # along the segment
        hit = ok & (s >= 0.0) & (s <= 1.0) & (t > 0.0)
        out = np.where(hit, np.maximum(out, t), out)
    return out
