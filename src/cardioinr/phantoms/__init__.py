"""Synthetic short-axis cine phantoms with analytic ground-truth motion.

A phantom is a left ventricle (LV cavity inside a myocardial ring, tapering toward the apex in
3D) with a right-ventricular crescent beside it, in a smoothly textured background. Everything
that is drawn (anatomy, intensities, tags) is a function of the *material* (reference-frame)
position ``X``. The motion is an analytic forward Lagrangian map ``x_t = phi_t(X) = X + u(X, t)``
from the reference frame (end-diastole, ED) that is smooth, periodic over the cycle, fold-free,
and exactly volume-preserving inside the myocardium. Frame ``t`` is rendered by pulling the
material appearance back through the inverse map, ``I_t(x) = rho(phi_t^{-1}(x))``, averaged over
sub-voxel samples (partial volume), and its labels are ``L_ref(phi_t^{-1}(x))`` at voxel centres.
Because the map is known in closed form, the ground-truth displacement of every voxel at every
frame is exact (no resampling error), which is what the evaluation code compares against.

Coordinates are the package's *array-aligned millimetres* ``p = index * spacing`` (axes i, j, k;
see :mod:`cardioinr.io`). In 3D the stack runs from base to apex along k: the mitral (base) plane
lies just below the centre of slice 0 (which shows the left atrium, unlabelled) and the apex near
the last slice (or, with ``long_axis_mm_range``, at a drawn LV length, leaving empty slices
below it as a real stack does), so that all material descending into the stack during systole
comes from inside it and carried labels stay exact at the top.

The map is a composition of four simple, separately invertible stages (so the inverse is exact to
round-off and fast, rather than a slow global fixed point):

1. *LV in-plane* (per material slice ``Z``): radial contraction in polar coordinates about the LV
   axis, ``r^2 = r_en^2 + (R^2 - R_en^2) / lambda`` in the wall (area scales by ``1/lambda``,
   so with stage 2 the myocardium keeps its volume exactly), uniform scaling of the blood pool,
   and a smooth fall-off of the change in ``r^2`` outside the epicardium; plus a twist (rotation
   by an angle that decreases from endo- to epicardium and fades outside the heart).
2. *Base descent* (3D only): ``u_z = b(t) (Z_apex - Z) / (Z_apex - Z_base)`` inside the heart
   (the base moves toward the apex; uniform longitudinal stretch ``lambda = 1 - b / L``),
   fading out radially beyond the heart.
3. *RV*: along each ray from the LV centre through the RV crescent, the band between the
   (deformed) LV epicardium and the RV free wall shortens by a fraction of its width (the free
   wall moves toward the septum); zero on the LV, fading beyond the free wall.
4. *Global in-plane translation* (bulk motion, 1-2 mm).

Every stage has a positive Jacobian determinant (no folding). Two properties of the truth that
users should know: the displacement has a gradient jump at the endocardium (incompressible wall
next to a uniformly contracting blood pool), so sampling it on a grid costs ~0.2 voxel at that
boundary; and near the apical tip of the cavity the per-slice contraction shears strongly along
the long axis (|grad u| up to ~2 at ES), harmless for the determinant but slow for fixed-point
inversion of a sampled field.

Public API: :class:`PhantomConfig`, :class:`HeartGeometry`, :class:`PhantomMotion`,
:class:`PhantomAppearance`, :class:`Phantom`, :func:`make_phantom`, :func:`write_cases`,
:func:`contraction_profile`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union

import numpy as np

from cardioinr.core.errors import ConfigError
from cardioinr.io import ACDC, Sequence, make_affine, save_nifti, write_json_atomic

__all__ = [
    "Phantom",
    "PhantomAppearance",
    "PhantomConfig",
    "PhantomMotion",
    "HeartGeometry",
    "contraction_profile",
    "draw_motion",
    "make_phantom",
    "write_cases",
    "case_seed",
]

SeedLike = Union[int, tuple[int, ...], list[int], np.random.SeedSequence]

# Internal tissue classes. 1..3 coincide with the ACDC codes that are written out; the RV free
# wall and the atrial blood above the base plane (3D) are drawn but, as in ACDC, not labelled.
_BG, _RV, _MYO, _LV, _RV_WALL, _ATRIUM = 0, 1, 2, 3, 4, 5

# Limits the draw keeps so that the ground truth stays easy to invert: the largest radial stretch
# of the LV map (at the endocardium at end-systole) is R_en / (lambda r_en); 1.9 keeps that part
# of |grad u| <= 0.9, so fixed-point inversion of the field (cardioinr.fit.warp) converges.
_MAX_ENDO_STRETCH = 1.9
_BLOCK_POINTS = 1 << 18  # sub-voxel samples per block when rendering (bounds the memory)
_RV_MAX_GRADIENT = 0.7  # bound on |grad u| of the RV bump (keeps its det(I + grad u) >= 0.3)


# ---------------------------------------------------------------------------------------------
# Smooth scalar building blocks (pure functions)
# ---------------------------------------------------------------------------------------------


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


_FALLOFF_MAX_SLOPE = 1.5


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


def _cos_sum(points: np.ndarray, waves: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Unit-variance random texture: ``sqrt(2/K) * sum_k cos(2 pi k_k . X + phi_k)``.

    Evaluated in float32 (SIMD ``cos``, ~20x faster than float64 here): intensities need no
    more precision, while the geometry and motion stay in float64.

    Args:
        points: ``(N, 3)`` mm. waves: ``(K, 3)`` cycles/mm. phases: ``(K,)`` rad.

    Returns:
        ``(N,)`` float32.
    """
    if points.shape[0] == 0:
        return np.zeros(0, np.float32)
    # one wave at a time on contiguous float32 columns: ~4x faster than an (N, K) matrix
    # followed by a reduction over its short axis
    cols = [np.ascontiguousarray(points[:, i], dtype=np.float32) for i in range(3)]
    acc = np.zeros(points.shape[0], np.float32)
    tmp = np.empty(points.shape[0], np.float32)
    for wave, phase in zip(2.0 * np.pi * waves, phases):
        np.multiply(cols[0], np.float32(wave[0]), out=tmp)
        if wave[1] != 0.0:
            tmp += np.float32(wave[1]) * cols[1]
        if wave[2] != 0.0:
            tmp += np.float32(wave[2]) * cols[2]
        tmp += np.float32(phase)
        np.cos(tmp, out=tmp)
        acc += tmp
    return acc * np.float32(math.sqrt(2.0 / waves.shape[0]))


