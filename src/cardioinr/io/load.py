"""One entry point for every input: :func:`load_sequence` picks the reader from the path.

Inputs understood:

* a 4D NIfTI cine ``(X, Y, Z, T)`` (ACDC style; ``Z == 1`` for a single slice), see
  :func:`cardioinr.io.nifti.load_nifti_sequence`;
* an ``.npz`` written by :func:`cardioinr.io.npz.save_npz`;
* a folder of per-frame NIfTI volumes (one 2D or 3D file per frame, ordered by the frame number
  in the file name), see :func:`cardioinr.io.frames.load_nifti_frames`;
* a folder holding one DICOM cine series (one file per slice position and trigger time, legacy
  multi-frame files, or an enhanced multi-frame file), see :func:`cardioinr.io.dicom.load_dicom_folder`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from cardioinr.core.errors import InputError
from cardioinr.io._common import is_nifti_name, visible_files
from cardioinr.io.dicom import load_dicom_folder
from cardioinr.io.frames import load_nifti_frames
from cardioinr.io.nifti import load_nifti_sequence
from cardioinr.io.npz import load_npz
from cardioinr.io.sequence import ACDC, LabelMap, Sequence, check_frame_index

__all__ = ["load_folder", "load_sequence"]


def load_sequence(
    path: str | os.PathLike,
    *,
    label_map: LabelMap | str | None = None,
    ref_frame: int | None = None,
    frame_interval_ms: float | None = None,
    series_uid: str | None = None,
) -> Sequence:
    """Load a cine from a 4D NIfTI, an ``.npz``, a folder of per-frame NIfTI or a DICOM folder.

    ``label_map``, ``ref_frame`` and ``frame_interval_ms`` override what the file holds when
    given (``None``: keep the file's, else ACDC codes, frame 0, the header's interval).
    ``series_uid`` picks one series from a DICOM folder holding several.
    """
    path = Path(path)
    lmap = LabelMap.coerce(label_map) if label_map is not None else None
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_dir():
        return load_folder(path, label_map=lmap or ACDC, ref_frame=ref_frame or 0,
                           frame_interval_ms=frame_interval_ms, series_uid=series_uid)
    lower = path.name.lower()
    if lower.endswith(".npz"):
        seq = load_npz(path)
        changes: dict = {}
        if lmap is not None and lmap != seq.label_map:
            changes["label_map"] = lmap
        if ref_frame is not None:
            changes["ref_frame"] = check_frame_index(ref_frame, seq.n_frames, seq.name)
        if frame_interval_ms is not None:
            changes["frame_interval_ms"] = frame_interval_ms
        return replace(seq, **changes) if changes else seq
    if lower.endswith((".nii", ".nii.gz")):
        return load_nifti_sequence(path, frame_interval_ms=frame_interval_ms, label_map=lmap or ACDC,
                                   ref_frame=ref_frame or 0)
    if lower.endswith((".dcm", ".ima")):
        raise InputError(f"{path}: give the folder holding the whole DICOM series, not one file")
    raise InputError(f"{path}: unknown input format (expected .nii, .nii.gz, .npz, or a folder of frames or DICOM)")


def load_folder(
    path: Path,
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
    series_uid: str | None = None,
) -> Sequence:
    """A folder holding either per-frame NIfTI volumes or a DICOM series.

    NIfTI files in the folder take precedence (other files, such as JSON sidecars, are ignored);
    otherwise every file (subfolders included) is tried as DICOM, see :func:`load_dicom_folder`.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    files = visible_files(path)
    niftis = [f for f in files if is_nifti_name(f)]
    if niftis:
        return load_nifti_frames(niftis, label_map=label_map, ref_frame=ref_frame,
                                 frame_interval_ms=frame_interval_ms, name=path.name)
    if not files and not any(p.is_dir() for p in path.iterdir()):
        raise InputError(f"{path}: folder is empty")
    return load_dicom_folder(path, label_map=label_map, ref_frame=ref_frame,
                             frame_interval_ms=frame_interval_ms, series_uid=series_uid)
