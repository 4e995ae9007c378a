"""Reading a :class:`~cardioinr.io.study.Study`: a short-axis stack and its long-axis cines.

* :func:`load_study`: the SAX file (any input :func:`~cardioinr.io.load.load_sequence` reads)
  and LAX files given one by one, each view named from its file name (:func:`lax_view_name`);
* :func:`load_study_folder`: a folder with UK Biobank names (``sa.nii.gz``, ``la_2ch.nii.gz``,
  ``la_3ch.nii.gz``, ``la_4ch.nii.gz`` and their label files);
* :func:`load_dicom_study`: a DICOM exam holding several series, classified by geometry;
* :func:`load_study_any`: picks one of the above from the path.

Every view's reference frame is the SAX reference frame's cycle phase: frame
``round(ref_sax / T_sax * T_view) mod T_view`` (0 when the SAX reference is frame 0). A
``frame_interval_ms`` given for the SAX is scaled to each view's frame count (one cardiac cycle).
Label files hold either the reference frame ``(X, Y, Z)`` or every frame ``(X, Y, Z, T)``.
Anything unusable raises a one-line :class:`InputError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from cardioinr.core.errors import InputError
from cardioinr.io._common import file_stem, is_nifti_name, shown, visible_files
from cardioinr.io.dicom import DicomSeriesInfo, list_dicom_series, load_dicom_series
from cardioinr.io.load import load_sequence
from cardioinr.io.nifti import label_source, load_label_file
from cardioinr.io.sequence import UKBB, LabelMap, Sequence, attach_label_arrays
from cardioinr.io.study import Study, plane_crosses_grid

__all__ = [
    "looks_like_study",
    "UKBB",
    "lax_view_name",
    "load_dicom_study",
    "load_study",
    "load_study_any",
    "load_study_folder",
]

PathLike = str | os.PathLike

# UKBB (io.sequence): UK Biobank label codes, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool;
# the default of load_study_folder. Its 4-chamber seg4_la_4ch adds 4 LA and 5 RA.

# A long-axis view named in a file name or DICOM description: "2ch", "la_4CH", "4 chamber",
# "two_chamber", and the usual acronyms (VLA = 2-chamber, LVOT = 3-chamber, HLA = 4-chamber).
_VIEW_PATTERNS = (
    (re.compile(r"(?<!\d)([234])[\s_-]*ch(?:amber|amb)?(?![a-z])"), None),
    (re.compile(r"(?<![a-z])(two|three|four)[\s_-]*ch(?:amber|amb)?(?![a-z])"), None),
    (re.compile(r"(?<![a-z])vla(?![a-z])"), "2ch"),
    (re.compile(r"(?<![a-z])lvot(?![a-z])"), "3ch"),
    (re.compile(r"(?<![a-z])hla(?![a-z])"), "4ch"),
)
_WORDS = {"two": "2", "three": "3", "four": "4"}
# Slice normals closer than this to the SAX normal (|cos| above) are short-axis-like planes.
_PARALLEL_COS = float(np.cos(np.deg2rad(20.0)))


def lax_view_name(text: str) -> str | None:
    """``"2ch"``, ``"3ch"`` or ``"4ch"`` when ``text`` (a file name, a series description)
    names a standard long-axis view, else None. Case-insensitive."""
    low = str(text).lower()
    for pattern, fixed in _VIEW_PATTERNS:
        m = pattern.search(low)
        if m:
            return fixed or f"{_WORDS.get(m.group(1), m.group(1))}ch"
    return None


def _view_names(texts: Iterable[str]) -> list[str]:
    """A view name per text: the standard name it holds, else ``lax1``, ``lax2``... in order."""
    out, n = [], 0
    for text in texts:
        name = lax_view_name(text)
        if name is None:
            n += 1
            name = f"lax{n}"
        out.append(name)
    return out


def _as_paths(paths: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _attach_label_file(seq: Sequence, path: PathLike, *, drop_unknown: bool = False) -> tuple[Sequence, list[int]]:
    """Labels of ``seq``'s reference frame ``(X, Y, Z)`` or of every frame ``(X, Y, Z, T)`` from
    one file, with provenance. ``drop_unknown``: codes outside the label map become background
    (returned, sorted) instead of being refused."""
    path = Path(path)
    labels = load_label_file(path, seq.shape, seq.n_frames, seq.ref_frame)
    dropped: set[int] = set()
    if drop_unknown:
        keep = np.array(sorted(seq.label_map.codes() | {0}), dtype=np.uint8)
        for t, lab in labels.items():
            bad = ~np.isin(lab, keep)
            if bad.any():
                dropped |= set(np.unique(lab[bad]).tolist())
                labels[t] = np.where(bad, 0, lab).astype(np.uint8)
    src = label_source(path)
    # Changed labels are no longer the file's: no provenance for them.
    sources = {t: src for t in labels} if src is not None and not dropped else None
    return attach_label_arrays(seq, labels, sources), sorted(dropped)


def _align_view(view: Sequence, sax: Sequence, frame_interval_ms: float | None) -> Sequence:
    """The view with the SAX reference frame's cycle phase as reference frame and, when the SAX
    interval was given, that interval scaled to the view's frame count."""
    changes: dict = {"ref_frame": round(sax.ref_frame / sax.n_frames * view.n_frames) % view.n_frames}
    if frame_interval_ms is not None:
        changes["frame_interval_ms"] = float(frame_interval_ms) * sax.n_frames / view.n_frames
        changes["meta"] = {**view.meta, "frame_interval_from": "argument (scaled to the view's frame count)"}
    if all(getattr(view, k) == v for k, v in changes.items()):
        return view
    return replace(view, **changes)


