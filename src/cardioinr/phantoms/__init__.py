"""Synthetic short-axis cine phantoms with analytic ground-truth motion.

A phantom is a left ventricle (LV cavity inside a myocardial ring, tapering toward the apex in
3D) with a right-ventricular crescent beside it (triangular at the base with
``rv_corner_mm_range``, as the groups of :mod:`.groups` draw it), in a smoothly textured
background. Everything
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
   by an angle that decreases from endo- to epicardium and fades outside the heart). Optionally
   (``PhantomConfig.regional_motion_range``) one angular segment contracts less, not at all
   or bulges outward (a regional wall-motion abnormality): the cavity shrink then depends on
   the material angle, the twist on the deformed radius, and the wall stays incompressible.
2. *Base descent* (3D only): ``u_z = b(t) (Z_apex - Z) / (Z_apex - Z_base)`` inside the heart
   (the base moves toward the apex; uniform longitudinal stretch ``lambda = 1 - b / L``),
   fading out radially beyond the heart. With ``rv_descent_gain_range`` (the healthy RV of
   :mod:`.groups`) the RV region descends further, its free wall up to ``1 + gain`` times.
3. *RV*: along each ray from the LV centre through the RV crescent, the band between the
   (deformed) LV epicardium and the RV free wall shortens by a fraction of its width (the free
   wall moves toward the septum; a triangular RV's corner with its ray width,
   ``HeartGeometry.rv_ray_width``); zero on the LV, fading beyond the free wall. With the RV's
   own descent this stage acts before stage 2, on the material slice.
4. *Global in-plane translation* (bulk motion, 1-2 mm).

Every stage has a positive Jacobian determinant (no folding). Two properties of the truth that
users should know: the displacement has a gradient jump at the endocardium (incompressible wall
next to a uniformly contracting blood pool), so sampling it on a grid costs ~0.2 voxel at that
boundary; and near the apical tip of the cavity the per-slice contraction shears strongly along
the long axis (|grad u| up to ~2 at ES), harmless for the determinant but slow for fixed-point
inversion of a sampled field.

Public API: :class:`PhantomConfig`, :class:`HeartGeometry`, :class:`PhantomMotion`,
:class:`PhantomAppearance`, :class:`Phantom`, :func:`make_phantom`, :func:`write_cases`,
:func:`phantom_truth_paths`, :func:`contraction_profile`; studies with long-axis views and
breath-hold misalignment: :func:`make_phantom_study`, :class:`PhantomStudy`, :func:`lax_view_grid`,
:func:`render_view`, :func:`draw_shifts`, :func:`write_studies`.

Modules, in the order of the pipeline:

- :mod:`.config`: :class:`PhantomConfig`, what to generate;
- :mod:`.profiles`: the smooth scalar building blocks (:func:`falloff`, :func:`contraction_profile`);
- :mod:`.anatomy`: :class:`HeartGeometry`, the reference anatomy and its tissue classes;
- :mod:`.motion`: the four stages above, one module each, composed by :class:`PhantomMotion`;
- :mod:`.appearance`: :class:`PhantomAppearance`, the material intensity;
- :mod:`.draw`: :func:`draw_motion`, :func:`draw_appearance`, the random physiology;
- :mod:`.render`: :func:`make_phantom`, sampling a drawn case on the voxel grid;
- :mod:`.truth`: :class:`TruthField`, the analytic motion as a field (exact-gradient strain of the truth);
- :mod:`.views`: :func:`make_phantom_study`, long-axis views of a 3D phantom and misalignment;
- :mod:`.write`: :func:`write_cases`, :func:`write_studies`, :func:`phantom_truth_paths`, the files on disk.
"""

from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.appearance import PhantomAppearance
from cardioinr.phantoms.config import PhantomConfig, Range, SeedLike
from cardioinr.phantoms.draw import draw_appearance, draw_motion
from cardioinr.phantoms.motion import PhantomMotion
from cardioinr.phantoms.profiles import contraction_profile, falloff, falloff_slope
from cardioinr.phantoms.render import Phantom, case_seed, make_phantom
from cardioinr.phantoms.truth import TruthField
from cardioinr.phantoms.views import (
    FOUR_CHAMBER_ANGLE_DEG,
    LAX_PIXEL_MM,
    LAX_THICKNESS_MM,
    THREE_CHAMBER_ANGLE_DEG,
    TWO_CHAMBER_ANGLE_DEG,
    VIEW_ANGLES_DEG,
    PhantomStudy,
    draw_shifts,
    lax_view_grid,
    make_phantom_study,
    render_view,
)
from cardioinr.phantoms.write import phantom_truth_paths, write_cases, write_studies

__all__ = [
    "Phantom",
    "PhantomAppearance",
    "PhantomConfig",
    "PhantomMotion",
    "HeartGeometry",
    "Range",
    "TruthField",
    "SeedLike",
    "contraction_profile",
    "draw_appearance",
    "draw_motion",
    "falloff",
    "falloff_slope",
    "make_phantom",
    "phantom_truth_paths",
    "write_cases",
    "case_seed",
    "FOUR_CHAMBER_ANGLE_DEG",
    "LAX_PIXEL_MM",
    "LAX_THICKNESS_MM",
    "THREE_CHAMBER_ANGLE_DEG",
    "TWO_CHAMBER_ANGLE_DEG",
    "VIEW_ANGLES_DEG",
    "PhantomStudy",
    "draw_shifts",
    "lax_view_grid",
    "make_phantom_study",
    "render_view",
    "write_studies",
]
