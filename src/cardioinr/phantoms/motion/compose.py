"""The phantom's analytic motion, :class:`PhantomMotion`: the four stages composed.

``phi_t = translation o rv o descent o lv_inplane`` (the descent in 3D only), each stage
separately invertible (:mod:`.lv`, :mod:`.descent`, :mod:`.rv`, :mod:`.translation`), so the
inverse is the stages' inverses in reverse order, exact to round-off. See :mod:`cardioinr.phantoms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.motion.descent import BaseDescent
from cardioinr.phantoms.motion.lv import LVInPlane
from cardioinr.phantoms.motion.rv import RVShortening
from cardioinr.phantoms.motion.translation import GlobalTranslation
from cardioinr.phantoms.profiles import contraction_profile

__all__ = ["PhantomMotion"]


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
        regional_scale: motion scale ``s`` of a regional wall-motion abnormality: the cavity
            shrink is ``cavity_shrink * (1 - (1 - s) w(theta))`` at the material angle ``theta``
            (1: none, the default; 0: akinetic; < 0: dyskinetic, bulging out in systole).
        regional_centre_deg: the segment's centre, degrees counter-clockwise from +i in the
            (i, j) plane about the LV centre. regional_extent_deg: its full width at half
            maximum, degrees (0: none); the segment spans the whole long axis in 3D. See
            :mod:`.lv` and :func:`~cardioinr.phantoms.profiles.segment_weight`.
        rv_descent_gain: extra long-axis descent of the RV region, a multiple of
            ``base_descent_mm`` (3D; 0: none, the default). See :mod:`.descent`.
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
    regional_scale: float = 1.0
    regional_centre_deg: float = 0.0
    regional_extent_deg: float = 0.0
    rv_descent_gain: float = 0.0

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
        return self.translation_stage.shift(p, ph)

    # -- the stages, each with its own parameters ------------------------------------------------
    @property
    def lv_stage(self) -> LVInPlane:
        """Stage 1: LV in-plane contraction and twist."""
        return LVInPlane(
            geometry=self.geometry,
            cavity_shrink=self.cavity_shrink,
            base_descent_mm=self.base_descent_mm,
            twist_base_deg=self.twist_base_deg,
            twist_apex_deg=self.twist_apex_deg,
            epi_twist_weight=self.epi_twist_weight,
            falloff_mm=self.falloff_mm,
            base_fade_mm=self.base_fade_mm,
            regional_scale=self.regional_scale,
            regional_centre_deg=self.regional_centre_deg,
            regional_extent_deg=self.regional_extent_deg,
        )

    @property
    def _regional_min_scale(self) -> float:
        """The least motion scale of the LV cavity shrink over angles: 1 without a segment.
        The later stages start acting beyond the LV wall as far as it then reaches."""
        return min(self.regional_scale, 1.0) if self.lv_stage.regional else 1.0

    @property
    def _rv_first(self) -> bool:
        """Whether the RV shortens in-plane before the base descent (3D with an RV descent gain).

        The in-plane shortening reads the RV crescent at the slice it is given. With the RV's own
        long-axis motion, material far above (where the crescent is wider) descends into a slice,
        and shortening it after the descent would take the narrower crescent of where it lands
        (measured: the RV's EF from labels fell, 0.49 -> 0.46, as the gain rose to 0.7). Before
        the descent every point is still on its material slice. Without the gain the order
        stays as it was, so the phantoms drawn before are unchanged bit for bit.
        """
        return self.geometry.dim == 3 and self.rv_descent_gain > 0.0

    @property
    def descent_stage(self) -> BaseDescent:
        """Stage 2: base descent (3D)."""
        return BaseDescent(
            geometry=self.geometry,
            base_descent_mm=self.base_descent_mm,
            falloff_mm=self.falloff_mm,
            cavity_shrink=self.cavity_shrink,
            regional_min_scale=self._regional_min_scale,
            rv_descent_gain=self.rv_descent_gain,
        )

    @property
    def rv_stage(self) -> RVShortening:
        """Stage 3: RV free wall."""
        return RVShortening(
            geometry=self.geometry,
            rv_shortening=self.rv_shortening,
            cavity_shrink=self.cavity_shrink,
            base_descent_mm=self.base_descent_mm,
            falloff_mm=self.falloff_mm,
            regional_min_scale=self._regional_min_scale,
        )

    @property
    def translation_stage(self) -> GlobalTranslation:
        """Stage 4: global in-plane translation."""
        return GlobalTranslation(translation_sys_mm=self.translation_sys_mm, translation_osc_mm=self.translation_osc_mm)

    # -- the whole map ---------------------------------------------------------------------------
    def forward(self, X: np.ndarray, frame: float) -> np.ndarray:
        """``phi_t(X)``: positions at frame ``frame`` of material points ``X`` ``(..., 3)`` mm."""
        X = np.asarray(X, dtype=np.float64)
        shape = X.shape
        X = X.reshape(-1, 3)
        ph = float(self.phase(frame))
        if ph == 0.0:  # the reference frame: identity, exactly
            return X.copy().reshape(shape)
        p = float(self.profile(frame))
        x = self.lv_stage.forward(X, p)
        if self.geometry.dim == 3:
            if self._rv_first:
                x = self.rv_stage.forward(x, p)
            x = self.descent_stage.forward(x, p)
        if not self._rv_first:
            x = self.rv_stage.forward(x, p)
        x = self.translation_stage.forward(x, p, ph)
        return x.reshape(shape)

    def inverse(self, x: np.ndarray, frame: float) -> np.ndarray:
        """``phi_t^{-1}(x)``: material points ``(..., 3)`` mm that are at ``x`` at frame ``frame``.

        Inverts the stages in reverse order: translation and base descent in closed form, the RV
        bump by fixed-point iteration (a contraction), the LV in-plane map in closed form (Newton
        for the fall-off outside the heart). Accurate to ~1e-9 mm.
        """
        x = np.asarray(x, dtype=np.float64)
        shape = x.shape
        y = x.reshape(-1, 3)
        ph = float(self.phase(frame))
        if ph == 0.0:
            return y.copy().reshape(shape)
        p = float(self.profile(frame))
        y = self.translation_stage.inverse(y, p, ph)
        if not self._rv_first:
            y = self.rv_stage.inverse(y, p)
        if self.geometry.dim == 3:
            y = self.descent_stage.inverse(y, p)
            if self._rv_first:
                y = self.rv_stage.inverse(y, p)
        return self.lv_stage.inverse(y, p).reshape(shape)

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