def _single_slice(seq: Sequence) -> Sequence:
    if not seq.is_2d:
        raise InputError(f"{seq._where()}: a long-axis view must be a single slice, got shape {seq.shape}")
    return seq


def _seg_per_view(lax_segs: object, paths: list[Path], names: list[str]) -> list[Path | None]:
    """``lax_segs`` as one label path (or None) per LAX path: a list aligned with the paths, or
    a mapping keyed by view name or LAX path."""
    if lax_segs is None:
        return [None] * len(paths)
    if isinstance(lax_segs, Mapping):
        out: list[Path | None] = []
        used = set()
        for p, n in zip(paths, names):
            key = next((k for k in (n, str(p), p, p.name) if k in lax_segs), None)
            used.add(key)
            out.append(Path(lax_segs[key]) if key is not None and lax_segs[key] is not None else None)
        unknown = [str(k) for k in lax_segs if k not in used]
        if unknown:
            raise InputError(f"long-axis label files for unknown views {', '.join(unknown)} "
                             f"(views: {', '.join(names) or 'none'})")
        return out
    if isinstance(lax_segs, (str, os.PathLike)):
        segs: list[Path | None] = [Path(lax_segs)]
    else:
        segs = [None if s is None else Path(s) for s in lax_segs]  # type: ignore[union-attr]
    if len(segs) != len(paths):
        raise InputError(f"{len(segs)} long-axis label files for {len(paths)} long-axis views; give one per "
                         "view (None for none) or a mapping view -> file")
    return segs


def _load_lax_files(
    paths: list[Path],
    segs: list[Path | None],
    names: list[str],
    sax: Sequence,
    frame_interval_ms: float | None,
    drop_unknown: frozenset[str] = frozenset(),
    notes: list[str] | None = None,
) -> dict[str, Sequence]:
    lax: dict[str, Sequence] = {}
    for path, seg, name in zip(paths, segs, names):
        view = _single_slice(load_sequence(path, label_map=sax.label_map))
        view = _align_view(view, sax, frame_interval_ms)
        if seg is not None:
            view, dropped = _attach_label_file(view, seg, drop_unknown=name in drop_unknown)
            if dropped and notes is not None:
                notes.append(f"{seg.name}: codes {dropped} (not in the label map) set to background")
        if name in lax:
            raise InputError(f"{path}: view name {name!r} is used twice (rename the file)")
        lax[name] = view
    return lax


