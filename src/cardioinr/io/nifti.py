"""NIfTI files: cines, label maps, and writing results.

* :func:`read_nifti` reads any NIfTI file fully (checked: corrupt, truncated or damaged
  headers give one :class:`~cardioinr.core.errors.InputError` line);
* :func:`load_nifti_sequence` reads a 4D cine ``(X, Y, Z, T)`` (ACDC style; ``Z == 1`` for a
  single slice) into a :class:`~cardioinr.io.sequence.Sequence`;
* :func:`load_label_volume`, :func:`load_label_file` and :func:`attach_labels` read label maps
  (uint8 codes, see :class:`~cardioinr.io.sequence.LabelMap`); :func:`label_source` gives the
  provenance (path, SHA-256) a label file leaves on the sequence;
* :func:`save_nifti` and :func:`save_sequence_nifti` write atomically, in mm and ms;
* :func:`strict_nifti_header` is the context in which every NIfTI header is loaded.

Affines are voxel-to-world (RAS+, mm), see :mod:`cardioinr.geometry`.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import threading
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from cardioinr.core.console import first_line
from cardioinr.core.errors import InputError
from cardioinr.core.files import atomic_path, check_memory, file_sha256
from cardioinr.geometry.grid import spatial_dim
from cardioinr.io._common import file_stem, no_warnings, require_file
from cardioinr.io.sequence import ACDC, LabelMap, LabelSource, Sequence, attach_label_arrays, check_frame_index

__all__ = [
    "attach_labels",
    "label_source",
    "load_label_file",
    "load_label_volume",
    "load_nifti_sequence",
    "read_nifti",
    "save_nifti",
    "save_sequence_nifti",
    "strict_nifti_header",
]

_NIFTI_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError,
                                                  TypeError, MemoryError, IndexError)


def read_nifti(path: str | os.PathLike, what: str = "image") -> tuple[np.ndarray, np.ndarray, object]:
    """Read a NIfTI file fully; return ``(data, affine, header)``. Corrupt files raise :class:`InputError`.

    ``data`` is the array as stored, scaled by ``scl_slope``/``scl_inter`` when set; ``affine`` is
    the ``(4, 4)`` voxel-to-world (RAS+, mm) matrix nibabel picks (sform, else qform).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError, ImageDataError
    from nibabel.wrapstruct import WrapStructError

    path = Path(path)
    require_file(path, what)
    try:
        # mmap=False: the data are copied into memory, so a file changed or truncated later
        # cannot alter them (or crash the process with SIGBUS).
        with strict_nifti_header(), no_warnings():
            img = nib.load(str(path), mmap=False)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: {what} is a {type(img).__name__}, not a NIfTI file")
        check_memory(_nifti_nbytes(img), path)  # from the header, before reading any voxel
        with no_warnings():
            data = np.asanyarray(img.dataobj)  # reads (and decompresses) everything now
            affine = img.affine
        if path.name.lower().endswith(".gz"):
            # nibabel stops reading at the end of the voxel data, before the gzip trailer, so a
            # corrupted stream can decode to garbage silently; reading to the end checks the CRC.
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 22):
                    pass
    except InputError:
        raise
    except ImageFileError as e:
        raise InputError(f"{path}: {what} is not a readable NIfTI file ({first_line(e)})") from None
    except (HeaderDataError, ImageDataError, WrapStructError) as e:
        raise InputError(f"{path}: {what} has an invalid NIfTI header ({first_line(e)})") from None
    except _NIFTI_ERRORS as e:
        raise InputError(f"{path}: {what} is a corrupt or truncated NIfTI file ({first_line(e)})") from None
    except Exception as e:  # nibabel on a damaged header (e.g. OverflowError for an infinite vox_offset)
        raise InputError(f"{path}: {what} is an unreadable NIfTI file ({type(e).__name__}: {first_line(e)})") from None
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: header has no valid affine")
    return np.asarray(data), np.asarray(affine, dtype=np.float64), img.header


_NIBABEL_LOCK = threading.RLock()


@contextlib.contextmanager
def strict_nifti_header() -> Iterator[None]:
    """While loading a NIfTI header: a problem nibabel would "fix" and print (an invalid
    sform/qform code, a wrong header size or voxel offset, zero voxel sizes; problem level
    >= 30) is raised as HeaderDataError instead, and nothing is printed. Such a header is
    damaged, and the geometry nibabel would guess for it could be silently wrong."""
    import logging

    from nibabel import imageglobals

    with _NIBABEL_LOCK:
        logger = imageglobals.logger
        handlers, propagate = list(logger.handlers), logger.propagate
        for h in handlers:
            logger.removeHandler(h)
        quiet = logging.NullHandler()
        logger.addHandler(quiet)
        logger.propagate = False
        try:
            with imageglobals.ErrorLevel(30):
                yield
        finally:
            logger.removeHandler(quiet)
            for h in handlers:
                logger.addHandler(h)
            logger.propagate = propagate


