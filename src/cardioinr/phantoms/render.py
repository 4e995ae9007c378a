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

__all__ = ["Phantom", "case_seed", "make_phantom"]

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
    centres = voxel_grid_mm(shape, spacing).reshape(-1, 3)  # C order over (i, j, k)
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
