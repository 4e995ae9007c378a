"""Faults of every kind in one cohort (benchmarks/faults.py at a small scale): random bytes, a
truncated gzip, a NaN image, a 3D image, labels of another shape, an empty mask, a cine listed but
missing, a worker SIGKILLed mid-fit, a read-only output folder, and the driver SIGKILLed then
restarted with --resume. Every good subject must end complete with outputs bitwise equal to a
fault-free run, every fault failed at its stage, and --resume must redo nothing complete.

Four local Ray runs: a couple of minutes on two cores (the 200-subject figures are in
docs/scaling.md, from ``make bench-faults``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import faults  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


def test_every_fault_is_recorded_at_its_stage_and_the_rest_is_right(tmp_path) -> None:
    pytest.importorskip("ray")
    args = argparse.Namespace(
        subjects=14, faults=len(faults.KINDS), workers=2, seed=3, kill_at=0.34, skip_kinds=[],
        work=str(tmp_path / "work"), keep=True, out=None)
    r = faults.run(args)
    planned = r["faults"]
    if not faults.can_make_read_only(tmp_path):
        assert "read_only_output" not in planned.values()
    else:
        assert sorted(planned.values()) == sorted(faults.KINDS)  # one of each kind

    assert r["clean"]["rc"] == 0 and r["clean"]["ok"] == 14 - len(planned)
    f = r["faulty"]
    assert f["rc"] == 1  # some subjects failed
    assert f["good_not_complete"] == [] and f["displacement_differs"] == []
    assert f["faults_misrecorded"] == {}, f["faults_misrecorded"]
    assert f["parquet_agrees"] in (True, None)
    assert [k["subject"] for k in f["worker_kills"]] == [n for n, k in planned.items() if k == "worker_kill"]
    assert all("\n" not in e for e in f["errors"].values())

    k, s = r["killed"], r["resumed"]
    assert k["rc"] == -signal.SIGKILL and k["driver_kill"]["complete_at_kill"] >= 1
    assert s["rc"] == 1 and s["redone_complete"] == [] and len(s["skipped"]) == s["complete_before"] >= 1
    assert s["good_not_complete"] == [] and s["faults_misrecorded"] == {} and s["displacement_differs"] == []
    assert r["passed"]
