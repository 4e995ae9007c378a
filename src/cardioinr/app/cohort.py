"""Fitting a whole cohort in parallel on Ray: one subject per task, one output folder per subject.

:func:`run_cohort` indexes a dataset (:func:`cardioinr.io.datasets.index_dataset`), sends every
subject to a Ray task that loads it, fits it (from scratch or from a prior) and writes the fit
output contract into ``out_dir/<subject>/`` (:func:`cardioinr.outputs.report.save_fit`), then writes a
summary table ``out_dir/cohort_summary.csv`` (and ``.parquet`` when pyarrow is importable).

Design points:

* Only paths travel through Ray (dataset entries, the prior's path, a plain settings dict): the
  images are read inside the task, so the driver stays small whatever the cohort size and no
  large objects go through the object store. ``data`` and ``out_dir`` must therefore be on a
  filesystem every Ray node sees (local disk for a local Ray, a shared mount on a cluster).
* A subject never stops the cohort. Whatever goes wrong with it, wherever it is found, becomes
  its ``failed`` row with the stage (:data:`STAGES`) and a one-line error: ``index`` (the dataset
  index could not read the file or case: :class:`~cardioinr.io.datasets.IndexProblem`), ``read``
  (loading and validating the entry), ``fit`` (the optimisation and its scores), ``write`` (the
  output folder and its files), ``worker`` (the Ray worker process died: SIGKILL, out of memory;
  tasks are not retried, ``--resume`` retries them). Only problems of the cohort itself (no
  dataset, bad settings, an output folder that cannot be written, Ray missing or unreachable)
  raise, as one line.
* A subject folder is *complete* when its ``.complete`` marker (written atomically as the very
  last step) lists files that all exist and ``metrics.json`` parses. ``resume=True`` skips
  complete subjects and retries everything else; a refit first removes the marker, so a crash
  half-way leaves an incomplete folder rather than a stale "complete" one.
* Each task pins its torch/BLAS threads (``threads_per_task``): several single-threaded fits
  side by side use a machine far better than one fit with many threads, and unpinned tasks
  oversubscribe the cores.

Ray is optional (``pip install 'cardioinr[cluster]'``); it is imported only when a cohort runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import typer

from cardioinr.core.console import one_line, pin_threads, progress_bar
from cardioinr.core.errors import CardioInrError, ConfigError, InputError
from cardioinr.outputs.contract import (
    MARKER,
    REPORT,
    expected_files,
    is_complete,
    mark_complete,
    read_marker,
    read_metrics,
    require_files,
)

SUMMARY_CSV = "cohort_summary.csv"
SUMMARY_PARQUET = "cohort_summary.parquet"
#: Columns of the summary table, in order.
COLUMNS = (
    "subject", "status", "stage", "error", "seconds", "steps", "dice_mean", "dice_min", "epe_myo_mm",
    "percent_negative_jacobian", "peak_radial_pct", "peak_circumferential_pct", "peak_longitudinal_pct",
    "ef_pct", "worker_peak_rss_mb", "prior_in_distribution", "prior_warning", "output",
)
STATUSES = ("ok", "failed", "skipped", "not_run")
#: Where a failed subject failed, in pipeline order (empty for the other statuses).
STAGES = ("index", "read", "fit", "write", "worker")
#: Test hook of benchmarks/faults.py and tests/app/test_cohort_faults.py, off unless set: a folder
#: where a file ``<subject>.hold`` makes that subject's fit stop mid-way (step :data:`HOLD_STEP`),
#: write ``<subject>.pid`` (the worker's PID) and wait there to be killed from outside.
FAULT_HOOK_ENV = "CARDIOINR_FAULT_HOOK_DIR"
HOLD_STEP = 5


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


@dataclass
class CohortSummary:
    """What :func:`run_cohort` returns.

    Attributes:
        rows: one dict per subject (keys :data:`COLUMNS`), in dataset order.
        csv: path of ``cohort_summary.csv``.
        parquet: path of ``cohort_summary.parquet``, or None without pyarrow.
        seconds: wall time of the whole run (Ray start-up included).
        slots: subjects fitted at the same time (Ray task slots); 0 when nothing ran.
        stale: complete subjects skipped although they were fitted with other settings.
    """

    rows: list[dict]
    csv: Path
    parquet: Path | None
    seconds: float
    slots: int = 0
    stale: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def n_ok(self) -> int:
        return self.count("ok")

    @property
    def n_failed(self) -> int:
        return self.count("failed")

    @property
    def n_skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def subjects_per_minute(self) -> float:
        """Subjects fitted (ok or failed, not skipped) per minute of wall time."""
        done = self.n_ok + self.n_failed
        return 60.0 * done / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["csv"] = str(self.csv)
        d["parquet"] = None if self.parquet is None else str(self.parquet)
        d.update(n_ok=self.n_ok, n_failed=self.n_failed, n_skipped=self.n_skipped,
                 subjects_per_minute=self.subjects_per_minute)
        return d


# ---------------------------------------------------------------------------------------------
# Small helpers (also used by the benchmark and the tests)
# ---------------------------------------------------------------------------------------------


def subject_dirname(name: str) -> str:
    """A safe folder name for a subject id (path separators and odd characters -> ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return safe or "subject"


def _num(v: Any, digits: int = 4) -> float | None:
    """A finite float rounded for the table, or None (JSON nulls, NaN, strings)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return round(v, digits) if math.isfinite(v) else None


def summary_row(subject: str, folder: Path | None, status: str, *, error: str = "", seconds: float | None = None,
                metrics: Mapping | None = None, stage: str = "", peak_rss_mb: float | None = None) -> dict:
    """One row of the summary table; figures come from ``metrics`` (``metrics.json`` of the
    folder when not given and the folder has one). ``stage``: where a failed subject failed
    (:data:`STAGES`); ``folder`` None: the subject has no output folder (failed at indexing)."""
    if stage and stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(subject=subject, status=status, stage=stage, error=error, output="" if folder is None else str(folder),
               seconds=None if seconds is None else round(float(seconds), 3), worker_peak_rss_mb=_num(peak_rss_mb))
    if metrics is None and status in ("ok", "skipped") and folder is not None:
        try:
            metrics = read_metrics(folder)
        except (OSError, ValueError):
            metrics = None
    if not isinstance(metrics, Mapping):
        return row
    row["steps"] = metrics.get("steps")
    row["percent_negative_jacobian"] = _num(metrics.get("percent_negative_jacobian"))
    strain = metrics.get("strain") if isinstance(metrics.get("strain"), Mapping) else {}
    peak = strain.get("peak") if isinstance(strain.get("peak"), Mapping) else {}
    for comp in ("radial", "circumferential", "longitudinal"):
        row[f"peak_{comp}_pct"] = _num(peak.get(f"{comp}_pct"))
    row["ef_pct"] = _num(strain.get("ef_pct"))
    cohort = metrics.get("cohort") if isinstance(metrics.get("cohort"), Mapping) else {}
    if cohort.get("worker_peak_rss_mb") is not None:
        row["worker_peak_rss_mb"] = _num(cohort.get("worker_peak_rss_mb"))
    prior = metrics.get("prior") if isinstance(metrics.get("prior"), Mapping) else {}
    applic = prior.get("applicability") if isinstance(prior.get("applicability"), Mapping) else {}
    if applic.get("in_distribution") is not None:
        # Outside what the prior was trained on: a warning for this subject, not a failure.
        row["prior_in_distribution"] = bool(applic["in_distribution"])
        row["prior_warning"] = "; ".join(str(r) for r in applic.get("reasons", []))
    ev = metrics.get("evaluation") if isinstance(metrics.get("evaluation"), Mapping) else {}
    ref = (metrics.get("sequence") or {}).get("ref_frame") if isinstance(metrics.get("sequence"), Mapping) else None
    frames = (ev.get("labels") or {}).get("frames") if isinstance(ev.get("labels"), Mapping) else None
    if isinstance(frames, Mapping):
        # The reference frame scores 1 by construction; it says nothing about the motion.
        d = [_num(s.get("dice")) for t, per in frames.items() if str(t) != str(ref) and isinstance(per, Mapping)
             for s in per.values() if isinstance(s, Mapping)]
        d = [x for x in d if x is not None]
        if d:
            row["dice_mean"] = round(sum(d) / len(d), 4)
            row["dice_min"] = round(min(d), 4)
    epe = ev.get("epe") if isinstance(ev.get("epe"), Mapping) else {}
    myo = epe.get("MYO") if isinstance(epe.get("MYO"), Mapping) else None
    if myo is not None:
        row["epe_myo_mm"] = _num(myo.get("mean"))
    return row


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 1024), 1)


# ---------------------------------------------------------------------------------------------
# The task: one subject (a plain function; Ray wraps it)
# ---------------------------------------------------------------------------------------------

_PRIOR_CACHE: dict[tuple, Any] = {}


def _cached_prior(path: str, device: str):
    """Ray reuses worker processes: load each prior once per worker, not once per subject."""
    from cardioinr.priors import load_prior

    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size, device)
    if key not in _PRIOR_CACHE:
        _PRIOR_CACHE.clear()
        _PRIOR_CACHE[key] = load_prior(path, device=device)
    return _PRIOR_CACHE[key]


def _validate_entry(entry, seq_full) -> None:
    """What a cohort refuses beyond the readers' own checks: reference labels that label nothing
    (a fit would run, but without a heart-centred frame, strain or scores, a silent hole in the
    summary)."""
    import numpy as np

    labels = seq_full.ref_labels
    if labels is not None and not np.any(labels):
        ref = seq_full.ref_frame
        where = entry.labels.get(ref) or entry.label_series or entry.name
        raise InputError(f"{where}: the labels of the reference frame {ref} are empty (all background); "
                         "no heart-centred frame nor strain can be derived")


def _read_truth_displacement(entry, seq_full):
    """The entry's true displacement ``(X, Y, Z, T, 3)`` mm (phantoms), or None; read with the
    inputs, before the fit, so that a bad file fails at stage ``read``."""
    import numpy as np

    from cardioinr.io import read_nifti

    if entry.truth_displacement is None:
        return None
    truth_disp, _, _ = read_nifti(entry.truth_displacement, "truth displacement")
    expected = (*seq_full.shape, seq_full.n_frames, 3)
    if truth_disp.shape != expected:
        raise InputError(f"{entry.truth_displacement}: truth displacement has shape {truth_disp.shape}, "
                         f"expected {expected}")
    return truth_disp.astype(np.float32)


def _evaluation(seq_full, truth_disp, result) -> dict | None:
    """Scores against whatever truth the dataset holds: labels of frames other than the
    reference (held out from the fit) and, for phantoms, the true displacement."""
    from cardioinr.analysis.metrics import evaluate_arrays

    ref = seq_full.ref_frame
    truth_labels = {t: lab for t, lab in seq_full.labels.items() if t != ref}
    if not truth_labels and truth_disp is None:
        return None
    return evaluate_arrays(result.displacement, result.labels, truth_disp, truth_labels or None,
                           seq_full.ref_labels, spacing=seq_full.spacing, label_map=seq_full.label_map,
                           ref_frame=ref)


def _fault_hook(name: str) -> Callable[[int, dict], None] | None:
    """The fit callback of the test hook (:data:`FAULT_HOOK_ENV`), or None (always, unless the
    variable is set and ``<dir>/<name>.hold`` exists). Used only by benchmarks/faults.py and the
    fault tests to kill a worker mid-fit from outside; never set it in production."""
    hook_dir = os.environ.get(FAULT_HOOK_ENV)
    if not hook_dir or not (Path(hook_dir) / f"{name}.hold").is_file():
        return None

    def hold(step: int, logs: dict) -> None:
        if step != HOLD_STEP:
            return
        from cardioinr.core.files import atomic_path

        with atomic_path(Path(hook_dir) / f"{name}.pid") as tmp:
            Path(tmp).write_text(str(os.getpid()))
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:  # waiting for the SIGKILL
            time.sleep(0.05)
        raise RuntimeError(f"fault hook: {name} was held at step {HOLD_STEP} but not killed")

    return hold


def fit_subject(entry, folder: str, fit_config: dict, prior_path: str | None = None, threads: int = 1,
                report: bool = True, config_sha: str = "", prior_through_plane: float | str = "auto") -> dict:
    """Load one dataset entry, fit it, write the output contract into ``folder`` and the
    ``.complete`` marker last; return its summary row. Never raises for a subject's own
    problems: they come back as a ``failed`` row with the stage (``read``, ``fit``, ``write``)
    and a one-line error.

    Args:
        entry: a :class:`~cardioinr.io.datasets.DatasetEntry` (paths only).
        folder: the subject's output folder.
        fit_config: :meth:`FitConfig.to_dict` of the settings (device included).
        prior_path: a prior checkpoint to start from, or None for a fit from scratch.
        threads: torch threads of this fit.
        report: also write ``report.html``.
        config_sha: fingerprint of the settings, stored in the marker (see ``resume``).
        prior_through_plane: scale of a 3D prior's starting motion along k, or "auto"
            (:meth:`~cardioinr.priors.Prior.start`).
    """
    from cardioinr.fit import FitConfig, Fitter
    from cardioinr.io.datasets import load_entry
    from cardioinr.outputs import save_fit

    t0 = time.perf_counter()
    out = Path(folder)
    stage = "write"
    try:
        pin_threads(max(1, int(threads)), interop=True)
        # A refit invalidates the folder first: a crash below must not leave it "complete".
        (out / MARKER).unlink(missing_ok=True)
        stage = "read"
        cfg = FitConfig.from_dict(fit_config)
        seq_full = load_entry(entry)
        _validate_entry(entry, seq_full)
        truth_disp = _read_truth_displacement(entry, seq_full)
        ref = seq_full.ref_frame
        seq = seq_full
        if cfg.w_labels <= 0 and seq_full.ref_labels is not None:
            # Labels of other frames are held out for evaluation unless the fit is told to use them.
            seq = replace(seq_full, labels={ref: seq_full.labels[ref]})
        init, extra = None, {}
        stage = "fit"
        if prior_path:
            prior = _cached_prior(prior_path, cfg.device)
            init, used = prior.start(seq, prior_through_plane, cfg)
            extra["prior"] = {"path": str(prior_path), "kind": prior.kind, "through_plane": used,
                              "through_plane_requested": prior_through_plane,
                              # Described with every labelled frame of the dataset: EF, where
                              # ES labels exist, is part of what the prior is checked against.
                              "applicability": prior.applicability(prior.describe_case(seq_full))}
        result = Fitter(cfg).fit(seq, init=init, callback=_fault_hook(entry.name))
        ev = _evaluation(seq_full, truth_disp, result)
        if ev is not None:
            extra["evaluation"] = ev
        stage = "write"
        extra["cohort"] = {"subject": entry.name, "source": str(entry.image), "host": os.uname().nodename,
                           "worker_pid": os.getpid(), "threads": int(threads), "worker_peak_rss_mb": peak_rss_mb()}
        save_fit(result, out, extra_metrics=extra, report=report)
        files = expected_files(out, labels=result.labels is not None, report=report)
        require_files(out, files)
        seconds = time.perf_counter() - t0
        metrics = read_metrics(out)
        # Marker last, atomically: its presence means every file above is in place.
        mark_complete(out, files, subject=entry.name, seconds=round(seconds, 3), config_sha=config_sha)
        return summary_row(entry.name, out, "ok", seconds=seconds, metrics=metrics)
    except Exception as e:  # a subject's failure must not stop the cohort
        return summary_row(entry.name, out, "failed", stage=stage, error=one_line(e),
                           seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb())


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("cohort fitting needs Ray: pip install 'cardioinr[cluster]' (or pip install ray)") from None
    return ray


def _check_device_name(device: str) -> str:
    # Only the name is checked here: the driver of a cluster may well have no GPU itself.
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"unknown device {device!r} (use cpu or cuda)")
    return device


def resolve_fit_config(fit_overrides: Mapping | None, prior_path: str | None, device: str) -> tuple[dict, dict | None]:
    """The settings every subject is fitted with, as a plain dict, and the prior's description.

    Explicit ``fit_overrides`` win; with a prior the kind's adaptation defaults come next
    (:meth:`Prior.fit_config`) and the field architecture is the prior's.
    """
    from cardioinr.fit import FitConfig

    overrides = dict(fit_overrides or {})
    overrides.pop("device", None)
    base = FitConfig.from_dict(overrides)  # validates names and values now, not in every task
    info = None
    if prior_path is not None:
        from cardioinr.priors import load_prior

        if "field" in overrides:
            raise ConfigError("the field architecture comes from the prior; drop the 'field' fit setting")
        prior = load_prior(prior_path)  # fails early, once, with a one-line CheckpointError
        explicit = {k: getattr(base, k) for k in overrides}
        base = prior.fit_config(base, **explicit)
        info = {"path": str(prior_path), "kind": prior.kind}
    return replace(base, device=device).to_dict(), info


def _builtin_for(entries: list) -> Path:
    """The built-in prior of the cohort's dimension, read from its first readable subject (a
    subject of the other dimension then fails alone, saying so)."""
    from cardioinr.io.datasets import load_entry
    from cardioinr.priors import builtin_path

    for e in entries:
        try:
            return builtin_path(load_entry(e).ndim_space)
        except InputError:
            continue
    raise InputError("--prior builtin: no subject could be read to tell 2D from 3D")


def _fingerprint(cfg: dict, prior_path: str | None, prior_through_plane: float | str = "auto") -> str:
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    if prior_path:
        st = os.stat(prior_path)
        h.update(f"{Path(prior_path).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        # Always hashed: runs from before "auto" became the default started at 1.0 and are refitted.
        h.update(f"through_plane:{prior_through_plane!r}".encode())
    return h.hexdigest()[:16]


def probe_ray_address(address: str, timeout: float = 10.0) -> None:
    """Fail at once, with one line, when a Ray address does not answer: ``ray.init`` itself
    waits for many minutes on a dead ``host:port``. A TCP connection to the address (for
    ``auto``: ``$RAY_ADDRESS`` or the address of the last local cluster) must open within
    ``timeout`` seconds; forms not understood here are left to Ray."""
    import socket
    import tempfile

    target = address.strip()
    if target == "auto":
        target = os.environ.get("RAY_ADDRESS", "").strip()
        if target in ("", "auto"):
            current = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"
            try:
                target = current.read_text().strip() if current.is_file() else ""
            except OSError:
                target = ""
        if not target:
            return  # no cluster known: Ray says so itself, at once
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", target)
    if not m:
        return
    host, port = m[1], int(m[2])
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise ConfigError(f"the Ray cluster at {address} does not answer ({host}:{port}: {why})") from None


def _connect(ray, address: str | None, workers: int | None, cpus_per_task: float) -> bool:
    """Join a running Ray (same process or ``address``) or start a local one; True if started here."""
    import logging

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        probe_ray_address(address)
    try:
        if address:
            ray.init(address=address, **common)
        else:
            n = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
            # Logical CPUs = task slots x CPUs per task, so that `workers` subjects run at once.
            # A small object store: only paths and summary rows travel through it.
            ray.init(num_cpus=max(1, math.ceil(n * cpus_per_task)), object_store_memory=128 * 2**20, **common)
    except CardioInrError:
        raise
    except Exception as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"cannot start {where}: {one_line(e)}") from None
    return True


def _slots(ray, workers: int | None, cpus_per_task: float, gpus_per_task: float) -> int:
    """How many subjects can run at once; infeasible requests fail now instead of hanging."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    if cpus_per_task > cpus:
        raise ConfigError(f"--cpus-per-task {cpus_per_task:g} is more than the Ray cluster's {cpus:g} CPUs")
    slots = int(cpus // cpus_per_task) if cpus_per_task > 0 else 10**6
    if gpus_per_task > 0:
        if gpus == 0:
            raise ConfigError("--gpus-per-task is set but the Ray cluster has no GPUs")
        if gpus_per_task > gpus:
            raise ConfigError(f"--gpus-per-task {gpus_per_task:g} is more than the Ray cluster's {gpus:g} GPUs")
        slots = min(slots, int(gpus // gpus_per_task + 1e-9))
    if workers:
        slots = min(slots, workers)
    return max(1, slots)


def _natural(name: str) -> list:
    """Sort key: names in natural order (case2 before case10)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def check_output_folder(out: Path) -> None:
    """Create the output folder and make sure it takes files: a cohort whose summary cannot be
    written stops now, with one line, instead of failing every subject."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; --out names the output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{out}: the output folder cannot be written ({e.strerror or one_line(e)})") from None


def write_summary(rows: list[dict], out_dir: Path) -> tuple[Path, Path | None]:
    """Write ``cohort_summary.csv`` (and ``.parquet`` when pyarrow is importable), atomically."""
    from cardioinr.core.files import atomic_path

    path = out_dir / SUMMARY_CSV
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    parquet = None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        text = ("subject", "status", "stage", "error", "output", "prior_warning")
        floats = {c for c in COLUMNS if c not in (*text, "steps", "prior_in_distribution")}
        schema = pa.schema([(c, pa.float64() if c in floats else pa.int64() if c == "steps"
                             else pa.bool_() if c == "prior_in_distribution" else pa.string()) for c in COLUMNS])
        table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema)
        parquet = out_dir / SUMMARY_PARQUET
        with atomic_path(parquet) as tmp:
            pq.write_table(table, tmp)
    return path, parquet


def run_cohort(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prior: str | os.PathLike | None = None,
    prior_through_plane: float | str = "auto",
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    fit_overrides: Mapping | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0.0,
    threads_per_task: int = 1,
    device: str = "cpu",
    progress: bool = True,
    label_map: str | None = None,
    report: bool = True,
    log: Callable[[str], None] | None = None,
) -> CohortSummary:
    """Fit every sequence of a dataset on Ray and write one output folder per subject.

    Args:
        data: a dataset folder or manifest (any layout of :mod:`cardioinr.io.datasets`).
        out_dir: where ``<subject>/`` folders and ``cohort_summary.csv`` go (created).
        prior: a prior checkpoint to start every fit from (``cardioinr train-prior``), ``"builtin"``
            (the built-in prior of the cohort's dimension) or ``"none"`` / None (random weights).
        prior_through_plane: scale of a 3D prior's starting motion along k, in [0, 1]
            (0: in-plane start), or "auto", chosen per subject (:meth:`~cardioinr.priors.Prior.start`).
        workers: subjects fitted at the same time; for a local Ray (the default) also its size
            (``workers x cpus_per_task`` logical CPUs; default all cores of this machine). With
            ``address`` it only caps the tasks in flight.
        address: an existing Ray cluster (``auto``, ``host:6379`` or ``ray://host:10001``);
            its nodes need cardioinr installed and the data/output paths mounted.
        resume: skip subjects whose folder is complete (see :func:`cardioinr.outputs.contract.is_complete`); failed
            and unfinished ones are fitted again.
        fit_overrides: :class:`~cardioinr.fit.fitter.FitConfig` settings (``{"steps": 60,
            "field": {"hidden": 64}}``); they win over a prior's adaptation defaults.
        cpus_per_task, gpus_per_task: Ray resources of one subject (fractions of a GPU put
            several fits on one GPU, e.g. 0.25 for four).
        threads_per_task: torch/BLAS threads of one fit.
        device: ``cpu`` or ``cuda`` (``cuda`` needs ``gpus_per_task > 0``).
        progress: show a progress bar with ETA on stderr.
        label_map: override the dataset's label codes.
        report: write ``report.html`` for every subject.
        log: called with one line per notable event (failures, stale subjects); default prints
            through the progress bar's console when the bar is on.

    Returns:
        A :class:`CohortSummary`. Raises a one-line :class:`CardioInrError` only for problems
        of the whole run (no data, bad settings, unreadable prior, Ray missing or unreachable).
    """
    t_start = time.perf_counter()
    _check_device_name(device)
    if threads_per_task < 1:
        raise ConfigError("--threads-per-task must be >= 1")
    if cpus_per_task < 0 or gpus_per_task < 0:
        raise ConfigError("--cpus-per-task and --gpus-per-task must be >= 0")
    if gpus_per_task > 1 and gpus_per_task != int(gpus_per_task):
        raise ConfigError("--gpus-per-task above 1 must be a whole number")
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be >= 1")
    if device.startswith("cuda") and gpus_per_task <= 0:
        raise ConfigError("--device cuda needs --gpus-per-task > 0 (e.g. 0.25 runs four fits per GPU)")
    from cardioinr.io.datasets import IndexProblem, index_dataset
    from cardioinr.priors import check_through_plane
    from cardioinr.priors.builtin import BUILTIN, NO_PRIOR

    if prior is not None and str(prior) == NO_PRIOR:
        prior = None
    prior_through_plane = check_through_plane(prior_through_plane, with_prior=prior is not None)

    ray = _import_ray()
    data, out = Path(data), Path(out_dir)
    problems: list[IndexProblem] = []
    entries = index_dataset(data, label_map=label_map, problems=problems)
    if not entries and not problems:
        raise InputError(f"{data}: no sequences found")
    prior_path = None
    if prior is not None and str(prior) == BUILTIN:
        prior_path = str(_builtin_for(entries))
    elif prior is not None:
        prior_path = str(Path(prior).resolve())
    cfg, _ = resolve_fit_config(fit_overrides, prior_path, device)
    sha = _fingerprint(cfg, prior_path, prior_through_plane)
    check_output_folder(out)

    # One row per subject, under a unique key: entries by name, index failures apart (a file that
    # could not be indexed may share its name with one that could).
    rows: dict[str, dict] = {}
    folders: dict[str, Path] = {}
    owner: dict[str, str] = {}
    failed_at_index: list[tuple[str, str]] = []
    good = []
    for e in entries:
        d = subject_dirname(e.name)
        if d in owner:
            failed_at_index.append((e.name, f"{e.image}: subject {e.name!r} maps to the same output folder {d!r} "
                                            f"as {owner[d]!r}"))
            continue
        owner[d] = e.name
        folders[e.name] = out / d
        good.append(e)
    for p in problems:
        failed_at_index.append((p.name if p.name not in folders else p.path.name, p.error))
    for i, (name, error) in enumerate(failed_at_index):
        rows[f"\0index{i}"] = summary_row(name, None, "failed", stage="index", error=error)
    keys = sorted([e.name for e in good] + list(rows), key=lambda k: _natural(rows[k]["subject"] if k in rows else k))

    stale: list[str] = []
    todo = []
    skipped = 0
    for e in good:
        f = folders[e.name]
        if resume and is_complete(f):
            m = read_marker(f)
            rows[e.name] = summary_row(e.name, f, "skipped", seconds=m.get("seconds"))
            skipped += 1
            if m.get("config_sha") not in (None, "", sha):
                stale.append(e.name)
        else:
            todo.append(e)

    bar = progress_bar(len(keys), "cohort", progress, eta_label=True, stderr=True)
    say = log or ((lambda s: bar[0].console.print(s, markup=False, highlight=False)) if bar else (lambda s: None))
    counts = {"ok": 0, "failed": 0, "skipped": skipped}

    def advance(row: dict | None = None) -> None:
        if row is not None:
            counts[row["status"]] += 1
            if row["status"] == "failed":
                say(f"failed {row['subject']} ({row['stage']}): {row['error']}")
        if bar:
            bar[0].update(bar[1], completed=sum(counts.values()),
                          description=f"cohort ok {counts['ok']} failed {counts['failed']} skipped {counts['skipped']}")

    for i in range(len(failed_at_index)):
        advance(rows[f"\0index{i}"])
    if stale:
        say(f"{len(stale)} complete subject(s) were fitted with other settings and are kept as they are "
            f"(delete their folders to refit): {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}")
    advance()
    slots = 0
    started = False
    pending: dict[Any, str] = {}
    try:
        if todo:
            started = _connect(ray, address, workers, cpus_per_task)
            slots = _slots(ray, workers, cpus_per_task, gpus_per_task)
            env = {k: str(threads_per_task) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            if os.environ.get(FAULT_HOOK_ENV):  # the benchmark's test hook reaches the workers
                env[FAULT_HOOK_ENV] = os.environ[FAULT_HOOK_ENV]
            # No retries: a worker that died (SIGKILL, out of memory) fails its subject at stage
            # "worker" instead of being tried again behind the user's back; --resume retries it.
            task = ray.remote(fit_subject).options(
                num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0, runtime_env={"env_vars": env})
            queue = list(todo)
            # A bounded window of tasks in flight: the driver's memory and Ray's queue stay small
            # for 10^4 subjects, and an interrupt has little to cancel.
            window = max(2 * slots, slots + 2)
            while queue or pending:
                while queue and len(pending) < window:
                    e = queue.pop(0)
                    ref = task.remote(e, str(folders[e.name]), cfg, prior_path, threads_per_task, report, sha,
                                      prior_through_plane)
                    pending[ref] = e.name
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    name = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as err:  # the worker process died (SIGKILL, OOM, segfault)
                        row = summary_row(name, folders[name], "failed", stage="worker", error=one_line(err))
                    rows[name] = row
                    advance(row)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        for k in keys:
            if k not in rows:
                rows[k] = summary_row(k, folders[k], "not_run", error="interrupted")
        write_summary([rows[k] for k in keys], out)
        raise
    finally:
        if bar:
            bar[0].stop()
        if started:
            ray.shutdown()
    ordered = [rows[k] for k in keys]
    csv_path, parquet = write_summary(ordered, out)
    return CohortSummary(ordered, csv_path, parquet, round(time.perf_counter() - t_start, 3), slots, stale)


# ---------------------------------------------------------------------------------------------
# Command line (registered in cli.py as ``cardioinr cohort``)
# ---------------------------------------------------------------------------------------------


def cohort_command(
    data: Path = typer.Argument(..., help="Dataset folder or manifest (phantoms, Sunnybrook, ACDC, plain)."),
    out: Path = typer.Option(..., "--out", help="Output folder: one subfolder per subject + cohort_summary.csv."),
    prior: Optional[str] = typer.Option(
        None, "--prior",
        help="Start every fit from: builtin (the built-in prior of the cohort's dimension), a checkpoint PATH, or none "
             "(the default for cohorts: random weights)."),
    prior_through_plane: str = typer.Option(
        "auto", "--prior-through-plane",
        help="3D priors: scale in [0, 1] of the starting motion along the slices' normal (0: in-plane), or auto: "
             "per subject, the scale whose start fits the images best."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Subjects fitted at once (default: all cores of a local Ray)."),
    address: Optional[str] = typer.Option(None, "--address", help="Existing Ray cluster (auto, host:6379, ray://host:10001); default a local Ray."),
    resume: bool = typer.Option(False, "--resume", help="Skip subjects whose output folder is complete; retry the rest."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Optimisation steps per subject."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda needs --gpus-per-task)."),
    threads_per_task: int = typer.Option(1, "--threads-per-task", min=1, help="torch threads of each fit."),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", min=0.0, help="GPU share of each fit (0.25: four fits per GPU)."),
    cpus_per_task: float = typer.Option(1.0, "--cpus-per-task", min=0.0, help="Ray CPUs reserved by each fit."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file with fit settings."),
    label_map: Optional[str] = typer.Option(None, "--label-map", help="Override the dataset's label codes."),
    no_report: bool = typer.Option(False, "--no-report", help=f"Skip {REPORT} (the rest of the contract is written)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Fit every subject of a dataset in parallel on Ray (local by default) into OUT/<subject>/.

    One bad subject never stops the cohort: whatever goes wrong with it (an unreadable file in
    the folder, invalid images or labels, a failed fit, outputs that cannot be written, a worker
    that died) becomes its row in OUT/cohort_summary.csv (and .parquet) with status failed, the
    stage (index, read, fit, write, worker) and a one-line error; the others go on.

    Exit codes: 0 every subject ok or skipped; 1 at least one subject failed (see the summary);
    2 a problem with the cohort itself, nothing fitted (no dataset, bad options or settings, an
    output folder that cannot be written, Ray missing or not answering), one line on stderr;
    130 interrupted (the summary marks unfinished subjects not_run; --resume goes on)."""
    from cardioinr.fit import explicit_settings

    overrides = explicit_settings(config) if config else {}
    if steps is not None:
        overrides["steps"] = steps
    s = run_cohort(data, out, prior=prior, prior_through_plane=prior_through_plane, workers=workers, address=address,
                   resume=resume, fit_overrides=overrides, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task,
                   threads_per_task=threads_per_task, device=device, progress=not quiet, label_map=label_map, report=not no_report)
    fitted = s.n_ok + s.n_failed
    typer.echo(f"cohort: {s.n_ok} ok, {s.n_failed} failed, {s.n_skipped} skipped of {len(s.rows)} subjects in "
               f"{s.seconds:.0f} s ({s.subjects_per_minute:.2f} subjects/min over {fitted} fitted, {s.slots} at once) "
               f"-> {s.csv}")
    outside = [r for r in s.rows if r.get("prior_in_distribution") is False]
    if outside:
        typer.echo(f"  {len(outside)} subject(s) lie outside what the prior was trained on (prior_warning in "
                   f"{s.csv.name}): {', '.join(r['subject'] for r in outside[:10])}{' ...' if len(outside) > 10 else ''}",
                   err=True)
    for r in s.failed[:10]:
        typer.echo(f"  failed {r['subject']} ({r['stage']}): {r['error']}", err=True)
    if s.n_failed > 10:
        typer.echo(f"  ... and {s.n_failed - 10} more (see {s.csv})", err=True)
    if s.n_failed:
        raise typer.Exit(code=1)


__all__ = ["COLUMNS", "FAULT_HOOK_ENV", "HOLD_STEP", "STAGES", "SUMMARY_CSV", "CohortSummary", "check_output_folder",
           "cohort_command", "fit_subject", "one_line", "resolve_fit_config", "run_cohort", "subject_dirname",
           "summary_row", "write_summary"]
