"""Reading a whole fit folder back (for the report and other tools): the contract's files, the
input cine they came from, and notes on whatever is missing or odd."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.core.console import first_line
from cardioinr.core.errors import CardioInrError, InputError
from cardioinr.fit import load_field
from cardioinr.geometry import spacing_from_affine
from cardioinr.io import ACDC, LabelMap, Sequence, load_sequence
from cardioinr.outputs.contract import (
    DISPLACEMENT,
    FIELD,
    LABELS,
    METRICS,
    read_displacement,
    read_labels_4d,
    read_metrics,
)

__all__ = ["FitFolder", "load_fit_folder"]


@dataclass
class FitFolder:
    """Everything :func:`build_report` could read from a fit output folder.

    Attributes:
        path: the folder.
        displacement: ``(X, Y, Z, T, 3)`` float32 mm.
        affine: ``(4, 4)`` of the displacement file.
        labels: ``(X, Y, Z, T)`` propagated labels or None.
        field: the fitted field or None.
        metrics: parsed ``metrics.json`` (empty without it).
        seq: the input sequence or None.
        ref_frame, frame_interval_ms, label_map: resolved from metrics, the sequence or the data.
        notes: what was missing or odd (shown on the page).
    """

    path: Path
    displacement: np.ndarray
    affine: np.ndarray
    labels: np.ndarray | None
    field: Any
    metrics: dict
    seq: Sequence | None
    ref_frame: int
    frame_interval_ms: float
    label_map: LabelMap
    notes: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> np.ndarray:
        return spacing_from_affine(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.displacement.shape[:3])  # type: ignore[return-value]

    @property
    def n_frames(self) -> int:
        return int(self.displacement.shape[3])

    @property
    def ref_labels(self) -> np.ndarray | None:
        if self.seq is not None and self.seq.ref_labels is not None:
            return self.seq.ref_labels
        if self.labels is not None:
            return self.labels[..., self.ref_frame]
        return None


def load_fit_folder(out_dir: str | os.PathLike, seq: Sequence | None = None, *,
                    written: Any = None) -> FitFolder:
    """Read a fit output folder for the report (see :class:`FitFolder`).

    ``written``: the fit result whose outputs go to ``out_dir`` (with ``seq`` its sequence;
    :func:`~cardioinr.outputs.save.save_fit` writes its NIfTI files in a thread meanwhile): its
    displacement and labels are used as written (float32 and uint8) instead of being decoded
    from the files again (0.75 s of a 128 x 128 x 10 x 25 stack's report).

    Raises:
        InputError: the folder or its ``displacement.nii.gz`` is missing or unreadable.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: fit output folder not found")
    notes: list[str] = []
    metrics: dict = {}
    if (out / METRICS).is_file():
        try:
            metrics = read_metrics(out)
        except (OSError, ValueError) as e:
            notes.append(f"{METRICS} unreadable ({first_line(e)})")
            metrics = {}
    else:
        notes.append(f"no {METRICS}: fit settings and losses are not shown")

    if written is not None and seq is not None:
        disp, affine = np.asarray(written.displacement, dtype=np.float32), seq.affine
    else:
        written = None
        disp, affine = read_displacement(out / DISPLACEMENT, "displacement", finite=False)
    shape3, n_t = tuple(disp.shape[:3]), disp.shape[3]

    labels = None
    lpath = out / LABELS
    if written is not None and written.labels is not None:
        labels = np.asarray(written.labels, dtype=np.uint8)
    elif lpath.is_file():
        try:
            labels = read_labels_4d(lpath, shape3 + (n_t,), "propagated labels")
        except CardioInrError as e:
            notes.append(f"{LABELS} ignored ({first_line(e)})")
    else:
        notes.append(f"no {LABELS}: strain, cavity and contours need the reference labels (fit with --seg)")

    field_ = None
    fpath = out / FIELD
    if fpath.is_file():
        try:
            field_ = load_field(fpath)
        except CardioInrError as e:
            notes.append(f"{FIELD} ignored ({first_line(e)}); strain from finite differences")

    meta_seq = metrics.get("sequence") if isinstance(metrics.get("sequence"), dict) else {}
    label_map = ACDC
    try:
        if meta_seq.get("label_map") is not None:
            label_map = LabelMap.coerce(meta_seq["label_map"])
        elif seq is not None:
            label_map = seq.label_map
    except CardioInrError as e:
        notes.append(f"label map in {METRICS} ignored ({first_line(e)})")
    ref = meta_seq.get("ref_frame")
    if seq is None and meta_seq.get("source"):
        src = Path(str(meta_seq["source"]))
        if src.exists():
            try:
                seq = load_sequence(src, label_map=label_map, ref_frame=ref if isinstance(ref, int) else None)
            except CardioInrError as e:
                notes.append(f"input {src} not loaded ({first_line(e)}); images are not shown")
        else:
            notes.append(f"input {src} not found; images are not shown")
    elif seq is None:
        notes.append(f"input cine unknown ({METRICS} has no sequence source); images are not shown")
    if seq is not None and (seq.shape != shape3 or seq.n_frames != n_t):
        notes.append(f"input {seq.name} has shape {seq.shape} x {seq.n_frames} frames, the fit "
                     f"{shape3} x {n_t}; images are not shown")
        seq = None

    if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < n_t:
        ref_frame = ref
    elif seq is not None:
        ref_frame = seq.ref_frame
    else:
        zero = [t for t in range(n_t) if not np.any(disp[:, :, :, t])]
        ref_frame = zero[0] if zero else 0
    dt = meta_seq.get("frame_interval_ms")
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not dt > 0:
        dt = seq.frame_interval_ms if seq is not None else 1.0
    return FitFolder(path=out, displacement=disp, affine=np.asarray(affine, dtype=np.float64), labels=labels,
                     field=field_, metrics=metrics, seq=seq, ref_frame=int(ref_frame),
                     frame_interval_ms=float(dt), label_map=label_map, notes=notes)


