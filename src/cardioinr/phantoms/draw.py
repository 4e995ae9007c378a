"""Drawing random cases: a plausible heart, its motion (:func:`draw_motion`) and its look
(:func:`draw_appearance`) from the ranges of a :class:`~cardioinr.phantoms.config.PhantomConfig`."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from cardioinr.core.errors import ConfigError
from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.appearance import PhantomAppearance
from cardioinr.phantoms.config import PhantomConfig
from cardioinr.phantoms.motion import PhantomMotion
from cardioinr.phantoms.motion.rv import effective_rv_width, widest_rv_width
from cardioinr.phantoms.profiles import _FALLOFF_MAX_SLOPE, segment_weight, segment_weight_slope

__all__ = ["draw_appearance", "draw_motion"]

# Limits the draw keeps so that the ground truth stays easy to invert (the largest radial stretch
# of the LV map, at the endocardium at end-systole, R_en / (lambda r_en), is a setting:
# PhantomConfig.max_endo_stretch).
_RV_MAX_GRADIENT = 0.7  # bound on |grad u| of the RV bump (keeps its det(I + grad u) >= 0.3)
# The same bound as the endocardial stretch, on |grad u| of the LV map where a regional
# abnormality's border zone adds a shear (the segment's endocardium moves less than its neighbours').
_MAX_REGIONAL_GRADIENT = 0.9


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


def _regional_endo_gradient(shrink: float, lam: float, scale: float, extent: float) -> float:
    """Largest in-plane ``|grad u|`` (spectral norm) of the LV map at ES at the endocardium over
    the angles of a regional abnormality (motion scale ``scale``, FWHM ``extent`` rad), twist
    left out as for ``PhantomConfig.max_endo_stretch``.

    In the local polar frame the gradient at the endocardium is ``[[e - 1, b], [0, a - 1]]`` with
    ``a = sqrt(1 - k g)`` (hoop stretch), ``e = a`` on the blood side and ``1 / (lambda a)`` on
    the wall side (radial stretch), and the border zone's shear ``b = (1/R) dr/dtheta =
    k (1 - s) |w'| / (2 a)``, for ``g = 1 - (1 - s) w(theta)``. The wall side is the worst place:
    inside the wall both stretches and the shear fall off.
    """
    delta = np.linspace(0.0, 0.75 * extent, 301)  # the core and the transition; beyond, normal
    w = segment_weight(delta, extent)
    a = np.sqrt(1.0 - shrink * (1.0 - (1.0 - scale) * w))
    b = shrink * (1.0 - scale) * np.abs(segment_weight_slope(delta, extent)) / (2.0 * a)
    worst = 0.0
    for e in (a - 1.0, 1.0 / (lam * a) - 1.0):
        ss = e * e + b * b + (a - 1.0) ** 2
        det = e * (a - 1.0)
        sigma = np.sqrt(0.5 * (ss + np.sqrt(np.maximum(ss * ss - 4.0 * det * det, 0.0))))
        worst = max(worst, float(sigma.max()))
    return worst


def _cap_regional_scale(scale: float, shrink: float, lam: float, endo: float, epi: float, falloff_mm: float,
                        extent: float) -> float:
    """The drawn motion scale ``s`` of a regional abnormality, raised toward 1 (less abnormal)
    where needed so that (a) the outer fall-off of the change in ``r^2`` stays monotone with the
    same margin as the draw keeps at the normal angle (``D`` grows by ``R_en^2 k (1 - s)`` at
    the segment), and (b) the border zone keeps ``|grad u| <= 0.9`` (see
    :func:`_regional_endo_gradient`). Both only loosen as ``s`` approaches 1, where they hold."""
    d_normal = endo**2 * (1.0 - shrink) + (epi**2 - endo**2) / lam - epi**2
    d_limit = 0.5 * (falloff_mm**2 + 2.0 * falloff_mm * epi) / _FALLOFF_MAX_SLOPE
    scale = max(scale, 1.0 - (d_limit - d_normal) / (endo**2 * shrink))
    if _regional_endo_gradient(shrink, lam, scale, extent) <= _MAX_REGIONAL_GRADIENT:
        return scale
    lo, hi = scale, 1.0  # hi always satisfies the bound
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _regional_endo_gradient(shrink, lam, mid, extent) <= _MAX_REGIONAL_GRADIENT:
            hi = mid
        else:
            lo = mid
    return hi


def draw_motion(config: PhantomConfig, rng: np.random.Generator) -> tuple[PhantomMotion, dict[str, Any]]:
    """Draw a plausible heart and its motion.

    EF, peak mid-wall circumferential strain, endocardial radius (and in 3D base descent) are
    drawn uniformly from their ranges; the wall thickness follows from incompressibility; draws
    are rejected unless the wall thickness is in range, the endocardial radial stretch at ES is
    at most ``config.max_endo_stretch`` (default 1.9: |grad u| <= 0.9), the heart fits the field of view with a margin, and the
    outer fall-off stays far from folding; the RV shortening is capped so that its |grad u|
    stays <= 0.7. So the accepted parameters are a correlated subset of the box of ranges (e.g.
    high EF goes with weak strain and a thick wall). In 3D the base descent is capped at 20 % of
    the base-to-apex length (only binding for short stacks).

    With ``config.regional_motion_range`` set, a regional wall-motion abnormality is drawn last
    (motion scale ``s``, width, centre), so the rest is the heart of the same seed without it;
    the drawn EF, strain and wall describe the *normal* myocardium, and ``s`` is raised toward 1
    where the heart contracts so strongly that the segment's border zone would break the
    limits above (|grad u| <= 0.9 there too, the fall-off margin at the worst angle).

    Returns:
        The motion and a JSON-ready dict of parameters (EF, strain, ES frame, radii, ...). The
        strains, ``cavity_area_shrink`` and the ES radii are those of the normal myocardium.
        With a regional abnormality, ``ef`` is the true EF including the segment (the angular
        mean of the cavity shrink is exactly ``k (1 - (1 - s) extent / 360)``; in 3D times the
        longitudinal factor: volume ratio ``lambda (1 - mean shrink)``), ``ef_global_drawn`` the
        drawn EF of a heart without the segment, and ``regional_motion_scale`` (``s``),
        ``regional_motion_scale_drawn`` (before the cap), ``regional_extent_deg`` (FWHM),
        ``regional_centre_deg`` (counter-clockwise from +i in the (i, j) plane),
        ``regional_centre_from_rv_deg`` (from the RV direction), and the segment core's
        ``regional_peak_circumferential_strain`` and ``regional_peak_radial_strain``.
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
        if 1.0 / (lam_es * math.sqrt(1.0 - shrink)) > config.max_endo_stretch:
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
        # the crescent's ray width is largest on the RV direction, where it is its width
        rv_short = min(float(rng.uniform(*config.rv_shortening_range)),
                       _rv_shortening_cap(effective_rv_width(rv_width), rv_wall, falloff_mm))
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
    regional = config.regional_motion_range is not None
    if regional:
        # after every other draw: switching the abnormality on leaves the rest of the seed's heart
        scale_drawn = float(rng.uniform(*config.regional_motion_range))
        extent = float(rng.uniform(*config.regional_extent_deg_range))
        centre_from_rv = float(rng.uniform(*config.regional_centre_deg_range))
        scale = _cap_regional_scale(scale_drawn, shrink, lam_es, endo, float(epi), falloff_mm, math.radians(extent))
        centre_deg = (math.degrees(angle) + centre_from_rv) % 360.0
        segment = dict(regional_scale=scale, regional_centre_deg=centre_deg, regional_extent_deg=extent)
    else:
        segment = {}

    # after every other draw (and only when asked for): a seed's heart is otherwise unchanged
    rv_gain = float(rng.uniform(*config.rv_descent_gain_range)) if config.dim == 3 and config.rv_descent_gain_range else 0.0
    triangular = config.dim == 3 and config.rv_corner_mm_range is not None
    rv_corner = float(rng.uniform(*config.rv_corner_mm_range)) if triangular else 0.0
    rv_corner_deg = float(rng.uniform(-30.0, 30.0)) if triangular else 0.0

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
        rv_corner_mm=rv_corner,
        rv_corner_deg=rv_corner_deg,
    )
    if rv_corner > 0.0:
        geometry, rv_short = _fit_rv_corner(geometry, rv_short, fov_hi, margin, falloff_mm)
        rv_corner = geometry.rv_corner_mm
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
        rv_descent_gain=rv_gain,
        **segment,
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
        if config.rv_descent_gain_range is not None:
            params["rv_descent_gain"] = rv_gain
        if triangular:
            params.update(rv_corner_mm=rv_corner, rv_corner_deg=rv_corner_deg)
    else:
        params["twist_deg"] = twist_base
    if regional:
        # the true EF: the cavity shrink's angular mean (the segment takes extent / 360 of the
        # circumference, exactly), times the longitudinal factor in 3D
        mean_shrink = shrink * (1.0 - (1.0 - scale) * extent / 360.0)
        r_en_c = endo * math.sqrt(1.0 - shrink * scale)  # the segment's core at ES
        r_ep_c = math.sqrt(r_en_c**2 + (epi**2 - endo**2) / lam_es)
        r_mid = 0.5 * (endo + epi)
        params["ef"] = 1.0 - lam_es * (1.0 - mean_shrink)
        params.update(
            ef_global_drawn=ef,
            regional_motion_scale=scale,
            regional_motion_scale_drawn=scale_drawn,
            regional_extent_deg=extent,
            regional_centre_deg=centre_deg,
            regional_centre_from_rv_deg=centre_from_rv,
            regional_peak_circumferential_strain=math.sqrt(r_en_c**2 + (r_mid**2 - endo**2) / lam_es) / r_mid - 1.0,
            regional_peak_radial_strain=(r_ep_c - r_en_c) / (epi - endo) - 1.0,
        )
    return motion, params


