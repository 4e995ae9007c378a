"""Long-axis (LAX) cines of a 3D phantom and breath-hold misalignment: a whole phantom *study*.

A clinical exam holds, beside the short-axis (SAX) stack, single-slice long-axis cines (2-, 3-
and 4-chamber views). Here each is a plane containing the LV long axis (the k axis through
``HeartGeometry.center_mm``), rendered from the same analytic phantom as the stack
(:func:`~cardioinr.phantoms.render.render_points`: partial volume over the pixel *and* the slab,
labels at pixel centres, exact truth), so every view sees one heart in one world frame.

View planes (:func:`lax_view_grid`): the 4CH plane contains the long axis and the RV direction;
2CH and 3CH are the 4CH plane rotated about the long axis by :data:`TWO_CHAMBER_ANGLE_DEG` and
:data:`THREE_CHAMBER_ANGLE_DEG` (counter-clockwise in the (i, j) plane). A view's array axis 0
runs across the heart in the plane, axis 1 along the long axis (base to apex, +k), axis 2 along
the plane normal (``axis0 x axis1``).

Misalignment convention (breath-hold shifts; the multi-view fit relies on it)
---------------------------------------------------------------------------
A shift ``s`` (mm, along a slice's first two array axes) translates the slice's whole content
by ``s``: the misaligned image at in-plane position ``p`` shows what the aligned one shows at
``p - s`` (a feature at ``y`` appears at ``y + s``), so reading the anatomy at ``y`` means
sampling the misaligned slice at ``y + s``. Labels of a misaligned slice move with its image (as
a user's segmentation of that slice would). The truth displacement of the SAX stack stays the
true anatomical motion on the aligned reference grid (the output contract), unshifted; the
truth of a LAX view likewise on its aligned grid. :func:`make_phantom_study` draws one shift
per SAX slice and per LAX view (uniform direction, magnitude uniform in ``[0, misalign_mm]``),
then subtracts the mean of the SAX slices' shifts from every SAX shift (gauge: the stack's mean
position is the reference, so a SAX shift may reach ``2 misalign_mm``); LAX shifts stay as drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cardioinr.core.errors import ConfigError
from cardioinr.geometry import Grid
from cardioinr.io import ACDC, LAX_VIEWS, Sequence, Study
from cardioinr.phantoms.anatomy import HeartGeometry
from cardioinr.phantoms.config import PhantomConfig, SeedLike
from cardioinr.phantoms.render import (
    Phantom,
    _seed_sequence,
    add_rician_noise,
    make_phantom,
    render_points,
)

__all__ = [
    "FOUR_CHAMBER_ANGLE_DEG",
    "LAX_MARGIN_MM",
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
]

#: Rotation of each view's plane about the LV long axis from the RV direction, degrees,
#: counter-clockwise in the (i, j) plane: the 4CH plane contains the RV direction.
FOUR_CHAMBER_ANGLE_DEG = 0.0
#: The 2CH plane: perpendicular to the 4CH plane (LV anterior and inferior walls).
TWO_CHAMBER_ANGLE_DEG = 90.0
#: The 3CH plane (LV outflow tract): between the two, 135 degrees from the 4CH plane.
THREE_CHAMBER_ANGLE_DEG = 135.0
VIEW_ANGLES_DEG = {"2ch": TWO_CHAMBER_ANGLE_DEG, "3ch": THREE_CHAMBER_ANGLE_DEG, "4ch": FOUR_CHAMBER_ANGLE_DEG}

#: Default in-plane pixel size of a LAX cine, mm (clinical: 1.4-2 mm).
LAX_PIXEL_MM = 1.8
#: Default LAX slice thickness, mm (clinical LAX cines: 6-8 mm).
LAX_THICKNESS_MM = 8.0
#: Field of view beyond each end of the SAX stack along the long axis, mm.
LAX_MARGIN_MM = 10.0

# Spawn keys below a study's seed: make_phantom spawns children 0..2 of the same seed, so a key
# far past them keeps the LAX streams independent of (and invisible to) the stack.
_STUDY_KEY = 1000
_SHIFT_KEY = 0


def _view_angle(view: str, angle_deg: float | None) -> float:
    if angle_deg is not None:
        return float(angle_deg)
    try:
        return VIEW_ANGLES_DEG[view]
    except KeyError:
        raise ConfigError(f"unknown long-axis view {view!r}: expected one of {', '.join(LAX_VIEWS)}") from None


def lax_view_grid(
    geometry: HeartGeometry,
    sax_grid: Grid,
    view: str = "4ch",
    *,
    pixel_mm: float = LAX_PIXEL_MM,
    thickness_mm: float = LAX_THICKNESS_MM,
    margin_mm: float = LAX_MARGIN_MM,
    angle_deg: float | None = None,
) -> Grid:
    """The grid of a long-axis view: one slice in a plane containing the LV long axis.

    Axis 0 runs across the heart, in the plane, along the RV direction rotated by the view's
    angle (:data:`VIEW_ANGLES_DEG`) about the long axis; axis 1 along the long axis from base to
    apex (+k of the stack); axis 2 along the plane normal ``axis0 x axis1`` (right-handed). The
    field of view is centred on the LV axis: across, the SAX stack's larger in-plane extent; along,
    the stack's z extent plus ``margin_mm`` at each end.

    Args:
        geometry: the phantom's anatomy (LV centre and RV direction in the stack's mm).
        sax_grid: the SAX stack's grid (its world frame is the study's).
        view: ``"2ch"``, ``"3ch"`` or ``"4ch"``.
        pixel_mm: in-plane pixel size, mm. thickness_mm: slice thickness, mm.
        margin_mm: extra field of view beyond each end of the stack along the long axis, mm.
        angle_deg: overrides the view's angle (degrees from the RV direction).

    Returns:
        A :class:`Grid` of shape ``(NU, NL, 1)`` with voxel size ``(pixel, pixel, thickness)``.
    """
    if geometry.dim != 3:
        raise ConfigError("long-axis views need a 3D phantom")
    if not (pixel_mm > 0 and thickness_mm > 0 and margin_mm >= 0):
        raise ConfigError(f"LAX pixel {pixel_mm} and thickness {thickness_mm} mm must be > 0, margin >= 0")
    a = math.radians(_view_angle(view, angle_deg))
    r = np.asarray(geometry.rv_direction, dtype=np.float64)
    r = r / np.linalg.norm(r)
    across = np.array([math.cos(a) * r[0] - math.sin(a) * r[1], math.sin(a) * r[0] + math.cos(a) * r[1], 0.0])
    along = np.array([0.0, 0.0, 1.0])
    normal = np.cross(across, along)
    nx, ny, nz = sax_grid.shape
    sx, sy, sz = sax_grid.spacing
    width = max(nx * sx, ny * sy)
    length = nz * sz + 2.0 * margin_mm
    nu, nl = math.ceil(width / pixel_mm - 1e-9), math.ceil(length / pixel_mm - 1e-9)
    centre = np.array([geometry.center_mm[0], geometry.center_mm[1], 0.5 * (nz - 1) * sz])
    origin = centre - 0.5 * (nu - 1) * pixel_mm * across - 0.5 * (nl - 1) * pixel_mm * along
    # built in the stack's mm, then carried to world (the identity for a phantom's own grid)
    lin_mm = np.stack([across * pixel_mm, along * pixel_mm, normal * thickness_mm], axis=1)
    aff = np.eye(4)
    aff[:3, :3] = sax_grid.mm_vectors_to_world(lin_mm.T).T
    aff[:3, 3] = sax_grid.mm_to_world(origin)
    return Grid((nu, nl, 1), aff)


def _view_offsets(grid: Grid, supersample: int, slab_samples: int) -> np.ndarray:
    """``(S, 3)`` sub-sample offsets of a view pixel in the view's mm: cell-centred and uniform
    across the pixel (axes 0, 1) and across the slab (axis 2)."""
    du, dl, dn = grid.spacing
    fr = (np.arange(supersample) + 0.5) / supersample - 0.5
    fz = (np.arange(slab_samples) + 0.5) / slab_samples - 0.5
    o = np.stack(np.meshgrid(fr * du, fr * dl, fz * dn, indexing="ij"), axis=-1)
    return o.reshape(-1, 3)


def render_view(
    phantom: Phantom,
    grid: Grid,
    n_frames: int | None = None,
    shift_mm: Iterable[float] = (0.0, 0.0),
    *,
    view: str = "lax",
    noise_seed: SeedLike = 0,
    supersample: int | None = None,
    slab_samples: int | None = None,
    name: str | None = None,
) -> tuple[Sequence, np.ndarray]:
    """Render one single-slice cine of a phantom on any grid (a long-axis view), as
    :func:`~cardioinr.phantoms.make_phantom` renders the stack.

    View frame ``t_v`` (of ``T_v``) is at SAX frame time ``ed + t_v * T / T_v`` (phase aligned;
    the reference frame is ED in both, frame 0 here; see :func:`cardioinr.io.phase_to_sax_frame`).
    The slice is translated by ``shift_mm`` (see the module's misalignment convention): image and
    labels move, the truth stays on the aligned grid.

    Args:
        phantom: a 3D phantom (its sequence's grid gives the world frame; phantom mm == world).
        grid: the view's grid ``(NU, NL, 1)`` (e.g. :func:`lax_view_grid`).
        n_frames: ``T_v`` (default the phantom's ``T``).
        shift_mm: ``(2,)`` in-plane shift along the view's axes 0 and 1, mm.
        view: the view's name (recorded in ``meta["view"]``).
        noise_seed: seed of the view's own Rician noise stream (sigma = ``config.noise_sigma``).
        supersample: sub-samples per pixel along each in-plane axis (default ``config.supersample``).
        slab_samples: sub-samples across the slice thickness (default ``config.z_supersample``).
        name: the sequence name (default ``"<phantom name>_<view>"``).

    Returns:
        ``(sequence, truth)``: the cine (float32 image ``(NU, NL, 1, T_v)``, the view's affine,
        labels of every frame, ACDC codes, ``ref_frame`` 0 = ED) and float32 ``(NU, NL, 1, T_v, 3)``
        the exact displacement from ED at the aligned pixel centres, mm along the view's axes.
    """
    cfg = phantom.config
    motion = phantom.motion
    T = cfg.n_frames
    T_v = int(n_frames) if n_frames is not None else T
    if T_v < 2:
        raise ConfigError(f"a view needs at least 2 frames, got {T_v}")
    if grid.shape[2] != 1:
        raise ConfigError(f"a view is one slice, got grid shape {grid.shape}")
    shift = np.asarray(tuple(shift_mm), dtype=np.float64)
    if shift.shape != (2,) or not np.all(np.isfinite(shift)):
        raise ConfigError(f"shift_mm must be 2 finite numbers (mm), got {shift_mm!r}")
    n_sub = int(supersample if supersample is not None else cfg.supersample)
    n_slab = int(slab_samples if slab_samples is not None else cfg.z_supersample)
    if n_sub < 1 or n_slab < 1:
        raise ConfigError("supersample and slab_samples must be >= 1")
    sax = phantom.sequence.grid

    centres = grid.points_mm().reshape(-1, 3)
    sample = centres.copy()
    sample[:, :2] -= shift  # a shifted slice shows at p what the aligned one shows at p - s

    def to_phantom(p: np.ndarray) -> np.ndarray:
        # view mm -> world -> phantom mm (the last step is the identity for a phantom's own grid)
        return sax.world_to_mm(grid.mm_to_world(p))

    offsets = sax.world_vectors_to_mm(grid.mm_vectors_to_world(_view_offsets(grid, n_sub, n_slab)))
    ed = cfg.ed_frame
    times = [ed + t * T / T_v for t in range(T_v)]
    image, lab, disp = render_points(motion, phantom.appearance, to_phantom(sample), offsets, times,
                                     truth_centres=to_phantom(centres))
    image = add_rician_noise(image, cfg.noise_sigma, np.random.default_rng(_seed_sequence(noise_seed)))
    truth = grid.world_vectors_to_mm(sax.mm_vectors_to_world(disp)).astype(np.float32)

    shape = grid.shape
    es_v = round(((motion.es_frame - ed) % T) * T_v / T) % T_v
    dt = float(phantom.sequence.frame_interval_ms) * T / T_v
    seq = Sequence(
        image=image.reshape(*shape, T_v),
        affine=grid.affine,
        frame_interval_ms=dt,
        labels={t: np.ascontiguousarray(lab[:, t]).reshape(shape) for t in range(T_v)},
        ref_frame=0,
        label_map=ACDC,
        name=name or f"{phantom.sequence.name}_{view}",
        meta={"phantom": True, "view": view, "ed_frame": 0, "es_frame": es_v,
              "shift_mm": [float(v) for v in shift]},
    )
    return seq, truth.reshape(*shape, T_v, 3)


def draw_shifts(rng: np.random.Generator, n_slices: int, misalign_mm: float) -> dict[str, np.ndarray]:
    """Breath-hold shifts, mm: ``{"sax": (Z, 2), "2ch": (2,), "3ch": (2,), "4ch": (2,)}``.

    Each slice and view gets a uniform random direction and a magnitude uniform in
    ``[0, misalign_mm]``; then the SAX shifts lose their mean (the stack's mean position is the
    reference). Every standard view is drawn, in :data:`~cardioinr.io.LAX_VIEWS` order, whatever
    a study asks for, so that adding a view never changes the other shifts.
    """
    if not (misalign_mm >= 0 and math.isfinite(misalign_mm)):
        raise ConfigError(f"misalignment must be >= 0 mm, got {misalign_mm}")
    n = int(n_slices) + len(LAX_VIEWS)
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    mag = rng.uniform(0.0, 1.0, n) * float(misalign_mm)  # unit draws scaled: the same pattern at any size
    s = np.stack([mag * np.cos(angle), mag * np.sin(angle)], axis=1)
    out = {"sax": s[:n_slices] - s[:n_slices].mean(axis=0)}
    out.update({v: s[n_slices + i] for i, v in enumerate(LAX_VIEWS)})
    return out


@dataclass
class PhantomStudy:
    """A rendered phantom study.

    Attributes:
        study: the SAX stack and the LAX cines (:class:`cardioinr.io.Study`).
        phantom: the SAX phantom; its ``displacement`` is the truth on the aligned grid.
        view_truth: view name -> float32 ``(NU, NL, 1, T_v, 3)`` truth of the LAX view, mm along
            the view's axes, on its aligned grid.
        shifts: ``"sax"`` -> ``(Z, 2)`` and view name -> ``(2,)``, mm along each slice's first two
            axes (module convention); zeros without misalignment.
        params: JSON-ready settings of the study (``phantom`` holds the phantom's own params).
    """

    study: Study
    phantom: Phantom
    view_truth: dict[str, np.ndarray]
    shifts: dict[str, np.ndarray]
    params: dict[str, Any]


def _study_seed(seed: SeedLike, *key: int) -> np.random.SeedSequence:
    """A stream of the study under ``seed``, independent of :func:`make_phantom`'s three."""
    ss = _seed_sequence(seed)
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, _STUDY_KEY, *key))


def make_phantom_study(
    config: PhantomConfig,
    seed: SeedLike = 0,
    views: Iterable[str] = ("2ch", "4ch"),
    misalign_mm: float = 0.0,
    lax_frames: int | None = None,
    *,
    lax_pixel_mm: float = LAX_PIXEL_MM,
    lax_thickness_mm: float = LAX_THICKNESS_MM,
    name: str = "phantom",
) -> PhantomStudy:
    """Draw one 3D phantom and render its SAX stack and long-axis views, optionally misaligned.

    Reproducible from ``(config, seed)``. Without misalignment the stack is exactly
    ``make_phantom(config, seed)``; with it, each slice is re-rendered translated by its shift
    (:func:`draw_shifts`, module convention). The LAX views use their own streams (shifts and
    noise, one per standard view), so adding views never changes the stack or the other views.

    Args:
        config: a 3D :class:`PhantomConfig`.
        seed: as :func:`make_phantom`.
        views: LAX views to render, among ``"2ch"``, ``"3ch"``, ``"4ch"`` (may be empty).
        misalign_mm: largest breath-hold shift of a slice or view, mm (0: aligned).
        lax_frames: frames ``T_v`` of every LAX cine (default the stack's).
        lax_pixel_mm, lax_thickness_mm: LAX pixel size and slice thickness, mm.
        name: the study's (and the stack's) name; views are ``"<name>_<view>"``.

    Returns:
        A :class:`PhantomStudy`.
    """
    if config.dim != 3:
        raise ConfigError("a phantom study needs a 3D phantom (dim=3)")
    names = [str(v).strip().lower() for v in views]
    for v in names:
        _view_angle(v, None)
    if len(set(names)) != len(names):
        raise ConfigError(f"views {names} name a view twice")
    Z = config.shape[2]
    shifts = draw_shifts(np.random.default_rng(_study_seed(seed, _SHIFT_KEY)), Z, float(misalign_mm))
    if misalign_mm > 0:
        phantom = make_phantom(config, seed, name=name, slice_shifts_mm=shifts["sax"])
    else:
        phantom = make_phantom(config, seed, name=name)
    lax: dict[str, Sequence] = {}
    truth: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for v in names:
        grid = lax_view_grid(phantom.motion.geometry, phantom.sequence.grid, v, pixel_mm=lax_pixel_mm,
                             thickness_mm=lax_thickness_mm)
        seq, tr = render_view(phantom, grid, lax_frames, shifts[v], view=v, name=f"{name}_{v}",
                              noise_seed=_study_seed(seed, 1 + LAX_VIEWS.index(v)))
        lax[v], truth[v] = seq, tr
        info[v] = {"shape": list(seq.shape), "spacing": [float(s) for s in seq.spacing],
                   "n_frames": seq.n_frames, "frame_interval_ms": seq.frame_interval_ms,
                   "es_frame": seq.meta["es_frame"], "angle_deg": VIEW_ANGLES_DEG[v],
                   "shift_mm": [float(s) for s in shifts[v]]}
    kept = {"sax": shifts["sax"], **{v: shifts[v] for v in names}}
    params = {
        "views": ["sax", *names],
        "misalign_mm": float(misalign_mm),
        "lax_frames": lax_frames,
        "lax_pixel_mm": float(lax_pixel_mm),
        "lax_thickness_mm": float(lax_thickness_mm),
        "sax_shifts_mm": shifts["sax"].tolist(),
        "lax": info,
        "phantom": phantom.params,
    }
    return PhantomStudy(study=Study(sax=phantom.sequence, lax=lax, name=name), phantom=phantom,
                        view_truth=truth, shifts=kept, params=params)