def load_study(
    sax_path: PathLike,
    lax_paths: PathLike | Iterable[PathLike] = (),
    *,
    seg: PathLike | None = None,
    lax_segs: Iterable[PathLike | None] | Mapping[str, PathLike] | None = None,
    label_map: LabelMap | str | None = None,
    ref_frame: int | None = None,
    frame_interval_ms: float | None = None,
    name: str | None = None,
) -> Study:
    """A study from a short-axis input and long-axis inputs, each read by :func:`load_sequence`.

    Args:
        sax_path: the short-axis stack (4D NIfTI, ``.npz``, per-frame folder, DICOM folder).
        lax_paths: single-slice long-axis cines; each is named from its file name
            (:func:`lax_view_name`: ``la_2ch.nii.gz`` -> ``"2ch"``), else ``lax1``, ``lax2``... in order.
        seg: SAX labels, of the reference frame ``(X, Y, Z)`` or of every frame ``(X, Y, Z, T)``.
        lax_segs: LAX labels, one per LAX path (None for none), or a mapping view name (or
            LAX path) -> file.
        label_map, ref_frame, frame_interval_ms: as :func:`load_sequence`, for the SAX; every
            view shares the label map, takes the reference frame at the SAX reference's phase
            and the interval scaled to its frame count.
        name: the study's name (default: the SAX name).
    """
    sax = load_sequence(sax_path, label_map=label_map, ref_frame=ref_frame, frame_interval_ms=frame_interval_ms)
    if seg is not None:
        sax, _ = _attach_label_file(sax, seg)
    paths = _as_paths(lax_paths)
    names = _view_names(file_stem(p, other="name") for p in paths)
    lax = _load_lax_files(paths, _seg_per_view(lax_segs, paths, names), names, sax, frame_interval_ms)
    return Study(sax=sax, lax=lax, name=name or sax.name)


# UK Biobank file names (lower case, without .nii/.nii.gz).
_SAX_STEM = "sa"
_SAX_SEG_STEMS = ("seg_sa", "label_sa", "sa_seg", "labels_sa", "sa_label", "seg_sa_ed", "sa_ed_seg")
_LAX_STEM = re.compile(r"^lax?_[a-z0-9]+$")


def _niftis_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in visible_files(folder):
        if not is_nifti_name(f):
            continue
        stem = file_stem(f).lower()
        if stem in found:
            raise InputError(f"{folder}: both {found[stem].name} and {f.name}; keep one")
        found[stem] = f
    return found


