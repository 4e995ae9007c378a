"""The cine sequence type and its label codes.

Everything that enters the package goes through :class:`Sequence`: the image array, its
voxel-to-world affine (millimetres), the frame interval and the label maps travel together,
so no motion is ever computed in ambiguous voxel units. Coordinates follow
:mod:`cardioinr.geometry` (array-aligned mm = ``index * spacing``, an isometry of world).

Label maps read from files carry their provenance explicitly: the reader passes a
:class:`LabelSource` (path, SHA-256) with the array (:meth:`Sequence.with_labels`,
:func:`attach_label_arrays`, or :func:`cardioinr.io.nifti.attach_labels` which does both), and
:meth:`Sequence.label_provenance` reports it while the labels stay unchanged.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, replace

import numpy as np

from cardioinr.core.errors import InputError
from cardioinr.geometry.grid import Grid, spacing_from_affine, spatial_dim, validate_affine

__all__ = [
    "ACDC",
    "SUNNYBROOK",
    "UKBB",
    "LabelMap",
    "LabelSource",
    "Sequence",
    "attach_label_arrays",
    "check_frame_index",
    "validate_image",
]

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
        """Parse ``"acdc"``, ``"sunnybrook"``, ``"ukbb"`` or ``"lv=1,myo=2[,rv=3]"``."""
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
#: UK Biobank's short-axis segmentations (Bai et al. 2018): 1 LV, 2 MYO, 3 RV.
UKBB = LabelMap(lv=1, myo=2, rv=3)
_PRESETS = {"acdc": ACDC, "sunnybrook": SUNNYBROOK, "ukbb": UKBB}


# ---------------------------------------------------------------------------------------------
# The sequence type
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSource:
    """The file a label map was read from: its path and the SHA-256 of its bytes (hex)."""

    path: str
    sha256: str


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
        label_sources: frame -> ``{"path", "sha256", "crc32"}`` of the label maps that came
            from files: the file and the CRC-32 of the uint8 labels as attached, so that
            :meth:`label_provenance` drops a frame whose labels were replaced since. Filled by
            construction from ``new_label_sources``; carried along by ``dataclasses.replace``.
        new_label_sources: (init only) frame -> :class:`LabelSource` of label arrays in
            ``labels`` that were just read from a file: messages about them name the file
            first, and they are recorded in ``label_sources``.

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
    label_sources: dict[int, dict] = field(default_factory=dict, repr=False)
    new_label_sources: InitVar[Mapping[int, LabelSource] | None] = None

    def __post_init__(self, new_label_sources: Mapping[int, LabelSource] | None = None) -> None:
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
        fresh = {check_frame_index(t, self.n_frames, where): s for t, s in (new_label_sources or {}).items()}
        sources = dict(self.label_sources or {})  # a new dict: replace() shares the old one
        checked = {}
        for t, lab in self.labels.items():
            t = check_frame_index(t, self.n_frames, where)
            src = fresh.get(t)
            checked[t] = self._check_labels(lab, t, src)
            if src is not None:  # provenance of a label file, kept while the labels are unchanged
                sources[t] = {"path": src.path, "sha256": src.sha256, "crc32": zlib.crc32(checked[t].tobytes())}
        self.labels = checked
        self.label_sources = sources

    def _where(self) -> str:
        src = self.meta.get("source") if isinstance(self.meta, dict) else None
        return " ".join(str(src).split()) if isinstance(src, (str, os.PathLike)) and str(src) else self.name

    def label_provenance(self) -> dict[int, dict]:
        """``{frame: {"path", "sha256"}}`` of the label maps that came from files and are unchanged."""
        out = {}
        for t, info in self.label_sources.items():
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
    def grid(self) -> Grid:
        """The spatial grid: shape ``(X, Y, Z)`` and affine, with the maps between voxel
        indices, array-aligned mm and world mm (see :class:`cardioinr.geometry.Grid`)."""
        return Grid(self.shape, self.affine)

    @property
    def is_2d(self) -> bool:
        return spatial_dim(self.shape) == 2

    @property
    def ndim_space(self) -> int:
        """2 for a single slice, 3 for a stack."""
        return 2 if self.is_2d else 3

    def frame_times_ms(self) -> np.ndarray:
        """Nominal time of each frame from frame 0, ms, shape ``(T,)``."""
        return np.arange(self.n_frames) * self.frame_interval_ms

    # -- label handling ------------------------------------------------------------------------
    def _check_labels(self, lab: np.ndarray, t: int, src: LabelSource | None = None) -> np.ndarray:
        # A label file names itself first: "labels.nii.gz: label map (frame 0 of cine.nii.gz) ..."
        what = f"{src.path}: label map (frame {t} of {self._where()})" if src else f"{self._where()}: label map for frame {t}"
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

    def with_labels(self, frame: int, labels: np.ndarray, source: LabelSource | None = None) -> "Sequence":
        """A copy with ``labels`` ``(X, Y, Z)`` (or ``(X, Y)`` for one slice) at ``frame``;
        ``source``: the file they were read from, when they were (see :class:`LabelSource`)."""
        t = check_frame_index(frame, self.n_frames, self.name)
        new = dict(self.labels)
        new[t] = labels
        return replace(self, labels=new, new_label_sources={t: source} if source is not None else None)

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


def attach_label_arrays(seq: Sequence, labels: Mapping[int, np.ndarray],
                        sources: Mapping[int, LabelSource] | None = None) -> Sequence:
    """Attach label arrays ``{frame: (X, Y, Z)}`` in one validation pass (cheaper than repeated
    :meth:`Sequence.with_labels` for many frames). ``sources``: ``{frame: LabelSource}`` of the
    arrays that were read from files (frames as in ``labels``)."""
    new = dict(seq.labels)
    for t, lab in labels.items():
        new[check_frame_index(t, seq.n_frames, seq.name)] = lab
    fresh = {check_frame_index(t, seq.n_frames, seq.name): s for t, s in (sources or {}).items()}
    return replace(seq, labels=new, new_label_sources=fresh or None)