def _nifti_nbytes(img: object) -> int:
    """Memory a NIfTI image takes once read: the stored (or scaled, float64) array, plus its
    float32 copy when the array is not float32 already."""
    shape = tuple(int(n) for n in img.shape)  # type: ignore[attr-defined]
    if any(n < 0 for n in shape):
        raise InputError(f"{getattr(img, 'get_filename', lambda: '?')()}: header gives a negative dimension {shape}")
    n_vox = math.prod(shape)
    itemsize = np.dtype(img.get_data_dtype()).itemsize  # type: ignore[attr-defined]
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)  # type: ignore[attr-defined]
    scaled = not (slope in (None, 1.0) and inter in (None, 0.0)) if np.isscalar(slope) and np.isscalar(inter) else True
    loaded = 8 if scaled else itemsize
    same = not scaled and np.dtype(img.get_data_dtype()) == np.float32  # type: ignore[attr-defined]
    return n_vox * (loaded + (0 if same else 4))


_TIME_UNIT_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3, "unknown": 1.0}


def _frame_interval_from_header(header: object, axis: int = 4) -> float | None:
    """``pixdim[axis]`` (the frame step) in ms using the NIfTI time unit; None when absent.

    An unset time unit is read as ms (what converters mean by a value like 37.5), except the
    placeholder 1.0; frequency-like units (Hz, ppm, rad/s) are not a time step and give None.
    """
    try:
        dt = float(header["pixdim"][axis])  # type: ignore[index]
        _, tunit = header.get_xyzt_units()  # type: ignore[attr-defined]
    except Exception:
        return None
    if not np.isfinite(dt) or dt <= 0 or tunit not in _TIME_UNIT_MS:
        return None
    if tunit == "unknown" and dt == 1.0:  # nibabel's and many converters' placeholder, not a measurement
        return None
    return dt * _TIME_UNIT_MS[tunit]


# NIfTI intents for vector data: a 5D file with these is a vector field, never a cine.
_VECTOR_INTENTS = {1006, 1007}  # NIFTI_INTENT_DISPVECT, NIFTI_INTENT_VECTOR


def load_nifti_sequence(
    path: str | os.PathLike,
    *,
    frame_interval_ms: float | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    name: str | None = None,
) -> Sequence:
    """Load a 4D cine NIfTI ``(X, Y, Z, T)`` (ACDC style; a 3D ``(X, Y, T)`` file is refused).

    A 5D ``(X, Y, Z, 1, T)`` file (time stored on the fifth axis by some converters) is
    squeezed to 4D unless its intent marks it as a vector field. The frame interval comes from
    ``frame_interval_ms`` when given, else from the header's time step (converted to ms), else 1.
    """
    path = Path(path)
    data, affine, header = read_nifti(path, "cine")
    time_axis = 4
    if data.ndim == 5:
        try:
            intent = int(header["intent_code"])  # type: ignore[index]
        except Exception:
            intent = 0
        if intent in _VECTOR_INTENTS or data.shape[3] != 1:
            raise InputError(
                f"{path}: a 5D file of shape {data.shape} is a vector field (e.g. a displacement), not a cine"
            )
        data = data[:, :, :, 0, :]
        time_axis = 5
    if data.ndim != 4:
        hint = " (a single slice is stored as (X, Y, 1, T))" if data.ndim == 3 else ""
        raise InputError(
            f"{path}: expected a 4D cine (X, Y, Z, T), got {data.ndim}D of shape {data.shape}{hint}"
        )
    header_dt = _frame_interval_from_header(header, time_axis)
    if frame_interval_ms is not None:
        dt, dt_from = frame_interval_ms, "argument"
    elif header_dt is not None:
        dt, dt_from = header_dt, "header"
    else:
        dt, dt_from = 1.0, "default (unknown)"
    return Sequence(
        image=data,
        affine=affine,
        frame_interval_ms=dt,
        ref_frame=ref_frame,
        label_map=label_map,
        name=name or file_stem(path),
        meta={"source": str(path), "format": "nifti", "frame_interval_from": dt_from,
              # kept for older readers of meta
              "frame_interval_from_header": dt_from == "header", "sha256": file_sha256(path)},
    )


def _label_array(data: np.ndarray, path: Path) -> np.ndarray:
    """Check label values (finite integers 0..255) and return them as uint8."""
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool) or np.iscomplexobj(data):
        raise InputError(f"{path}: label map has data type {data.dtype}, expected integer codes")
    if data.size == 0:
        raise InputError(f"{path}: label map is empty (shape {data.shape})")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: label map holds NaN or infinite values")
    if not np.allclose(data, np.round(data)) or data.min() < 0 or data.max() > 255:
        raise InputError(f"{path}: label map must hold integer codes 0..255")
    return np.round(data).astype(np.uint8)


