"""Cohort fitting on Ray: good subjects finish with correct outputs, a corrupt one is recorded
(with the stage where it failed) and does not stop the others, --resume redoes nothing complete
and retries what failed. Faults of every kind at scale: tests/app/test_cohort_faults.py.

The Ray tests skip when ray is not importable (it is the optional ``[cluster]`` extra); the
checks of completeness, rows and settings run without it.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cardioinr.app.cohort import (
    COLUMNS,
    cohort_command,
    one_line,
    resolve_fit_config,
    run_cohort,
    subject_dirname,
    summary_row,
)
from cardioinr.core.errors import ConfigError, InputError
from cardioinr.outputs.contract import MARKER
from cardioinr.outputs.contract import is_complete as subject_complete
from cardioinr.io import read_nifti
from cardioinr.analysis.metrics import dice
from cardioinr.phantoms import PhantomConfig, write_cases

SMALL = PhantomConfig(dim=2, shape=(64, 64, 1), spacing=(2.0, 2.0, 8.0), n_frames=12)
# Few steps and a small field keep the cohort fast; the phantoms' motion is still recovered.
FIT = {"steps": 60, "points": 1024, "reg_points": 256, "field": {"hidden": 64, "layers": 2}}
BAD = "case001"


def _read_summary(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and tuple(rows[0].keys()) == COLUMNS
    return {r["subject"]: r for r in rows}


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four phantoms, one truncated on purpose, fitted on a local Ray with two workers."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("cohort")
    write_cases(root / "data", 4, SMALL, seed=0, progress=False)
    bad = root / "data" / f"{BAD}_4d.nii.gz"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])
    summary = run_cohort(root / "data", root / "out", workers=2, fit_overrides=FIT, progress=False)
    return root, summary, good_bytes


@pytest.mark.slow
def test_cohort_fits_the_good_subjects_and_records_the_corrupt_one(cohort) -> None:
    root, summary, _ = cohort
    assert summary.slots == 2
    by_name = {r["subject"]: r for r in summary.rows}
    assert [r["subject"] for r in summary.rows] == ["case000", "case001", "case002", "case003"]
    assert by_name[BAD]["status"] == "failed" and by_name[BAD]["stage"] == "read"
    assert "corrupt or truncated" in by_name[BAD]["error"] and "\n" not in by_name[BAD]["error"]
    assert not subject_complete(root / "out" / BAD)

    manifest = json.loads((root / "data" / "manifest.json").read_text())
    for case in manifest["cases"]:
        name = case["name"]
        if name == BAD:
            continue
        row = by_name[name]
        assert row["status"] == "ok" and row["stage"] == "", row
        assert row["steps"] == FIT["steps"] and row["seconds"] > 0
        folder = root / "out" / name
        assert subject_complete(folder)
        for f in ("displacement.nii.gz", "labels.nii.gz", "field.pt", "strain.csv", "metrics.json", "report.html"):
            assert (folder / f).is_file(), f
        disp, _, _ = read_nifti(folder / "displacement.nii.gz")
        X, Y, Z = case["shape"]
        T, ref = case["n_frames"], case["ref_frame"]
        assert disp.shape == (X, Y, Z, T, 3)
        assert np.all(disp[..., ref, :] == 0)
        assert np.abs(disp).max() > 0.5  # it moved
        # Propagated labels against the phantom's true labels of every other frame, and against
        # doing nothing (the reference labels copied to every frame).
        pred, _, _ = read_nifti(folder / "labels.nii.gz")
        truth, _, _ = read_nifti(root / "data" / case["labels"])
        frames = [t for t in range(T) if t != ref]
        fitted = np.mean([dice(pred[..., t], truth[..., t], c) for t in frames for c in (1, 2, 3)])
        still = np.mean([dice(truth[..., ref], truth[..., t], c) for t in frames for c in (1, 2, 3)])
        assert fitted > 0.85 and fitted > still + 0.1, (name, fitted, still)
        assert row["dice_mean"] == pytest.approx(fitted, abs=1e-3)  # the summary holds the same score
        assert row["percent_negative_jacobian"] is not None and row["peak_circumferential_pct"] < 0

    table = _read_summary(summary.csv)
    assert table[BAD]["status"] == "failed" and table[BAD]["error"] == by_name[BAD]["error"]
    assert table[BAD]["stage"] == "read"
    assert {table[n]["status"] for n in table if n != BAD} == {"ok"}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert summary.parquet is None
    else:
        assert summary.parquet is not None and summary.parquet.is_file()


@pytest.mark.slow
def test_resume_redoes_nothing_complete_and_retries_the_failed(cohort, tmp_path) -> None:
    src, _, good_bytes = cohort
    # A copy (mtimes kept) so that this test leaves the other one's results alone.
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    (root / "data" / f"{BAD}_4d.nii.gz").write_bytes(good_bytes)  # the input is fixed
    done = {n: _mtimes(root / "out" / n) for n in ("case000", "case002", "case003")}
    cfg = root / "fit.json"
    cfg.write_text(json.dumps({k: v for k, v in FIT.items() if k != "steps"}))
    args = ["cohort", str(root / "data"), "--out", str(root / "out"), "--resume", "--workers", "2",
            "--steps", str(FIT["steps"]), "--config", str(cfg), "--quiet"]
    from cardioinr.app import cli

    if any(c.callback is cohort_command for c in cli.app.registered_commands):
        assert cli.main(args) == 0
    else:  # not registered yet: call the command function itself
        cohort_command(data=root / "data", out=root / "out", prior=None, workers=2, address=None, resume=True,
                       steps=FIT["steps"], device="cpu", threads_per_task=1, gpus_per_task=0.0, cpus_per_task=1.0,
                       config=cfg, label_map=None, no_report=False, quiet=True)
    table = _read_summary(root / "out" / "cohort_summary.csv")
    assert {n: r["status"] for n, r in table.items()} == {
        "case000": "skipped", "case001": "ok", "case002": "skipped", "case003": "skipped"}
    for n, before in done.items():
        assert _mtimes(root / "out" / n) == before, n  # nothing rewritten
        assert table[n]["dice_mean"]  # skipped rows still carry their figures
    assert subject_complete(root / "out" / BAD)
    assert int(table[BAD]["steps"]) == FIT["steps"]


# ---------------------------------------------------------------------------------------------
# Without Ray
# ---------------------------------------------------------------------------------------------


def _fake_complete(folder: Path) -> None:
    folder.mkdir(parents=True)
    for f in ("displacement.nii.gz", "field.pt"):
        (folder / f).write_bytes(b"x")
    (folder / "metrics.json").write_text('{"steps": 5}')
    (folder / MARKER).write_text(json.dumps({"files": ["displacement.nii.gz", "field.pt", "metrics.json"]}))


def test_completeness_needs_marker_files_and_parsable_metrics(tmp_path) -> None:
    f = tmp_path / "s"
    _fake_complete(f)
    assert subject_complete(f)
    (f / "metrics.json").write_text('{"steps": 5')  # truncated
    assert not subject_complete(f)
    (f / "metrics.json").write_text("{}")
    (f / "field.pt").unlink()
    assert not subject_complete(f)
    (f / "field.pt").write_bytes(b"x")
    (f / MARKER).unlink()
    assert not subject_complete(f)
    (f / MARKER).write_text(json.dumps({"files": ["field.pt"]}))  # a marker that lists too little
    assert not subject_complete(f)
    assert not subject_complete(tmp_path / "absent")


def test_rows_names_and_errors() -> None:
    assert subject_dirname("SC-HF-I-01") == "SC-HF-I-01"
    assert subject_dirname("a/b c") == "a_b_c"
    assert one_line(InputError("x.nii: bad")) == "x.nii: bad"
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    metrics = {"steps": 7, "percent_negative_jacobian": 0.5, "sequence": {"ref_frame": 0},
               "strain": {"ef_pct": 55.0, "peak": {"radial_pct": 30.0, "circumferential_pct": -20.0,
                                                    "longitudinal_pct": None}},
               "evaluation": {"labels": {"frames": {"0": {"LV": {"dice": 1.0}}, "3": {"LV": {"dice": 0.8},
                                                                                   "MYO": {"dice": 0.6}}}},
                              "epe": {"MYO": {"mean": 1.25}}}}
    row = summary_row("s", Path("/o/s"), "ok", seconds=2.0, metrics=metrics)
    assert set(row) == set(COLUMNS)
    assert row["dice_mean"] == pytest.approx(0.7) and row["dice_min"] == pytest.approx(0.6)  # ref frame left out
    assert row["epe_myo_mm"] == 1.25 and row["peak_longitudinal_pct"] is None and row["ef_pct"] == 55.0


def test_settings_and_inputs_fail_clearly_before_ray_starts(tmp_path, monkeypatch) -> None:
    cfg, prior = resolve_fit_config({"steps": 3, "field": {"hidden": 16}}, None, "cpu")
    assert cfg["steps"] == 3 and cfg["field"]["hidden"] == 16 and prior is None
    with pytest.raises(ConfigError, match="unknown fit setting"):
        resolve_fit_config({"stepz": 3}, None, "cpu")
    with pytest.raises(ConfigError, match="gpus-per-task"):
        run_cohort(tmp_path, tmp_path / "o", device="cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        run_cohort(tmp_path, tmp_path / "o", device="tpu")
    with pytest.raises(ConfigError, match="give --prior"):
        run_cohort(tmp_path, tmp_path / "o", prior_through_plane=0.0)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
        run_cohort(tmp_path, tmp_path / "o", prior="p.ckpt", prior_through_plane=1.5)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"cardioinr\[cluster\]"):
        run_cohort(tmp_path, tmp_path / "o")
    monkeypatch.undo()
    if _has_ray():
        with pytest.raises(InputError, match="not found"):
            run_cohort(tmp_path / "missing", tmp_path / "o")


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def test_fingerprint_changes_with_the_through_plane_start(tmp_path) -> None:
    """A resumed run refits subjects when the prior's start changed."""
    from cardioinr.app.cohort import _fingerprint

    ckpt = tmp_path / "p.ckpt"
    ckpt.write_bytes(b"x")
    cfg = {"steps": 3}
    prints = {tp: _fingerprint(cfg, str(ckpt), tp) for tp in ("auto", 0.0, 0.5, 1.0)}
    assert _fingerprint(cfg, str(ckpt)) == prints["auto"]
    assert len(set(prints.values())) == 4
    assert _fingerprint(cfg, None, 0.5) == _fingerprint(cfg, None)  # no prior: nothing to scale