def load_study_folder(
    folder: PathLike,
    *,
    seg: PathLike | None = None,
    label_map: LabelMap | str | None = None,
    ref_frame: int | None = None,
    frame_interval_ms: float | None = None,
    name: str | None = None,
) -> Study:
    """A study from a folder with UK Biobank file names (``.nii.gz`` or ``.nii``, any case).

    * ``sa``: the short-axis stack (required); its labels from ``seg_sa`` (every frame or ED),
      else ``label_sa``, ``sa_seg`` or ``seg_sa_ED`` (``seg`` overrides);
    * ``la_2ch``, ``la_3ch``, ``la_4ch`` (any ``la_<word>``): long-axis views; labels from
      ``seg4_la_4ch`` (UK Biobank's 4-chamber segmentation: its atrial codes 4 and 5 become
      background), ``label_la_<view>`` or ``la_<view>_seg``. UK Biobank's ``seg_la_2ch`` and
      ``seg_la_4ch`` hold atria only (code 1 is the left atrium) and are not attached; a note
      in ``study.meta["notes"]`` says so.

    ``label_map`` defaults to :data:`UKBB` codes (1 LV, 2 MYO, 3 RV). The study is named after
    the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = _niftis_by_stem(folder)
    if _SAX_STEM not in files:
        listed = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        shown_names = ", ".join(shown(n) for n in listed[:12]) + (f", ... ({len(listed)} in all)" if len(listed) > 12 else "")
        raise InputError(f"{folder}: no short-axis file sa.nii.gz (or sa.nii) in the study folder; "
                         f"found: {shown_names or 'nothing'}")
    notes: list[str] = []
    if seg is None:
        seg = next((files[s] for s in _SAX_SEG_STEMS if s in files), None)
    lax_stems = sorted((s for s in files if _LAX_STEM.match(s)),
                       key=lambda s: (lax_view_name(s) is None, lax_view_name(s) or "", s))
    paths = [files[s] for s in lax_stems]
    names = _view_names(lax_stems)
    segs: list[Path | None] = []
    drop: set[str] = set()
    for stem, view in zip(lax_stems, names):
        found = None
        if stem == "la_4ch" and "seg4_la_4ch" in files:
            found = files["seg4_la_4ch"]
            drop.add(view)
        else:
            found = next((files[s] for s in (f"label_{stem}", f"labels_{stem}", f"{stem}_seg", f"{stem}_label")
                          if s in files), None)
        if found is None and f"seg_{stem}" in files:
            notes.append(f"{files[f'seg_{stem}'].name}: not attached (UK Biobank's seg_{stem} labels the atria, "
                         "not the ventricles)")
        segs.append(found)
    sax = load_sequence(files[_SAX_STEM], label_map=label_map or UKBB, ref_frame=ref_frame,
                        frame_interval_ms=frame_interval_ms)
    if seg is not None:
        sax, _ = _attach_label_file(sax, seg)
    lax = _load_lax_files(paths, segs, names, sax, frame_interval_ms, frozenset(drop), notes)
    study = Study(sax=sax, lax=lax, name=name or folder.name)
    study.meta["notes"] = notes
    return study


def _series_label(s: DicomSeriesInfo) -> str:
    number = f"{s.series_number} " if s.series_number is not None else ""
    return f"series {number}'{shown(s.description or s.protocol)}'"


def _single_slice_stacks(series: list[DicomSeriesInfo]) -> list[list[DicomSeriesInfo]]:
    """Single-slice series sharing one orientation and image size at distinct positions: a stack
    stored one series per slice. Groups of two or more, largest first."""
    groups: list[list[DicomSeriesInfo]] = []
    for s in series:
        im = s.images[0]
        for g in groups:
            first = g[0].images[0]
            if (im.rows, im.cols) == (first.rows, first.cols) and np.max(np.abs(im.iop - first.iop)) <= 1e-3:
                g.append(s)
                break
        else:
            groups.append([s])
    stacks = []
    for g in groups:
        normal = np.cross(g[0].images[0].iop[:3], g[0].images[0].iop[3:])  # LPS, as the positions
        positions = {round(float(s.images[0].ipp @ normal), 1) for s in g}
        if len(positions) >= 2 and len(positions) == len(g):
            stacks.append(g)
    return sorted(stacks, key=len, reverse=True)


def load_dicom_study(
    folder: PathLike,
    *,
    seg: PathLike | None = None,
    label_map: LabelMap | str | None = None,
    ref_frame: int | None = None,
    frame_interval_ms: float | None = None,
    name: str | None = None,
) -> Study:
    """A study from a DICOM exam folder holding several series, classified by geometry.

    The short axis is the series with several parallel slice positions (the one with the most
    slices when several; else single-slice series sharing one orientation, read as one stack).
    Single-slice cines crossing it are long-axis views, named from ``SeriesDescription`` or
    ``ProtocolName`` (:func:`lax_view_name`), else ``lax1``, ``lax2``... in series-number order.
    Skipped, each with a line in ``study.meta["notes"]``: localizers (mixed orientations),
    single-frame series, other stacks, single slices parallel to the short axis and planes that
    do not cross it. ``seg``: NIfTI labels of the SAX (reference frame or every frame).
    """
    folder = Path(folder)
    infos = list_dicom_series(folder)
    if not infos:
        raise InputError(f"{folder}: no DICOM images found")
    notes: list[str] = []
    usable: list[DicomSeriesInfo] = []
    for s in infos:
        if s.mixed_orientation:
            notes.append(f"{_series_label(s)}: images of several orientations (a localizer?), skipped")
        elif s.n_frames < 2:
            notes.append(f"{_series_label(s)}: one frame per slice, not a cine, skipped")
        else:
            usable.append(s)
    stacks = [s for s in usable if s.n_slices >= 2]
    singles = [s for s in usable if s.n_slices == 1]
    if stacks:
        best = max(stacks, key=lambda s: (s.n_slices, s.n_images, -(s.series_number or 0)))
        sax_group = [best]
        for s in stacks:
            if s is not best:
                notes.append(f"{_series_label(s)}: a second stack of {s.n_slices} slices, skipped "
                             f"(the short axis is {_series_label(best)})")
    else:
        per_slice = _single_slice_stacks(singles)
        if not per_slice:
            listed = "; ".join(f"{_series_label(s)} {s.n_slices} slice(s) x {s.n_frames} frames" for s in infos)
            raise InputError(f"{folder}: no short-axis stack (no cine series with several parallel slices); "
                             f"found {listed}")
        sax_group = per_slice[0]
    sax = load_dicom_series(sax_group, label_map=LabelMap.coerce(label_map), ref_frame=ref_frame or 0,
                            frame_interval_ms=frame_interval_ms, name=name or folder.name)
    sax.meta["source"] = f"{folder} ({_series_label(sax_group[0])})"
    if seg is not None:
        sax, _ = _attach_label_file(sax, seg)
    sax_normal = sax_group[0].normal
    candidates = [s for s in singles if all(s is not g for g in sax_group)]
    lax_series: list[DicomSeriesInfo] = []
    for s in candidates:
        if abs(float(s.normal @ sax_normal)) > _PARALLEL_COS:
            notes.append(f"{_series_label(s)}: a single slice parallel to the short axis, skipped")
        else:
            lax_series.append(s)
    names = _view_names(f"{s.description} {s.protocol}" for s in lax_series)
    lax: dict[str, Sequence] = {}
    for s, view in zip(lax_series, names):
        seq = load_dicom_series(s, label_map=sax.label_map, frame_interval_ms=None, name=f"{sax.name}_{view}")
        seq.meta["source"] = f"{folder} ({_series_label(s)})"
        if not plane_crosses_grid(seq.grid, sax.grid, margin_mm=float(sax.spacing[2])):
            notes.append(f"{_series_label(s)}: the plane does not cross the short-axis stack, skipped")
            continue
        key, n = view, 1
        while key in lax:
            n += 1
            key = f"{view}_{n}"
        if key != view:
            notes.append(f"{_series_label(s)}: a second {view} view, named {key}")
        lax[key] = _align_view(seq, sax, frame_interval_ms)
    study = Study(sax=sax, lax=lax, name=name or folder.name)
    study.meta["notes"] = notes
    return study


def looks_like_study(path: PathLike) -> bool:
    """Whether ``path`` is a multi-view study by itself: a folder holding ``sa.nii*``, or a DICOM
    folder whose cine series have at least two orientations more than 20 degrees apart (a
    short-axis stack and long-axis views). A plain cine or a one-orientation DICOM folder is not."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = visible_files(path)
    if any(is_nifti_name(f) for f in files):
        return any(is_nifti_name(f) and file_stem(f).lower() == _SAX_STEM for f in files)
    try:
        series = [s for s in list_dicom_series(path) if not s.mixed_orientation and s.n_frames > 1]
    except InputError:
        return False
    normals = [s.normal for s in series]
    return any(abs(float(a @ b)) <= _PARALLEL_COS for i, a in enumerate(normals) for b in normals[i + 1:])


