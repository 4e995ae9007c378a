"""Reading and writing cine sequences with their geometry.

Everything that enters the package goes through :class:`Sequence`: the image array, its
voxel-to-world affine (millimetres), the frame interval and the label maps travel together,
so no motion is ever computed in ambiguous voxel units.

Inputs understood by :func:`load_sequence`:

* a 4D NIfTI cine ``(X, Y, Z, T)`` (ACDC style; ``Z == 1`` for a single slice);
* an ``.npz`` written by :func:`save_npz`;
* a folder of per-frame NIfTI volumes (one 2D or 3D file per frame, ordered by the frame number
  in the file name);
* a folder holding one DICOM cine series (one file per slice position and trigger time, legacy
  multi-frame files, or an enhanced multi-frame file), see :func:`load_dicom_folder`.

Coordinate conventions used throughout the package
--------------------------------------------------
* *array-aligned millimetres* ("mm space"): ``p = index * spacing`` per array axis (i, j, k).
  Displacements are expressed along the array axes in millimetres (the output contract).
  For any affine whose columns are orthogonal (every scanner geometry, oblique included) this
  is an isometry of world space, so distances, strains and Jacobians are physical.
* *world*: ``affine @ [i, j, k, 1]``, used only to read and write files. World coordinates are
  NIfTI's RAS+ millimetres (+x towards the patient's right, +y anterior, +z superior), as
  nibabel and dcm2niix write them.

DICOM geometry (see :func:`dicom_affine`)
-----------------------------------------
DICOM positions are LPS+ (x to the patient's left, y to posterior, z to head); NIfTI is RAS+,
so the x and y rows of the affine change sign. Array axis ``i`` runs along a DICOM row (the
*column* index increases, direction ``ImageOrientationPatient[0:3]``, step ``PixelSpacing[1]``),
axis ``j`` runs down the columns (row index, direction ``ImageOrientationPatient[3:6]``, step
``PixelSpacing[0]``), axis ``k`` runs along the slice normal ``row x col`` in increasing
``ImagePositionPatient . normal``. So ``image[i, j, k, t] = pixel_array[j, i]`` of slice ``k``
at trigger time ``t`` (no row flip: unlike dcm2niix we do not reverse ``j``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import re
import secrets
import threading
import warnings
import weakref
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cardioinr.core.errors import ConfigError, InputError

# ---------------------------------------------------------------------------------------------
# Label codes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelMap:
    """Which integer code means which structure. ``None`` means the structure is not labelled."""

    lv: int | None = 3
    myo: int | None = 2
    rv: int | None = 1

    @classmethod
    def parse(cls, text: str | None) -> "LabelMap":
        """Parse ``"acdc"``, ``"sunnybrook"`` or ``"lv=1,myo=2[,rv=3]"``."""
        if text is None or text == "":
            return ACDC
        if not isinstance(text, str):
            raise InputError(f"label map {text!r}: expected a string such as 'acdc' or 'lv=1,myo=2'")
        key = text.strip().lower()
        if key in _PRESETS:
            return _PRESETS[key]
        codes: dict[str, int | None] = {"lv": None, "myo": None, "rv": None}
        for part in key.split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in codes:
                raise InputError(
                    f"label map {text!r}: expected a preset (acdc, sunnybrook) or 'lv=N,myo=N,rv=N'"
                )
            if codes[name] is not None:
                raise InputError(f"label map {text!r}: {name!r} is given twice")
            try:
                code = int(value)
            except ValueError:
                raise InputError(f"label map {text!r}: code for {name!r} is not an integer") from None
            if not 1 <= code <= 255:
                raise InputError(f"label map {text!r}: code for {name!r} must be in 1..255")
            codes[name] = code
        return cls._checked(codes, repr(text))

    @classmethod
    def coerce(cls, obj: "LabelMap | str | Mapping[str, int | None] | None") -> "LabelMap":
        """A :class:`LabelMap` from a LabelMap, a preset or ``lv=..`` string, or a mapping
        ``{"lv": 1, "myo": 2, "rv": None}`` (as stored in manifests and ``.npz`` files)."""
        if obj is None:
            return ACDC
        if isinstance(obj, LabelMap):
            return obj
        if isinstance(obj, str):
            return cls.parse(obj)
        if isinstance(obj, Mapping):
            codes: dict[str, int | None] = {"lv": None, "myo": None, "rv": None}
            for k, v in obj.items():
                name = str(k).strip().lower()
                if name not in codes:
                    raise InputError(f"label map {dict(obj)!r}: unknown structure {k!r} (expected lv, myo, rv)")
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= 255:
                    raise InputError(f"label map {dict(obj)!r}: code for {name!r} must be an integer in 1..255")
                codes[name] = int(v)
            return cls._checked(codes, repr(dict(obj)))
        raise InputError(f"label map {obj!r}: expected a preset name, 'lv=N,myo=N,rv=N' or a mapping")

    @classmethod
    def _checked(cls, codes: dict[str, int | None], shown: str) -> "LabelMap":
        used = [c for c in codes.values() if c is not None]
        if len(set(used)) != len(used):
            raise InputError(f"label map {shown}: two structures share one code")
        if not used:
            raise InputError(f"label map {shown}: no structure given")
        return cls(**codes)

    def items(self) -> list[tuple[str, int]]:
        """(name, code) for the labelled structures, in the order LV, MYO, RV."""
        return [(n, c) for n, c in (("LV", self.lv), ("MYO", self.myo), ("RV", self.rv)) if c is not None]

    def codes(self) -> set[int]:
        return {c for _, c in self.items()}

    def as_dict(self) -> dict[str, int | None]:
        return {"lv": self.lv, "myo": self.myo, "rv": self.rv}


ACDC = LabelMap(lv=3, myo=2, rv=1)
SUNNYBROOK = LabelMap(lv=1, myo=2, rv=None)
_PRESETS = {"acdc": ACDC, "sunnybrook": SUNNYBROOK}


# ---------------------------------------------------------------------------------------------
# The sequence type
# ---------------------------------------------------------------------------------------------


@dataclass
class Sequence:
    """A cine MRI sequence with its geometry.

    Attributes:
        image: float32 array ``(X, Y, Z, T)``; ``Z == 1`` for a single slice.
        affine: ``(4, 4)`` voxel-to-world matrix in millimetres (NIfTI convention).
        frame_interval_ms: time between frames, ms.
        labels: frame index -> uint8 label map ``(X, Y, Z)`` (any frames, often ED and ES).
        ref_frame: index of the reference frame (the displacement is zero there).
        label_map: meaning of the label codes.
        name: a short identifier (file stem or subject id).
        meta: free-form provenance (source path, ED/ES frames, ...).

    Construction validates everything and raises a one-line :class:`InputError` on bad data.
    """

    image: np.ndarray
    affine: np.ndarray
    frame_interval_ms: float = 1.0
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    ref_frame: int = 0
    label_map: LabelMap = ACDC
    name: str = "sequence"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Names come from file names; keep every message on one line whatever they hold.
        self.name = " ".join(str(self.name).split()) or "sequence"
        where = self._where()  # messages name the file the sequence came from, when known
        self.image = np.asarray(self.image)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        validate_image(self.image, where)
        self.image = self.image.astype(np.float32, copy=False)
        validate_affine(self.affine, where)
        try:
            self.frame_interval_ms = float(self.frame_interval_ms)
        except (TypeError, ValueError):
            raise InputError(f"{where}: frame interval {self.frame_interval_ms!r} is not a number") from None
        if not np.isfinite(self.frame_interval_ms) or self.frame_interval_ms <= 0:
            raise InputError(f"{where}: frame interval must be a positive number of ms, got {self.frame_interval_ms}")
        if not isinstance(self.label_map, LabelMap):
            self.label_map = LabelMap.coerce(self.label_map)
        self.ref_frame = check_frame_index(self.ref_frame, self.n_frames, where)
        sources = dict(self.meta.get("label_sources") or {}) if isinstance(self.meta, dict) else {}
        checked = {}
        for t, lab in self.labels.items():
            t = check_frame_index(t, self.n_frames, where)
            src = _label_source(lab)
            checked[t] = self._check_labels(lab, t, src)
            if src is not None:  # provenance of a label file, kept while the labels are unchanged
                sources[t] = {"path": src[0], "sha256": src[1], "crc32": zlib.crc32(checked[t].tobytes())}
        self.labels = checked
        if sources:
            self.meta = {**self.meta, "label_sources": sources}  # a new dict: replace() shares meta

    def _where(self) -> str:
        src = self.meta.get("source") if isinstance(self.meta, dict) else None
        return " ".join(str(src).split()) if isinstance(src, (str, os.PathLike)) and str(src) else self.name

    def label_provenance(self) -> dict[int, dict]:
        """``{frame: {"path", "sha256"}}`` of the label maps that came from files and are unchanged."""
        out = {}
        for t, info in (self.meta.get("label_sources") or {}).items():
            lab = self.labels.get(int(t))
            if lab is not None and zlib.crc32(np.ascontiguousarray(lab).tobytes()) == info.get("crc32"):
                out[int(t)] = {"path": info["path"], "sha256": info["sha256"]}
        return out

    # -- geometry ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.image.shape[:3])  # type: ignore[return-value]

    @property
    def n_frames(self) -> int:
        return int(self.image.shape[3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along the array axes, mm, shape ``(3,)``."""
        return spacing_from_affine(self.affine)

    @property
    def is_2d(self) -> bool:
        return self.shape[2] == 1

    @property
    def ndim_space(self) -> int:
        """2 for a single slice, 3 for a stack."""
        return 2 if self.is_2d else 3

    def frame_times_ms(self) -> np.ndarray:
        """Nominal time of each frame from frame 0, ms, shape ``(T,)``."""
        return np.arange(self.n_frames) * self.frame_interval_ms

    # -- label handling ------------------------------------------------------------------------
    def _check_labels(self, lab: np.ndarray, t: int, src: tuple[str, str] | None = None) -> np.ndarray:
        # A label file names itself first: "labels.nii.gz: label map (frame 0 of cine.nii.gz) ..."
        what = f"{src[0]}: label map (frame {t} of {self._where()})" if src else f"{self._where()}: label map for frame {t}"
        lab = np.asarray(lab)
        if lab.ndim == 2 and self.is_2d:
            lab = lab[:, :, None]
        if lab.shape != self.shape:
            raise InputError(f"{what} has shape {lab.shape}, image frames have {self.shape}")
        if not (np.issubdtype(lab.dtype, np.number) or lab.dtype == bool) or np.iscomplexobj(lab):
            raise InputError(f"{what} has data type {lab.dtype}, expected integer codes")
        if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
            if not np.all(np.isfinite(lab)) or not np.allclose(lab, np.round(lab)):
                raise InputError(f"{what} holds non-integer values")
        if lab.min() < 0 or lab.max() > 255:
            raise InputError(f"{what} has codes outside 0..255")
        lab = lab.astype(np.uint8)
        unknown = set(np.unique(lab).tolist()) - {0} - self.label_map.codes()
        if unknown:
            raise InputError(
                f"{what} has codes {sorted(unknown)} not in the label map "
                f"{self.label_map.as_dict()} (use --label-map)"
            )
        return lab

    def with_labels(self, frame: int, labels: np.ndarray) -> "Sequence":
        new = dict(self.labels)
        new[check_frame_index(frame, self.n_frames, self.name)] = labels
        return replace(self, labels=new)

    def with_ref_frame(self, frame: int) -> "Sequence":
        return replace(self, ref_frame=check_frame_index(frame, self.n_frames, self.name))

    @property
    def ref_labels(self) -> np.ndarray | None:
        """Labels of the reference frame, if any."""
        return self.labels.get(self.ref_frame)