def _as_volume(data: np.ndarray, refusal: str) -> np.ndarray:
    """``(X, Y)``, ``(X, Y, Z)`` or ``(X, Y, Z, 1)`` as ``(X, Y, Z)``; else InputError(refusal + shape)."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{refusal}, got shape {data.shape}")
    return data


def load_label_volume(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Load a label map ``(X, Y, Z)`` (or ``(X, Y)`` for one slice) as uint8, checking its shape.

    To attach it to a sequence with its provenance, pass :func:`label_source` of the same path
    along (or use :func:`attach_labels`, which does both)."""
    path = Path(path)
    data, _, _ = read_nifti(path, "label map")
    data = _as_volume(data, f"{path}: a label map must be 3D (X, Y, Z)")
    if shape is not None and data.shape != tuple(shape):
        raise InputError(f"{path}: label map has shape {data.shape}, image frames have {tuple(shape)}")
    return _label_array(data, path)


def label_source(path: str | os.PathLike) -> LabelSource | None:
    """The provenance of a label file just read: its path and SHA-256; None when the file can
    no longer be read (it is then attached without provenance)."""
    path = Path(path)
    try:
        sha = file_sha256(path)
    except OSError:
        return None
    return LabelSource(path=str(path), sha256=sha)


def load_label_file(
    path: str | os.PathLike, shape: tuple[int, int, int], n_frames: int, frame: int
) -> dict[int, np.ndarray]:
    """Labels from one file that is either ``(X, Y, Z, T)`` (every frame) or ``(X, Y, Z)``
    (``frame`` only); returns ``{frame: uint8 (X, Y, Z)}``. The file is read once."""
    path = Path(path)
    data, _, _ = read_nifti(path, "label map")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3 and spatial_dim(tuple(shape)) == 2 and data.shape[:2] == tuple(shape)[:2] and data.shape[2] == n_frames \
            and data.shape != tuple(shape):
        data = data[:, :, None, :]  # (X, Y, T) for one slice
    if data.ndim == 3:
        if data.shape != tuple(shape):
            raise InputError(f"{path}: label map has shape {data.shape}, image frames have {tuple(shape)}")
        return {check_frame_index(frame, n_frames, path.name): _label_array(data, path)}
    if data.ndim != 4 or data.shape != (*tuple(shape), n_frames):
        raise InputError(f"{path}: label file has shape {data.shape}; expected {tuple(shape)} (one frame) "
                         f"or {(*tuple(shape), n_frames)} (every frame)")
    labels = _label_array(data, path)
    return {t: np.ascontiguousarray(labels[..., t]) for t in range(n_frames)}


def attach_labels(seq: Sequence, labels: Mapping[int, str | os.PathLike]) -> Sequence:
    """Load label files ``{frame: path}`` for the given frames and attach them to ``seq``, each
    with its provenance (:func:`label_source`): messages about it name the file, and
    :meth:`Sequence.label_provenance` reports it."""
    arrays: dict[int, np.ndarray] = {}
    sources: dict[int, LabelSource] = {}
    for t, p in labels.items():
        t = check_frame_index(t, seq.n_frames, seq.name)
        arrays[t] = load_label_volume(p, seq.shape)
        src = label_source(p)
        if src is not None:
            sources[t] = src
    return attach_label_arrays(seq, arrays, sources)


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, frame_interval_ms: float | None = None) -> Path:
    """Write ``data`` with ``affine`` atomically (float32 or uint8 kept as given).

    Units are mm and ms; ``frame_interval_ms`` goes to ``pixdim[4]`` for 4D/5D data. A 5D array
    ``(X, Y, Z, T, 3)`` (a displacement field) is marked with the NIfTI *vector* intent, since
    the fifth NIfTI axis is the vector-component axis.
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(data)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units(xyz="mm", t="msec")
    if frame_interval_ms is not None and data.ndim >= 4:
        zooms = list(img.header.get_zooms())
        zooms[3] = float(frame_interval_ms)
        img.header.set_zooms(zooms)
    if data.ndim == 5:
        img.header.set_intent("vector")
    from cardioinr import __version__

    img.header["descrip"] = f"cardioinr {__version__}".encode()[:79]  # which version wrote it
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def save_sequence_nifti(path: str | os.PathLike, seq: Sequence) -> Path:
    """Write the image of ``seq`` as a 4D NIfTI with its affine and frame interval."""
    return save_nifti(path, seq.image, seq.affine, frame_interval_ms=seq.frame_interval_ms)
