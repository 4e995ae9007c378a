"""The output contract of ``cardioinr fit``: the one module that names its files, writes the
core of a fit folder, reads the files back, and says when a folder is complete.

A fit folder (see the README, "Output contract") holds:

* :data:`DISPLACEMENT` ``displacement.nii.gz``: float32 ``(X, Y, Z, T, 3)``, same affine as the
  input; ``[i, j, k, t, c]`` is the Lagrangian displacement in mm of the reference voxel
  ``(i, j, k)`` to frame ``t`` along array axis ``c``; zero at the reference frame.
* :data:`LABELS` ``labels.nii.gz``: uint8 ``(X, Y, Z, T)``, the reference labels carried to every frame.
* :data:`FIELD` ``field.pt``: the continuous field (:func:`cardioinr.fit.load_field`).
* :data:`METRICS` ``metrics.json``: fit time, steps, losses, folding, version, config, inputs.
* :data:`STRAIN` ``strain.csv``: one row per frame and region (:mod:`cardioinr.outputs.tables`).
* :data:`REPORT` ``report.html``: the self-contained report (:mod:`cardioinr.outputs.report`).

A multi-view fit (a short-axis stack with long-axis cines, :mod:`cardioinr.fit.multiview`) keeps
all of the above on the short-axis grid and adds, per long-axis view ``V`` (``2ch``, ``4ch``, ...):

* ``displacement_V.nii.gz`` (:func:`view_displacement_name`): float32 ``(X, Y, 1, T_V, 3)`` with
  the view's affine: the same field on the view's pixels at the view's frames, mm along the
  view's array axes (component 2 is the motion through the view's plane);
* ``labels_V.nii.gz`` (:func:`view_labels_name`): uint8 ``(X, Y, 1, T_V)``, the view's reference
  labels carried by the in-plane motion, when the view has labels.

``cardioinr export`` (:mod:`cardioinr.outputs.export`) adds two folders beside them, named here too:

* :data:`EXPORT_ITK` ``itk/``: per frame ``NN`` (:func:`frame_tag`), ``displacement_tNN.nii.gz``
  (:func:`itk_displacement_name`; the ITK/ANTs resampling field carrying the reference to frame
  ``NN``) and ``inverse_tNN.nii.gz`` (:func:`itk_inverse_name`; frame ``NN`` to the reference),
  and :data:`ITK_REFERENCE_LABELS` ``reference_labels.nii.gz``.
* :data:`EXPORT_MESH` ``mesh/``: ``myocardium_tNN.vtp`` (:func:`mesh_frame_name`) and the
  ParaView time series :data:`MESH_SERIES` ``myocardium.pvd``.

Other modules import these names; no other module spells a file name of the contract.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cardioinr.core.errors import ConfigError, InputError
from cardioinr.core.files import file_sha256, write_json_atomic
from cardioinr.geometry import spatial_dim
from cardioinr.io import Sequence, read_nifti, save_nifti

DISPLACEMENT = "displacement.nii.gz"
LABELS = "labels.nii.gz"
FIELD = "field.pt"
METRICS = "metrics.json"
STRAIN = "strain.csv"
REPORT = "report.html"
#: Every file of the output contract, in the order a fit writes them.
FILES = (DISPLACEMENT, LABELS, FIELD, METRICS, STRAIN, REPORT)
#: Files every complete fit folder holds; the others depend on the inputs and options.
CORE_FILES = (DISPLACEMENT, FIELD, METRICS)
#: Written last by a cohort worker: its presence (and content) means the folder is complete.
MARKER = ".complete"

#: Folders written by ``cardioinr export`` (and ``fit --export``) inside a fit folder.
EXPORT_ITK = "itk"
EXPORT_MESH = "mesh"
#: ``itk/``: the reference frame's labels as one 3D image, the input of the resampling commands.
ITK_REFERENCE_LABELS = "reference_labels.nii.gz"
#: ``mesh/``: the ParaView time series (``.pvd``) listing the per-frame meshes.
MESH_SERIES = "myocardium.pvd"
#: Every export file matches one of these patterns (what :func:`clear_exports` removes).
EXPORT_PATTERNS = {EXPORT_ITK: ("displacement_t*.nii.gz", "inverse_t*.nii.gz", ITK_REFERENCE_LABELS),
                   EXPORT_MESH: ("myocardium_t*.vtp", MESH_SERIES)}

if TYPE_CHECKING:  # the fit stack (torch) is imported only when a fit is written
    from cardioinr.fit import FitResult

__all__ = ["CORE_FILES", "DISPLACEMENT", "EXPORT_ITK", "EXPORT_MESH", "EXPORT_PATTERNS", "FIELD", "FILES",
           "ITK_REFERENCE_LABELS", "LABELS", "MARKER", "MESH_SERIES", "METRICS", "REPORT", "STRAIN",
           "clear_exports", "expected_files", "frame_tag", "itk_displacement_name", "itk_inverse_name",
           "mesh_frame_name", "is_complete", "mark_complete", "read_displacement", "read_labels_4d", "read_metrics",
           "read_marker", "read_ref_frame", "require_files", "VIEW_PATTERNS", "view_displacement_name", "view_labels_name",
           "prepare_fit_folder", "write_fit_images", "write_fit_outputs", "write_fit_records"]


def view_displacement_name(view: str) -> str:
    """File of a long-axis view's displacement in a multi-view fit folder."""
    return f"displacement_{view}.nii.gz"