def _rotate(z: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate complex in-plane offsets ``z`` by ``angle`` (rad), skipping zero angles (most
    points far from the heart), since float64 ``exp(i a)`` is costly here."""
    out = z.copy()
    nz = angle != 0.0
    if nz.any():
        out[nz] = z[nz] * np.exp(1j * angle[nz])
    return out


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

Range = tuple[float, float]


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. Fields left ``None`` get dimension-dependent defaults.

    Attributes:
        dim: 2 (one mid-ventricular slice, 2D+t) or 3 (a short-axis stack, 3D+t).
        shape: ``(X, Y, Z)`` voxels; default ``(112, 112, 1)`` in 2D, ``(96, 96, 8)`` in 3D.
        n_frames: frames per cycle; default 20 in 2D, 16 in 3D.
        spacing: voxel size ``(di, dj, dk)`` mm. In 2D the slice thickness only sets the header;
            nothing varies or moves through the plane.
        ed_frame: reference frame (end-diastole) of the ground truth; any frame, negative counts
            from the end (e.g. -1, the last frame, as in some real data).
        es_fraction: systole duration as a fraction of the cycle (ES frame =
            ``ed_frame + round(es_fraction * n_frames)`` modulo ``n_frames``); ``None`` draws it
            from ``es_fraction_range``.
        tagged: multiply the image by a SPAMM grid (in material coordinates, so it deforms).
        tag_spacing_mm: grid period, mm. tag_angle_deg: grid orientation in-plane.
        tag_depth: tag contrast at ED (0..1; 1 = lines go to zero).
        tag_fade: fraction of the tag contrast lost over one cycle (T1 relaxation).
        noise_sigma: Rician noise sigma, relative to LV blood intensity 1.0 (0 = no noise).
        supersample: in-plane sub-samples per axis per voxel (anti-aliasing).
        z_supersample: through-plane sub-samples per slice in 3D (thick-slice partial volume).
        *_range: ranges of the randomly drawn physiological parameters (uniform draws, then
            rejection so that the combination is anatomically plausible; see ``draw_motion``).
        long_axis_mm_range: 3D base-to-apex length of the LV, mm (capped by the stack); ``None``
            stretches the LV over the whole stack (apex near the last slice).
    """

    dim: int = 2
    shape: tuple[int, int, int] | None = None
    n_frames: int | None = None
    spacing: tuple[float, float, float] = (1.6, 1.6, 8.0)
    ed_frame: int = 0
    es_fraction: float | None = None
    tagged: bool = False
    tag_spacing_mm: float = 7.0
    tag_angle_deg: float = 0.0
    tag_depth: float = 0.7
    tag_fade: float = 0.3
    noise_sigma: float = 0.03
    supersample: int = 2
    z_supersample: int = 4
    es_fraction_range: Range = (0.35, 0.40)
    frame_interval_ms_range: Range = (30.0, 45.0)
    ef_range: Range = (0.50, 0.70)
    circumferential_strain_range: Range = (-0.25, -0.15)
    endo_radius_mm_range: Range = (18.0, 25.0)
    wall_thickness_mm_range: Range = (6.5, 13.0)
    twist_deg_range: Range = (2.0, 5.0)  # 2D: |peak twist| of the slice, random sign
    base_twist_deg_range: Range = (-7.0, -3.0)  # 3D
    apex_twist_deg_range: Range = (7.0, 13.0)  # 3D
    base_descent_mm_range: Range = (8.0, 12.0)  # 3D
    long_axis_mm_range: Range | None = None  # 3D; None: the LV fills the stack (apex near the last slice)
    rv_width_mm_range: Range = (12.0, 20.0)
    rv_shortening_range: Range = (0.35, 0.46)
    translation_mm_range: Range = (1.0, 2.0)

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ConfigError(f"phantom dim must be 2 or 3, got {self.dim!r}")
        shape = self.shape or ((112, 112, 1) if self.dim == 2 else (96, 96, 8))
        n_frames = self.n_frames or (20 if self.dim == 2 else 16)
        try:
            shape = tuple(int(s) for s in shape)
            spacing = tuple(float(s) for s in self.spacing)
        except (TypeError, ValueError):
            raise ConfigError(f"phantom shape {self.shape!r} / spacing {self.spacing!r} must be 3 numbers") from None
        if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
            raise ConfigError(f"phantom shape {shape} and spacing {spacing} must be 3 positive numbers")
        if self.dim == 2 and shape[2] != 1:
            raise ConfigError(f"a 2D phantom has one slice (shape[2] == 1), got shape {shape}")
        if self.dim == 3 and shape[2] < 2:
            raise ConfigError(f"a 3D phantom needs at least 2 slices, got shape {shape}")
        if min(shape[0] * spacing[0], shape[1] * spacing[1]) < 100.0:
            raise ConfigError(
                f"in-plane field of view {shape[0] * spacing[0]:.0f} x {shape[1] * spacing[1]:.0f} mm is too small "
                "for a heart with its surroundings (need >= 100 mm)"
            )
        if self.dim == 3 and shape[2] * spacing[2] < 40.0:
            raise ConfigError(
                f"a 3D phantom needs a z extent >= 40 mm (shape[2] * spacing[2]), got {shape[2] * spacing[2]:.0f} mm"
            )
        if self.long_axis_mm_range is not None and self.long_axis_mm_range[0] < 30.0:
            raise ConfigError(f"long_axis_mm_range must start at >= 30 mm, got {self.long_axis_mm_range}")
        if int(n_frames) < 4:
            raise ConfigError(f"a cycle needs at least 4 frames, got n_frames={n_frames}")
        n_frames = int(n_frames)
        if not -n_frames <= int(self.ed_frame) < n_frames:
            raise ConfigError(f"ed_frame {self.ed_frame} is out of range for {n_frames} frames")
        if self.es_fraction is not None and not 0.1 <= self.es_fraction <= 0.6:
            raise ConfigError(f"es_fraction must be in [0.1, 0.6], got {self.es_fraction}")
        if self.noise_sigma < 0 or not math.isfinite(self.noise_sigma):
            raise ConfigError(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        if int(self.supersample) < 1 or int(self.z_supersample) < 1:
            raise ConfigError("supersample and z_supersample must be >= 1")
        if not (0.0 <= self.tag_depth <= 1.0 and 0.0 <= self.tag_fade < 1.0 and self.tag_spacing_mm > 0):
            raise ConfigError("tag_depth must be in [0, 1], tag_fade in [0, 1), tag_spacing_mm > 0")
        for f in fields(self):
            if f.name.endswith("_range") and getattr(self, f.name) is not None:
                lo, hi = getattr(self, f.name)
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                    raise ConfigError(f"{f.name} must be (low, high) with low <= high, got {(lo, hi)}")
                object.__setattr__(self, f.name, (float(lo), float(hi)))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "n_frames", n_frames)
        object.__setattr__(self, "ed_frame", int(self.ed_frame) % n_frames)
        object.__setattr__(self, "supersample", int(self.supersample))
        object.__setattr__(self, "z_supersample", int(self.z_supersample))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Anatomy in the reference (ED) configuration
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Motion
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomMotion:
    """The analytic motion: drawn parameters and the forward / inverse maps.

    Time is a frame index (float allowed). The cycle phase is ``((t - ed_frame) / n_frames)
    mod 1``; all amplitudes follow :func:`contraction_profile` ``p(t)`` (0 at ED, 1 at ES) except
    a small oscillating part of the translation that also vanishes at ED. So ``u`` is exactly 0
    at the reference frame and exactly periodic: frame ``t + n_frames`` equals frame ``t``.

    Attributes:
        geometry: the reference anatomy.
        n_frames, ed_frame, systole_frames: cycle layout; ES is ``ed_frame + systole_frames``.
        cavity_shrink: peak fraction of the LV cross-sectional cavity area lost at ES (per
            slice); equals the EF in 2D.
        base_descent_mm: peak base-to-apex motion of the base plane ``b`` (3D; 0 in 2D).
        twist_base_deg, twist_apex_deg: peak endocardial rotation at the base and the apex
            (linear in between; equal in 2D). Positive = counter-clockwise in the (i, j) plane.
        epi_twist_weight: epicardial rotation as a fraction of endocardial (transmural gradient).
        rv_shortening: peak fractional shortening of the RV cavity along rays from the LV
            centre (the free wall moves toward the septum by this fraction of the local RV
            width; the local |grad u| of that motion is at most 1.5 times it).
        translation_sys_mm, translation_osc_mm: global in-plane translation
            ``s(t) = s_sys p(t) + s_osc sin(2 pi phase)``.
        falloff_mm: distance over which motion fades outside the heart.
        base_fade_mm: distance over which the LV in-plane motion fades above the base plane and
            below the apex (3D); long enough that this shear stays below ~0.6.
    """

    geometry: HeartGeometry
    n_frames: int
    ed_frame: int
    systole_frames: int
    cavity_shrink: float
    base_descent_mm: float
    twist_base_deg: float
    twist_apex_deg: float
    epi_twist_weight: float
    rv_shortening: float
    translation_sys_mm: tuple[float, float]
    translation_osc_mm: tuple[float, float]
    falloff_mm: float = 35.0
    base_fade_mm: float = 20.0

    # -- time ------------------------------------------------------------------------------------
    @property
    def es_frame(self) -> int:
        return (self.ed_frame + self.systole_frames) % self.n_frames

    def phase(self, frames: np.ndarray | float) -> np.ndarray:
        """Cycle phase in [0, 1) of (fractional) frame indices; 0 at the reference frame."""
        return np.mod((np.asarray(frames, dtype=np.float64) - self.ed_frame) / self.n_frames, 1.0)

    def profile(self, frames: np.ndarray | float) -> np.ndarray:
        """Contraction state ``p`` in [0, 1] at (fractional) frame indices."""
        return contraction_profile(self.phase(frames), self.systole_frames / self.n_frames)

    def translation(self, frame: float) -> np.ndarray:
        """Global in-plane translation ``(2,)`` mm at a frame."""
        ph = float(self.phase(frame))
        p = float(self.profile(frame))
        return p * np.asarray(self.translation_sys_mm) + math.sin(2.0 * math.pi * ph) * np.asarray(self.translation_osc_mm)

    # -- stage 1: LV in-plane contraction and twist ---------------------------------------------
    @property
    def _q_scale(self) -> float:
        """``Q``, mm^2: outside the epicardium the change in ``r^2`` fades over ``R^2 - R_ep^2 in [0, Q]``,
        i.e. over about ``falloff_mm`` beyond the widest epicardium."""
        w = self.falloff_mm
        return w * w + 2.0 * w * self.geometry.epi_radius_mm

    def _z_weight(self, Z: np.ndarray) -> np.ndarray:
        """1 between base plane and apex, fading to 0 over ``base_fade_mm`` beyond them (3D)."""
        if self.geometry.dim == 2:
            return np.ones(np.shape(Z))
        g = self.geometry
        above = falloff((g.z_base_mm - Z) / self.base_fade_mm)
        below = falloff((Z - g.z_apex_mm) / self.base_fade_mm)
        return above * below

    def _radial_state(self, Z: np.ndarray, p: float) -> dict[str, np.ndarray]:
        """Per-slice quantities of the radial map at contraction ``p``.

        Returns squared reference radii ``ren2, rep2``, the cavity shrink ``k``, the in-plane
        area factor ``lam`` (the longitudinal stretch, so that area x length is conserved),
        squared deformed radii ``sen2, sep2`` and ``D = sep2 - rep2``, all shaped like ``Z``.
        """
        g = self.geometry
        m = self._z_weight(Z)
        ren2, rep2 = g.endo_r2(Z), g.epi_r2(Z)
        k = self.cavity_shrink * p * m
        lam = 1.0 - (self.base_descent_mm * p / g.long_axis_mm) * m
        sen2 = ren2 * (1.0 - k)
        sep2 = sen2 + (rep2 - ren2) / lam
        return {"m": m, "ren2": ren2, "rep2": rep2, "k": k, "lam": lam, "sen2": sen2, "sep2": sep2, "D": sep2 - rep2}

    def _twist(self, R2: np.ndarray, Z: np.ndarray, st: dict[str, np.ndarray], p: float) -> np.ndarray:
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
            self.epi_twist_weight * falloff((R2 - rep2) / self._q_scale),
        )
        return amp * p * st["m"] * w

    def _support_mask(self, x: np.ndarray) -> np.ndarray:
        """Points where stage 1 can differ from the identity: ``R^2 < max R_ep^2 + Q``
        (beyond, both the radial fall-off and the twist weight are exactly 0)."""
        c = self.geometry.center_mm
        r2 = (x[:, 0] - c[0]) ** 2 + (x[:, 1] - c[1]) ** 2
        return r2 < self.geometry.epi_radius_mm**2 + self._q_scale

    def _inplane(self, X: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 forward: material ``(N, 3)`` -> ``(N, 3)`` (z unchanged; identity far out)."""
        act = self._support_mask(X)
        out = X.copy()
        out[act] = self._inplane_core(X[act], p)
        return out

    def _inplane_inv(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 inverse (the support is the same set before and after the map)."""
        act = self._support_mask(x)
        out = x.copy()
        out[act] = self._inplane_inv_core(x[act], p)
        return out

    def _inplane_core(self, X: np.ndarray, p: float) -> np.ndarray:
        c = self.geometry.center_mm
        Z = X[:, 2]
        zc = (X[:, 0] - c[0]) + 1j * (X[:, 1] - c[1])
        R2 = zc.real**2 + zc.imag**2
        st = self._radial_state(Z, p)
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
                np.where(R2 > 0, 1.0 + st["D"] * falloff((R2 - rep2) / self._q_scale) / safe, 1.0),
            ),
        )
        zc = _rotate(zc * np.sqrt(ratio2), self._twist(R2, Z, st, p))
        out = np.empty_like(X)
        out[:, 0] = zc.real + c[0]
        out[:, 1] = zc.imag + c[1]
        out[:, 2] = Z
        return out

    def _inplane_inv_core(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 1 inverse, closed form in cavity and wall, Newton outside."""
        c = self.geometry.center_mm
        Z = x[:, 2]
        zc = (x[:, 0] - c[0]) + 1j * (x[:, 1] - c[1])
        r2 = zc.real**2 + zc.imag**2
        st = self._radial_state(Z, p)
        blood = r2 < st["sen2"]
        wall = ~blood & (r2 < st["sep2"])
        out = ~blood & ~wall
        R2 = np.empty_like(r2)
        R2[blood] = r2[blood] / (1.0 - st["k"][blood])
        R2[wall] = st["lam"][wall] * (r2[wall] - st["sen2"][wall]) + st["ren2"][wall]
        if out.any():
            # q = R^2 - R_ep^2 solves q + D f(q / Q) = r^2 - R_ep^2, monotone in q (slope >= 1 -
            # 1.5 |D| / Q >= 0.5, checked when drawing), so Newton converges.
            Q = self._q_scale
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
        zc = _rotate(zc * np.sqrt(ratio2), -self._twist(R2, Z, st, p))
        res = np.empty_like(x)
        res[:, 0] = zc.real + c[0]
        res[:, 1] = zc.imag + c[1]
        res[:, 2] = Z
        return res

    # -- stage 2: base descent (3D) --------------------------------------------------------------
    def _descent_amount(self, xy: np.ndarray, p: float) -> np.ndarray:
        """``b p g(rho)``: descent of the base plane at in-plane positions ``(N, 2)``, mm; ``g`` is
        1 within the (deformed) heart and fades over ``falloff_mm`` beyond it."""
        c = self.geometry.center_mm
        rho = np.hypot(xy[:, 0] - c[0], xy[:, 1] - c[1])
        return self.base_descent_mm * p * falloff((rho - self.geometry.epi_radius_mm - 1.0) / self.falloff_mm)

    def _descent(self, x: np.ndarray, p: float) -> np.ndarray:
        g = self.geometry
        beta = self._descent_amount(x[:, :2], p)
        out = x.copy()
        out[:, 2] += beta * np.maximum(g.z_apex_mm - x[:, 2], 0.0) / g.long_axis_mm
        return out

    def _descent_inv(self, x: np.ndarray, p: float) -> np.ndarray:
        g = self.geometry
        beta = self._descent_amount(x[:, :2], p) / g.long_axis_mm
        z = x[:, 2]
        out = x.copy()
        # z = Z + beta (Z_apex - Z) for Z < Z_apex (and z < Z_apex iff Z < Z_apex): linear in Z
        out[:, 2] = np.where(z < g.z_apex_mm, (z - beta * g.z_apex_mm) / (1.0 - beta), z)
        return out

    # -- stage 3: RV free wall -------------------------------------------------------------------
    def _rv_band(self, u: np.ndarray, z: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        centre, radius = g.rv_circle(z, rep2, g.rv_scale(z))
        dvec = centre - np.asarray(g.center_mm)[None, :]
        b = dvec[:, 0] * u[:, 0] + dvec[:, 1] * u[:, 1]
        disc = radius**2 - (dvec[:, 0] ** 2 + dvec[:, 1] ** 2 - b * b)
        rho_out = b + np.sqrt(np.maximum(disc, 0.0))  # where the ray leaves the RV disc
        w = np.where(disc > 0, np.maximum(rho_out - np.sqrt(rep2), 0.0), 0.0)
        w_eff = w * w / (w + 3.0)  # C1 at w = 0 (no kink in the field at the insertion points)
        if g.dim == 2:
            # the deformed epicardium is exactly the circle r_ep(p)^2 = R_ep^2 - k R_en^2
            r_ep2 = g.epi_radius_mm**2 - self.cavity_shrink * p * g.endo_radius_mm**2
            r_in = np.full(z.shape, math.sqrt(r_ep2) + 0.5)
        else:
            # material now at z came from Z in [z - b p, z] (descent), whose deformed epicardial
            # radius is at most R_ep(Z) / sqrt(lambda) <= R_ep(z - b p) / sqrt(lambda)
            lam = 1.0 - self.base_descent_mm * p / g.long_axis_mm
            r_ep = np.sqrt(g.epi_r2(z - self.base_descent_mm * p) / lam)
            r_in = np.minimum(r_ep, g.epi_radius_mm) + 1.0
        return r_in, w_eff + g.rv_wall_mm, w_eff

    def _rv_profile(self, R: np.ndarray, r_in: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radial weight of the RV motion and its derivative d/dR: rises 0 -> 1 across the band
        ``[r_in, r_in + length]``, falls back to 0 over ``falloff_mm`` beyond it."""
        s_in = (R - r_in) / length
        s_out = (R - r_in - length) / self.falloff_mm
        inside = s_in < 1.0
        val = np.where(inside, 1.0 - falloff(s_in), falloff(s_out))
        der = np.where(inside, -falloff_slope(s_in) / length, falloff_slope(s_out) / self.falloff_mm)
        return val, der

    def _rv_polar(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.geometry.center_mm
        d = x[:, :2] - np.asarray(c)[None, :]
        R = np.hypot(d[:, 0], d[:, 1])
        u = d / np.where(R > 0, R, 1.0)[:, None]
        return d, R, u

    def _rv_sector(self, x: np.ndarray) -> np.ndarray:
        """Indices of points within the RV's angular sector about the LV centre (the crescent
        lies within +-rv_insertion_deg of the RV direction; elsewhere ``w_eff = 0``)."""
        g = self.geometry
        dx = x[:, 0] - g.center_mm[0]
        dy = x[:, 1] - g.center_mm[1]
        along = dx * g.rv_direction[0] + dy * g.rv_direction[1]
        cos_lim = math.cos(math.radians(min(g.rv_insertion_deg + 5.0, 180.0)))
        return np.flatnonzero(along > cos_lim * np.hypot(dx, dy))

    def _rv(self, x: np.ndarray, p: float) -> np.ndarray:
        """Stage 3 forward: along each ray from the LV centre, ``R -> R - a B(R)`` with
        ``a = rv_shortening p w_eff``: the RV band shortens, the LV (inside ``r_in``) stays."""
        out = x.copy()
        if self.rv_shortening * p == 0.0:
            return out
        idx = self._rv_sector(x)
        xs = x[idx]
        _, R, u = self._rv_polar(xs)
        r_in, length, w_eff = self._rv_band(u, xs[:, 2], p)
        val, _ = self._rv_profile(R, r_in, length)
        out[idx, :2] -= (self.rv_shortening * p * w_eff * val)[:, None] * u
        return out

    def _rv_inv(self, x: np.ndarray, p: float, tol: float = 1e-11, max_iter: int = 50) -> np.ndarray:
        """Stage 3 inverse: per ray, solve ``R - a B(R) = r`` by Newton (the left side is
        increasing with slope >= 1 - 1.5 rv_shortening > 0, so the root is unique)."""
        y = x.copy()
        if self.rv_shortening * p == 0.0:
            return y
        idx = self._rv_sector(x)
        xs = x[idx]
        _, r, u = self._rv_polar(xs)
        r_in, length, w_eff = self._rv_band(u, xs[:, 2], p)
        amp = self.rv_shortening * p * w_eff
        act = (amp > 0) & (r > r_in - amp)
        idx, a, rr, ri, ln, u = idx[act], amp[act], r[act], r_in[act], length[act], u[act]
        R = rr.copy()
        for _ in range(max_iter):
            if idx.size == 0:
                break
            val, der = self._rv_profile(R, ri, ln)
            step = (R - a * val - rr) / (1.0 - a * der)
            R = np.clip(R - step, rr, rr + a)
            if np.max(np.abs(step)) < tol:
                break
        # move along the ray by the solved radius change (points elsewhere keep their bits)
        y[idx, :2] += u * (R - rr)[:, None]
        return y

    # -- the whole map ---------------------------------------------------------------------------
    def forward(self, X: np.ndarray, frame: float) -> np.ndarray:
        """``phi_t(X)``: positions at frame ``frame`` of material points ``X`` ``(..., 3)`` mm."""
        X = np.asarray(X, dtype=np.float64)
        shape = X.shape
        X = X.reshape(-1, 3)
        if float(self.phase(frame)) == 0.0:  # the reference frame: identity, exactly
            return X.copy().reshape(shape)
        p = float(self.profile(frame))
        x = self._inplane(X, p)
        if self.geometry.dim == 3:
            x = self._descent(x, p)
        x = self._rv(x, p)
        x[:, :2] += self.translation(frame)[None, :]
        return x.reshape(shape)

    def inverse(self, x: np.ndarray, frame: float) -> np.ndarray:
        """``phi_t^{-1}(x)``: material points ``(..., 3)`` mm that are at ``x`` at frame ``frame``.

        Inverts the stages in reverse order: translation and base descent in closed form, the RV
        bump by fixed-point iteration (a contraction), the LV in-plane map in closed form (Newton
        for the fall-off outside the heart). Accurate to ~1e-9 mm.
        """
        x = np.asarray(x, dtype=np.float64)
        shape = x.shape
        y = x.reshape(-1, 3).copy()
        if float(self.phase(frame)) == 0.0:
            return y.reshape(shape)
        p = float(self.profile(frame))
        y[:, :2] -= self.translation(frame)[None, :]
        y = self._rv_inv(y, p)
        if self.geometry.dim == 3:
            y = self._descent_inv(y, p)
        return self._inplane_inv(y, p).reshape(shape)

    def displacement(self, X: np.ndarray, frames: np.ndarray | float) -> np.ndarray:
        """Lagrangian displacement ``u(X, t) = phi_t(X) - X``.

        Args:
            X: ``(N, 3)`` material (reference-frame) points, mm.
            frames: frame indices ``(T,)`` (or a scalar); fractional and out-of-range values
                are fine (periodic).

        Returns:
            ``(N, T, 3)`` mm; exactly 0 at the reference frame.
        """
        X = np.asarray(X, dtype=np.float64).reshape(-1, 3)
        frames = np.atleast_1d(np.asarray(frames, dtype=np.float64))
        out = np.empty((X.shape[0], frames.size, 3))
        for i, t in enumerate(frames):
            out[:, i] = self.forward(X, float(t)) - X
        return out

    def deformation_gradient(self, X: np.ndarray, frame: float, h: float = 1e-4) -> np.ndarray:
        """``F = d phi_t / dX`` at points ``(N, 3)`` by central differences (step ``h`` mm): ``(N, 3, 3)``.

        In 2D nothing depends on or moves along k, so ``F[:, 2, 2] = 1``.
        """
        X = np.asarray(X, dtype=np.float64).reshape(-1, 3)
        F = np.empty((X.shape[0], 3, 3))
        for j in range(3):
            dX = np.zeros(3)
            dX[j] = h
            F[:, :, j] = (self.forward(X + dX, frame) - self.forward(X - dX, frame)) / (2.0 * h)
        return F

    def jacobian_determinant(self, X: np.ndarray, frame: float, h: float = 1e-4) -> np.ndarray:
        """``det F`` at points ``(N, 3)``: 1 in the myocardium (incompressible), > 0 everywhere."""
        return np.linalg.det(self.deformation_gradient(X, frame, h))


# ---------------------------------------------------------------------------------------------
# Appearance
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PhantomAppearance:
    """Intensity of the material, ``rho(X)`` (SSFP-like: bright blood, dark muscle).

    Attributes:
        background_waves, background_phases: ``(K, 3)`` cycles/mm and ``(K,)`` rad of the
            smooth background texture ``mean + std * cos_sum``.
        myo_waves, myo_phases: a finer texture of the muscle (free wall too), so rotation
            and shear of the tissue are visible in the image as in real heterogeneous tissue.
        tag_*: SPAMM grid (see :class:`PhantomConfig`); ``tag_offset_mm`` is its random phase.
    """

    geometry: HeartGeometry
    background_waves: np.ndarray
    background_phases: np.ndarray
    myo_waves: np.ndarray
    myo_phases: np.ndarray
    background_mean: float = 0.5
    background_std: float = 0.05
    myo_level: float = 0.3
    myo_texture: float = 0.04
    lv_blood: float = 1.0
    rv_blood: float = 0.9
    atrial_blood: float = 0.95
    tagged: bool = False
    tag_spacing_mm: float = 7.0
    tag_angle_deg: float = 0.0
    tag_offset_mm: tuple[float, float] = (0.0, 0.0)
    tag_depth: float = 0.7
    tag_fade: float = 0.3

    def tag_contrast(self, phase: float) -> float:
        """Tag depth at a cycle phase (tags are laid at ED and fade with T1)."""
        return self.tag_depth * (1.0 - self.tag_fade) ** float(phase) if self.tagged else 0.0

    def intensity(self, X: np.ndarray, phase: float = 0.0) -> np.ndarray:
        """Noise-free intensity at material points ``(N, 3)`` mm at a cycle phase -> ``(N,)``."""
        tissue = self.geometry.tissue(X)
        out = np.empty(X.shape[0])
        bg = tissue == _BG
        out[bg] = self.background_mean + self.background_std * _cos_sum(X[bg], self.background_waves, self.background_phases)
        out[tissue == _LV] = self.lv_blood
        out[tissue == _RV] = self.rv_blood
        out[tissue == _ATRIUM] = self.atrial_blood
        mus = (tissue == _MYO) | (tissue == _RV_WALL)
        out[mus] = self.myo_level * (1.0 + self.myo_texture * _cos_sum(X[mus], self.myo_waves, self.myo_phases))
        c = self.tag_contrast(phase)
        if c > 0:
            a = math.radians(self.tag_angle_deg)
            k = math.pi / self.tag_spacing_mm
            u = (X[:, 0] * math.cos(a) + X[:, 1] * math.sin(a) - self.tag_offset_mm[0]) * k
            v = (-X[:, 0] * math.sin(a) + X[:, 1] * math.cos(a) - self.tag_offset_mm[1]) * k
            grid = np.cos(u.astype(np.float32)) ** 2 * np.cos(v.astype(np.float32)) ** 2  # float32: fast
            out *= 1.0 - c * (1.0 - grid)
        return out


# ---------------------------------------------------------------------------------------------
# Drawing random cases
# ---------------------------------------------------------------------------------------------


def _wall_from_strain(endo: float, shrink: float, lam: float, strain: float) -> float:
    """Epicardial radius (mm) such that the mid-wall circumferential strain at ES is ``strain``.

    Mid-wall ``R_mid = (R_en + R_ep) / 2`` maps to ``r_mid^2 = r_en^2 + (R_mid^2 - R_en^2) / lam``
    with ``r_en^2 = (1 - shrink) R_en^2``; setting ``r_mid = (1 + strain) R_mid`` gives
    ``R_mid^2 = R_en^2 (1/lam - (1 - shrink)) / (1/lam - (1 + strain)^2)``. Returns NaN if impossible.
    """
    num = 1.0 / lam - (1.0 - shrink)
    den = 1.0 / lam - (1.0 + strain) ** 2
    if num <= 0 or den <= 0:
        return float("nan")
    return 2.0 * endo * math.sqrt(num / den) - endo


def draw_motion(config: PhantomConfig, rng: np.random.Generator) -> tuple[PhantomMotion, dict[str, Any]]:
    """Draw a plausible heart and its motion.

    EF, peak mid-wall circumferential strain, endocardial radius (and in 3D base descent) are
    drawn uniformly from their ranges; the wall thickness follows from incompressibility; draws
    are rejected unless the wall thickness is in range, the endocardial radial stretch at ES is
    at most 1.9 (|grad u| <= 0.9), the heart fits the field of view with a margin, and the
    outer fall-off stays far from folding; the RV shortening is capped so that its |grad u|
    stays <= 0.7. So the accepted parameters are a correlated subset of the box of ranges (e.g.
    high EF goes with weak strain and a thick wall). In 3D the base descent is capped at 20 % of
    the base-to-apex length (only binding for short stacks).

    Returns:
        The motion and a JSON-ready dict of parameters (EF, strain, ES frame, radii, ...).
    """
    T = config.n_frames
    sx, sy, sz = config.spacing
    nx, ny, nz = config.shape
    es_fraction = config.es_fraction if config.es_fraction is not None else rng.uniform(*config.es_fraction_range)
    es_fraction = float(es_fraction)
    systole_frames = int(min(max(round(es_fraction * T), 1), T - 1))
    frame_interval = float(rng.uniform(*config.frame_interval_ms_range))
    fov_centre = np.array([(nx - 1) * sx / 2.0, (ny - 1) * sy / 2.0])
    fov_hi = np.array([(nx - 1) * sx, (ny - 1) * sy])
    margin = 6.0
    falloff_mm = 35.0
    rv_wall = 3.0

    if config.dim == 3:
        # Base plane a little below the first slice centre: slice 0 shows the atrium, and the
        # material that descends into the stack during systole comes from inside it (above the
        # base, unlabelled), so labels carried by the truth stay exact at the top of the stack.
        z_base = sz * float(rng.uniform(0.4, 0.8))
        z_apex = (nz - 1) * sz + sz * float(rng.uniform(-0.25, 0.5))
        if config.long_axis_mm_range is not None:
            # A real stack has margin below the apex; the LV does not stretch to fill it.
            z_apex = min(z_apex, z_base + float(rng.uniform(*config.long_axis_mm_range)))
        length = z_apex - z_base
        z_taper = z_base + length * float(rng.uniform(0.15, 0.35))
    else:
        z_base = z_apex = z_taper = 0.0
        length = 1.0

    for _ in range(20000):
        ef = float(rng.uniform(*config.ef_range))
        strain = float(rng.uniform(*config.circumferential_strain_range))
        endo = float(rng.uniform(*config.endo_radius_mm_range))
        if config.dim == 3:
            descent = min(float(rng.uniform(*config.base_descent_mm_range)), 0.2 * length)
            lam_es = 1.0 - descent / length
            shrink = 1.0 - (1.0 - ef) / lam_es  # cavity volume ratio = lam (1 - shrink)
        else:
            descent, lam_es, shrink = 0.0, 1.0, ef
        if not 0.0 < shrink < 1.0:
            continue
        epi = _wall_from_strain(endo, shrink, lam_es, strain)
        thick = epi - endo
        lo, hi = config.wall_thickness_mm_range
        if not (np.isfinite(epi) and lo <= thick <= hi):
            continue
        if 1.0 / (lam_es * math.sqrt(1.0 - shrink)) > _MAX_ENDO_STRETCH:
            continue
        # outer fall-off of the change in r^2 must stay monotone with a wide margin
        d_max = abs(endo**2 * (1.0 / lam_es - 1.0 + shrink) - epi**2 * (1.0 / lam_es - 1.0))
        q_scale = falloff_mm**2 + 2.0 * falloff_mm * epi
        if d_max * _FALLOFF_MAX_SLOPE > 0.5 * q_scale:
            continue
        # RV crescent pointing to the image -i side, +-20 degrees
        angle = math.pi + math.radians(float(rng.uniform(-20.0, 20.0)))
        e = np.array([math.cos(angle), math.sin(angle)])
        rv_width = float(rng.uniform(*config.rv_width_mm_range))
        insertion = float(rng.uniform(55.0, 75.0))
        cth = math.cos(math.radians(insertion))
        d = ((epi + rv_width) ** 2 - epi**2) / (2.0 * (epi + rv_width - epi * cth))
        rv_radius = epi + rv_width - d
        # centre the heart's bounding box in the field of view, plus a small random offset
        lo_b = np.minimum(-epi, d * e - rv_radius - rv_wall)
        hi_b = np.maximum(epi, d * e + rv_radius + rv_wall)
        centre = fov_centre - (lo_b + hi_b) / 2.0 + rng.uniform(-4.0, 4.0, size=2)
        if np.any(centre + lo_b < margin) or np.any(centre + hi_b > fov_hi - margin):
            continue
        rv_short = float(rng.uniform(*config.rv_shortening_range))
        # |grad u| of the RV stage <= 1.5 rv_short in the band, rv_short w 1.5 / W beyond
        rv_short = min(
            rv_short,
            _RV_MAX_GRADIENT / _FALLOFF_MAX_SLOPE,
            _RV_MAX_GRADIENT * falloff_mm / (_FALLOFF_MAX_SLOPE * rv_width),
        )
        break
    else:  # pragma: no cover - only with absurd ranges
        raise ConfigError("could not draw a plausible heart from the configured ranges; widen them")

    if config.dim == 3:
        twist_base = float(rng.uniform(*config.base_twist_deg_range))
        twist_apex = float(rng.uniform(*config.apex_twist_deg_range))
        apical_wall = thick * float(rng.uniform(0.6, 0.9))
        z_apex_endo = z_apex - apical_wall
        rv_length = float(rng.uniform(0.6, 0.85))
    else:
        twist_base = twist_apex = float(rng.choice([-1.0, 1.0]) * rng.uniform(*config.twist_deg_range))
        z_apex_endo = 0.0
        rv_length = 1.0
    epi_weight = float(rng.uniform(0.5, 0.7))
    t_angle = rng.uniform(0.0, 2.0 * math.pi, size=2)
    t_mag = np.array([rng.uniform(*config.translation_mm_range), rng.uniform(0.0, 0.5)])
    trans_sys = (float(t_mag[0] * math.cos(t_angle[0])), float(t_mag[0] * math.sin(t_angle[0])))
    trans_osc = (float(t_mag[1] * math.cos(t_angle[1])), float(t_mag[1] * math.sin(t_angle[1])))

    geometry = HeartGeometry(
        dim=config.dim,
        center_mm=(float(centre[0]), float(centre[1])),
        endo_radius_mm=endo,
        epi_radius_mm=float(epi),
        rv_direction=(float(e[0]), float(e[1])),
        rv_width_mm=rv_width,
        rv_insertion_deg=insertion,
        rv_wall_mm=rv_wall,
        z_base_mm=z_base,
        z_taper_mm=z_taper,
        z_apex_endo_mm=z_apex_endo,
        z_apex_mm=z_apex,
        rv_length_fraction=rv_length,
    )
    motion = PhantomMotion(
        geometry=geometry,
        n_frames=T,
        ed_frame=config.ed_frame,
        systole_frames=systole_frames,
        cavity_shrink=shrink,
        base_descent_mm=descent,
        twist_base_deg=twist_base,
        twist_apex_deg=twist_apex,
        epi_twist_weight=epi_weight,
        rv_shortening=rv_short,
        translation_sys_mm=trans_sys,
        translation_osc_mm=trans_osc,
        falloff_mm=falloff_mm,
    )
    # analytic ES quantities of the equatorial (2D: the) slice
    r_en_es = endo * math.sqrt(1.0 - shrink)
    r_ep_es = math.sqrt(r_en_es**2 + (epi**2 - endo**2) / lam_es)
    params: dict[str, Any] = {
        "ef": ef,
        "peak_circumferential_strain": strain,
        "peak_radial_strain": (r_ep_es - r_en_es) / (epi - endo) - 1.0,
        "ed_frame": config.ed_frame,
        "es_frame": motion.es_frame,
        "systole_frames": systole_frames,
        "es_fraction": es_fraction,
        "n_frames": T,
        "frame_interval_ms": frame_interval,
        "heart_rate_bpm": 60000.0 / (T * frame_interval),
        "lv_center_mm": list(geometry.center_mm),
        "endo_radius_mm": endo,
        "epi_radius_mm": float(epi),
        "wall_thickness_mm": float(thick),
        "cavity_area_shrink": shrink,
        "endo_radius_es_mm": r_en_es,
        "epi_radius_es_mm": r_ep_es,
        "epi_twist_weight": epi_weight,
        "rv_direction": list(geometry.rv_direction),
        "rv_width_mm": rv_width,
        "rv_insertion_deg": insertion,
        "rv_shortening": rv_short,
        "rv_free_wall_motion_mm": rv_short * rv_width**2 / (rv_width + 3.0),
        "translation_sys_mm": list(trans_sys),
        "translation_osc_mm": list(trans_osc),
    }
    if config.dim == 3:
        params.update(
            base_twist_deg=twist_base,
            apex_twist_deg=twist_apex,
            base_descent_mm=descent,
            peak_longitudinal_strain=-descent / length,
            lv_length_mm=length,
            z_base_mm=z_base,
            z_taper_mm=z_taper,
            z_apex_mm=z_apex,
            z_apex_endo_mm=z_apex_endo,
            rv_length_fraction=rv_length,
        )
    else:
        params["twist_deg"] = twist_base
    return motion, params


def draw_appearance(
    config: PhantomConfig, geometry: HeartGeometry, rng: np.random.Generator
) -> tuple[PhantomAppearance, dict[str, Any]]:
    """Draw textures, tissue intensities and the tag grid phase."""

    def waves(k: int, lam_lo: float, lam_hi: float, lam_z: float) -> tuple[np.ndarray, np.ndarray]:
        lam = rng.uniform(lam_lo, lam_hi, size=k)
        ang = rng.uniform(0.0, 2.0 * math.pi, size=k)
        w = np.stack([np.cos(ang) / lam, np.sin(ang) / lam, np.zeros(k)], axis=1)
        if config.dim == 3:
            w[:, 2] = rng.uniform(-1.0, 1.0, size=k) / lam_z
        return w, rng.uniform(0.0, 2.0 * math.pi, size=k)

    bw, bp = waves(20, 12.0, 50.0, 40.0)
    mw, mp = waves(12, 4.0, 9.0, 16.0)
    app = PhantomAppearance(
        geometry=geometry,
        background_waves=bw,
        background_phases=bp,
        myo_waves=mw,
        myo_phases=mp,
        background_mean=float(rng.uniform(0.45, 0.55)),
        myo_level=float(rng.uniform(0.25, 0.35)),
        rv_blood=float(rng.uniform(0.85, 0.95)),
        tagged=config.tagged,
        tag_spacing_mm=config.tag_spacing_mm,
        tag_angle_deg=config.tag_angle_deg,
        tag_offset_mm=(float(rng.uniform(0, config.tag_spacing_mm)), float(rng.uniform(0, config.tag_spacing_mm))),
        tag_depth=config.tag_depth,
        tag_fade=config.tag_fade,
    )
    info = {
        "background_mean": app.background_mean,
        "myo_intensity": app.myo_level,
        "lv_blood_intensity": app.lv_blood,
        "rv_blood_intensity": app.rv_blood,
        "tagged": app.tagged,
    }
    if app.tagged:
        info.update(
            tag_spacing_mm=app.tag_spacing_mm, tag_angle_deg=app.tag_angle_deg, tag_depth=app.tag_depth, tag_fade=app.tag_fade
        )
    return app, info


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@dataclass
class Phantom:
    """A rendered phantom.

    Attributes:
        sequence: the cine (float32 ``(X, Y, Z, T)``; labels of every frame; ``ref_frame`` = ED).
        displacement: float32 ``(X, Y, Z, T, 3)`` ground truth in the output-contract convention
            (mm along array axes, from the reference frame; 0 there; component 2 is 0 in 2D).
        motion: the analytic map (query the truth anywhere, invert it).
        appearance: the material intensity model.
        params: drawn and derived parameters (JSON-ready).
        config: what was asked for.
    """

    sequence: Sequence
    displacement: np.ndarray
    motion: PhantomMotion
    appearance: PhantomAppearance
    params: dict[str, Any]
    config: PhantomConfig

    @property
    def labels(self) -> np.ndarray:
        """uint8 ``(X, Y, Z, T)``: the labels of every frame."""
        return np.stack([self.sequence.labels[t] for t in range(self.sequence.n_frames)], axis=-1)

    @property
    def spacing(self) -> np.ndarray:
        return np.asarray(self.config.spacing)


def _voxel_centres(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """``(X*Y*Z, 3)`` mm coordinates of voxel centres, C order over (i, j, k)."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _subvoxel_offsets(config: PhantomConfig) -> np.ndarray:
    """``(S, 3)`` offsets (mm) of the sub-samples of a voxel (cell-centred, uniform)."""
    n = config.supersample
    nz = config.z_supersample if config.dim == 3 else 1
    fr = (np.arange(n) + 0.5) / n - 0.5
    fz = (np.arange(nz) + 0.5) / nz - 0.5 if nz > 1 else np.zeros(1)
    sx, sy, sz = config.spacing
    o = np.stack(np.meshgrid(fr * sx, fr * sy, fz * sz, indexing="ij"), axis=-1)
    return o.reshape(-1, 3)


def _seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    parts = [int(s) for s in seed] if isinstance(seed, (tuple, list)) else [int(seed)]
    if any(s < 0 for s in parts):
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(parts if len(parts) > 1 else parts[0])


def case_seed(seed: int, index: int) -> tuple[int, int]:
    """The seed of case ``index`` of a set written with ``seed`` (distinct, reproducible)."""
    return (int(seed), int(index))


def make_phantom(config: PhantomConfig | None = None, seed: SeedLike = 0, *, name: str = "phantom") -> Phantom:
    """Draw and render one phantom.

    Reproducible: the same ``(config, seed)`` gives identical arrays. Motion, appearance and
    noise use independent streams of the seed, so changing e.g. ``noise_sigma`` or ``tagged``
    leaves the anatomy and motion unchanged.

    Args:
        config: what to generate (default: ``PhantomConfig()``, 2D).
        seed: an int, a tuple of ints (see :func:`case_seed`) or a ``numpy`` ``SeedSequence``.
        name: the sequence name.

    Returns:
        A :class:`Phantom`.
    """
    config = config or PhantomConfig()
    ss = _seed_sequence(seed)
    rng_motion, rng_look, rng_noise = (np.random.default_rng(s) for s in ss.spawn(3))
    motion, params = draw_motion(config, rng_motion)
    appearance, look = draw_appearance(config, motion.geometry, rng_look)
    params.update(look)
    params["noise_sigma"] = config.noise_sigma

    shape, spacing, T = config.shape, config.spacing, config.n_frames
    centres = _voxel_centres(shape, spacing)
    offsets = _subvoxel_offsets(config)
    n_vox, n_sub = centres.shape[0], offsets.shape[0]
    image = np.empty((n_vox, T), np.float32)
    labels: dict[int, np.ndarray] = {}
    disp = np.zeros((n_vox, T, 3), np.float32)
    geom = motion.geometry

    # Work in blocks of voxels, so that memory stays bounded (a 3D frame has ~10^6 samples and
    # each goes through dozens of temporaries).
    block = max(1, _BLOCK_POINTS // n_sub)

    def render(t: int) -> None:
        phase = float(motion.phase(t))
        for v0 in range(0, n_vox, block):
            pts = (centres[v0 : v0 + block, None, :] + offsets[None, :, :]).reshape(-1, 3)
            val = appearance.intensity(motion.inverse(pts, t), phase)
            image[v0 : v0 + block, t] = val.reshape(-1, n_sub).mean(axis=1)
        labels[t] = geom.labels(motion.inverse(centres, t)).reshape(shape)
        if t != config.ed_frame:
            disp[:, t] = motion.forward(centres, t) - centres

    # Frames are independent and numpy releases the GIL in its loops: a few threads keep the cores
    # busy (results do not depend on the thread count).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(4, cores, T))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(render, range(T)))
    else:
        for t in range(T):
            render(t)
    # what the rendered labels show (thick slices and the base plane make 3D differ from "ef")
    vol = {code: np.array([np.count_nonzero(labels[t] == code) for t in range(T)], float) for code in (1, 3)}
    ed, es = config.ed_frame, motion.es_frame
    params["ef_labels"] = float(1.0 - vol[3][es] / vol[3][ed])
    params["rv_ef_labels"] = float(1.0 - vol[1][es] / vol[1][ed])
    if config.noise_sigma > 0:
        n1 = rng_noise.standard_normal(image.shape) * config.noise_sigma
        n2 = rng_noise.standard_normal(image.shape) * config.noise_sigma
        image = np.sqrt((image + n1) ** 2 + n2**2).astype(np.float32)  # Rician magnitude

    seq = Sequence(
        image=image.reshape(*shape, T),
        affine=make_affine(spacing),
        frame_interval_ms=params["frame_interval_ms"],
        labels=labels,
        ref_frame=config.ed_frame,
        label_map=ACDC,
        name=name,
        meta={"phantom": True, "ed_frame": config.ed_frame, "es_frame": motion.es_frame},
    )
    return Phantom(
        sequence=seq,
        displacement=disp.reshape(*shape, T, 3),
        motion=motion,
        appearance=appearance,
        params=params,
        config=config,
    )


# ---------------------------------------------------------------------------------------------
# Writing a set of cases
# ---------------------------------------------------------------------------------------------


def write_cases(
    out_dir: str | os.PathLike,
    n: int = 4,
    config: PhantomConfig | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``n`` phantoms and write them with a manifest.

    For case k (``NNN`` = k with 3 digits): ``caseNNN_4d.nii.gz`` (float32 ``(X, Y, Z, T)``,
    frame interval in pixdim[4], ms), ``caseNNN_labels.nii.gz`` (uint8 ``(X, Y, Z, T)``, labels
    of every frame), ``caseNNN_truth_displacement.nii.gz`` (float32 ``(X, Y, Z, T, 3)``, mm),
    all with the same affine, written atomically; then ``manifest.json``. Case k uses the seed
    :func:`case_seed` ``(seed, k)``.

    Returns:
        The manifest: ``{"format": "cardioinr-phantoms", "version": 1, "config", "label_map",
        "seed", "cases": [{"name", "image", "labels", "truth_displacement", "ed_frame",
        "es_frame", "ref_frame", "n_frames", "shape", "spacing", "frame_interval_ms", "seed",
        "params"}]}``, file names relative to the manifest.
    """
    if int(n) < 1:
        raise ConfigError(f"number of cases must be >= 1, got {n}")
    config = config or PhantomConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    indices: Any = range(int(n))
    if progress and n > 1:
        from rich.progress import track

        indices = track(indices, description="phantoms", transient=True)
    cases = []
    for k in indices:
        name = f"case{k:03d}"
        ph = make_phantom(config, case_seed(seed, k), name=name)
        seq = ph.sequence
        files = {
            "image": f"{name}_4d.nii.gz",
            "labels": f"{name}_labels.nii.gz",
            "truth_displacement": f"{name}_truth_displacement.nii.gz",
        }
        dt = seq.frame_interval_ms
        save_nifti(out / files["image"], seq.image, seq.affine, frame_interval_ms=dt)
        save_nifti(out / files["labels"], ph.labels, seq.affine, frame_interval_ms=dt)
        save_nifti(out / files["truth_displacement"], ph.displacement, seq.affine, frame_interval_ms=dt)
        cases.append(
            {
                "name": name,
                **files,
                "ed_frame": seq.ref_frame,
                "es_frame": ph.motion.es_frame,
                "ref_frame": seq.ref_frame,
                "n_frames": seq.n_frames,
                "shape": list(seq.shape),
                "spacing": [float(s) for s in config.spacing],
                "frame_interval_ms": dt,
                "seed": list(case_seed(seed, k)),
                "params": ph.params,
            }
        )
    manifest = {
        "format": "cardioinr-phantoms",
        "version": 1,
        "config": config.to_dict(),
        "label_map": {"lv": ACDC.lv, "myo": ACDC.myo, "rv": ACDC.rv},
        "seed": int(seed),
        "cases": cases,
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
