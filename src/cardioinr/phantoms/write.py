"""Writing a set of phantom cases to disk (:func:`write_cases`; studies with long-axis views:
:func:`write_studies`) and finding a written case's ground truth again
(:func:`phantom_truth_paths`); this module owns the phantom file names."""

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
from cardioinr.phantoms.views import LAX_PIXEL_MM, LAX_THICKNESS_MM, make_phantom_study

__all__ = ["phantom_truth_paths", "write_cases", "write_studies"]


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


def _output_folder(out_dir: str | os.PathLike, n: int, progress: bool, what: str) -> tuple[Path, Any]:
    """The created output folder of a set of ``n`` cases and the case indices to loop over (with a
    progress bar when asked); a one-line :class:`ConfigError` for ``n < 1`` or a file in the way."""
    if int(n) < 1:
        raise ConfigError(f"number of cases must be >= 1, got {n}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    indices: Any = range(int(n))
    if progress and n > 1:
        from rich.progress import track

        indices = track(indices, description=what, transient=True)
    return out, indices


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
    config = config or PhantomConfig()
    out, indices = _output_folder(out_dir, n, progress, "phantoms")
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


def _study_files(view: str) -> dict[str, str]:
    """UK Biobank-style file names of one view of a written study, relative to its case folder."""
    stem = "sa" if view == "sax" else f"la_{view}"
    return {"image": f"{stem}.nii.gz", "labels": f"seg_{stem}.nii.gz", "truth_displacement": f"truth_{stem}.nii.gz"}


def write_studies(
    out_dir: str | os.PathLike,
    n: int = 4,
    config: PhantomConfig | None = None,
    seed: int = 0,
    *,
    views: tuple[str, ...] = ("2ch", "4ch"),
    misalign_mm: float = 0.0,
    lax_frames: int | None = None,
    lax_pixel_mm: float = LAX_PIXEL_MM,
    lax_thickness_mm: float = LAX_THICKNESS_MM,
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``n`` phantom studies (:func:`~cardioinr.phantoms.make_phantom_study`) and write
    them, one folder per case, with a manifest.

    Case k is the folder ``caseNNN/`` (seed :func:`case_seed` ``(seed, k)``) holding, for the
    stack, ``sa.nii.gz`` (float32 ``(X, Y, Z, T)``, frame interval in pixdim[4], ms),
    ``seg_sa.nii.gz`` (uint8 labels of every frame) and ``truth_sa.nii.gz`` (float32
    ``(X, Y, Z, T, 3)``, mm along the array axes, on the aligned grid), and for each view V
    ``la_V.nii.gz``, ``seg_la_V.nii.gz``, ``truth_la_V.nii.gz`` (single slice, its own affine
    and frame interval); plus ``truth.json`` (params, shifts in mm under the convention of
    :mod:`cardioinr.phantoms.views`, view names and files). Every file is written atomically;
    ``manifest.json`` last.

    Returns:
        The manifest: ``{"format": "cardioinr-phantom-studies", "version": 1, "config",
        "label_map", "seed", "views", "misalign_mm", "cases": [{"name", "folder", "truth",
        "seed", "views": {view: {"image", "labels", "truth_displacement", "n_frames",
        "frame_interval_ms", "shape"}}}]}``, paths relative to the manifest.
    """
    config = config or PhantomConfig(dim=3)
    views = tuple(str(v).strip().lower() for v in views)
    out, indices = _output_folder(out_dir, n, progress, "phantom studies")
    cases = []
    for k in indices:
        name = _case_name(k)
        folder = out / name
        ps = make_phantom_study(config, case_seed(seed, k), views, misalign_mm, lax_frames,
                                lax_pixel_mm=lax_pixel_mm, lax_thickness_mm=lax_thickness_mm, name=name)
        truth = {"sax": ps.phantom.displacement, **ps.view_truth}
        written: dict[str, Any] = {}
        for view, seq in ps.study.views():
            files = _study_files(view)
            dt = seq.frame_interval_ms
            labels = np.stack([seq.labels[t] for t in range(seq.n_frames)], axis=-1)
            save_nifti(folder / files["image"], seq.image, seq.affine, frame_interval_ms=dt)
            save_nifti(folder / files["labels"], labels, seq.affine, frame_interval_ms=dt)
            save_nifti(folder / files["truth_displacement"], truth[view], seq.affine, frame_interval_ms=dt)
            written[view] = {**files, "n_frames": seq.n_frames, "frame_interval_ms": dt, "shape": list(seq.shape),
                             "ed_frame": seq.ref_frame, "es_frame": int(seq.meta["es_frame"])}
        record = {
            "name": name,
            "seed": list(case_seed(seed, k)),
            "views": written,
            "shifts_mm": {v: np.asarray(s).tolist() for v, s in ps.shifts.items()},
            "shift_convention": "a slice shifted by s shows at p what the aligned slice shows at p - s; "
                                "truth displacements are on the aligned grids",
            "params": ps.params,
        }
        write_json_atomic(folder / "truth.json", record)
        cases.append({"name": name, "folder": name, "truth": f"{name}/truth.json", "seed": record["seed"],
                      "views": {v: {**f, **{key: f"{name}/{f[key]}" for key in ("image", "labels", "truth_displacement")}}
                                for v, f in written.items()}})
    manifest = {
        "format": "cardioinr-phantom-studies",
        "version": 1,
        "config": config.to_dict(),
        "label_map": {"lv": ACDC.lv, "myo": ACDC.myo, "rv": ACDC.rv},
        "seed": int(seed),
        "views": ["sax", *views],
        "misalign_mm": float(misalign_mm),
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