def check_frame_index(t: int, n_frames: int, name: str = "sequence") -> int:
    """Accept ``-n_frames <= t < n_frames`` (negative counts from the end) and return ``t >= 0``."""
    if isinstance(t, (float, np.floating)) and not float(t).is_integer():
        raise InputError(f"{name}: frame index {t!r} is not an integer")
    try:
        t = int(t)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: frame index {t!r} is not an integer") from None
    if not -n_frames <= t < n_frames:
        raise InputError(f"{name}: frame {t} is out of range (the sequence has {n_frames} frames)")
    return t % n_frames


def validate_image(image: np.ndarray, name: str) -> None:
    """Check a cine array ``(X, Y, Z, T)``: 4 dimensions, at least 2 frames, finite, not constant."""
    if image.ndim != 4:
        hint = " (a single slice is (X, Y, 1, T))" if image.ndim == 3 else ""
        raise InputError(
            f"{name}: expected a 4D cine (X, Y, Z, T), got {image.ndim}D of shape {image.shape}{hint}"
        )
    if min(image.shape) < 1 or image.shape[0] < 4 or image.shape[1] < 4:
        raise InputError(f"{name}: image of shape {image.shape} is too small (need at least 4 x 4 pixels)")
    if image.shape[3] < 2:
        raise InputError(f"{name}: only one frame; motion needs at least 2 frames (shape {image.shape})")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise InputError(f"{name}: image data type {image.dtype} is not numeric")
    if np.iscomplexobj(image):
        raise InputError(f"{name}: complex image data; give the magnitude image")
    finite = np.isfinite(image)
    if not finite.all():
        raise InputError(f"{name}: image holds {int((~finite).sum())} NaN or infinite values")
    if np.issubdtype(image.dtype, np.floating) and image.dtype.itemsize > 4:
        big = float(np.abs(image).max())
        if big > float(np.finfo(np.float32).max):  # would become infinite as float32
            raise InputError(f"{name}: image values up to {big:.3g} are beyond the float32 range")
    if float(image.max()) == float(image.min()):
        raise InputError(f"{name}: image is constant (value {float(image.min())}); nothing to register")


