"""Writing a set of phantom cases to disk (:func:`write_cases`) and finding a written case's
ground truth again (:func:`phantom_truth_paths`); this module owns the phantom file names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.core.errors import ConfigError, InputError
from cardioinr.core.files import write_json_atomic
from cardioinr.io import ACDC, save_nifti
from cardioinr.phantoms.config import PhantomConfig
from cardioinr.phantoms.render import case_seed, make_phantom

__all__ = ["phantom_truth_paths", "write_cases"]


def _case_name(index: int) -> str:
    """Name (and file prefix) of case ``index`` of a written set: ``caseNNN``."""
    return f"case{index:03d}"


def _case_files(name: str) -> dict[str, str]:
    """File names of a written case, relative to its folder, by manifest key."""
    return {
        "image": f"{name}_4d.nii.gz",
        "labels": f"{name}_labels.nii.gz",
        "truth_displacement": f"{name}_truth_displacement.nii.gz",
    }


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
        name = _case_name(k)
        ph = make_phantom(config, case_seed(seed, k), name=name)
        seq = ph.sequence
        files = _case_files(name)
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


def phantom_truth_paths(folder: str | os.PathLike, case: int | str) -> dict[str, Path]:
    """Ground-truth files of a phantom case: ``{"truth_displacement": caseNNN_truth_displacement.nii.gz,
    "truth_labels": caseNNN_labels.nii.gz}`` (``case`` an int -> ``case{NNN:03d}``, or the prefix)."""
    folder = Path(folder)
    prefix = _case_name(int(case)) if isinstance(case, (int, np.integer)) else str(case)
    files = _case_files(prefix)
    paths = {
        "truth_displacement": folder / files["truth_displacement"],
        "truth_labels": folder / files["labels"],
    }
    for p in paths.values():
        if not p.is_file():
            raise InputError(f"{p}: phantom ground-truth file not found")
    return paths