def _fit_rv_corner(geometry: HeartGeometry, rv_short: float, fov_hi: np.ndarray, margin: float,
                   falloff_mm: float) -> tuple[HeartGeometry, float]:
    """A triangular RV's corner kept ``margin`` mm inside the field of view (its reach shortened
    where it would leave it), and the RV shortening capped for the corner's larger width by the
    same gradient bound as the crescent's (see ``draw_motion``)."""
    for _ in range(40):
        z = np.array([geometry.z_base_mm])
        _, _, corner, rc, _ = geometry.rv_discs(z, None, np.ones(1))
        lo, hi = corner[0] - rc[0] - geometry.rv_wall_mm, corner[0] + rc[0] + geometry.rv_wall_mm
        if np.all(lo >= margin) and np.all(hi <= fov_hi - margin):
            break
        geometry = replace(geometry, rv_corner_mm=max(geometry.rv_corner_mm - 1.0, 0.0))
    cap = _rv_shortening_cap(effective_rv_width(widest_rv_width(geometry)), geometry.rv_wall_mm, falloff_mm)
    return geometry, min(rv_short, cap)


def _rv_shortening_cap(w_eff_max: float, rv_wall: float, falloff_mm: float) -> float:
    """The largest RV shortening whose motion keeps ``|grad u| <= _RV_MAX_GRADIENT``.

    ``|d u / d R|`` of the RV stage along a ray is ``rv_short w_eff B'(R)``: at most
    ``rv_short w_eff 1.5 / (w_eff + wall)`` across the band and ``rv_short w_eff 1.5 / falloff``
    beyond it, where ``w_eff_max`` (:func:`effective_rv_width` of the widest ray) is the largest
    ``w_eff``."""
    return min(_RV_MAX_GRADIENT * (w_eff_max + rv_wall) / (_FALLOFF_MAX_SLOPE * w_eff_max),
               _RV_MAX_GRADIENT * falloff_mm / (_FALLOFF_MAX_SLOPE * w_eff_max))


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
        blood_tag_washout=config.blood_tag_washout,
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
        if app.blood_tag_washout is not None:  # only when asked: default phantoms' records stay as they were
            info["blood_tag_washout"] = app.blood_tag_washout
    return app, info
