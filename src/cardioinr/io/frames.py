"""Folders of per-frame NIfTI volumes (one 2D or 3D file per frame) stacked into a cine."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cardioinr.core.errors import InputError
from cardioinr.core.files import check_memory, files_sha256
from cardioinr.io._common import file_stem, natural_key, no_warnings
from cardioinr.io.nifti import _as_volume, _nifti_nbytes, load_nifti_sequence, read_nifti, strict_nifti_header
from cardioinr.io.sequence import ACDC, LabelMap, Sequence

__all__ = ["load_nifti_frames"]


def load_nifti_frames(
    files: list[Path],
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
    name: str | None = None,
) -> Sequence:
    """Stack per-frame NIfTI files (each ``(X, Y, Z)``, ``(X, Y)`` or ``(X, Y, Z, 1)``) into a cine.

    Frames are ordered by natural sort of the file names (``f2`` before ``f10``), which is the
    order of the frame number since every name must follow one pattern (digits aside). All
    files must share shape and affine (to 1e-3 mm). A folder holding a single 4D file is read
    as that cine. The frame interval is ``frame_interval_ms`` or 1 (per-frame files carry none).
    """
    files = sorted(files, key=lambda p: natural_key(p.name))
    if not files:
        raise InputError("no NIfTI frames given")
    folder = files[0].parent
    if len(files) == 1:
        data, _, _ = read_nifti(files[0], "frame")
        if data.ndim >= 4:
            return load_nifti_sequence(files[0], frame_interval_ms=frame_interval_ms, label_map=label_map,
                                       ref_frame=ref_frame)
        raise InputError(f"{folder}: holds a single {data.ndim}D NIfTI file ({files[0].name}); "
                         "a cine needs one file per frame (at least 2) or a 4D file")
    patterns = sorted({re.sub(r"\d+", "#", file_stem(f)) for f in files})
    if len(patterns) > 1:
        shown = ", ".join(patterns[:4]) + (", ..." if len(patterns) > 4 else "")
        raise InputError(
            f"{folder}: NIfTI file names follow {len(patterns)} patterns ({shown}); a per-frame folder "
            "must hold only the frames of one cine (move labels and other files elsewhere)"
        )
    _check_frames_memory(files, folder)
    frames: list[np.ndarray] = []
    shape0: tuple[int, ...] | None = None
    affine0: np.ndarray | None = None
    for f in files:
        data, affine, _ = read_nifti(f, "frame")
        data = _as_volume(data, f"{f}: a per-frame file must hold one 2D or 3D frame")
        if shape0 is None:
            shape0, affine0 = data.shape, affine
        elif data.shape != shape0:
            raise InputError(f"{f}: frame shape {data.shape} differs from {files[0].name} {shape0}")
        elif not np.allclose(affine, affine0, rtol=0, atol=1e-3):
            raise InputError(f"{f}: affine (geometry) differs from that of {files[0].name}")
        frames.append(data)
    image = np.stack(frames, axis=-1)
    return Sequence(
        image=image,
        affine=affine0,  # type: ignore[arg-type]
        frame_interval_ms=frame_interval_ms if frame_interval_ms is not None else 1.0,
        ref_frame=ref_frame,
        label_map=label_map,
        name=name or folder.name,
        meta={"source": str(folder), "format": "nifti-frames", "frame_files": [f.name for f in files],
              "frame_interval_from": "argument" if frame_interval_ms is not None else "default (unknown)",
              "sha256": files_sha256(files, folder)},
    )


def _check_frames_memory(files: list[Path], folder: Path) -> None:
    """Refuse a per-frame folder whose stacked cine would exceed the memory limit (headers only)."""
    import nibabel as nib

    total = 0
    for f in files:
        try:
            with strict_nifti_header(), no_warnings():
                img = nib.load(str(f), mmap=False)
            total += _nifti_nbytes(img)
        except InputError:
            raise
        except Exception:
            return  # unreadable header: read_nifti names the file and the problem
    check_memory(total, folder, f"stacking its {len(files)} frames")