# ---------------------------------------------------------------------------------------------
# One bad subject never stops the cohort (issue 22)
# ---------------------------------------------------------------------------------------------

TINY_FIT = {"steps": 15, "points": 1024, "reg_points": 256, "field": {"hidden": 64, "layers": 2}}


def _plain_folder_with_random_bytes(folder: Path, n_good: int = 3) -> Path:
    """The issue's folder: good 4D NIfTI cines and one file of random bytes named like a cine."""
    from cardioinr.io import save_nifti
    from cardioinr.phantoms import make_phantom

    folder.mkdir(parents=True)
    cfg = PhantomConfig(dim=2, shape=(64, 64, 1), spacing=(2.0, 2.0, 8.0), n_frames=8)
    for i in range(n_good):
        seq = make_phantom(cfg, i, name=f"case{i:03d}").sequence
        save_nifti(folder / f"case{i:03d}_4d.nii.gz", seq.image, seq.affine, frame_interval_ms=seq.frame_interval_ms)
    (folder / "case999_4d.nii.gz").write_bytes(np.random.default_rng(0).bytes(20_000))
    return folder


@pytest.mark.slow  # a local Ray: its start alone takes 10-20 s here
def test_a_file_of_random_bytes_fails_at_indexing_and_the_others_are_fitted(tmp_path) -> None:
    pytest.importorskip("ray")
    from cardioinr.app import cli

    data = _plain_folder_with_random_bytes(tmp_path / "data")
    cfg = tmp_path / "fit.json"
    cfg.write_text(json.dumps({k: v for k, v in TINY_FIT.items() if k != "steps"}))
    rc = cli.main(["cohort", str(data), "--out", str(tmp_path / "out"), "--workers", "2", "--steps", "15",
                   "--config", str(cfg), "--no-report", "--quiet"])
    assert rc == 1  # a subject failed
    table = _read_summary(tmp_path / "out" / "cohort_summary.csv")
    assert list(table) == ["case000_4d", "case001_4d", "case002_4d", "case999_4d"]
    bad = table["case999_4d"]
    assert (bad["status"], bad["stage"], bad["output"]) == ("failed", "index", "")
    assert "case999_4d.nii.gz: not a readable NIfTI file" in bad["error"] and "\n" not in bad["error"]
    for n in ("case000_4d", "case001_4d", "case002_4d"):
        assert table[n]["status"] == "ok" and table[n]["stage"] == "" and float(table[n]["worker_peak_rss_mb"]) > 0
        assert subject_complete(tmp_path / "out" / n)
    assert not (tmp_path / "out" / "case999_4d").exists()


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_index_failures_are_rows_and_need_no_ray(tmp_path, monkeypatch) -> None:
    """A folder whose every file is unreadable: one failed row each (stage index), the summary
    written, exit code 1, and no Ray started for nothing."""
    pytest.importorskip("ray")
    import cardioinr.app.cohort as cohort_mod
    from cardioinr.app import cli

    data = tmp_path / "data"
    data.mkdir()
    (data / "case999_4d.nii.gz").write_bytes(np.random.default_rng(0).bytes(5000))
    (data / "case5_4d.nii").write_bytes(b"short")

    def no_ray(*a, **k):
        raise AssertionError("Ray started although nothing could be fitted")

    monkeypatch.setattr(cohort_mod, "_connect", no_ray)
    s = run_cohort(data, tmp_path / "out", progress=False)
    assert [(r["subject"], r["status"], r["stage"]) for r in s.rows] == [
        ("case5_4d", "failed", "index"), ("case999_4d", "failed", "index")]
    assert s.n_failed == 2 and s.slots == 0
    table = _read_summary(s.csv)
    assert table["case999_4d"]["stage"] == "index" and "not a readable NIfTI" in table["case999_4d"]["error"]
    if _has_pyarrow():
        import pyarrow.parquet as pq

        rows = pq.read_table(s.parquet).to_pylist()
        assert [(r["subject"], r["stage"]) for r in rows] == [("case5_4d", "index"), ("case999_4d", "index")]
        assert list(rows[0]) == list(COLUMNS)
    assert cli.main(["cohort", str(data), "--out", str(tmp_path / "out2"), "--quiet"]) == 1