def view_labels_name(view: str) -> str:
    """File of a long-axis view's carried labels in a multi-view fit folder."""
    return f"labels_{view}.nii.gz"


#: Patterns of the per-view files (removed with the contract's files before a fit writes).
VIEW_PATTERNS = ("displacement_*.nii.gz", "labels_*.nii.gz")


# ---------------------------------------------------------------------------------------------
# Export names
# ---------------------------------------------------------------------------------------------


def frame_tag(t: int, n_frames: int) -> str:
    """``tNN``: frame ``t`` zero-padded to two digits (more when the cycle has over 100 frames)."""
    width = max(2, len(str(max(int(n_frames) - 1, 0))))
    return f"t{int(t):0{width}d}"


def itk_displacement_name(t: int, n_frames: int) -> str:
    """``displacement_tNN.nii.gz``: the world-space resampling field to frame ``t``."""
    return f"displacement_{frame_tag(t, n_frames)}.nii.gz"


def itk_inverse_name(t: int, n_frames: int) -> str:
    """``inverse_tNN.nii.gz``: the inverse of :func:`itk_displacement_name` (frame ``t`` to the reference)."""
    return f"inverse_{frame_tag(t, n_frames)}.nii.gz"


def mesh_frame_name(t: int, n_frames: int) -> str:
    """``myocardium_tNN.vtp``: the myocardial surface at frame ``t``."""
    return f"myocardium_{frame_tag(t, n_frames)}.vtp"


def clear_exports(folder: str | os.PathLike, which: tuple[str, ...] = (EXPORT_ITK, EXPORT_MESH)) -> None:
    """Remove the export files of earlier runs from ``folder``'s export folders (only files whose
    names match :data:`EXPORT_PATTERNS`; a folder left empty is removed too)."""
    for sub in which:
        d = Path(folder) / sub
        if not d.is_dir():
            continue
        for pattern in EXPORT_PATTERNS[sub]:
            for f in d.glob(pattern):
                if f.is_file():
                    f.unlink()
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_fit_outputs(result: "FitResult", out_dir: str | Path, extra_metrics: dict | None = None) -> Path:
    """Write ``displacement.nii.gz``, ``labels.nii.gz`` (if labels), ``field.pt`` and
    ``metrics.json`` into ``out_dir`` (each atomically).

    Contract files left in ``out_dir`` by an earlier fit are removed first, so that the folder
    never mixes the outputs of two fits (a run stopped half-way leaves fewer files, each one
    complete, rather than a new displacement beside old labels); so are the files of an earlier
    ``cardioinr export`` (:func:`clear_exports`). ``metrics.json`` records the
    package version, the configuration and the SHA-256 of every input file (the cine, the
    reference label map, the prior).

    The three steps are :func:`prepare_fit_folder`, :func:`write_fit_images` and
    :func:`write_fit_records`; :func:`~cardioinr.outputs.save.save_fit` runs the images beside
    the report."""
    out = prepare_fit_folder(out_dir)
    write_fit_images(result, out)
    return write_fit_records(result, out, extra_metrics)


