"""Killing the command line half-way: nothing torn, nothing mixed, nothing lost.

A fit (``python -m cardioinr.app.cli fit``) runs in a subprocess over an output folder that already
holds the outputs of an earlier fit (another seed), and is killed:

* with SIGKILL the moment its k-th temporary file appears (k = 1, 2, ...: inside the atomic
  write of displacement.nii.gz, field.pt, report.html, ...), and at random moments;
* with SIGTERM and SIGINT, which must end it cleanly: exit code 143 / 130, one line on stderr,
  no temporary file left.

Afterwards every file in the folder must be complete and loadable, and all of them must come
from one run (the old one, untouched, or the new one, equal to an uninterrupted run with the
same seed): a kill never leaves a new displacement beside old labels. SIGKILL may leave hidden
``.NAME.XXXXXXXX.tmp.EXT`` files; they must not break a new fit into the same folder.

Prior training (``train-prior``) is killed once its resumable state exists; ``--resume`` must
then finish it, with a result equal to an uninterrupted training.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cardioinr.core.files import file_sha256
from cardioinr.fit import load_field
from cardioinr.io import read_nifti, save_nifti
from cardioinr.phantoms import PhantomConfig, make_phantom, write_cases
from cardioinr.priors import load_prior

TINY = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=6)
CONTRACT = {"displacement.nii.gz", "labels.nii.gz", "field.pt", "metrics.json", "strain.csv", "report.html"}
TMP_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.tmp(\.nii\.gz|\.[A-Za-z]+)?$")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("CARDIOINR_MAX_GIB", None)

pytestmark = [pytest.mark.slow,  # processes killed mid-run: minutes
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cardioinr.app.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def fit_args(data: dict, out: Path, seed: int) -> list[str]:
    return ["fit", str(data["cine"]), "--seg", str(data["seg"]), "--out", str(out), "--steps", "20",
            "--seed", str(seed), "--threads", "1", "--quiet"]


def tmp_files(folder: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.startswith(".") and ".tmp" in n)
    except FileNotFoundError:
        return []


def kill_when(proc: subprocess.Popen, folder: Path, sig: int, *, nth_tmp: int | None = None,
              after: float | None = None) -> str:
    """Send ``sig`` when the ``nth_tmp``-th distinct temporary file shows up in ``folder`` (busy
    polling), or ``after`` seconds; return what was hit ('tmp:NAME', 'time', or 'finished')."""
    seen: list[str] = []
    t0 = time.monotonic()
    while proc.poll() is None:
        if nth_tmp is not None:
            for name in tmp_files(folder):
                if name not in seen:
                    seen.append(name)
            if len(seen) >= nth_tmp:
                proc.send_signal(sig)
                return f"tmp:{seen[nth_tmp - 1]}"
            time.sleep(0.0002)
        else:
            if time.monotonic() - t0 >= after:  # type: ignore[operator]
                proc.send_signal(sig)
                return "time"
            time.sleep(0.002)
    return "finished"


# ---------------------------------------------------------------------------------------------
# Fixtures: inputs and two uninterrupted reference runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("kill")
    ph = make_phantom(TINY, 4)
    cine = save_nifti(d / "cine.nii.gz", ph.sequence.image, ph.sequence.affine, frame_interval_ms=35.0)
    seg = save_nifti(d / "seg.nii.gz", ph.labels[..., 0], ph.sequence.affine)
    out = {"dir": d, "cine": cine, "seg": seg}
    for seed, name in ((0, "old"), (1, "new")):
        t0 = time.monotonic()
        rc, _, err = finish(start(*fit_args(out, d / name, seed)))
        assert rc == 0, err
        out[f"{name}_seconds"] = time.monotonic() - t0
        assert {p.name for p in (d / name).iterdir()} == CONTRACT
    return out


def _content(folder: Path) -> dict:
    """The deterministic content of each contract file present (timings in metrics and the
    report differ between two runs of the same fit, so those are checked for completeness)."""
    got: dict = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        assert p.name in CONTRACT, f"unexpected file {p.name}"
        if p.name.endswith(".nii.gz"):
            arr, _, _ = read_nifti(p)  # reads all voxels and checks the gzip CRC
            got[p.name] = arr
        elif p.name == "field.pt":
            got[p.name] = load_field(p).state_dict()
        elif p.name == "metrics.json":
            m = json.loads(p.read_text())
            got[p.name] = (m["config"]["seed"], m["steps"], m["inputs"]["sequence"]["sha256"])
        elif p.name == "strain.csv":
            with p.open(newline="") as fh:
                rows = list(csv.reader(fh))
            assert rows and len(rows) > 1 and all(len(r) == len(rows[0]) for r in rows)
            got[p.name] = p.read_text()
        else:  # report.html: one self-contained page, complete to its last tag
            text = p.read_text()
            assert text.rstrip().endswith("</html>"), "torn report.html"
            got[p.name] = None
    return got


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="module")
def references(data: dict) -> dict:
    return {"old": _content(data["dir"] / "old"), "new": _content(data["dir"] / "new")}


def check_folder(folder: Path, refs: dict, started: float, *, leftovers_allowed: bool) -> str:
    """Every file complete and loadable, all from one run; returns which run ('old'/'new'/'none')."""
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    for name in hidden:
        m = TMP_NAME.match(name)
        assert m and any(c.startswith(m.group(1)) for c in CONTRACT), f"unexpected hidden file {name}"
    if not leftovers_allowed:
        assert not hidden, f"temporary files left behind: {hidden}"
    got = _content(folder)
    if not got:
        return "none"
    runs = set()
    for name, value in got.items():
        run = "new" if (folder / name).stat().st_mtime >= started - 0.01 else "old"
        runs.add(run)
        if value is not None:
            assert _same(value, refs[run][name]), f"{name} differs from the uninterrupted {run} run"
    assert len(runs) == 1, f"outputs of two runs mixed: {sorted(runs)} in {sorted(got)}"
    return runs.pop()


# ---------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------


def test_fit_killed_mid_write_leaves_complete_files_of_one_run(data: dict, references: dict,
                                                                 tmp_path: Path, capsys) -> None:
    rng = random.Random(20260)
    span = data["new_seconds"]
    plans = [("SIGKILL", {"nth_tmp": k}) for k in (1, 2, 3, 4, 5)]
    plans += [("SIGKILL", {"after": rng.uniform(0.3, 1.0) * span}) for _ in range(2)]
    plans += [("SIGTERM", {"nth_tmp": 1}), ("SIGTERM", {"after": rng.uniform(0.3, 0.9) * span}),
              ("SIGINT", {"after": rng.uniform(0.3, 0.9) * span})]
    log = []
    leftover_folder = None
    for i, (signame, how) in enumerate(plans):
        out = tmp_path / f"run{i}"
        shutil.copytree(data["dir"] / "old", out)  # an earlier fit's outputs are there (old mtimes)
        started = time.time()
        proc = start(*fit_args(data, out, seed=1))
        hit = kill_when(proc, out, getattr(signal, signame), **how)
        rc, _, err = finish(proc)
        if signame == "SIGKILL":
            assert rc in (-signal.SIGKILL, 0), (rc, err)
        elif hit != "finished" and rc == -getattr(signal, signame):
            # Landed after main() had returned and put the default handler back, while the
            # interpreter exited (seen under load): the run had finished, so it is all there.
            assert check_folder(out, references, started, leftovers_allowed=False) == "new", err
            assert set(_content(out)) == CONTRACT
        elif hit != "finished" and rc != 0:
            code = {"SIGTERM": 143, "SIGINT": 130}[signame]
            assert rc == code, (signame, rc, err)
            # The tiny cine lies outside the built-in prior's frame counts: a warning line comes first.
            lines = [x for x in err.strip().splitlines() if not x.startswith("warning: ")]
            assert len(lines) == 1 and lines[0].startswith("cardioinr: "), err
            assert "Traceback" not in err
        run = check_folder(out, references, started, leftovers_allowed=signame == "SIGKILL")
        if signame == "SIGKILL" and tmp_files(out):
            leftover_folder = out
        log.append(f"{signame} at {hit}: rc={rc}, folder holds {run} run "
                   f"({len([p for p in out.iterdir() if not p.name.startswith('.')])} files, "
                   f"{len(tmp_files(out))} tmp)")
    with capsys.disabled():
        print("\n" + "\n".join(log))
    assert sum("tmp:" in line for line in log) >= 3, "too few kills landed inside a write"

    # Leftover temporary files do not break the next fit into the same folder.
    target = leftover_folder or tmp_path / "run0"
    rc, _, err = finish(start(*fit_args(data, target, seed=1)))
    assert rc == 0, err
    assert check_folder(target, references, time.time() - 60, leftovers_allowed=True) == "new"
    assert set(_content(target)) == CONTRACT


def test_sigterm_handler_is_restored_after_main(tmp_path: Path) -> None:
    from cardioinr.app.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["fit", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------------------------------
# Prior training
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("kill_prior")
    write_cases(d / "data", n=2, config=TINY, seed=3, progress=False)
    cfg = d / "prior.toml"
    cfg.write_text("[prior]\nsteps = 30\nsave_every = 3\nbatch = 2\n")
    return {"dir": d, "data": d / "data", "config": cfg}


def train_args(c: dict, out: Path, *extra: str) -> list[str]:
    return ["train-prior", str(c["data"]), "--kind", "population", "--out", str(out), "--config", str(c["config"]),
            "--threads", "1", "--quiet", *extra]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> bool:
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if path.exists():
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_prior_training_killed_then_resumed(cohort: dict, tmp_path: Path, signame: str) -> None:
    ref = tmp_path / "ref.ckpt"
    rc, _, err = finish(start(*train_args(cohort, ref)))
    assert rc == 0, err
    out = tmp_path / "p.ckpt"
    state = out.with_name(out.name + ".state")
    proc = start(*train_args(cohort, out))
    assert _wait_for(state, proc), "the training state never appeared"
    time.sleep(random.Random(signame).uniform(0.05, 0.4))  # somewhere in a later step or state write
    proc.send_signal(getattr(signal, signame))
    rc, _, err = finish(proc)
    if rc == 0:
        pytest.skip("training finished before the signal")
    assert rc == (-signal.SIGKILL if signame == "SIGKILL" else 143), (rc, err)
    if signame == "SIGTERM":
        assert err.strip().splitlines() == ["cardioinr: terminated by signal 15"], err
        assert not [n for n in os.listdir(tmp_path) if ".tmp" in n], "temporary files left behind"
    assert not out.exists() and state.exists()
    st = torch.load(state, weights_only=True)  # complete, loadable
    assert 0 < st["step"] < 30 and st["step"] % 3 == 0

    # Without --resume: one clear line, nothing overwritten.
    rc, _, err = finish(start(*train_args(cohort, out)))
    assert rc == 2 and err.strip().splitlines() == [
        f"cardioinr: error: {state}: an interrupted training left its state here; pass --resume or delete it"], err
    rc, _, err = finish(start(*train_args(cohort, out, "--resume")))
    assert rc == 0, err
    assert not state.exists(), "the state outlived a finished training"
    resumed, uninterrupted = load_prior(out), load_prior(ref)
    assert len(resumed.history) == 30
    for k, v in uninterrupted.field.state_dict().items():
        assert torch.equal(resumed.field.state_dict()[k], v), f"resumed training differs in {k}"


def test_fine_tuning_killed_then_resumed(cohort: dict, tmp_path: Path) -> None:
    """Fine-tuning (--from) resumes after a kill to the same weights as an uninterrupted run,
    and a state left by a fine-tuning from another parent is not resumed."""
    parent = tmp_path / "parent.ckpt"
    rc, _, err = finish(start(*train_args(cohort, parent)))
    assert rc == 0, err
    ref = tmp_path / "ref.ckpt"
    rc, _, err = finish(start(*train_args(cohort, ref, "--from", str(parent))))
    assert rc == 0, err
    out = tmp_path / "ft.ckpt"
    state = out.with_name(out.name + ".state")
    proc = start(*train_args(cohort, out, "--from", str(parent)))
    assert _wait_for(state, proc), "the training state never appeared"
    time.sleep(random.Random(7).uniform(0.05, 0.3))
    proc.kill()
    rc, _, err = finish(proc)
    if rc == 0:
        pytest.skip("fine-tuning finished before the signal")
    assert not out.exists() and state.exists()
    # Another parent (here: random weights) cannot pick up this state.
    rc, _, err = finish(start(*train_args(cohort, out, "--resume")))
    assert rc == 2 and "training state started from the prior" in err and "delete it to restart" in err, err
    rc, _, err = finish(start(*train_args(cohort, out, "--from", str(parent), "--resume")))
    assert rc == 0, err
    assert not state.exists()
    resumed, uninterrupted = load_prior(out), load_prior(ref)
    assert [s["sha256"] for s in resumed.lineage] == [s["sha256"] for s in uninterrupted.lineage] == [file_sha256(parent)]
    for k, v in uninterrupted.field.state_dict().items():
        assert torch.equal(resumed.field.state_dict()[k], v), f"resumed fine-tuning differs in {k}"


def test_prior_training_killed_while_writing_the_checkpoint_can_resume(cohort: dict, tmp_path: Path) -> None:
    out = tmp_path / "p.ckpt"
    state = out.with_name(out.name + ".state")
    proc = start(*train_args(cohort, out))
    hit = None
    # The state file is rewritten through temporaries too: wait for the checkpoint's own one.
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 60:
        if any(n.startswith(".p.") and n.endswith(".tmp.ckpt") for n in os.listdir(tmp_path)):
            proc.kill()
            hit = "checkpoint write"
            break
    finish(proc)
    if hit is None:
        pytest.skip("the checkpoint write was too quick to catch")
    if out.exists():
        # seen mid-write, but the write and its rename finished before the signal landed (a race
        # of a few ms that CI once lost): the deterministic twin below covers the failing write
        pytest.skip("the checkpoint write finished before the kill landed")
    assert state.exists(), "killed while writing the checkpoint: the training state is gone, nothing to resume"
    rc, _, err = finish(start(*train_args(cohort, out, "--resume")))
    assert rc == 0, err
    assert out.exists() and not state.exists()


def test_crash_inside_the_checkpoint_write_keeps_the_training_resumable(cohort: dict, tmp_path: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic twin of the test above: the checkpoint write itself fails."""
    import cardioinr.priors as priors
    from cardioinr.app.cli import main

    out = tmp_path / "p.ckpt"
    state = out.with_name(out.name + ".state")
    real_save = priors.save_prior

    def failing_save(path, prior):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(priors, "save_prior", failing_save)
    assert main(train_args(cohort, out)) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"cardioinr: error: {out}: No space left on device"]
    assert not out.exists() and state.exists(), "a failed checkpoint write lost the training state"
    assert torch.load(state, weights_only=True)["step"] >= 30 - 3  # at most save_every steps to redo
    monkeypatch.setattr(priors, "save_prior", real_save)
    assert main(train_args(cohort, out, "--resume")) == 0
    assert load_prior(out).kind == "population" and not state.exists()


def test_a_signal_inside_a_finaliser_is_recorded_quietly():
    """A signal landing inside a finaliser (or weakref callback) raises there, where Python only
    prints the exception: inside a command that print is dropped (the signal is recorded and
    reported in one line on exit); other exceptions of finalisers still reach the hook."""
    import gc
    import sys

    from cardioinr.app.cli import _SignalState, _signals_as_interrupt, _Terminated

    class Raises:
        def __init__(self, exc):
            self.exc = exc

        def __del__(self):
            raise self.exc

    seen = []
    before = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(type(u.exc_value).__name__)
    try:
        with _signals_as_interrupt(_SignalState()):
            Raises(_Terminated(15))
            Raises(ValueError("kept"))
            gc.collect()
        Raises(_Terminated(15))  # outside a command: reported as before
        gc.collect()
    finally:
        sys.unraisablehook = before
    assert seen == ["ValueError", "_Terminated"]
