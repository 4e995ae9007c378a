"""The reference (end-diastolic) anatomy of a phantom: :class:`HeartGeometry` and its tissue
classes, as functions of the material position ``X`` (array-aligned mm)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["HeartGeometry"]

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
        # the RV (and its wall) lie within a sector about the RV direction: test only there
        cos_lim = math.cos(math.radians(min(self.rv_insertion_deg + 25.0, 180.0)))
        along = dx * self.rv_direction[0] + dy * self.rv_direction[1]
        idx = np.flatnonzero(inz & (R2 >= rep2) & (along > cos_lim * np.sqrt(R2)))
        Zs = Z[idx]
        scale = self.rv_scale(Zs)
        centre, radius = self.rv_circle(Zs, rep2[idx], scale)
        d2 = (X[idx, 0] - centre[:, 0]) ** 2 + (X[idx, 1] - centre[:, 1]) ** 2
        wall = self.rv_wall_mm * scale
        out[idx[(d2 < (radius + wall) ** 2) & (scale > 0)]] = _RV_WALL
        out[idx[(d2 < radius**2) & (scale > 0)]] = _RV
        if self.dim == 3:
            out[~inz & (R2 < ren2)] = _ATRIUM
        return out

    def labels(self, X: np.ndarray) -> np.ndarray:
        """ACDC label codes (1 RV, 2 MYO, 3 LV, 0 else) at material points ``(N, 3)`` -> ``(N,)`` uint8."""
        t = self.tissue(X)
        t[t > _LV] = 0
        return t