def prepare_fit_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and remove what an earlier fit or export left there (contract files,
    multi-view files, exports)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the output folder exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (out / name).unlink(missing_ok=True)
        for pattern in VIEW_PATTERNS:  # views of an earlier multi-view fit
            for p in out.glob(pattern):
                p.unlink(missing_ok=True)
        clear_exports(out)  # exports of an earlier fit describe another motion
    except OSError as e:
        raise ConfigError(f"{out}: cannot write the output folder ({e.strerror or e})") from None
    return out


def write_fit_images(result: "FitResult", out_dir: str | Path) -> None:
    """The fit's NIfTI files: ``displacement.nii.gz``, ``labels.nii.gz`` (if labels) and each
    long-axis view's pair, in a folder :func:`prepare_fit_folder` made. Most of its time is
    gzip, which releases the GIL: it can run in a thread beside other work."""
    out = Path(out_dir)
    seq = result.sequence
    save_nifti(out / DISPLACEMENT, result.displacement.astype(np.float32), seq.affine)
    if result.labels is not None:
        save_nifti(out / LABELS, result.labels.astype(np.uint8), seq.affine,
                   frame_interval_ms=seq.frame_interval_ms)
    for view in getattr(result, "views", None) or []:
        save_nifti(out / view_displacement_name(view.name), view.displacement.astype(np.float32), view.sequence.affine)
        if view.labels is not None:
            save_nifti(out / view_labels_name(view.name), view.labels.astype(np.uint8), view.sequence.affine,
                       frame_interval_ms=view.sequence.frame_interval_ms)