def validate_affine(affine: np.ndarray, name: str) -> None:
    """Check a ``(4, 4)`` voxel-to-world affine: finite, invertible, orthogonal voxel axes."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{name}: affine must be a finite 4x4 matrix")
    lin = affine[:3, :3]
    if abs(np.linalg.det(lin)) < 1e-9:
        raise InputError(f"{name}: affine is not invertible (zero voxel size or collinear axes)")
    sp = spacing_from_affine(affine)
    # Array-aligned mm space is an isometry only when the voxel axes are orthogonal.
    cos = (lin.T @ lin) / np.outer(sp, sp)
    if np.max(np.abs(cos - np.eye(3))) > 1e-3:
        raise InputError(f"{name}: affine has sheared (non-orthogonal) voxel axes, which no scanner produces")


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size along the array axes: the norms of the affine's first three columns (mm)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def voxel_to_mm(ijk: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Voxel indices ``(..., 3)`` (fractional allowed) to array-aligned mm: ``ijk * spacing``."""
    return np.asarray(ijk, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)


def mm_to_voxel(points_mm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Array-aligned mm ``(..., 3)`` to (fractional) voxel indices: ``points / spacing``."""
    return np.asarray(points_mm, dtype=np.float64) / np.asarray(spacing, dtype=np.float64)


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Voxel indices ``(..., 3)`` to world (RAS+) mm through the ``(4, 4)`` affine."""
    a = np.asarray(affine, dtype=np.float64)
    return np.asarray(ijk, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """World (RAS+) mm ``(..., 3)`` to (fractional) voxel indices: the inverse of :func:`voxel_to_world`."""
    a = np.asarray(affine, dtype=np.float64)
    return np.linalg.solve(a[:3, :3], (np.asarray(xyz, dtype=np.float64) - a[:3, 3]).reshape(-1, 3).T).T.reshape(
        np.shape(xyz))


def voxel_grid_mm(shape: tuple[int, int, int], spacing: np.ndarray) -> np.ndarray:
    """Array-aligned mm coordinates of every voxel centre, ``(X, Y, Z, 3)`` float64."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def make_affine(spacing: tuple[float, float, float], origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """An axis-aligned affine with the given voxel size (mm) and origin (mm)."""
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = origin
    return aff


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def _final_suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``) so that writers that pick a
    format from the extension behave the same. A crash leaves the previous file untouched.
    The file gets the ordinary permissions of a new file (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _final_suffix(path)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    # Created with O_EXCL by hand rather than tempfile.mkstemp: mkstemp makes the file 0600,
    # and os.replace would carry that onto the output (unreadable to other users).
    # The name is claimed before the file exists and the creation sits inside the ``try``: a
    # signal turned into an exception (the CLI's SIGTERM handling) right after the file appears
    # must still reach the clean-up below (seen under heavy load in the kill tests).
    tmp_path: Path | None = None
    try:
        while True:
            tmp_path = path.parent / f".{base[:100]}.{secrets.token_hex(4)}.tmp{suffix}"
            try:
                fd = os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                tmp_path = None  # someone else's file: never ours to remove
                continue
            os.close(fd)
            break
        yield tmp_path
        if not tmp_path.is_file():
            raise OSError(f"{path}: the writer did not produce {tmp_path.name}")
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically; numpy scalars/arrays and paths are converted."""
    write_text_atomic(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------
# Memory limit, checksums, label-file provenance
# ---------------------------------------------------------------------------------------------

DEFAULT_MAX_GIB = 8.0


def max_input_gib() -> float:
    """The largest input (GiB of memory once loaded) accepted: ``$CARDIOINR_MAX_GIB``, default 8."""
    raw = os.environ.get("CARDIOINR_MAX_GIB", "").strip()
    if not raw:
        return DEFAULT_MAX_GIB
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"CARDIOINR_MAX_GIB={raw!r}: expected a positive number of GiB")
    return value


def check_memory(nbytes: float, where: str | os.PathLike, what: str = "reading it") -> None:
    """Refuse, before anything is read, an input whose loaded size (estimated from its header)
    is above :func:`max_input_gib`."""
    limit = max_input_gib()
    gib = float(nbytes) / 2**30
    if gib > limit:
        raise InputError(f"{where}: {what} needs about {gib:,.3g} GiB of memory, above the limit of {limit:g} GiB "
                         "(set CARDIOINR_MAX_GIB to raise it)")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(files: list[Path], root: Path) -> str:
    """One SHA-256 over several files: each file's path relative to ``root`` and its SHA-256."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: str(p.relative_to(root))):
        h.update(f"{f.relative_to(root).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


# Label arrays returned by load_label_volume, so that Sequence can name their file in messages
# and record its checksum: id(array) -> (weak reference, path, sha256). Nothing else changes.
_LABEL_SOURCES: dict[int, tuple[weakref.ref, str, str]] = {}
_LABEL_LOCK = threading.Lock()


def _remember_label_source(arr: np.ndarray, path: Path) -> np.ndarray:
    key = id(arr)
    try:
        sha = file_sha256(path)
    except OSError:
        return arr

    def forget(_ref: weakref.ref, key: int = key) -> None:
        with _LABEL_LOCK:
            entry = _LABEL_SOURCES.get(key)
            if entry is not None and entry[0] is _ref:
                del _LABEL_SOURCES[key]

    with _LABEL_LOCK:
        _LABEL_SOURCES[key] = (weakref.ref(arr, forget), str(path), sha)
    return arr


def _label_source(arr: object) -> tuple[str, str] | None:
    """``(path, sha256)`` of a label array loaded by :func:`load_label_volume`, else None."""
    with _LABEL_LOCK:
        entry = _LABEL_SOURCES.get(id(arr))
    if entry is None or entry[0]() is not arr:
        return None
    return entry[1], entry[2]


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------

_NIFTI_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError,
                                                  TypeError, MemoryError, IndexError)


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder, expected a file")


def _is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


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
    _require_file(path, what)
    try:
        # mmap=False: the data are copied into memory, so a file changed or truncated later
        # cannot alter them (or crash the process with SIGBUS).
        with _strict_nifti_header(), _no_warnings():
            img = nib.load(str(path), mmap=False)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: {what} is a {type(img).__name__}, not a NIfTI file")
        check_memory(_nifti_nbytes(img), path)  # from the header, before reading any voxel
        with _no_warnings():
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
        raise InputError(f"{path}: {what} is not a readable NIfTI file ({_first_line(e)})") from None
    except (HeaderDataError, ImageDataError, WrapStructError) as e:
        raise InputError(f"{path}: {what} has an invalid NIfTI header ({_first_line(e)})") from None
    except _NIFTI_ERRORS as e:
        raise InputError(f"{path}: {what} is a corrupt or truncated NIfTI file ({_first_line(e)})") from None
    except Exception as e:  # nibabel on a damaged header (e.g. OverflowError for an infinite vox_offset)
        raise InputError(f"{path}: {what} is an unreadable NIfTI file ({type(e).__name__}: {_first_line(e)})") from None
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: header has no valid affine")
    return np.asarray(data), np.asarray(affine, dtype=np.float64), img.header


_NIBABEL_LOCK = threading.RLock()


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    """Silence library warnings while reading files (pydicom's value-representation
    complaints, numpy's on damaged headers): whatever they point at is either harmless or
    refused by the checks that follow, with one clear line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _strict_nifti_header() -> Iterator[None]:
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


def _shown(text: str) -> str:
    """A value read from a file, fit for a one-line message (control characters escaped)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


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
        name=name or _stem(path),
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
    """Load a label map ``(X, Y, Z)`` (or ``(X, Y)`` for one slice) as uint8, checking its shape."""
    path = Path(path)
    data, _, _ = read_nifti(path, "label map")
    data = _as_volume(data, f"{path}: a label map must be 3D (X, Y, Z)")
    if shape is not None and data.shape != tuple(shape):
        raise InputError(f"{path}: label map has shape {data.shape}, image frames have {tuple(shape)}")
    return _remember_label_source(_label_array(data, path), path)


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
    if data.ndim == 3 and tuple(shape)[2] == 1 and data.shape[:2] == tuple(shape)[:2] and data.shape[2] == n_frames \
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


# ---------------------------------------------------------------------------------------------
# NumPy npz
# ---------------------------------------------------------------------------------------------


def save_npz(path: str | os.PathLike, seq: Sequence) -> Path:
    """Write a sequence (image, affine, frame interval, labels, reference frame) to ``.npz``."""
    arrays: dict[str, np.ndarray] = {
        "image": seq.image,
        "affine": seq.affine,
        "frame_interval_ms": np.float64(seq.frame_interval_ms),
        "ref_frame": np.int64(seq.ref_frame),
        "label_map": np.array(json.dumps(seq.label_map.as_dict())),
        "name": np.array(seq.name),
    }
    for t, lab in seq.labels.items():
        arrays[f"labels_{t}"] = lab
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def load_npz(path: str | os.PathLike) -> Sequence:
    """Read a sequence written by :func:`save_npz` (``image`` is required, the rest optional)."""
    import zipfile

    path = Path(path)
    _require_file(path, "npz sequence")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise InputError(f"{path}: holds a single .npy array, not an .npz archive")
            if "image" not in z.files:
                raise InputError(f"{path}: npz has no 'image' array (found {sorted(z.files)})")
            with contextlib.suppress(KeyError, AttributeError):  # uncompressed size, before reading
                check_memory(2 * z.zip.getinfo("image.npy").file_size, path)
            image = z["image"]
            affine = z["affine"] if "affine" in z.files else np.eye(4)
            dt = float(z["frame_interval_ms"]) if "frame_interval_ms" in z.files else 1.0
            ref = int(z["ref_frame"]) if "ref_frame" in z.files else 0
            lmap = LabelMap.coerce(json.loads(str(z["label_map"]))) if "label_map" in z.files else ACDC
            name = str(z["name"]) if "name" in z.files else _stem(path)
            labels = {int(k.split("_", 1)[1]): z[k] for k in z.files if k.startswith("labels_")}
    except InputError:
        raise
    except AttributeError:  # np.load returned a plain array (a .npy file named .npz)
        raise InputError(f"{path}: holds a single .npy array, not an .npz archive") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as e:
        raise InputError(f"{path}: corrupt or unreadable npz ({_first_line(e)})") from None
    return Sequence(image=image, affine=affine, frame_interval_ms=dt, labels=labels, ref_frame=ref,
                    label_map=lmap, name=name, meta={"source": str(path), "format": "npz", "sha256": file_sha256(path)})


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".npz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


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


def _natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [(0, int(s), "") if s.isdigit() else (1, 0, s.lower()) for s in re.split(r"(\d+)", name) if s]


def _visible_files(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: _natural_key(p.name))


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
    files = _visible_files(path)
    niftis = [f for f in files if _is_nifti_name(f)]
    if niftis:
        return load_nifti_frames(niftis, label_map=label_map, ref_frame=ref_frame,
                                 frame_interval_ms=frame_interval_ms, name=path.name)
    if not files and not any(p.is_dir() for p in path.iterdir()):
        raise InputError(f"{path}: folder is empty")
    return load_dicom_folder(path, label_map=label_map, ref_frame=ref_frame,
                             frame_interval_ms=frame_interval_ms, series_uid=series_uid)


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
    files = sorted(files, key=lambda p: _natural_key(p.name))
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
    patterns = sorted({re.sub(r"\d+", "#", _stem(f)) for f in files})
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
            with _strict_nifti_header(), _no_warnings():
                img = nib.load(str(f), mmap=False)
            total += _nifti_nbytes(img)
        except InputError:
            raise
        except Exception:
            return  # unreadable header: read_nifti names the file and the problem
    check_memory(total, folder, f"stacking its {len(files)} frames")


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------

# Images closer than this along the slice normal belong to one slice (scanners write positions
# with a few decimals; no cine has slices this thin).
_SLICE_TOL_MM = 0.05
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class _DicomImage:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    file: Path
    frame: int | None  # index inside a multi-frame file, None for a single-frame file
    series_uid: str
    series_desc: str
    rows: int
    cols: int
    iop: np.ndarray  # (6,) row direction cosines, then column direction cosines (LPS)
    ipp: np.ndarray  # (3,) position of the first transmitted pixel's centre (LPS, mm)
    pixel_spacing: np.ndarray  # (2,) (between rows, between columns), mm
    slice_step: float | None  # SpacingBetweenSlices or SliceThickness, mm
    trigger_ms: float | None
    instance: int
    slope: float
    intercept: float
    nominal_interval_ms: float | None = None
    n_cardiac_images: int | None = None


def dicom_affine(iop: np.ndarray, ipp: np.ndarray, pixel_spacing: np.ndarray, slice_step: float) -> np.ndarray:
    """NIfTI (RAS+) affine of a DICOM slice stack.

    Args:
        iop: ``ImageOrientationPatient`` ``(6,)``: row direction (the way the column index
            increases), then column direction (the way the row index increases), LPS.
        ipp: ``ImagePositionPatient`` ``(3,)`` of the first slice (lowest along the normal), LPS mm.
        pixel_spacing: ``PixelSpacing`` ``(2,)`` = (row spacing, column spacing), mm.
        slice_step: signed distance between consecutive slices along ``normal = row x col``, mm.

    Returns:
        ``(4, 4)`` matrix mapping ``(i, j, k, 1)`` to RAS mm, where ``i`` is the DICOM column
        index, ``j`` the row index and ``k`` the slice index, i.e. ``image[i, j] = pixel_array[j, i]``.
    """
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:6], dtype=np.float64)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    lps = np.eye(4)
    lps[:3, 0] = row * float(pixel_spacing[1])
    lps[:3, 1] = col * float(pixel_spacing[0])
    lps[:3, 2] = normal * float(slice_step)
    lps[:3, 3] = np.asarray(ipp, dtype=np.float64)
    return _LPS_TO_RAS @ lps


def _float_list(value: object, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _float_or_none(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _seq_item(ds: object, keyword: str) -> object | None:
    """First item of a DICOM sequence attribute, or None."""
    seq = getattr(ds, keyword, None)
    try:
        return seq[0] if seq is not None and len(seq) > 0 else None  # type: ignore[index, arg-type]
    except (TypeError, IndexError):
        return None


def _fg(per_frame: object, shared: object, seq_kw: str, attr: str) -> object | None:
    """An attribute of an enhanced multi-frame functional group, per-frame first, then shared."""
    for group in (per_frame, shared):
        item = _seq_item(group, seq_kw) if group is not None else None
        if item is not None and attr in item:  # type: ignore[operator]
            return getattr(item, attr)
    return None


def _scan_dicom_file(f: Path, ds: object) -> list[_DicomImage]:
    """The 2D images (with geometry) a DICOM dataset holds; header only, no pixels."""
    g = lambda kw, default=None: getattr(ds, kw, default)  # noqa: E731
    rows, cols = int(g("Rows")), int(g("Columns"))
    uid = str(g("SeriesInstanceUID", "") or "")
    desc = str(g("SeriesDescription", "") or "")
    instance = int(_float_or_none(g("InstanceNumber")) or 0)
    nominal = _float_or_none(g("NominalInterval"))
    n_cardiac = int(_float_or_none(g("CardiacNumberOfImages")) or 0) or None
    n_frames = int(_float_or_none(g("NumberOfFrames")) or 1)
    per_frame = g("PerFrameFunctionalGroupsSequence")
    out: list[_DicomImage] = []

    def need(value: np.ndarray | None, what: str, frame: int | None = None) -> np.ndarray:
        if value is None:
            where = f" (frame {frame})" if frame is not None else ""
            raise InputError(f"{f}: DICOM image lacks a valid {what}{where}, needed for its geometry")
        return value

    if per_frame is not None:  # enhanced multi-frame (e.g. Enhanced MR Image Storage)
        shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
        if len(per_frame) != n_frames:
            raise InputError(f"{f}: enhanced DICOM lists {len(per_frame)} frame groups for {n_frames} frames")
        for k, pf in enumerate(per_frame):
            spacing_between = _float_or_none(_fg(pf, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"))
            thickness = _float_or_none(_fg(pf, shared, "PixelMeasuresSequence", "SliceThickness"))
            trig = _float_or_none(_fg(pf, None, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime"))
            pos_in_time = _float_or_none(_fg(pf, None, "FrameContentSequence", "TemporalPositionIndex"))
            out.append(_DicomImage(
                file=f, frame=k, series_uid=uid, series_desc=desc, rows=rows, cols=cols,
                iop=need(_float_list(_fg(pf, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                         "ImageOrientationPatient", k),
                ipp=need(_float_list(_fg(pf, shared, "PlanePositionSequence", "ImagePositionPatient"), 3),
                         "ImagePositionPatient", k),
                pixel_spacing=need(_float_list(_fg(pf, shared, "PixelMeasuresSequence", "PixelSpacing"), 2),
                                   "PixelSpacing", k),
                slice_step=spacing_between or thickness,
                trigger_ms=trig,
                # temporal position orders frames when no trigger delay is given
                instance=int(pos_in_time) if pos_in_time is not None else k,
                slope=_float_or_none(_fg(pf, shared, "PixelValueTransformationSequence", "RescaleSlope")) or 1.0,
                intercept=_float_or_none(_fg(pf, shared, "PixelValueTransformationSequence", "RescaleIntercept")) or 0.0,
                nominal_interval_ms=nominal, n_cardiac_images=n_cardiac,
            ))
        return out

    iop = need(_float_list(g("ImageOrientationPatient"), 6), "ImageOrientationPatient")
    ipp = need(_float_list(g("ImagePositionPatient"), 3), "ImagePositionPatient")
    ps = need(_float_list(g("PixelSpacing"), 2), "PixelSpacing")
    step = _float_or_none(g("SpacingBetweenSlices")) or _float_or_none(g("SliceThickness"))
    trig0 = _float_or_none(g("TriggerTime"))
    slope = _float_or_none(g("RescaleSlope"))
    intercept = _float_or_none(g("RescaleIntercept"))
    slope = 1.0 if slope is None or slope == 0 else slope
    intercept = 0.0 if intercept is None else intercept
    if n_frames == 1:
        triggers: list[float | None] = [trig0]
    else:  # legacy multi-frame cine: every frame at one position, times from the frame timing
        vec = g("FrameTimeVector")
        frame_time = _float_or_none(g("FrameTime"))
        if vec is not None and len(vec) == n_frames:
            triggers = list(np.cumsum([float(v) for v in vec]) + (trig0 or 0.0))
        elif frame_time is not None:
            triggers = [(trig0 or 0.0) + k * frame_time for k in range(n_frames)]
        else:
            triggers = [None] * n_frames
    for k in range(n_frames):
        out.append(_DicomImage(
            file=f, frame=None if n_frames == 1 else k, series_uid=uid, series_desc=desc, rows=rows, cols=cols,
            iop=iop, ipp=ipp, pixel_spacing=ps, slice_step=step, trigger_ms=triggers[k],
            instance=instance, slope=slope, intercept=intercept,
            nominal_interval_ms=nominal, n_cardiac_images=n_cardiac,
        ))
    return out


# Storage SOP classes of images that must carry Rows/Columns: CT, MR (incl. enhanced), secondary capture.
_IMAGE_SOP_FAMILIES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.7")


def _is_image_sop_class(uid: str) -> bool:
    return any(uid == fam or uid.startswith(fam + ".") for fam in _IMAGE_SOP_FAMILIES)


def _scan_dicom_folder(path: Path) -> tuple[list[_DicomImage], int]:
    """Read every DICOM header under ``path``; return the images and the number of files skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    images: list[_DicomImage] = []
    skipped = 0
    files = sorted((p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)),
                   key=lambda p: _natural_key(str(p.relative_to(path))))
    for f in files:
        if _is_nifti_name(f) or f.suffix.lower() in {".json", ".txt", ".md", ".csv", ".cfg", ".npz", ".png", ".jpg"}:
            skipped += 1
            continue
        try:
            with _no_warnings():
                ds = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            if f.suffix.lower() in {".dcm", ".ima", ".dicom"}:
                raise InputError(f"{f}: not a valid DICOM file (no DICOM header)") from None
            skipped += 1  # not DICOM at all: a README, a thumbnail, ...
            continue
        except Exception as e:  # truncated or corrupt header
            raise InputError(f"{f}: corrupt or unreadable DICOM file ({_first_line(e)})") from None
        try:
            with _no_warnings():  # header values are decoded lazily, here: damaged ones raise
                found = _dicom_images_of(f, ds)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{f}: unreadable DICOM header ({_first_line(e)})") from None
        if found is None:
            skipped += 1
            continue
        images.extend(found)
    return images, skipped


def _dicom_images_of(f: Path, ds: object) -> list[_DicomImage] | None:
    """The images of one DICOM dataset, or None for a non-image object (DICOMDIR, report)."""
    if "Rows" not in ds or "Columns" not in ds:  # type: ignore[operator]
        # pydicom reads a truncated file without complaint, up to where it ends: an image
        # without Rows is broken, while DICOMDIRs, reports and presentation states are skipped.
        sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
                  or getattr(ds, "SOPClassUID", ""))
        if len(ds) == 0 or _is_image_sop_class(sop):  # type: ignore[arg-type]
            raise InputError(f"{f}: incomplete DICOM image header (no Rows/Columns): truncated or corrupt file")
        return None
    samples = getattr(ds, "SamplesPerPixel", 1)
    if int(samples or 1) != 1:
        raise InputError(f"{f}: colour DICOM ({samples} samples per pixel) is not an MR magnitude image")
    return _scan_dicom_file(f, ds)


def _read_dicom_pixels(f: Path) -> tuple[np.ndarray, bool]:
    """All frames of one DICOM file as ``(frames, rows, cols)`` and whether they are already rescaled.

    pydicom decodes uncompressed and most compressed syntaxes; when it cannot (no decoder
    plug-in installed), SimpleITK's GDCM reader is tried, which applies the rescale itself.
    """
    import pydicom

    try:
        with _no_warnings():
            arr = np.asarray(pydicom.dcmread(f).pixel_array)
        rescaled = False
    except Exception as e_pydicom:
        try:
            import SimpleITK as sitk

            with _no_warnings():
                arr = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))  # (frames, rows, cols)
            rescaled = True
        except Exception:
            raise InputError(f"{f}: cannot decode DICOM pixel data ({_first_line(e_pydicom)})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{f}: DICOM pixel data of shape {arr.shape} is not a stack of 2D grey images")
    return arr, rescaled


