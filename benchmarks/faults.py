"""Fault injection at scale: a cohort never dies of one bad subject.

A synthetic cohort (small 2D phantoms written as 4D NIfTI cines with a reference-frame label
file each, listed in a manifest) gets faults of every kind injected into some of its subjects:

==================  =================================================================  ==========
kind                what is done to the subject                                          stage
==================  =================================================================  ==========
missing_file        the manifest lists a cine that is not there                          index
random_bytes        the cine is random bytes                                             read
truncated_gzip      the cine's gzip stream is cut in half                                read
nan_image           one voxel of the cine is NaN                                         read
image_3d            the cine is one 3D frame instead of a 4D series                      read
label_shape         the label file has another shape than the cine                       read
empty_mask          the label file is all background                                     read
worker_kill         its Ray worker is SIGKILLed mid-fit (from outside, see below)        worker
read_only_output    its output folder exists and cannot be written                       write
==================  =================================================================  ==========

Three runs of ``cardioinr cohort`` (subprocesses, ``--workers 2``, one torch thread per fit):

1. **clean**: the good subjects only (a manifest without the faulty ones);
2. **faulty**: every subject; it must exit with code 1, every good subject complete with a
   ``displacement.nii.gz`` bitwise equal to the clean run's (the fits are seeded and
   single-threaded), every fault failed at its stage;
3. **killed + resumed**: every subject again into a new folder; the driver (the ``cardioinr
   cohort`` process) is SIGKILLed once a share of the subjects is complete, then ``--resume``
   finishes: it must redo nothing complete (skipped rows, files untouched) and end like run 2.

The worker kill uses the cohort's test hook (``cardioinr.app.cohort.FAULT_HOOK_ENV``, set only
here and in the tests): for a subject with ``<hook dir>/<subject>.hold``, the fit writes its
worker's PID to ``<subject>.pid`` at step ``HOLD_STEP`` and waits; this script sees the file,
checks that the PID is a Ray worker, and SIGKILLs it.

A read-only folder means nothing to root, so when this runs as root the folder also gets the
immutable flag (``chattr +i``); where neither works the kind is left out (and said so).

    python benchmarks/faults.py --out bench_out/faults                  # 200 subjects, 20 faults
    python benchmarks/faults.py --subjects 20 --faults 9 --out /tmp/f   # one fault of each kind

Prints a table, writes ``OUT/faults.json`` and ``OUT/faults.md``. The default (200 subjects,
15 steps, two workers) took about twelve minutes on two shared cores.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PHANTOM = {"dim": 2, "shape": (64, 64, 1), "spacing": (2.0, 2.0, 8.0), "n_frames": 8}
# Few steps and a small field: the benchmark is about the cohort's bookkeeping, not about fits.
FIT = {"points": 1024, "reg_points": 256, "field": {"hidden": 64, "layers": 2}}
STEPS = 15

#: fault kind -> the stage its row must carry
KINDS = {
    "missing_file": "index",
    "random_bytes": "read",
    "truncated_gzip": "read",
    "nan_image": "read",
    "image_3d": "read",
    "label_shape": "read",
    "empty_mask": "read",
    "worker_kill": "worker",
    "read_only_output": "write",
}
#: faults beyond an even share go to these kinds first (20 faults: 3 of these, 2 of the others)
EXTRA_FIRST = ("worker_kill", "read_only_output")


# ---------------------------------------------------------------------------------------------
# Read-only folders (root ignores permissions)
# ---------------------------------------------------------------------------------------------


def make_read_only(folder: Path) -> bool:
    """Make ``folder`` (created) refuse new files; False where this machine cannot."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return True
    (folder / ".probe").unlink()
    undo_read_only(folder)
    return False