def write_fit_records(result: "FitResult", out_dir: str | Path, extra_metrics: dict | None = None) -> Path:
    """``field.pt`` and ``metrics.json`` (version, sequence, configuration, loss curve, input
    checksums, warnings, ``extra_metrics``) in a folder :func:`prepare_fit_folder` made."""
    from cardioinr import __version__
    from cardioinr.fit import save_field
    from cardioinr.fit.fitter import fit_steps

    out = Path(out_dir)
    seq = result.sequence
    save_field(out / FIELD, result.field)
    metrics = dict(result.metrics)
    metrics.update({
        "cardioinr_version": __version__,
        "sequence": {"name": seq.name, "shape": list(seq.image.shape), "spacing_mm": seq.spacing.tolist(),
                     "frame_interval_ms": seq.frame_interval_ms, "ref_frame": seq.ref_frame,
                     "label_map": seq.label_map.as_dict(), "source": seq.meta.get("source")},
        "config": result.config.to_dict(),
        "loss_curve": [h.get("loss") for h in fit_steps(result.history)][:: max(1, len(result.history) // 200)],
        "inputs": _input_checksums(seq, extra_metrics),
    })
    warnings = _output_warnings(result)
    if warnings:
        metrics["warnings"] = warnings
    if extra_metrics:
        metrics.update(extra_metrics)
    write_json_atomic(out / METRICS, metrics)
    return out


def _input_checksums(seq: Sequence, extra_metrics: dict | None) -> dict:
    """Path and SHA-256 of each input: the cine (``sha256`` from the loader), the labels loaded
    from files, the prior checkpoint (``extra_metrics["prior"]["path"]``)."""
    out: dict = {"sequence": {"path": seq.meta.get("source"), "sha256": seq.meta.get("sha256")}}
    labels = seq.label_provenance()
    if labels:
        out["labels"] = {str(t): v for t, v in sorted(labels.items())}
    prior = (extra_metrics or {}).get("prior")
    if isinstance(prior, dict) and prior.get("path"):
        try:
            out["prior"] = {"path": str(prior["path"]), "sha256": file_sha256(prior["path"])}
        except OSError:
            out["prior"] = {"path": str(prior["path"]), "sha256": None}
    return out


def _output_warnings(result: "FitResult") -> list[str]:
    seq = result.sequence
    out = []
    if seq.ref_labels is not None and not seq.ref_labels.any():
        out.append(f"the reference label map is empty (all zero): {LABELS} is all background, and no "
                   "strain nor heart-centred frame could be derived")
    return out


# ---------------------------------------------------------------------------------------------
# Completeness (the cohort's resume relies on it)
# ---------------------------------------------------------------------------------------------


def expected_files(folder: str | os.PathLike, *, labels: bool, report: bool) -> list[str]:
    """The contract files a finished fit leaves in ``folder``: :data:`CORE_FILES`, the labels when
    the fit had reference labels, ``strain.csv`` when one was written, the report when asked."""
    folder = Path(folder)
    files = list(CORE_FILES)
    if labels:
        files.append(LABELS)
    if (folder / STRAIN).is_file():
        files.append(STRAIN)
    if report:
        files.append(REPORT)
    return files


def require_files(folder: str | os.PathLike, files: list[str]) -> None:
    """Refuse a folder where one of ``files`` is missing (one line naming them)."""
    folder = Path(folder)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder}: outputs missing after the fit: {', '.join(missing)}")


def mark_complete(folder: str | os.PathLike, files: list[str], **record: Any) -> None:
    """Write the :data:`MARKER` last, atomically, listing ``files`` (plus ``record``: subject,
    seconds, settings fingerprint...); check them first with :func:`require_files`."""
    write_json_atomic(Path(folder) / MARKER, {**record, "files": sorted(files),
                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def read_marker(folder: str | os.PathLike) -> dict:
    """The marker's content, or ``{}`` when it is missing or unreadable."""
    try:
        m = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
        return m if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished fit: a readable :data:`MARKER` whose listed files
    (at least :data:`CORE_FILES`) all exist and are non-empty, and a ``metrics.json`` that parses
    as a JSON object."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        if not isinstance(files, list) or not set(CORE_FILES) <= set(files):
            return False
        if not all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in files):
            return False
        metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
        return isinstance(metrics, dict)
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_metrics(folder: str | os.PathLike) -> dict:
    """``metrics.json`` of a fit folder as a dict.

    Raises:
        OSError: the file is missing or unreadable.
        ValueError: it is not JSON, or not a JSON object.
    """
    metrics = json.loads((Path(folder) / METRICS).read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError("not a JSON object")
    return metrics


def read_ref_frame(folder: str | os.PathLike) -> int | None:
    """The reference frame recorded at the top level of ``metrics.json``, or None."""
    try:
        value = read_metrics(folder).get("ref_frame")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def read_displacement(path: str | os.PathLike, what: str = "displacement", *,
                      finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A displacement file: ``(X, Y, Z, T, 3)`` float32 mm and its ``(4, 4)`` affine.

    ``(X, Y, Z, T, 1, 3)``, as some tools write vector images, is accepted. ``finite``: refuse
    NaN or infinite values (scoring does; the report shows what there is).

    Raises:
        InputError: unreadable, wrong shape, or (with ``finite``) non-finite values.
    """
    path = Path(path)
    data, affine, _ = read_nifti(path, what)
    if data.ndim == 6 and data.shape[4] == 1:  # (X, Y, Z, T, 1, 3) written by some tools
        data = data[:, :, :, :, 0, :]
    if data.ndim != 5 or data.shape[-1] != 3:
        raise InputError(f"{path}: {what} must be (X, Y, Z, T, 3), got shape {data.shape}")
    if finite and not np.all(np.isfinite(data)):
        raise InputError(f"{path}: {what} holds NaN or infinite values")
    return data.astype(np.float32, copy=False), affine


def read_labels_4d(path: str | os.PathLike, shape4: tuple[int, ...], what: str) -> np.ndarray:
    """A label file of every frame, uint8 ``shape4 = (X, Y, Z, T)``; ``(X, Y, T)`` is accepted
    for a single slice.

    Raises:
        InputError: unreadable, another shape, or values that are not integer codes 0..255.
    """
    path = Path(path)
    data, _, _ = read_nifti(path, what)
    if data.ndim == 3 and spatial_dim(shape4) == 2 and data.shape == (shape4[0], shape4[1], shape4[3]):
        data = data[:, :, None, :]  # (X, Y, T) for a single slice
    if data.shape != tuple(shape4):
        raise InputError(f"{path}: {what} have shape {data.shape}, the displacement grid is {tuple(shape4)}")
    if not np.all(np.isfinite(data)) or not np.allclose(data, np.round(data)) or data.min() < 0 or data.max() > 255:
        raise InputError(f"{path}: {what} must hold integer codes 0..255")
    return data.astype(np.uint8)
