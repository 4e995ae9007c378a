"""Rendering one phantom: :func:`make_phantom` draws a case and samples it on the voxel grid
(partial volume by sub-voxel averaging, labels at voxel centres, exact truth displacement,
Rician noise) into a :class:`Phantom`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from cardioinr.core.errors import ConfigError
from cardioinr.geometry import make_affine, voxel_grid_mm
from cardioinr.io import ACDC, Sequence
from cardioinr.phantoms.appearance import PhantomAppearance
from cardioinr.phantoms.config import PhantomConfig, SeedLike
from cardioinr.phantoms.draw import draw_appearance, draw_motion
from cardioinr.phantoms.motion import PhantomMotion
from cardioinr.phantoms.truth import TruthField

__all__ = ["Phantom", "add_rician_noise", "case_seed", "make_phantom", "render_points"]

_BLOCK_POINTS = 1 << 18  # sub-voxel samples per block when rendering (bounds the memory)


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

    def truth_field(self) -> TruthField:
        """The true motion as a continuous field over the sequence's frames (exact gradients for
        :func:`cardioinr.analysis.strain.analyse_field`, the analysis a fit's strain gets)."""
        return TruthField(self.motion, self.sequence.ndim_space, self.sequence.n_frames)


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


def render_points(
    motion: PhantomMotion,
    appearance: PhantomAppearance,
    centres: np.ndarray,
    offsets: np.ndarray,
    frames: list[float],
    *,
    truth_centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample a drawn phantom at pixel centres, noise-free: the one renderer of every view.

    The image of a pixel is the mean material intensity ``rho(phi_t^{-1}(c + o), phase)`` over
    its sub-samples ``o`` (partial volume); labels are ``L_ref(phi_t^{-1}(c))`` at its centre;
    the truth is the exact ``phi_t(c') - c'`` at the truth centres ``c'``.

    Args:
        motion, appearance: the drawn phantom.
        centres: ``(N, 3)`` pixel centres in phantom (world) mm, where image and labels are sampled.
        offsets: ``(S, 3)`` sub-sample offsets of a pixel in phantom mm (any orientation).
        frames: ``T`` frame times of the phantom's cycle (fractional allowed).
        truth_centres: ``(N, 3)`` points of the truth displacement (default ``centres``; a
            misaligned slice samples shifted centres but keeps its truth on the aligned grid).

    Returns:
        ``(image, labels, displacement)``: float32 ``(N, T)``, uint8 ``(N, T)`` ACDC codes and
        float32 ``(N, T, 3)`` mm along the phantom axes (exactly 0 at the reference phase).
    """
    centres = np.asarray(centres, dtype=np.float64)
    truth_at = centres if truth_centres is None else np.asarray(truth_centres, dtype=np.float64)
    n_vox, n_sub, T = centres.shape[0], offsets.shape[0], len(frames)
    image = np.empty((n_vox, T), np.float32)
    labels = np.empty((n_vox, T), np.uint8)
    disp = np.zeros((n_vox, T, 3), np.float32)
    geom = motion.geometry

    # Work in blocks of voxels, so that memory stays bounded (a 3D frame has ~10^6 samples and
    # each goes through dozens of temporaries).
    block = max(1, _BLOCK_POINTS // n_sub)

    def render(i: int) -> None:
        t = frames[i]
        phase = float(motion.phase(t))
        for v0 in range(0, n_vox, block):
            pts = (centres[v0 : v0 + block, None, :] + offsets[None, :, :]).reshape(-1, 3)
            val = appearance.intensity(motion.inverse(pts, t), phase)
            image[v0 : v0 + block, i] = val.reshape(-1, n_sub).mean(axis=1)
        labels[:, i] = geom.labels(motion.inverse(centres, t))
        if phase != 0.0:  # the reference phase: the map is the identity, the truth 0
            disp[:, i] = motion.forward(truth_at, t) - truth_at

    # Frames are independent and numpy releases the GIL in its loops: a few threads keep the cores
    # busy (results do not depend on the thread count).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(4, cores, T))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(render, range(T)))
    else:
        for i in range(T):
            render(i)
    return image, labels, disp


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Rician magnitude ``|image + n1 + i n2|`` with ``n1, n2 ~ N(0, sigma^2)`` drawn from ``rng``
    (relative to LV blood intensity 1); ``image`` unchanged (as float32) when ``sigma == 0``."""
    if sigma <= 0:
        return image
    n1 = rng.standard_normal(image.shape) * sigma
    n2 = rng.standard_normal(image.shape) * sigma
    return np.sqrt((image + n1) ** 2 + n2**2).astype(np.float32)


def make_phantom(
    config: PhantomConfig | None = None,
    seed: SeedLike = 0,
    *,
    name: str = "phantom",
    slice_shifts_mm: np.ndarray | None = None,
) -> Phantom:
    """Draw and render one phantom.

    Reproducible: the same ``(config, seed)`` gives identical arrays. Motion, appearance and
    noise use independent streams of the seed, so changing e.g. ``noise_sigma`` or ``tagged``
    leaves the anatomy and motion unchanged.

    Args:
        config: what to generate (default: ``PhantomConfig()``, 2D).
        seed: an int, a tuple of ints (see :func:`case_seed`) or a ``numpy`` ``SeedSequence``.
        name: the sequence name.
        slice_shifts_mm: 3D only, ``(Z, 2)`` mm along (i, j): render each slice translated by
            its shift (breath-hold misalignment; see :mod:`cardioinr.phantoms.views` for the
            convention). Image and labels move with the slice; the truth displacement stays on
            the aligned grid. ``None`` (the default): an aligned stack.

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
    centres = voxel_grid_mm(shape, spacing).reshape(-1, 3)  # C order over (i, j, k)
    if slice_shifts_mm is not None:
        shifts = np.asarray(slice_shifts_mm, dtype=np.float64)
        if config.dim != 3 or shifts.shape != (shape[2], 2):
            raise ConfigError(f"slice shifts must be (Z, 2) = ({shape[2]}, 2) mm for a 3D stack, got {shifts.shape}")
        # A slice shifted by s shows at p what the aligned slice shows at p - s (see phantoms.views).
        sample = centres.copy()
        sample[:, :2] -= np.tile(shifts, (shape[0] * shape[1], 1))
    else:
        sample = centres
    image, lab, disp = render_points(motion, appearance, sample, _subvoxel_offsets(config), list(range(T)),
                                     truth_centres=centres)
    labels = {t: np.ascontiguousarray(lab[:, t]).reshape(shape) for t in range(T)}
    # what the rendered labels show (thick slices and the base plane make 3D differ from "ef")
    vol = {code: np.array([np.count_nonzero(labels[t] == code) for t in range(T)], float) for code in (1, 3)}
    ed, es = config.ed_frame, motion.es_frame
    params["ef_labels"] = float(1.0 - vol[3][es] / vol[3][ed])
    params["rv_ef_labels"] = float(1.0 - vol[1][es] / vol[1][ed])
    image = add_rician_noise(image, config.noise_sigma, rng_noise)

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
