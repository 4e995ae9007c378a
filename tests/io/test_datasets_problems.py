"""``index_dataset(..., problems=[])``: each case or file that cannot be indexed is recorded and the
index goes on (a cohort turns each into a failed row); without ``problems`` nothing changes (the
first problem raises, as tests/io/test_datasets.py pins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cardioinr.core.errors import InputError
from cardioinr.geometry import make_affine
from cardioinr.io.datasets import IndexProblem, index_dataset
from cardioinr.io.nifti import save_nifti
from cardioinr.io.npz import save_npz
from cardioinr.io.sequence import Sequence

AFF = make_affine((1.5, 1.5, 8.0))


def cine(shape=(10, 9, 2, 6), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


def lab(shape=(10, 9, 2)) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[2:5, 2:5] = 1
    return out


def write_phantom_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    cases = []
    for c in range(n):
        save_nifti(root / f"case{c}_image.nii.gz", cine(seed=c), AFF, frame_interval_ms=30.0)
        cases.append({"name": f"case{c}", "image": f"case{c}_image.nii.gz", "ed_frame": 0})
    (root / "manifest.json").write_text(json.dumps({"format": "cardioinr-phantoms", "cases": cases}))
    return root


def write_sunnybrook_like(root: Path, case="SCD0000901", info_ed=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_nifti(root / f"{case}_sa_cine_crop80.nii.gz", cine(), AFF, frame_interval_ms=37.5)
    save_nifti(root / f"{case}_lab_ED_frame05_crop80.nii.gz", lab(), AFF)
    info = {"ED_frame": 5 if info_ed is None else info_ed, "ES_frame": 2}
    (root / f"{case}_info.json").write_text(json.dumps(info))
    return root


def write_acdc_patient(root: Path, pid: str) -> Path:
    d = root / pid
    d.mkdir(parents=True)
    save_nifti(d / f"{pid}_4d.nii.gz", cine(), AFF)
    save_nifti(d / f"{pid}_frame01_gt.nii.gz", lab(), AFF)
    (d / "Info.cfg").write_text("ED: 1\nES: 5\n")
    return d


def test_plain_folder_records_an_unreadable_file_and_keeps_the_others(tmp_path):
    for c in range(3):
        save_nifti(tmp_path / f"case{c:03d}_4d.nii.gz", cine(seed=c), AFF)
    (tmp_path / "case999_4d.nii.gz").write_bytes(b"\x8b\x1f random bytes, not a gzip stream" * 40)
    with pytest.raises(InputError, match="case999_4d.nii.gz: not a readable NIfTI"):
        index_dataset(tmp_path)  # the default is unchanged
    problems: list[IndexProblem] = []
    entries = index_dataset(tmp_path, problems=problems)
    assert [e.name for e in entries] == ["case000_4d", "case001_4d", "case002_4d"]
    (p,) = problems
    assert p.name == "case999_4d" and p.path == tmp_path / "case999_4d.nii.gz"
    assert "not a readable NIfTI" in p.error and "\n" not in p.error


def test_a_folder_of_only_unreadable_files_gives_problems_not_an_error(tmp_path):
    (tmp_path / "a_4d.nii.gz").write_bytes(b"junk")
    (tmp_path / "b_4d.nii").write_bytes(b"junk too")
    problems: list[IndexProblem] = []
    assert index_dataset(tmp_path, problems=problems) == []
    assert sorted(p.name for p in problems) == ["a_4d", "b_4d"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):  # a problem of the dataset itself still raises
        index_dataset(empty, problems=[])
    with pytest.raises(InputError, match="not found"):
        index_dataset(tmp_path / "absent", problems=[])


def test_manifest_case_with_a_missing_file_or_bad_frame(tmp_path):
    root = write_phantom_folder(tmp_path / "m", n=4)
    doc = json.loads((root / "manifest.json").read_text())
    (root / "case1_image.nii.gz").unlink()
    doc["cases"][2]["ed_frame"] = "ED"
    doc["cases"].append("not an object")
    (root / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="case1"):
        index_dataset(root)
    problems: list[IndexProblem] = []
    entries = index_dataset(root, problems=problems)
    assert [e.name for e in entries] == ["case0", "case3"]
    assert [p.name for p in problems] == ["case1", "case2", "case004"]
    assert "not found" in problems[0].error and problems[0].path == root / "case1_image.nii.gz"
    assert "ed_frame" in problems[1].error and "not an object" in problems[2].error


def test_names_shared_by_several_sequences_are_problems(tmp_path):
    save_nifti(tmp_path / "case0.nii.gz", cine(seed=1), AFF)
    save_nifti(tmp_path / "case1.nii.gz", cine(seed=2), AFF)
    save_npz(tmp_path / "case0.npz", Sequence(image=cine(seed=3), affine=AFF))
    with pytest.raises(InputError, match="share the name"):
        index_dataset(tmp_path)
    problems: list[IndexProblem] = []
    assert [e.name for e in index_dataset(tmp_path, problems=problems)] == ["case1"]
    assert [p.name for p in problems] == ["case0", "case0"] and all("share the name" in p.error for p in problems)


def test_sunnybrook_and_acdc_cases_with_bad_info(tmp_path):
    sb = write_sunnybrook_like(tmp_path / "sb", info_ed=4)
    write_sunnybrook_like(sb, case="SCD0000902")
    problems: list[IndexProblem] = []
    assert [e.name for e in index_dataset(sb, problems=problems)] == ["SCD0000902"]
    assert [p.name for p in problems] == ["SCD0000901"] and "ED_frame 4" in problems[0].error

    acdc = tmp_path / "acdc"
    write_acdc_patient(acdc, "patient001")
    bad = write_acdc_patient(acdc, "patient002")
    (bad / "Info.cfg").write_text("ED: 0\nES: 5\n")
    problems = []
    assert [e.name for e in index_dataset(acdc, problems=problems)] == ["patient001"]
    assert [p.name for p in problems] == ["patient002"] and "start at 1" in problems[0].error
