"""Dataset indexes: find the cine sequences, label files and key frames of a folder.

:func:`index_dataset` recognises four layouts and returns one :class:`DatasetEntry` per sequence
(paths only, nothing loaded); :func:`load_entry` turns an entry into a :class:`~cardioinr.io.Sequence`
with its labels attached and the reference frame set to end-diastole.

Layouts
-------
* **cardioinr manifest**: ``manifest.json`` written by ``cardioinr synth`` (``"format":
  "cardioinr-phantoms"``): ``{"label_map": ..., "cases": [{"name", "image", "labels",
  "truth_displacement", "ed_frame", "es_frame", "ref_frame", ...}]}``; paths are relative to
  the manifest. ``labels`` is one file (4D: labels of every frame; 3D: labels of the reference
  frame) or a mapping ``{frame: file}``.
* **Sunnybrook** (as in ``shared/data/sunnybrook``): ``<case>_sa_cine<sfx>.nii.gz``,
  ``<case>_lab_ED_frameFF<sfx>.nii.gz``, ``<case>_lab_ES_frameFF<sfx>.nii.gz`` and
  ``<case>_info.json`` (0-based ``ED_frame``/``ES_frame``); codes :data:`~cardioinr.io.SUNNYBROOK`.
  End-diastole is the *last* frame there, so the reference frame is not 0.
* **ACDC**: ``patientNNN/`` folders (directly, or under ``training/``/``testing/``) with
  ``patientNNN_4d.nii.gz``, ``patientNNN_frameFF_gt.nii.gz`` and ``Info.cfg`` whose ``ED:``/``ES:``
  are **1-based** frame numbers (converted to 0-based here); codes :data:`~cardioinr.io.ACDC`.
* **plain**: a folder of 4D NIfTI / ``.npz`` cines without labels; subfolders holding a DICOM
  series or per-frame NIfTI volumes count as one sequence each. Files whose name ends in
  ``labels``, ``seg``, ``gt``, ``mask`` or ``displacement`` are not cines and are passed over.

By default the first inconsistent case or unreadable file stops the index with an
:class:`InputError`. ``index_dataset(..., problems=[])`` instead lists each such case or file as an
:class:`IndexProblem` and goes on (what a cohort of thousands of subjects needs: one bad file
must not cost the others); problems with the dataset as a whole (missing folder, unreadable
manifest) still raise.

All frame indices in this module are 0-based.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cardioinr.core.console import first_line
from cardioinr.core.errors import CardioInrError, InputError
from cardioinr.io._common import IMAGE_SUFFIXES, file_stem, natural_key
from cardioinr.io.load import load_sequence
from cardioinr.io.nifti import label_source, load_label_file, load_label_volume, strict_nifti_header
from cardioinr.io.sequence import (
    ACDC,
    SUNNYBROOK,
    LabelMap,
    LabelSource,
    Sequence,
    attach_label_arrays,
    check_frame_index,
)

MANIFEST_FORMAT = "cardioinr-phantoms"


@dataclass
class DatasetEntry:
    """One sequence of a dataset: where its files are and which frames matter.

    Attributes:
        name: case identifier (unique within the index).
        image: the cine: a 4D NIfTI, an ``.npz``, or a folder (DICOM series / per-frame NIfTI).
        labels: per-frame label files ``{frame: path}``, each ``(X, Y, Z)``.
        label_series: one label file for the whole sequence: ``(X, Y, Z, T)`` (every frame) or
            ``(X, Y, Z)`` (the reference frame); ``None`` when absent.
        label_map: meaning of the label codes.
        ed_frame, es_frame: end-diastole / end-systole frames (0-based), ``None`` if unknown.
        ref_frame: reference frame (0-based): ED when known, else 0 unless the layout says otherwise.
        truth_displacement: ground-truth displacement file (phantoms), ``(X, Y, Z, T, 3)`` mm.
        layout: ``"manifest"``, ``"sunnybrook"``, ``"acdc"`` or ``"plain"``.
        meta: anything else the layout provides (info.json, Info.cfg fields, manifest keys).
    """

    name: str
    image: Path
    labels: dict[int, Path] = field(default_factory=dict)
    label_series: Path | None = None
    label_map: LabelMap = ACDC
    ed_frame: int | None = None
    es_frame: int | None = None
    ref_frame: int = 0
    truth_displacement: Path | None = None
    layout: str = "plain"
    meta: dict = field(default_factory=dict)


@dataclass
class IndexProblem:
    """A case or file of a dataset that could not be indexed (``index_dataset(..., problems=[])``).

    Attributes:
        name: the case name it would have had (a file's name less its image suffix).
        path: the file (or case folder, or manifest) at fault.
        error: one line saying what is wrong.
    """

    name: str
    path: Path
    error: str


def _problem(problems: list[IndexProblem] | None, err: CardioInrError, name: str, path: Path) -> None:
    """Record ``err`` for the case ``name`` when problems are collected; raise it otherwise."""
    if problems is None:
        raise err
    problems.append(IndexProblem(name=name, path=Path(path), error=str(err)))


# ---------------------------------------------------------------------------------------------
# Where the shared data lives
# ---------------------------------------------------------------------------------------------


def _has_sunnybrook_cines(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*_sa_cine*.nii*"))


def shared_data_dir() -> Path | None:
    """The Sunnybrook folder (``.../sunnybrook``) holding the real cine cases, or ``None``.

    Looked for, in order: ``$CARDIOINR_DATA/sunnybrook`` (or ``$CARDIOINR_DATA`` itself when it
    holds the cases); when that variable is set, nowhere else (an explicit setting must not be
    silently replaced). Otherwise ``../shared/data/sunnybrook`` relative to the repository root
    and to the current folder, then ``/work/shared/data/sunnybrook``.
    """
    env = os.environ.get("CARDIOINR_DATA")
    if env:
        base = Path(env).expanduser()
        for cand in (base / "sunnybrook", base):
            if _has_sunnybrook_cines(cand):
                return cand.resolve()
        return None
    repo_root = Path(__file__).resolve().parents[2]
    for base in (repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
                 Path("/work/shared/data")):
        cand = base / "sunnybrook"
        if _has_sunnybrook_cines(cand):
            return cand.resolve()
    return None


# ---------------------------------------------------------------------------------------------
# Index
# ---------------------------------------------------------------------------------------------


def index_dataset(path: str | os.PathLike, *, label_map: LabelMap | str | None = None,
                  problems: list[IndexProblem] | None = None) -> list[DatasetEntry]:
    """List the sequences of a dataset folder (or manifest, or single cine file).

    Args:
        path: a folder in one of the layouts of this module, a ``manifest.json``, or one cine file.
        label_map: overrides the layout's label codes for every entry when given.
        problems: when a list, each case or file that cannot be indexed (an unreadable NIfTI
            header, a manifest case naming a missing file, an inconsistent info.json or
            Info.cfg, names shared by several sequences) is appended to it as an
            :class:`IndexProblem` instead of raising, and the index goes on with the others.

    Returns:
        Entries sorted by name (natural order). Raises :class:`InputError` when nothing is found
        (with ``problems``: when nothing is found and nothing was recorded) or, without
        ``problems``, when a layout file (manifest, info.json, Info.cfg) is inconsistent.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: dataset not found")
    if path.is_file():
        if path.name.lower().endswith(".json"):
            entries = _index_manifest(path, problems)
        elif path.name.lower().endswith(IMAGE_SUFFIXES):
            entries = [DatasetEntry(name=_stem(path), image=path, layout="plain", meta={"source": str(path)})]
        else:
            raise InputError(f"{path}: not a dataset (expected a folder, a manifest.json or a cine file)")
    elif (path / "manifest.json").is_file():
        entries = _index_manifest(path / "manifest.json", problems)
    elif _has_sunnybrook_cines(path):
        entries = _index_sunnybrook(path, problems)
    elif _acdc_patient_dirs(path):
        entries = _index_acdc(path, problems)
    else:
        entries = _index_plain(path, problems)
    if label_map is not None:
        lmap = LabelMap.coerce(label_map)
        for e in entries:
            e.label_map = lmap
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes and problems is None:
        raise InputError(f"{path}: several sequences share the name(s) {', '.join(dupes[:5])}")
    if dupes:
        for e in entries:
            if e.name in dupes:
                others = ", ".join(str(o.image) for o in entries if o.name == e.name and o is not e)
                problems.append(IndexProblem(e.name, Path(e.image), f"{e.image}: several sequences share the name "
                                                                    f"{e.name!r} (also {others})"))
        entries = [e for e in entries if e.name not in dupes]
    return sorted(entries, key=lambda e: natural_key(e.name))


def _stem(path: Path) -> str:
    """A case name: the file name less an image suffix (other names, folders included, stay whole)."""
    return file_stem(path, other="name")


def _frame_value(value: object, what: str, where: Path) -> int | None:
    """A 0-based frame index from a manifest or info file (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise InputError(f"{where}: {what} must be an integer frame index, got {value!r}")
    return int(value)


def _read_json_object(path: Path, unreadable: str, not_object: str) -> dict:
    """A JSON file that must hold an object; otherwise an InputError naming ``path`` and saying
    ``unreadable`` (with the parser's reason) or ``not_object``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: {unreadable} ({first_line(e, 160)})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: {not_object}")
    return doc


# -- manifest --------------------------------------------------------------------------------


def _index_manifest(manifest: Path, problems: list[IndexProblem] | None = None) -> list[DatasetEntry]:
    doc = _read_json_object(manifest, "unreadable manifest", "a manifest must be a JSON object with a 'cases' list")
    fmt = doc.get("format")
    if fmt is not None and not str(fmt).startswith("cardioinr"):
        raise InputError(f"{manifest}: unknown manifest format {fmt!r} (expected {MANIFEST_FORMAT!r})")
    cases = doc.get("cases")
    if isinstance(cases, Mapping):  # {name: case} also accepted
        cases = [{"name": k, **v} if isinstance(v, Mapping) else v for k, v in cases.items()]
    if not isinstance(cases, list) or not cases:
        raise InputError(f"{manifest}: manifest has no 'cases' list")
    top_map = LabelMap.coerce(doc["label_map"]) if doc.get("label_map") is not None else ACDC
    root = manifest.parent

    def resolve(p: object, what: str, case: str) -> Path:
        if not isinstance(p, (str, os.PathLike)) or not str(p):
            raise InputError(f"{manifest}: case {case!r}: {what} must be a file path, got {p!r}")
        q = Path(p)
        q = q if q.is_absolute() else root / q
        if not q.exists():
            raise InputError(f"{manifest}: case {case!r}: {what} {q} not found")
        return q

    known = {"name", "image", "labels", "truth_displacement", "ed_frame", "es_frame", "ref_frame", "label_map"}

    def one_case(n: int, case: object, name: str) -> DatasetEntry:
        if not isinstance(case, Mapping):
            raise InputError(f"{manifest}: case #{n} is not an object")
        if "image" not in case:
            raise InputError(f"{manifest}: case {name!r} has no 'image'")
        image = resolve(case["image"], "image", name)
        labels: dict[int, Path] = {}
        series = None
        lab = case.get("labels")
        if isinstance(lab, Mapping):
            for t, p in lab.items():
                try:
                    t_int = int(t)
                except (TypeError, ValueError):
                    raise InputError(f"{manifest}: case {name!r}: label frame {t!r} is not an integer") from None
                labels[t_int] = resolve(p, f"labels of frame {t}", name)
        elif lab is not None:
            series = resolve(lab, "labels", name)
        truth = resolve(case["truth_displacement"], "truth_displacement", name) if case.get("truth_displacement") else None
        ed = _frame_value(case.get("ed_frame"), "ed_frame", manifest)
        es = _frame_value(case.get("es_frame"), "es_frame", manifest)
        ref = _frame_value(case.get("ref_frame"), "ref_frame", manifest)
        lmap = LabelMap.coerce(case["label_map"]) if case.get("label_map") is not None else top_map
        extra = {k: v for k, v in case.items() if k not in known}
        return DatasetEntry(
            name=name, image=image, labels=labels, label_series=series, label_map=lmap, ed_frame=ed, es_frame=es,
            ref_frame=ref if ref is not None else (ed if ed is not None else 0), truth_displacement=truth,
            layout="manifest", meta={"manifest": str(manifest), "format": fmt, **extra},
        )

    entries: list[DatasetEntry] = []
    for n, case in enumerate(cases):
        name = str(case.get("name") or f"case{n:03d}") if isinstance(case, Mapping) else f"case{n:03d}"
        try:
            entries.append(one_case(n, case, name))
        except CardioInrError as e:
            image = case.get("image") if isinstance(case, Mapping) else None
            _problem(problems, e, name, root / image if isinstance(image, str) and image else manifest)
    return entries


# -- Sunnybrook -------------------------------------------------------------------------------

_SB_CINE = re.compile(r"^(?P<case>.+?)_sa_cine(?P<sfx>.*?)\.nii(\.gz)?$")
_SB_LAB = re.compile(r"^(?P<case>.+?)_lab_(?P<phase>ED|ES)_frame(?P<frame>\d+)(?P<sfx>.*?)\.nii(\.gz)?$")


def _index_sunnybrook(folder: Path, problems: list[IndexProblem] | None = None) -> list[DatasetEntry]:
    cines: dict[str, Path] = {}
    bad: set[str] = set()
    for f in sorted(folder.iterdir()):
        m = _SB_CINE.match(f.name)
        if m and f.is_file():
            if m["case"] in cines:
                bad.add(m["case"])
                _problem(problems, InputError(f"{folder}: case {m['case']} has two cines "
                                              f"({cines[m['case']].name}, {f.name})"), m["case"], f)
            cines.setdefault(m["case"], f)
    labs: dict[str, dict[str, tuple[int, Path]]] = {}
    for f in sorted(folder.iterdir()):
        m = _SB_LAB.match(f.name)
        if m and f.is_file():
            per = labs.setdefault(m["case"], {})
            if m["phase"] in per:
                if problems is None or (m["case"] in cines and m["case"] not in bad):
                    bad.add(m["case"])
                    _problem(problems, InputError(f"{folder}: case {m['case']} has two {m['phase']} label files"),
                             m["case"], f)
                continue
            per[m["phase"]] = (int(m["frame"]), f)
    entries = []
    for case, cine in cines.items():
        if case in bad:
            continue
        try:
            entries.append(_sunnybrook_case(folder, case, cine, labs))
        except CardioInrError as e:
            _problem(problems, e, case, cine)
    return entries


def _sunnybrook_case(folder: Path, case: str, cine: Path, labs: dict[str, dict[str, tuple[int, Path]]]) -> DatasetEntry:
    """One Sunnybrook case as an entry (InputError when its info.json is unusable)."""
    info_path = folder / f"{case}_info.json"
    info: dict = {}
    if info_path.is_file():
        info = _read_json_object(info_path, "unreadable", "expected a JSON object")
    frames: dict[str, int | None] = {}
    for phase in ("ED", "ES"):
        from_info = _frame_value(info.get(f"{phase}_frame"), f"{phase}_frame", info_path)
        from_name = labs.get(case, {}).get(phase, (None, None))[0]
        if from_info is not None and from_name is not None and from_info != from_name:
            raise InputError(f"{info_path}: {phase}_frame {from_info} disagrees with the label file "
                             f"{labs[case][phase][1].name} (frame {from_name})")
        frames[phase] = from_info if from_info is not None else from_name
    labels = {}
    for phase in ("ED", "ES"):
        if phase in labs.get(case, {}):
            labels[labs[case][phase][0]] = labs[case][phase][1]
    ed = frames["ED"]
    meta = {k: v for k, v in info.items() if k not in ("ED_frame", "ES_frame")}
    meta["info"] = str(info_path) if info else None
    return DatasetEntry(
        name=case, image=cine, labels=labels, label_map=SUNNYBROOK, ed_frame=ed, es_frame=frames["ES"],
        # ED is the reference: there it is the LAST frame (labels with myocardium exist only there)
        ref_frame=ed if ed is not None else 0, layout="sunnybrook", meta=meta,
    )


# -- ACDC -------------------------------------------------------------------------------------

_ACDC_GT = re.compile(r"^(?P<pid>.+)_frame(?P<frame>\d+)_gt\.nii(\.gz)?$")


def _acdc_patient_dirs(folder: Path) -> list[Path]:
    """Patient folders (holding ``Info.cfg`` and a ``*_4d.nii*``) at depth 0, 1 or 2."""
    found = []
    for cfg in [folder / "Info.cfg", *folder.glob("*/Info.cfg"), *folder.glob("*/*/Info.cfg")]:
        d = cfg.parent
        if cfg.is_file() and any(d.glob("*_4d.nii*")):
            found.append(d)
    return found


def _read_info_cfg(cfg: Path) -> dict[str, str]:
    try:
        text = cfg.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{cfg}: unreadable ({e.strerror})") from None
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _index_acdc(folder: Path, problems: list[IndexProblem] | None = None) -> list[DatasetEntry]:
    entries = []
    for d in _acdc_patient_dirs(folder):
        try:
            entries.append(_acdc_patient(folder, d))
        except CardioInrError as e:
            _problem(problems, e, d.name, d)
    return entries


def _acdc_patient(folder: Path, d: Path) -> DatasetEntry:
    """One ACDC patient folder as an entry (InputError when its Info.cfg is unusable)."""
    cfg = d / "Info.cfg"
    info = _read_info_cfg(cfg)
    cines = sorted(d.glob("*_4d.nii*"))
    if len(cines) > 1:
        raise InputError(f"{d}: several 4D cines ({', '.join(c.name for c in cines)})")
    frames: dict[str, int | None] = {}
    for key in ("ED", "ES"):
        if key not in info:
            frames[key] = None
            continue
        try:
            one_based = int(float(info[key]))
        except ValueError:
            raise InputError(f"{cfg}: {key}: {info[key]!r} is not a frame number") from None
        if one_based < 1:
            raise InputError(f"{cfg}: {key}: {one_based}; ACDC frame numbers start at 1")
        frames[key] = one_based - 1
    labels = {}
    for f in d.iterdir():
        m = _ACDC_GT.match(f.name)
        if m:
            labels[int(m["frame"]) - 1] = f  # file names use the same 1-based numbers
    ed = frames["ED"]
    name = d.name if d != folder else cines[0].name.split("_4d")[0]
    return DatasetEntry(
        name=name, image=cines[0], labels=labels, label_map=ACDC, ed_frame=ed, es_frame=frames["ES"],
        ref_frame=ed if ed is not None else 0, layout="acdc",
        meta={"info_cfg": str(cfg), **{k: v for k, v in info.items() if k not in ("ED", "ES")}},
    )


# -- plain ------------------------------------------------------------------------------------


def _looks_like_dicom(f: Path) -> bool:
    try:
        with open(f, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _nifti_is_cine(f: Path) -> bool:
    """Whether a NIfTI header (read alone: cheap) describes a 4D cine ``(X, Y, Z, T)`` (or the
    ``(X, Y, Z, 1, T)`` form), as opposed to a 3D volume or a 5D vector field. Corrupt headers
    raise InputError."""
    import nibabel as nib

    try:
        with strict_nifti_header():  # a damaged header is refused, and nibabel prints nothing
            shape = nib.load(str(f)).shape
    except Exception as e:
        raise InputError(f"{f}: not a readable NIfTI file ({first_line(e, 160)})") from None
    return len(shape) == 4 or (len(shape) == 5 and shape[3] == 1)


# Stems of label files that a plain folder may hold beside its cines (fit outputs, ground truth).
_LABEL_STEM = re.compile(r"(^|[_\-.])(labels?|seg|segmentation|gt|mask|displacement)$", re.IGNORECASE)


def _index_plain(folder: Path, problems: list[IndexProblem] | None = None) -> list[DatasetEntry]:
    children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not children:
        raise InputError(f"{folder}: folder is empty")
    entries: list[DatasetEntry] = []
    frames_3d: list[Path] = []
    for f in sorted(children, key=lambda p: natural_key(p.name)):
        if f.is_file() and f.name.lower().endswith(".npz"):
            entries.append(DatasetEntry(name=_stem(f), image=f, meta={"source": str(f)}))
        elif f.is_file() and f.name.lower().endswith((".nii", ".nii.gz")):
            if _LABEL_STEM.search(_stem(f)):
                continue
            try:
                cine = _nifti_is_cine(f)
            except InputError as e:  # with problems: recorded, and the folder goes on
                _problem(problems, e, _stem(f), f)
                continue
            if cine:
                entries.append(DatasetEntry(name=_stem(f), image=f, meta={"source": str(f)}))
            else:
                frames_3d.append(f)
        elif f.is_dir():
            files = sorted(p for p in f.rglob("*") if p.is_file() and not p.name.startswith("."))
            n_nii = sum(p.parent == f and p.name.lower().endswith((".nii", ".nii.gz")) for p in files)
            if n_nii >= 2 or any(_looks_like_dicom(p) for p in files[:20]):
                entries.append(DatasetEntry(name=f.name, image=f, meta={"source": str(f)}))
    if not entries and len(frames_3d) >= 2:
        # Only 3D volumes: the folder itself is one per-frame cine.
        entries.append(DatasetEntry(name=folder.name, image=folder, meta={"source": str(folder)}))
    if not entries:
        if any(_looks_like_dicom(p) for p in children[:20] if p.is_file()):
            return [DatasetEntry(name=folder.name, image=folder, meta={"source": str(folder)})]
        if problems:  # every cine found was unreadable: each is recorded
            return entries
        raise InputError(f"{folder}: no cine sequences found (no manifest.json, Sunnybrook or ACDC files, "
                         "4D NIfTI, .npz, or DICOM series)")
    return entries


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_entry(entry: DatasetEntry, *, label_map: LabelMap | str | None = None) -> Sequence:
    """Load an entry's cine with every label file attached and the reference frame set.

    ``ref_frame`` is ``entry.ref_frame`` (ED when known). A 4D ``label_series`` attaches labels
    to every frame; a 3D one to the reference frame. ``meta`` gains ``layout``, ``ed_frame``,
    ``es_frame``, ``truth_displacement`` and the entry's own metadata.
    """
    lmap = LabelMap.coerce(label_map) if label_map is not None else entry.label_map
    seq = load_sequence(entry.image, label_map=lmap)
    ref = check_frame_index(entry.ref_frame, seq.n_frames, entry.name)
    ed = check_frame_index(entry.ed_frame, seq.n_frames, entry.name) if entry.ed_frame is not None else None
    es = check_frame_index(entry.es_frame, seq.n_frames, entry.name) if entry.es_frame is not None else None
    arrays = {}
    sources: dict[int, LabelSource] = {}  # per-frame label files are recorded as the fit's inputs
    if entry.label_series is not None:
        arrays.update(load_label_file(entry.label_series, seq.shape, seq.n_frames, ref))
    for t, p in entry.labels.items():
        t = check_frame_index(t, seq.n_frames, entry.name)
        arrays[t] = load_label_volume(p, seq.shape)
        src = label_source(p)
        if src is not None:
            sources[t] = src
        else:  # two keys may name one frame (0 and -T): the last file read decides
            sources.pop(t, None)
    seq = attach_label_arrays(seq, arrays, sources) if arrays else seq
    meta = {**seq.meta, **entry.meta, "layout": entry.layout, "ed_frame": ed, "es_frame": es,
            "truth_displacement": str(entry.truth_displacement) if entry.truth_displacement else None}
    return replace(seq, ref_frame=ref, name=entry.name, meta=meta)