def _entry(tmp_path: Path, name: str, image=None, labels=None):
    """A manifest-like entry of a small phantom, with its image or labels replaced."""
    from cardioinr.io import save_nifti
    from cardioinr.io.datasets import DatasetEntry
    from cardioinr.phantoms import make_phantom

    ph = make_phantom(PhantomConfig(dim=2, shape=(36, 36, 1), spacing=(3.0, 3.0, 8.0), n_frames=5), 3)
    seq = ph.sequence
    img = seq.image if image is None else image(seq.image)
    lab = ph.labels[..., seq.ref_frame] if labels is None else labels(ph.labels[..., seq.ref_frame])
    save_nifti(tmp_path / f"{name}_4d.nii.gz", img, seq.affine, frame_interval_ms=seq.frame_interval_ms)
    save_nifti(tmp_path / f"{name}_labels.nii.gz", lab, seq.affine)
    return DatasetEntry(name=name, image=tmp_path / f"{name}_4d.nii.gz", label_series=tmp_path / f"{name}_labels.nii.gz",
                        ref_frame=seq.ref_frame, layout="manifest")


def _with_nan(a):
    a = a.copy()
    a[1, 1, 0, 1] = np.nan
    return a


def test_fit_subject_names_the_stage_of_each_failure(tmp_path, monkeypatch) -> None:
    """read: invalid images or labels; fit: the optimisation; write: the outputs. Each comes back
    as a failed row with a one-line error (in the worker; Ray is not needed to check it)."""
    from cardioinr.app.cohort import fit_subject

    cfg, _ = resolve_fit_config({**TINY_FIT, "steps": 2}, None, "cpu")
    cases = {
        "good": _entry(tmp_path, "good"),
        "nan": _entry(tmp_path, "nan", image=_with_nan),
        "three_d": _entry(tmp_path, "three_d", image=lambda a: a[..., 0]),
        "label_shape": _entry(tmp_path, "label_shape", labels=lambda a: a[:16]),
        "empty_mask": _entry(tmp_path, "empty_mask", labels=np.zeros_like),
    }
    out = tmp_path / "out"
    rows = {n: fit_subject(e, str(out / n), cfg, report=False) for n, e in cases.items()}
    assert (rows["good"]["status"], rows["good"]["stage"]) == ("ok", "")
    assert subject_complete(out / "good")
    for n, needle in (("nan", "NaN"), ("three_d", "4D"), ("label_shape", "shape"), ("empty_mask", "empty")):
        r = rows[n]
        assert (r["status"], r["stage"]) == ("failed", "read"), r
        assert needle in r["error"] and "\n" not in r["error"] and r["worker_peak_rss_mb"] > 0
        assert not subject_complete(out / n)

    (out / "a_file").write_text("not a folder")  # the subject's output folder cannot be one
    r = fit_subject(cases["good"], str(out / "a_file"), cfg, report=False)
    assert (r["status"], r["stage"]) == ("failed", "write"), r

    import cardioinr.fit as fit_pkg
    import cardioinr.outputs as outputs_pkg

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs_pkg, "save_fit", no_space)
    r = fit_subject(cases["good"], str(out / "good"), cfg, report=False)
    assert (r["status"], r["stage"]) == ("failed", "write") and "No space left" in r["error"], r
    assert not subject_complete(out / "good")  # the refit removed the old marker first

    def diverged(self, *a, **k):
        raise FloatingPointError("loss is NaN")

    monkeypatch.setattr(fit_pkg.Fitter, "fit", diverged)
    r = fit_subject(cases["good"], str(out / "good"), cfg, report=False)
    assert (r["status"], r["stage"], r["error"]) == ("failed", "fit", "FloatingPointError: loss is NaN")


