"""Dataset indexes: cardioinr manifests, the Sunnybrook and ACDC layouts, plain folders, and the
real Sunnybrook cases under shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cardioinr.core.errors import InputError
from cardioinr.geometry import make_affine
from cardioinr.io.datasets import DatasetEntry, index_dataset, load_entry, shared_data_dir
from cardioinr.io.nifti import save_nifti
from cardioinr.io.npz import save_npz
from cardioinr.io.sequence import ACDC, SUNNYBROOK, LabelMap, Sequence

AFF = make_affine((1.5, 1.5, 8.0), origin=(-10.0, 5.0, 2.0))


def cine(shape=(10, 9, 2, 6), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


def labels(shape=(10, 9, 2), codes=(1, 2), seed=0) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(seed)
    for c in codes:
        lab[tuple(rng.integers(0, s) for s in shape)] = c
    return lab


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


# ---------------------------------------------------------------------------------------------
# cardioinr manifest (written by `cardioinr synth`)
# ---------------------------------------------------------------------------------------------


def write_phantom_folder(root: Path, n: int = 2, label_map=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    for c in range(n):
        save_nifti(root / f"case{c}_image.nii.gz", cine(seed=c), AFF, frame_interval_ms=30.0)
        lab4 = np.stack([labels(codes=(1, 2, 3), seed=10 * c + t) for t in range(6)], axis=-1)
        save_nifti(root / f"case{c}_labels.nii.gz", lab4, AFF)
        save_nifti(root / f"case{c}_disp.nii.gz", np.zeros((10, 9, 2, 6, 3), np.float32), AFF)
        cases.append({"name": f"case{c}", "image": f"case{c}_image.nii.gz", "labels": f"case{c}_labels.nii.gz",
                      "truth_displacement": f"case{c}_disp.nii.gz", "ed_frame": 2, "es_frame": 4, "seed": c})
    doc = {"format": "cardioinr-phantoms", "version": 1, "cases": cases}
    if label_map is not None:
        doc["label_map"] = label_map
    (root / "manifest.json").write_text(json.dumps(doc))
    return root


def test_manifest_index_and_load(tmp_path):
    root = write_phantom_folder(tmp_path / "ph", label_map={"lv": 3, "myo": 2, "rv": 1})
    entries = index_dataset(root)
    assert [e.name for e in entries] == ["case0", "case1"]
    e = entries[0]
    assert (e.layout, e.ed_frame, e.es_frame, e.ref_frame) == ("manifest", 2, 4, 2)
    assert e.label_map == ACDC and e.truth_displacement == root / "case0_disp.nii.gz"
    assert e.meta["seed"] == 0
    assert index_dataset(root / "manifest.json")[1].name == "case1"  # the manifest itself also works
    seq = load_entry(e)
    assert isinstance(seq, Sequence) and seq.ref_frame == 2 and sorted(seq.labels) == list(range(6))
    assert seq.frame_interval_ms == 30.0 and seq.name == "case0"
    assert seq.meta["truth_displacement"].endswith("case0_disp.nii.gz") and seq.meta["es_frame"] == 4


def test_manifest_label_map_and_label_forms(tmp_path):
    root = write_phantom_folder(tmp_path / "ph", n=1, label_map="lv=1,myo=2,rv=3")
    doc = json.loads((root / "manifest.json").read_text())
    save_nifti(root / "ref.nii.gz", labels(codes=(1, 3)), AFF)
    save_nifti(root / "es.nii.gz", labels(codes=(1,)), AFF)
    doc["cases"].append({"name": "three_d", "image": "case0_image.nii.gz", "labels": "ref.nii.gz", "ref_frame": 5})
    doc["cases"].append({"name": "per_frame", "image": "case0_image.nii.gz", "labels": {"0": "ref.nii.gz", "4": "es.nii.gz"},
                         "label_map": {"lv": 1, "rv": 3}})
    (root / "manifest.json").write_text(json.dumps(doc))
    entries = {e.name: e for e in index_dataset(root)}
    assert entries["case0"].label_map == LabelMap(lv=1, myo=2, rv=3)
    three_d = load_entry(entries["three_d"])
    assert three_d.ref_frame == 5 and list(three_d.labels) == [5]  # a 3D label file belongs to the reference
    per_frame = load_entry(entries["per_frame"])
    assert sorted(per_frame.labels) == [0, 4] and per_frame.ref_frame == 0
    assert per_frame.label_map == LabelMap(lv=1, myo=None, rv=3)


@pytest.mark.parametrize("problem,expected", [
    ("missing_image", "not found"), ("no_cases", "no 'cases'"), ("format", "unknown manifest format"),
    ("json", "unreadable manifest"), ("frame", "integer frame index"), ("label_map", "label map"),
    ("label_frames", "(10, 9, 2, 6) (every frame)"),
])
def test_manifest_errors(tmp_path, problem, expected):
    root = write_phantom_folder(tmp_path / "ph", n=1)
    doc = json.loads((root / "manifest.json").read_text())
    case = doc["cases"][0]
    if problem == "missing_image":
        case["image"] = "gone.nii.gz"
    elif problem == "no_cases":
        doc["cases"] = []
    elif problem == "format":
        doc["format"] = "something-else"
    elif problem == "frame":
        case["ed_frame"] = "ED"
    elif problem == "label_map":
        doc["label_map"] = "lv=1,myo=1"
    elif problem == "label_frames":  # a 4D label file with the wrong number of frames
        save_nifti(root / "short.nii.gz", np.zeros((10, 9, 2, 5), np.uint8), AFF)
        case["labels"] = "short.nii.gz"
    (root / "manifest.json").write_text("{not json" if problem == "json" else json.dumps(doc))
    with pytest.raises(InputError) as e:
        load_entry(index_dataset(root)[0])
    assert expected in one_line(e)


# ---------------------------------------------------------------------------------------------
# Sunnybrook layout (synthetic copy, always runs)
# ---------------------------------------------------------------------------------------------


def write_sunnybrook_like(root: Path, case="SCD0000901", ed=5, es=2, info_ed=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_nifti(root / f"{case}_sa_cine_crop80.nii.gz", cine(), AFF, frame_interval_ms=37.5)
    save_nifti(root / f"{case}_lab_ED_frame{ed:02d}_crop80.nii.gz", labels(codes=(1, 2)), AFF)
    save_nifti(root / f"{case}_lab_ES_frame{es:02d}_crop80.nii.gz", labels(codes=(1,)), AFF)
    info = {"patient_id": case, "ED_frame": ed if info_ed is None else info_ed, "ES_frame": es, "n_frames": 6}
    (root / f"{case}_info.json").write_text(json.dumps(info))
    return root


def test_sunnybrook_layout_synthetic(tmp_path):
    root = write_sunnybrook_like(tmp_path / "sb")
    (root / "README.md").write_text("data")
    (e,) = index_dataset(root)
    assert (e.name, e.layout, e.ed_frame, e.es_frame, e.ref_frame) == ("SCD0000901", "sunnybrook", 5, 2, 5)
    assert e.label_map == SUNNYBROOK and sorted(e.labels) == [2, 5] and e.meta["n_frames"] == 6
    seq = load_entry(e)
    assert seq.ref_frame == 5 == seq.n_frames - 1  # ED is the last frame, not 0
    assert set(np.unique(seq.labels[5])) <= {0, 1, 2} and set(np.unique(seq.labels[2])) <= {0, 1}


def test_sunnybrook_info_disagreeing_with_file_names(tmp_path):
    root = write_sunnybrook_like(tmp_path / "sb", info_ed=4)
    with pytest.raises(InputError) as e:
        index_dataset(root)
    assert "ED_frame 4" in one_line(e) and "frame05" in str(e.value)


def test_label_map_override_reaches_the_labels(tmp_path):
    root = write_sunnybrook_like(tmp_path / "sb")
    (e,) = index_dataset(root, label_map="acdc")  # codes 1 and 2 exist in ACDC too (as RV, MYO)
    assert e.label_map == ACDC
    (e,) = index_dataset(root, label_map="lv=1")  # code 2 (myocardium at ED) becomes unknown
    with pytest.raises(InputError) as err:
        load_entry(e)
    assert "[2]" in one_line(err)


# ---------------------------------------------------------------------------------------------
# ACDC layout (synthetic, built from the published description)
# ---------------------------------------------------------------------------------------------


def write_acdc_patient(root: Path, pid: str, ed1: int = 1, es1: int = 5, with_gt: bool = True) -> Path:
    d = root / pid
    d.mkdir(parents=True)
    img = cine()
    save_nifti(d / f"{pid}_4d.nii.gz", img, AFF)
    for f1 in (ed1, es1):
        save_nifti(d / f"{pid}_frame{f1:02d}.nii.gz", img[..., f1 - 1], AFF)
        if with_gt:
            save_nifti(d / f"{pid}_frame{f1:02d}_gt.nii.gz", labels(codes=(1, 2, 3), seed=f1), AFF)
    (d / "Info.cfg").write_text(f"ED: {ed1}\nES: {es1}\nGroup: DCM\nHeight: 184.0\nNbFrame: 6\nWeight: 95.0\n")
    return d


def test_acdc_layout_is_one_based(tmp_path):
    root = tmp_path / "acdc"
    write_acdc_patient(root / "training", "patient002", ed1=1, es1=5)
    write_acdc_patient(root / "training", "patient010", ed1=2, es1=6)
    write_acdc_patient(root / "testing", "patient101", with_gt=False)
    entries = index_dataset(root)
    assert [e.name for e in entries] == ["patient002", "patient010", "patient101"]
    p2, p10, p101 = entries
    assert (p2.ed_frame, p2.es_frame, p2.ref_frame, sorted(p2.labels)) == (0, 4, 0, [0, 4])
    assert (p10.ed_frame, p10.es_frame, p10.ref_frame, sorted(p10.labels)) == (1, 5, 1, [1, 5])
    assert p101.labels == {} and p2.label_map == ACDC and p2.meta["Group"] == "DCM"
    seq = load_entry(p10)
    assert seq.ref_frame == 1 and sorted(seq.labels) == [1, 5] and seq.meta["es_frame"] == 5
    assert index_dataset(root / "training" / "patient010")[0].name == "patient010"  # one patient folder


def test_acdc_bad_info_cfg(tmp_path):
    d = write_acdc_patient(tmp_path, "patient003")
    (d / "Info.cfg").write_text("ED: 0\nES: 5\n")
    with pytest.raises(InputError) as e:
        index_dataset(tmp_path)
    assert "Info.cfg" in one_line(e) and "start at 1" in str(e.value)


# ---------------------------------------------------------------------------------------------
# plain folders
# ---------------------------------------------------------------------------------------------


def test_plain_folder_of_cines(tmp_path):
    save_nifti(tmp_path / "b_cine.nii.gz", cine(seed=1), AFF)
    save_npz(tmp_path / "a_cine.npz", Sequence(image=cine(seed=2), affine=AFF, name="stored"))
    save_nifti(tmp_path / "seg.nii.gz", labels(), AFF)  # a 3D file is not a cine
    frames = tmp_path / "c_frames"
    for t in range(3):
        save_nifti(frames / f"t{t}.nii.gz", cine(seed=3)[..., t], AFF)
    (tmp_path / "outputs").mkdir()  # nothing loadable inside: not listed
    save_nifti(tmp_path / "labels.nii.gz", np.zeros((10, 9, 2, 6), np.uint8), AFF)  # fit outputs: not cines
    save_nifti(tmp_path / "displacement.nii.gz", np.zeros((10, 9, 2, 6, 3), np.float32), AFF)
    save_nifti(tmp_path / "vectors.nii.gz", np.zeros((10, 9, 2, 6, 3), np.float32), AFF)  # 5D: not a cine
    entries = index_dataset(tmp_path)
    assert [e.name for e in entries] == ["a_cine", "b_cine", "c_frames"]
    assert all(e.layout == "plain" and e.labels == {} and e.ref_frame == 0 for e in entries)
    assert [load_entry(e).n_frames for e in entries] == [6, 6, 3]


def test_folder_of_3d_frames_is_one_sequence(tmp_path):
    for t in range(4):
        save_nifti(tmp_path / f"frame{t}.nii", cine()[..., t], AFF)
    (e,) = index_dataset(tmp_path)
    assert e.image == tmp_path and load_entry(e).n_frames == 4


def test_nothing_to_index(tmp_path):
    with pytest.raises(InputError) as e:
        index_dataset(tmp_path)
    assert "empty" in one_line(e)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError) as e:
        index_dataset(tmp_path)
    assert "no cine sequences" in one_line(e)
    with pytest.raises(InputError, match="not found"):
        index_dataset(tmp_path / "missing")


def test_single_file_dataset(tmp_path):
    p = save_nifti(tmp_path / "one.nii.gz", cine(), AFF)
    (e,) = index_dataset(p)
    assert e.name == "one" and load_entry(e).n_frames == 6


# ---------------------------------------------------------------------------------------------
# where the shared data lives
# ---------------------------------------------------------------------------------------------


def test_shared_data_dir_honours_the_environment(tmp_path, monkeypatch):
    write_sunnybrook_like(tmp_path / "data" / "sunnybrook")
    monkeypatch.setenv("CARDIOINR_DATA", str(tmp_path / "data"))
    assert shared_data_dir() == (tmp_path / "data" / "sunnybrook").resolve()
    monkeypatch.setenv("CARDIOINR_DATA", str(tmp_path / "data" / "sunnybrook"))  # the folder itself
    assert shared_data_dir() == (tmp_path / "data" / "sunnybrook").resolve()
    monkeypatch.setenv("CARDIOINR_DATA", str(tmp_path / "nowhere"))  # set but wrong: no silent fallback
    assert shared_data_dir() is None


# ---------------------------------------------------------------------------------------------
# the real Sunnybrook cases
# ---------------------------------------------------------------------------------------------

SUNNYBROOK_DIR = shared_data_dir()
needs_sunnybrook = pytest.mark.skipif(
    SUNNYBROOK_DIR is None,
    reason="Sunnybrook cases not found (set CARDIOINR_DATA to a folder holding sunnybrook/, "
           "or place them in ../shared/data/sunnybrook)",
)


@needs_sunnybrook
def test_real_sunnybrook_index():
    entries = index_dataset(SUNNYBROOK_DIR)
    assert [e.name for e in entries] == ["SCD0000101", "SCD0000201", "SCD0000301"]
    for e in entries:
        info = json.loads((SUNNYBROOK_DIR / f"{e.name}_info.json").read_text())
        assert (e.ed_frame, e.es_frame) == (info["ED_frame"], info["ES_frame"])
        assert e.ref_frame == e.ed_frame and e.label_map == SUNNYBROOK


@needs_sunnybrook
@pytest.mark.parametrize("case", ["SCD0000101", "SCD0000201", "SCD0000301"])
def test_real_sunnybrook_case_loads_with_geometry_and_labels(case):
    (entry,) = [e for e in index_dataset(SUNNYBROOK_DIR) if e.name == case]
    info = json.loads((SUNNYBROOK_DIR / f"{case}_info.json").read_text())
    seq = load_entry(entry)
    assert seq.image.shape == (80, 80, info["n_slices"], 20)
    in_plane = {"SCD0000101": 1.367, "SCD0000201": 1.367, "SCD0000301": 1.289}[case]
    step = {"SCD0000101": 10.0, "SCD0000201": 10.0, "SCD0000301": 8.0}[case]
    np.testing.assert_allclose(seq.spacing, [in_plane, in_plane, step], atol=2e-3)
    np.testing.assert_allclose(seq.spacing[:2], info["pixel_spacing_mm"], atol=1e-4)
    dt = np.diff(info["trigger_times_ms_slice0"]).mean()
    assert seq.frame_interval_ms == pytest.approx(dt, rel=0.02)
    ed, es = info["ED_frame"], info["ES_frame"]
    assert seq.ref_frame == ed >= seq.n_frames - 2  # ED is (one of) the last frames
    assert sorted(seq.labels) == sorted([ed, es])
    assert set(np.unique(seq.labels[ed]).tolist()) == {0, 1, 2}  # LV and myocardium at ED
    assert set(np.unique(seq.labels[es]).tolist()) == {0, 1}  # LV only at ES
    contoured = info["contoured_frames"][str(ed)]["slices_with_LV"]
    lv_slices = sorted(set(np.nonzero(seq.labels[ed] == 1)[2].tolist()))
    assert lv_slices == contoured
    assert seq.meta["layout"] == "sunnybrook" and seq.meta["es_frame"] == es


def test_dataset_entry_defaults():
    e = DatasetEntry(name="x", image=Path("x.nii.gz"))
    assert (e.labels, e.label_series, e.ref_frame, e.layout, e.label_map) == ({}, None, 0, "plain", ACDC)