def _is_dicom_exam(folder: Path) -> bool:
    """A folder without NIfTI files whose DICOM images form several series."""
    if any(is_nifti_name(f) for f in visible_files(folder)):
        return False
    return len(list_dicom_series(folder)) > 1


def load_study_any(
    path: PathLike,
    lax_paths: PathLike | Iterable[PathLike] = (),
    *,
    seg: PathLike | None = None,
    lax_segs: Iterable[PathLike | None] | Mapping[str, PathLike] | None = None,
    label_map: LabelMap | str | None = None,
    ref_frame: int | None = None,
    frame_interval_ms: float | None = None,
    name: str | None = None,
) -> Study:
    """A study from whatever ``path`` is: a folder holding ``sa.nii*`` (:func:`load_study_folder`),
    a DICOM folder of several series (:func:`load_dicom_study`), else a short-axis input with
    ``lax_paths`` (:func:`load_study`). Extra ``lax_paths`` (and ``lax_segs``) are added to the
    views a folder or DICOM exam holds."""
    path = Path(path)
    common = {"seg": seg, "label_map": label_map, "ref_frame": ref_frame, "frame_interval_ms": frame_interval_ms,
              "name": name}
    if path.is_dir():
        has_sa = any(is_nifti_name(f) and file_stem(f).lower() == _SAX_STEM for f in visible_files(path))
        study = None
        if has_sa:
            study = load_study_folder(path, **common)
        elif _is_dicom_exam(path):
            study = load_dicom_study(path, **common)
        if study is not None:
            paths = _as_paths(lax_paths)
            if not paths:
                return study
            names = _view_names(file_stem(p, other="name") for p in paths)
            extra = _load_lax_files(paths, _seg_per_view(lax_segs, paths, names), names, study.sax, frame_interval_ms)
            for view, seq in extra.items():
                if view in study.lax:
                    raise InputError(f"{seq._where()}: the {view} view is already in {path}")
            out = Study(sax=study.sax, lax={**study.lax, **extra}, name=study.name)
            out.meta.update(study.meta)
            return out
    return load_study(path, lax_paths, lax_segs=lax_segs, **common)
