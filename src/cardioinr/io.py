"""Reading and writing cine sequences with their geometry.

Everything that enters the package goes through :class:`Sequence`: the image array, its
voxel-to-world affine (millimetres), the frame interval and the label maps travel together,
so no motion is ever computed in ambiguous voxel units.

Coordinate conventions used throughout the package
--------------------------------------------------
* *array-aligned millimetres* ("mm space"): ``p = index * spacing`` per array axis (i, j, k).
  Displacements are expressed along the array axes in millimetres (the output contract).
  For any affine whose columns are orthogonal (every scanner geometry, oblique included) this
  is an isometry of world space, so distances, strains and Jacobians are physical.
* *world*: ``affine @ [i, j, k, 1]``, used only to read and write files.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError

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
            try:
                code = int(value)
            except ValueError:
                raise InputError(f"label map {text!r}: code for {name!r} is not an integer") from None
            if not 1 <= code <= 255:
                raise InputError(f"label map {text!r}: code for {name!r} must be in 1..255")
            codes[name] = code
        used = [c for c in codes.values() if c is not None]
        if len(set(used)) != len(used):
            raise InputError(f"label map {text!r}: two structures share one code")
        if not used:
            raise InputError(f"label map {text!r}: no structure given")
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
        self.image = np.asarray(self.image)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        validate_image(self.image, self.name)
        self.image = self.image.astype(np.float32, copy=False)
        validate_affine(self.affine, self.name)
        if not np.isfinite(self.frame_interval_ms) or self.frame_interval_ms <= 0:
            raise InputError(f"{self.name}: frame interval must be a positive number of ms, got {self.frame_interval_ms}")
        self.ref_frame = check_frame_index(self.ref_frame, self.n_frames, self.name)
        self.labels = {check_frame_index(t, self.n_frames, self.name): self._check_labels(lab, t) for t, lab in self.labels.items()}

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
        return np.arange(self.n_frames) * self.frame_interval_ms

    # -- label handling ------------------------------------------------------------------------
    def _check_labels(self, lab: np.ndarray, t: int) -> np.ndarray:
        lab = np.asarray(lab)
        if lab.ndim == 2 and self.is_2d:
            lab = lab[:, :, None]
        if lab.shape != self.shape:
            raise InputError(
                f"{self.name}: label map for frame {t} has shape {lab.shape}, image frames have {self.shape}"
            )
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.isfinite(lab)) or not np.allclose(lab, np.round(lab)):
                raise InputError(f"{self.name}: label map for frame {t} holds non-integer values")
        if lab.min() < 0 or lab.max() > 255:
            raise InputError(f"{self.name}: label map for frame {t} has codes outside 0..255")
        lab = lab.astype(np.uint8)
        unknown = set(np.unique(lab).tolist()) - {0} - self.label_map.codes()
        if unknown:
            raise InputError(
                f"{self.name}: label map for frame {t} has codes {sorted(unknown)} not in the label map "
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
    try:
        t = int(t)
    except (TypeError, ValueError):
        raise InputError(f"{name}: frame index {t!r} is not an integer") from None
    if not -n_frames <= t < n_frames:
        raise InputError(f"{name}: frame {t} is out of range (the sequence has {n_frames} frames)")
    return t % n_frames


def validate_image(image: np.ndarray, name: str) -> None:
    """Check a cine array ``(X, Y, Z, T)``: 4 dimensions, at least 2 frames, finite, not constant."""
    if image.ndim != 4:
        raise InputError(
            f"{name}: expected a 4D cine (X, Y, Z, T), got {image.ndim}D of shape {image.shape}"
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
    if float(image.max()) == float(image.min()):
        raise InputError(f"{name}: image is constant (value {float(image.min())}); nothing to register")


def validate_affine(affine: np.ndarray, name: str) -> None:
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``) so that writers that pick a
    format from the extension behave the same. A crash leaves the previous file untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
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
# NIfTI
# ---------------------------------------------------------------------------------------------

_NIFTI_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError)


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder, expected a file")


def read_nifti(path: str | os.PathLike, what: str = "image") -> tuple[np.ndarray, np.ndarray, object]:
    """Read a NIfTI file fully; return ``(data, affine, header)``. Corrupt files raise :class:`InputError`."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    _require_file(path, what)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # reads (and decompresses) everything now
    except ImageFileError as e:
        raise InputError(f"{path}: not a readable NIfTI file ({_first_line(e)})") from None
    except _NIFTI_ERRORS as e:
        raise InputError(f"{path}: corrupt or truncated NIfTI file ({_first_line(e)})") from None
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: header has no valid affine")
    return np.asarray(data), np.asarray(affine, dtype=np.float64), img.header


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _frame_interval_from_header(header: object) -> float | None:
    """pixdim[4] converted to ms using the NIfTI time unit; None when absent."""
    try:
        dt = float(header["pixdim"][4])  # type: ignore[index]
        _, tunit = header.get_xyzt_units()  # type: ignore[attr-defined]
    except Exception:
        return None
    if not np.isfinite(dt) or dt <= 0:
        return None
    return dt * {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}.get(tunit, 1.0)