def undo_read_only(folder: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    if folder.exists():
        os.chmod(folder, 0o755)


def can_make_read_only(tmp: Path) -> bool:
    probe = tmp / ".ro-probe"
    ok = make_read_only(probe)
    undo_read_only(probe)
    probe.rmdir()
    return ok


# ---------------------------------------------------------------------------------------------
# The cohort and its faults
# ---------------------------------------------------------------------------------------------


def plan_faults(n: int, n_faults: int, kinds: list[str], seed: int = 0) -> dict[str, str]:
    """``{subject: kind}`` for ``n_faults`` subjects spread over the cohort, every kind used
    (an even share each, the remainder to :data:`EXTRA_FIRST` first)."""
    import numpy as np

    if n_faults > n:
        raise SystemExit(f"--faults {n_faults} is more than --subjects {n}")
    counts = {k: n_faults // len(kinds) for k in kinds}
    extra = [k for k in EXTRA_FIRST if k in kinds] + [k for k in kinds if k not in EXTRA_FIRST]
    for k in extra[: n_faults % len(kinds)]:
        counts[k] += 1
    seq = [k for k in kinds for _ in range(counts[k])]
    rng = np.random.default_rng(seed)
    where = sorted(rng.choice(n, size=n_faults, replace=False).tolist())
    rng.shuffle(seq)
    return {subject_name(w): k for w, k in zip(where, seq)}


def subject_name(i: int) -> str:
    return f"sub{i:03d}"


def write_cohort(root: Path, n: int, faults: dict[str, str], seed: int = 0) -> dict:
    """Phantoms into ``root/files``; manifests ``root/clean`` (good subjects) and ``root/faulty``
    (all); faults applied to the files; hold files for worker kills in ``root/hooks``."""
    import numpy as np

    from cardioinr.io import save_nifti
    from cardioinr.phantoms import PhantomConfig, make_phantom

    cfg = PhantomConfig(**PHANTOM)
    files, hooks = root / "files", root / "hooks"
    for d in (files, hooks, root / "clean", root / "faulty"):
        d.mkdir(parents=True, exist_ok=True)
    cases = []
    rng = np.random.default_rng(seed + 1)
    for i in range(n):
        name = subject_name(i)
        ph = make_phantom(cfg, (seed, i), name=name)
        seq = ph.sequence
        ref = int(seq.ref_frame)
        image, labels = seq.image, ph.labels[..., ref]
        kind = faults.get(name)
        if kind == "nan_image":
            image = image.copy()
            image[tuple(int(rng.integers(s)) for s in image.shape)] = np.nan
        elif kind == "image_3d":
            image = image[..., ref]
        elif kind == "label_shape":
            labels = labels[: labels.shape[0] // 2]
        elif kind == "empty_mask":
            labels = np.zeros_like(labels)
        img_path, lab_path = files / f"{name}_4d.nii.gz", files / f"{name}_labels.nii.gz"
        save_nifti(img_path, image, seq.affine, frame_interval_ms=seq.frame_interval_ms)
        save_nifti(lab_path, labels, seq.affine)
        if kind == "random_bytes":
            img_path.write_bytes(rng.bytes(img_path.stat().st_size))
        elif kind == "truncated_gzip":
            raw = img_path.read_bytes()
            img_path.write_bytes(raw[: len(raw) // 2])  # the cut falls inside the deflate stream
        elif kind == "missing_file":
            img_path.unlink()
        elif kind == "worker_kill":
            (hooks / f"{name}.hold").write_text("SIGKILL this subject's worker mid-fit\n")
        cases.append({"name": name, "image": f"../files/{img_path.name}", "labels": f"../files/{lab_path.name}",
                      "ref_frame": ref, "ed_frame": ref})
    for folder, keep in (("clean", lambda c: c["name"] not in faults), ("faulty", lambda c: True)):
        manifest = {"format": "cardioinr-phantoms", "version": 1, "label_map": "acdc",
                    "cases": [c for c in cases if keep(c)]}
        (root / folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return {"subjects": n, "faults": faults, "hooks": str(hooks)}


# ---------------------------------------------------------------------------------------------
# Running the command, killing workers
# ---------------------------------------------------------------------------------------------


def _is_ray_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"ray" in cmd and b"default_worker" in cmd or cmd.startswith(b"ray::")


class WorkerKiller(threading.Thread):
    """Watches the hook folder; SIGKILLs each Ray worker that reports a held subject."""

    def __init__(self, hooks: Path) -> None:
        super().__init__(daemon=True)
        self.hooks, self.killed, self._halt = hooks, [], threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for pid_file in sorted(self.hooks.glob("[!.]*.pid")):  # not the hook's temporary file
                try:
                    pid = int(pid_file.read_text())
                except (OSError, ValueError):
                    continue
                pid_file.unlink(missing_ok=True)
                if _is_ray_worker(pid):
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append({"subject": pid_file.stem, "pid": pid, "t": time.time()})
            self._halt.wait(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cohort_args(data: Path, out: Path, cfg: Path, workers: int, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "cardioinr.app.cli", "cohort", str(data), "--out", str(out), "--workers",
            str(workers), "--steps", str(STEPS), "--config", str(cfg), "--no-report", "--quiet",
            *(["--resume"] if resume else [])]


def _env(hooks: Path) -> dict:
    from cardioinr.app.cohort import FAULT_HOOK_ENV

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", FAULT_HOOK_ENV: str(hooks)}
    env.pop("RAY_ADDRESS", None)
    return env


def _end_session(proc: subprocess.Popen) -> int:
    """SIGKILL what is left of a cohort's process group (Ray's local processes started by a driver
    that was killed); returns how many processes were still there."""
    left = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getpgid(int(p.name)) == proc.pid and int(p.name) != os.getpid():
                    left += 1
            except OSError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return left


def run_cohort_cmd(args: list[str], hooks: Path, *, kill_driver_after: int | None = None, out: Path | None = None,
                   timeout: float = 1800) -> dict:
    """Run ``cardioinr cohort`` in its own process group; with ``kill_driver_after``, SIGKILL the
    driver once that many subjects of ``out`` are complete."""
    killer = WorkerKiller(hooks)
    killer.start()
    t0 = time.perf_counter()
    # Output to files, not pipes: Ray's processes may outlive a killed driver and hold them open.
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(args, env=_env(hooks), stdout=so, stderr=se, text=True, start_new_session=True)
        killed_driver = None
        try:
            if kill_driver_after is not None:
                while proc.poll() is None:
                    done = len(glob.glob(str(out / "*" / ".complete")))
                    if done >= kill_driver_after:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed_driver = {"complete_at_kill": done, "t": round(time.perf_counter() - t0, 2)}
                        break
                    time.sleep(0.1)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - t0
        if killed_driver:
            time.sleep(2.0)  # what Ray does by itself once its driver is gone
            killed_driver["processes_left_after_2s"] = _end_session(proc)
        killer.stop()
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "stdout": stdout.strip()[-2000:],
            "stderr": stderr.strip()[-2000:], "worker_kills": killer.killed, "driver_kill": killed_driver}


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def read_summary(out: Path) -> dict[str, dict]:
    with open(out / "cohort_summary.csv", newline="", encoding="utf-8") as fh:
        return {r["subject"]: r for r in csv.DictReader(fh)}


def parquet_agrees(out: Path, table: dict[str, dict]) -> bool | None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    rows = pq.read_table(out / "cohort_summary.parquet").to_pylist()
    return len(rows) == len(table) and all(
        (r["status"], r["stage"] or "", r["error"] or "") == (table[r["subject"]]["status"], table[r["subject"]]["stage"],
                                                            table[r["subject"]]["error"]) for r in rows)


def same_displacements(a: Path, b: Path, names: list[str]) -> list[str]:
    """Subjects whose displacement arrays differ (bitwise) between the folders ``a`` and ``b``."""
    from cardioinr.io import read_nifti

    differ = []
    for n in names:
        x, _, _ = read_nifti(a / n / "displacement.nii.gz")
        y, _, _ = read_nifti(b / n / "displacement.nii.gz")
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            differ.append(n)
    return differ


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


def check_faulty(table: dict[str, dict], faults: dict[str, str], good: list[str], out: Path) -> dict:
    """Every good subject ok and complete; every fault failed at its stage."""
    from cardioinr.outputs.contract import is_complete

    bad_good = [n for n in good if table.get(n, {}).get("status") not in ("ok", "skipped") or not is_complete(out / n)]
    wrong = {n: {"kind": k, "expected": KINDS[k], "status": table.get(n, {}).get("status"),
                 "stage": table.get(n, {}).get("stage"), "error": table.get(n, {}).get("error")}
             for n, k in faults.items()
             if table.get(n, {}).get("status") != "failed" or table.get(n, {}).get("stage") != KINDS[k]}
    by_stage: dict[str, int] = {}
    for n in faults:
        st = table.get(n, {}).get("stage") or "?"
        by_stage[st] = by_stage.get(st, 0) + 1
    return {"good_not_complete": bad_good, "faults_misrecorded": wrong, "faults_by_stage": by_stage,
            "rows": len(table), "errors": {n: table[n]["error"] for n in faults if n in table}}


def _per_min(n: int, seconds: float) -> float:
    return round(60.0 * n / seconds, 2) if seconds > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cardioinr-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in KINDS if k not in args.skip_kinds]
    ro_ok = can_make_read_only(work)
    if not ro_ok and "read_only_output" in kinds:
        kinds.remove("read_only_output")
        print("  (a read-only folder cannot be made here: that fault kind is left out)", file=sys.stderr)
    faults = plan_faults(args.subjects, args.faults, kinds, args.seed)
    names = [subject_name(i) for i in range(args.subjects)]
    good = [n for n in names if n not in faults]
    t = time.perf_counter()
    print(f"  writing {args.subjects} phantoms ({len(faults)} faulty) ...", file=sys.stderr, flush=True)
    info = write_cohort(work, args.subjects, faults, args.seed)
    hooks = Path(info["hooks"])
    write_s = time.perf_counter() - t
    cfg = work / "fit.json"
    cfg.write_text(json.dumps(FIT))

    read_only: list[Path] = []

    def prepare(out: Path) -> None:
        for n, k in faults.items():
            if k == "read_only_output":
                read_only.append(out / n)
                if not make_read_only(out / n):
                    raise SystemExit(f"{out / n}: could not be made read-only")

    result: dict = {"settings": {"subjects": args.subjects, "faults": len(faults), "workers": args.workers,
                                 "phantom": {k: list(v) if isinstance(v, tuple) else v for k, v in PHANTOM.items()},
                                 "fit": {**FIT, "steps": STEPS}, "report": False, "threads_per_task": 1,
                                 "kill_driver_at": args.kill_at},
                    "machine": {"cpus": os.cpu_count(), "load_avg_1min_before": os.getloadavg()[0]},
                    "faults": dict(sorted(faults.items())), "write_phantoms_s": round(write_s, 1), "work_dir": str(work)}
    try:
        # 1. clean
        print(f"  clean run: {len(good)} good subjects ...", file=sys.stderr, flush=True)
        clean = run_cohort_cmd(cohort_args(work / "clean", work / "out_clean", cfg, args.workers), hooks)
        t_clean = read_summary(work / "out_clean")
        clean["ok"] = sum(r["status"] == "ok" for r in t_clean.values())
        clean["subjects_per_min"] = _per_min(len(t_clean), clean["wall_s"])
        result["clean"] = clean

        # 2. faulty, uninterrupted
        print(f"  faulty run: {args.subjects} subjects ...", file=sys.stderr, flush=True)
        out_f = work / "out_faulty"
        prepare(out_f)
        faulty = run_cohort_cmd(cohort_args(work / "faulty", out_f, cfg, args.workers), hooks)
        t_f = read_summary(out_f)
        faulty.update(check_faulty(t_f, faults, good, out_f))
        faulty["ok"] = sum(r["status"] == "ok" for r in t_f.values())
        faulty["failed"] = sum(r["status"] == "failed" for r in t_f.values())
        faulty["subjects_per_min"] = _per_min(len(t_f), faulty["wall_s"])
        faulty["parquet_agrees"] = parquet_agrees(out_f, t_f)
        faulty["displacement_differs"] = same_displacements(work / "out_clean", out_f, good)
        faulty["worker_peak_rss_mb_max"] = max((float(r["worker_peak_rss_mb"]) for r in t_f.values()
                                                if r["worker_peak_rss_mb"]), default=None)
        result["faulty"] = faulty

        # 3. killed driver, then --resume
        out_k = work / "out_killed"
        prepare(out_k)
        at = max(1, int(round(args.kill_at * len(good))))
        print(f"  killed run: driver SIGKILLed after {at} complete subjects, then --resume ...", file=sys.stderr,
              flush=True)
        killed = run_cohort_cmd(cohort_args(work / "faulty", out_k, cfg, args.workers), hooks,
                                kill_driver_after=at, out=out_k)
        from cardioinr.outputs.contract import is_complete

        complete_before = {n for n in names if is_complete(out_k / n)}
        # Folders a task had begun writing when its worker died with the driver (a fit in progress
        # has no folder yet, so this counts only kills during the writing).
        started_before = {n for n in names if (out_k / n).is_dir() and n not in complete_before
                          and faults.get(n) != "read_only_output"}
        stamps = {n: _mtimes(out_k / n) for n in complete_before}
        resumed = run_cohort_cmd(cohort_args(work / "faulty", out_k, cfg, args.workers, resume=True), hooks)
        t_r = read_summary(out_k)
        resumed.update(check_faulty(t_r, faults, good, out_k))
        resumed["skipped"] = sorted(n for n, r in t_r.items() if r["status"] == "skipped")
        resumed["refitted_ok"] = sorted(n for n, r in t_r.items() if r["status"] == "ok")
        resumed["complete_before"] = len(complete_before)
        resumed["redone_complete"] = sorted(n for n in complete_before if t_r[n]["status"] != "skipped"
                                            or _mtimes(out_k / n) != stamps[n])
        resumed["half_written_at_kill"] = sorted(started_before)
        resumed["displacement_differs"] = same_displacements(work / "out_clean", out_k, good)
        resumed["subjects_per_min"] = _per_min(len(resumed["refitted_ok"]) + len(faults), resumed["wall_s"])
        result["killed"] = killed
        result["resumed"] = resumed
    finally:
        for d in read_only:
            undo_read_only(d)
    result["machine"]["load_avg_1min_after"] = os.getloadavg()[0]
    result["passed"] = passed(result)
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def passed(r: dict) -> bool:
    f, k, s = r["faulty"], r["killed"], r["resumed"]
    return (r["clean"]["rc"] == 0 and f["rc"] == 1 and not f["good_not_complete"] and not f["faults_misrecorded"]
            and not f["displacement_differs"] and f["parquet_agrees"] is not False
            and k["driver_kill"] is not None and k["rc"] == -signal.SIGKILL
            and s["rc"] == 1 and not s["redone_complete"] and not s["good_not_complete"]
            and not s["faults_misrecorded"] and not s["displacement_differs"]
            and len(s["skipped"]) == s["complete_before"])


def table(r: dict) -> str:
    f, k, s, c = r["faulty"], r["killed"], r["resumed"], r["clean"]
    n, nf = r["settings"]["subjects"], r["settings"]["faults"]
    stages = ", ".join(f"{st} {c_}" for st, c_ in sorted(f["faults_by_stage"].items()))
    kinds: dict[str, int] = {}
    for kd in r["faults"].values():
        kinds[kd] = kinds.get(kd, 0) + 1
    lines = [
        "| run | subjects | wall s | subjects/min | result |",
        "| --- | --- | --- | --- | --- |",
        f"| clean (good subjects only) | {n - nf} | {c['wall_s']:.0f} | {c['subjects_per_min']:.1f} | "
        f"exit {c['rc']}, {c['ok']} ok |",
        f"| with {nf} faults | {n} | {f['wall_s']:.0f} | {f['subjects_per_min']:.1f} | exit {f['rc']}, {f['ok']} ok, "
        f"{f['failed']} failed ({stages}); good subjects complete: "
        f"{'all' if not f['good_not_complete'] else str(len(f['good_not_complete'])) + ' missing'}; "
        f"displacements equal to the clean run: {'all' if not f['displacement_differs'] else 'NO'}; "
        f"faults at their expected stage: {'all' if not f['faults_misrecorded'] else 'NO'} |",
        f"| driver SIGKILLed | {n} | {k['wall_s']:.0f} | | killed with {k['driver_kill']['complete_at_kill']} "
        f"subjects complete |",
        f"| `--resume` | {n} | {s['wall_s']:.0f} | {s['subjects_per_min']:.1f} | exit {s['rc']}: "
        f"{len(s['skipped'])} skipped, {len(s['refitted_ok'])} fitted, {nf} failed again; complete subjects "
        f"redone: {len(s['redone_complete'])}; half-written folders at the kill: {len(s['half_written_at_kill'])}; "
        f"displacements equal to the clean run: {'all' if not s['displacement_differs'] else 'NO'} |",
    ]
    lines += ["", "faults injected: " + ", ".join(f"{kd} {c_} ({KINDS[kd]})" for kd, c_ in kinds.items()),
              f"worker kills: {len(f['worker_kills'])} in the faulty run, {len(s['worker_kills'])} in the resumed run; "
              f"peak worker memory {f['worker_peak_rss_mb_max']} MB; passed: {r['passed']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=200)
    p.add_argument("--faults", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-at", type=float, default=0.4, help="share of the good subjects complete when the driver is killed")
    p.add_argument("--skip-kinds", nargs="*", default=[], choices=list(KINDS))
    p.add_argument("--work", help="working folder (kept; default a temporary folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    p.add_argument("--out", help="write faults.json and faults.md here")
    args = p.parse_args(argv)
    result = run(args)
    text = table(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "faults.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        (out / "faults.md").write_text(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