def test_problems_of_the_cohort_itself_stop_it_with_one_line(tmp_path) -> None:
    """No dataset, an output folder that is a file or cannot be written, a Ray address that does
    not answer: one line, exit code 2, nothing fitted (and no minutes-long wait for Ray)."""
    pytest.importorskip("ray")
    import socket
    import time

    from cardioinr.app import cli

    data = tmp_path / "data"
    data.mkdir()
    from cardioinr.io import save_nifti

    save_nifti(data / "a_4d.nii.gz", np.random.default_rng(0).normal(size=(8, 8, 1, 3)).astype(np.float32), np.eye(4))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        run_cohort(data, tmp_path / "file", progress=False)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="does not answer"):
        run_cohort(data, tmp_path / "o", address=f"127.0.0.1:{port}", progress=False)
    assert time.perf_counter() - t < 30
    assert cli.main(["cohort", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert cli.main(["cohort", str(data), "--out", str(tmp_path / "file"), "--quiet"]) == 2

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from faults import make_read_only, undo_read_only

    locked = tmp_path / "locked"
    if not make_read_only(locked):
        pytest.skip("a read-only folder cannot be made here")
    try:
        with pytest.raises(ConfigError, match="cannot be written"):
            run_cohort(data, locked / "out", progress=False)
        assert cli.main(["cohort", str(data), "--out", str(locked), "--quiet"]) == 2
    finally:
        undo_read_only(locked)