def load_nifti_sequence(
    path: str | os.PathLike,
    *,
    frame_interval_ms: float | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    name: str | None = None,
) -> Sequence:
    """Load a 4D cine NIfTI ``(X, Y, Z, T)`` (ACDC style; a 3D ``(X, Y, T)`` file is refused)."""
    path = Path(path)
    data, affine, header = read_nifti(path, "cine")
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, T) written by some tools
        data = data[:, :, :, 0, :]
    if data.ndim != 4:
        raise InputError(
            f"{path}: expected a 4D cine (X, Y, Z, T), got {data.ndim}D of shape {data.shape}"
        )
    dt = frame_interval_ms or _frame_interval_from_header(header) or 1.0
    return Sequence(
        image=data,
        affine=affine,
        frame_interval_ms=dt,
        ref_frame=ref_frame,
        label_map=label_map,
        name=name or _stem(path),
        meta={"source": str(path), "frame_interval_from_header": frame_interval_ms is None},
    )


def load_label_volume(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Load a label map ``(X, Y, Z)`` (or ``(X, Y)`` for one slice) as uint8, checking its shape."""
    path = Path(path)
    data, _, _ = read_nifti(path, "label map")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{path}: a label map must be 3D (X, Y, Z), got shape {data.shape}")
    if shape is not None and data.shape != tuple(shape):
        raise InputError(f"{path}: label map has shape {data.shape}, image frames have {tuple(shape)}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: label map holds NaN or infinite values")
    if not np.allclose(data, np.round(data)) or data.min() < 0 or data.max() > 255:
        raise InputError(f"{path}: label map must hold integer codes 0..255")
    return data.astype(np.uint8)


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, frame_interval_ms: float | None = None) -> Path:
    """Write ``data`` with ``affine`` atomically (float32 or uint8 kept as given)."""
    import nibabel as nib

    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units(xyz="mm", t="msec")
    if frame_interval_ms is not None and data.ndim >= 4:
        zooms = list(img.header.get_zooms())
        zooms[3] = float(frame_interval_ms)
        img.header.set_zooms(zooms)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def save_sequence_nifti(path: str | os.PathLike, seq: Sequence) -> Path:
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
            if "image" not in z.files:
                raise InputError(f"{path}: npz has no 'image' array (found {sorted(z.files)})")
            image = z["image"]
            affine = z["affine"] if "affine" in z.files else np.eye(4)
            dt = float(z["frame_interval_ms"]) if "frame_interval_ms" in z.files else 1.0
            ref = int(z["ref_frame"]) if "ref_frame" in z.files else 0
            lmap = LabelMap(**json.loads(str(z["label_map"]))) if "label_map" in z.files else ACDC
            name = str(z["name"]) if "name" in z.files else _stem(path)
            labels = {int(k.split("_", 1)[1]): z[k] for k in z.files if k.startswith("labels_")}
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, zlib.error) as e:
        raise InputError(f"{path}: corrupt or unreadable npz ({_first_line(e)})") from None
    return Sequence(image=image, affine=affine, frame_interval_ms=dt, labels=labels, ref_frame=ref,
                    label_map=lmap, name=name, meta={"source": str(path)})


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".npz"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def load_sequence(
    path: str | os.PathLike,
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
) -> Sequence:
    """Load a cine from a 4D NIfTI, an ``.npz``, a folder of per-frame NIfTI or a DICOM folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_dir():
        return load_folder(path, label_map=label_map, ref_frame=ref_frame, frame_interval_ms=frame_interval_ms)
    if path.name.endswith(".npz"):
        seq = load_npz(path)
        seq = replace(seq, label_map=label_map) if label_map is not ACDC else seq
        return seq.with_ref_frame(ref_frame) if ref_frame else seq
    if path.name.endswith((".nii", ".nii.gz")):
        return load_nifti_sequence(path, frame_interval_ms=frame_interval_ms, label_map=label_map, ref_frame=ref_frame)
    raise InputError(f"{path}: unknown input format (expected .nii, .nii.gz, .npz, or a folder of frames or DICOM)")


def load_folder(
    path: Path,
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
) -> Sequence:
    """A folder holding either per-frame NIfTI volumes or a DICOM series."""
    raise InputError(f"{path}: folder input is not supported yet")


def attach_labels(seq: Sequence, labels: Mapping[int, str | os.PathLike]) -> Sequence:
    """Load label files for the given frames and attach them to ``seq``."""
    out = seq
    for t, p in labels.items():
        out = out.with_labels(t, load_label_volume(p, seq.shape))
    return out