def _group_slices(images: list[_DicomImage], normal: np.ndarray) -> list[list[_DicomImage]]:
    """Cluster images by position along ``normal`` (ascending)."""
    pos = np.array([im.ipp @ normal for im in images])
    order = np.argsort(pos, kind="stable")
    groups: list[list[_DicomImage]] = []
    last = None
    for idx in order:
        if last is None or pos[idx] - last > _SLICE_TOL_MM:
            groups.append([])
        groups[-1].append(images[idx])
        last = pos[idx]
    return groups


def load_dicom_folder(
    path: str | os.PathLike,
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
    series_uid: str | None = None,
) -> Sequence:
    """Load a DICOM cine series from a folder (files may sit in subfolders).

    Images are grouped by ``SeriesInstanceUID`` (several series: pick one with ``series_uid``),
    then by slice position along the normal ``row x col`` of ``ImageOrientationPatient``, then
    ordered in time by ``TriggerTime`` (``NominalCardiacTriggerDelayTime`` for enhanced files),
    or by ``InstanceNumber`` when absent. Pixel values get ``RescaleSlope``/``RescaleIntercept``.
    The result is ``(X, Y, Z, T)`` = (columns, rows, slices, frames) with the RAS affine of
    :func:`dicom_affine`. The frame interval is the median trigger-time step (ms), else
    ``NominalInterval / CardiacNumberOfImages``, else 1; ``frame_interval_ms`` overrides both.

    Refused with a one-line :class:`InputError`: no DICOM images, several series without
    ``series_uid``, mixed orientations or image sizes, slices with unequal frame counts (a
    missing image), an uneven slice step (a missing slice), a sheared stack, two images at
    one slice and time, and unreadable or corrupt files.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    images, skipped = _scan_dicom_folder(path)
    if not images:
        raise InputError(f"{path}: no NIfTI or DICOM images found ({skipped} other files)")

    by_series: dict[str, list[_DicomImage]] = {}
    for im in images:
        by_series.setdefault(im.series_uid, []).append(im)
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(f"{path}: no DICOM series {series_uid!r} (found: {', '.join(sorted(by_series))})")
        images = by_series[series_uid]
    elif len(by_series) > 1:
        listed = "; ".join(
            f"{_shown(uid) or '(no UID)'} '{_shown(ims[0].series_desc)}' ({len(ims)} images)"
            for uid, ims in sorted(by_series.items())
        )
        raise InputError(f"{path}: holds {len(by_series)} DICOM series ({listed}); choose one with series_uid")
    uid = images[0].series_uid

    # One geometry for the whole series.
    first = images[0]
    for im in images[1:]:
        if (im.rows, im.cols) != (first.rows, first.cols):
            raise InputError(f"{path}: images of different sizes in one series ({first.file.name}: "
                             f"{first.rows}x{first.cols}, {im.file.name}: {im.rows}x{im.cols})")
        if np.max(np.abs(im.iop - first.iop)) > 1e-3:
            raise InputError(f"{path}: images with different orientations in one series "
                             f"({first.file.name} and {im.file.name}); not one slice stack")
        if np.max(np.abs(im.pixel_spacing - first.pixel_spacing)) > 1e-3:
            raise InputError(f"{path}: images with different pixel spacing in one series "
                             f"({first.file.name} and {im.file.name})")
    row, col = first.iop[:3], first.iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise InputError(f"{first.file}: ImageOrientationPatient {first.iop.tolist()} is not two orthogonal unit vectors")
    normal = np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))

    slices = _group_slices(images, normal)
    positions = np.array([np.mean([im.ipp @ normal for im in s]) for s in slices])
    have_trigger = all(im.trigger_ms is not None for im in images)
    for s in slices:
        s.sort(key=(lambda im: (im.trigger_ms, im.instance, im.frame or 0)) if have_trigger
               else (lambda im: (im.instance, im.frame or 0, str(im.file))))
    for s, p in zip(slices, positions):
        keys = [im.trigger_ms if have_trigger else (im.instance, im.frame) for im in s]
        for a, b, ka, kb in zip(s, s[1:], keys, keys[1:]):
            if ka == kb:
                what = f"trigger time {ka} ms" if have_trigger else f"instance number {a.instance}"
                raise InputError(f"{path}: two images at slice {p:.2f} mm with {what} ({a.file.name}, "
                                 f"{b.file.name}); repeated acquisitions or mixed image types in one series")
    counts = [len(s) for s in slices]
    n_t = max(set(counts), key=lambda c: (counts.count(c), c))  # the usual count; the odd slice is named
    for s, p, n in zip(slices, positions, counts):
        if n != n_t:
            raise InputError(f"{path}: slice at {p:.2f} mm along the normal has {n} images, others have {n_t} "
                             f"(missing or extra images; {len(slices)} slices in all)")

    # Slice step: even, and the stack not sheared (slice origins along the normal).
    n_z = len(slices)
    if n_z > 1:
        gaps = np.diff(positions)
        step = float((positions[-1] - positions[0]) / (n_z - 1))
        median_gap = float(np.median(gaps))
        bad = np.abs(gaps - median_gap) > max(0.1, 0.02 * median_gap)
        if np.any(bad):
            k = int(np.argmax(bad))
            raise InputError(f"{path}: uneven slice step: gap of {gaps[k]:.2f} mm between slices at "
                             f"{positions[k]:.2f} and {positions[k + 1]:.2f} mm, usually {median_gap:.2f} mm "
                             "(a missing slice?)")
        ipp0 = slices[0][0].ipp
        for s in slices[1:]:
            d = s[0].ipp - ipp0
            if np.linalg.norm(d - (d @ normal) * normal) > max(0.1, 0.05 * abs(step)):
                raise InputError(f"{path}: slices are not stacked along their normal ({s[0].file.name} is "
                                 "shifted in-plane: gantry tilt or a sheared stack), which is not supported")
    else:
        step = first.slice_step or 1.0

    # Pixels, read once per file, rescaled to float32 (X, Y, Z, T).
    check_memory(math.prod((first.cols, first.rows, n_z, n_t)) * 4, path)
    volume = np.empty((first.cols, first.rows, n_z, n_t), dtype=np.float32)
    multi_frame: dict[Path, tuple[np.ndarray, bool]] = {}  # multi-frame files are decoded once
    for k, s in enumerate(slices):
        for t, im in enumerate(s):
            if im.frame is None:
                frames, rescaled = _read_dicom_pixels(im.file)
            else:
                if im.file not in multi_frame:
                    multi_frame[im.file] = _read_dicom_pixels(im.file)
                frames, rescaled = multi_frame[im.file]
            idx = im.frame or 0
            if idx >= frames.shape[0] or frames.shape[1:] != (first.rows, first.cols):
                raise InputError(f"{im.file}: pixel data of shape {frames.shape} does not match its header "
                                 f"({first.rows}x{first.cols}, frame {idx})")
            pix = frames[idx].astype(np.float64)
            if not rescaled:
                pix = pix * im.slope + im.intercept
            volume[:, :, k, t] = pix.T  # image[i, j] = pixel_array[j, i]: i runs along a row

    # Frame interval (ms) from trigger times.
    if frame_interval_ms is not None:
        dt, dt_from = float(frame_interval_ms), "argument"
    else:
        dt, dt_from = 1.0, "default (unknown)"
        if have_trigger and n_t > 1:
            steps = np.concatenate([np.diff([im.trigger_ms for im in s]) for s in slices])
            med = float(np.median(steps))
            if med > 0:
                dt, dt_from = med, "trigger times"
        if dt_from.startswith("default") and first.nominal_interval_ms and n_t > 1:
            dt, dt_from = first.nominal_interval_ms / (first.n_cardiac_images or n_t), "nominal interval"

    affine = dicom_affine(first.iop, slices[0][0].ipp, first.pixel_spacing, step)
    meta = {
        "source": str(path),
        "format": "dicom",
        "series_uid": uid,
        "series_description": first.series_desc,
        "n_images": len(images),
        "slice_positions_mm": positions.round(4).tolist(),
        "frame_interval_from": dt_from,
        "enhanced_multiframe": first.frame is not None,
        "sha256": files_sha256(sorted({im.file for im in images}), path),
    }
    if have_trigger:
        meta["trigger_times_ms"] = [float(im.trigger_ms) for im in slices[0]]  # type: ignore[arg-type]
    return Sequence(image=volume, affine=affine, frame_interval_ms=dt, ref_frame=ref_frame,
                    label_map=label_map, name=path.name, meta=meta)


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def attach_label_arrays(seq: Sequence, labels: Mapping[int, np.ndarray]) -> Sequence:
    """Attach label arrays ``{frame: (X, Y, Z)}`` in one validation pass (cheaper than repeated
    :meth:`Sequence.with_labels` for many frames)."""
    new = dict(seq.labels)
    for t, lab in labels.items():
        new[check_frame_index(t, seq.n_frames, seq.name)] = lab
    return replace(seq, labels=new)


def attach_labels(seq: Sequence, labels: Mapping[int, str | os.PathLike]) -> Sequence:
    """Load label files for the given frames and attach them to ``seq``."""
    arrays = {check_frame_index(t, seq.n_frames, seq.name): load_label_volume(p, seq.shape) for t, p in labels.items()}
    return attach_label_arrays(seq, arrays)
