"""Cohort scaling: measured throughput on Ray here, and a model of 10,000 subjects on N GPUs.

Three parts (``python benchmarks/scale.py --help``):

* ``cohort`` (default): small phantoms fitted by :func:`cardioinr.app.cohort.run_cohort` on a local
  Ray with 1 and 2 workers (one torch thread each). Each worker count gets a fresh Ray, a
  warm-up cohort (one subject per worker, so that worker start-up and imports are paid and
  timed separately), then the measured cohort. Reports subjects/minute, per-subject time split
  into the optimisation and the CPU work after it (dense outputs, labels, strain, report), and
  peak memory (``ru_maxrss`` of the workers and of the driver).
* ``probe``: time of one fit with the same settings on a device (``--device cuda`` on a GPU
  machine) with k fits running at once in separate processes, which is how Ray shares a GPU
  (``--gpus-per-task 1/k``). Gives the per-GPU throughput the model needs.
* the model (printed by ``cohort``): 10,000 subjects on N GPUs from the measured per-subject
  times, either with a ``probe`` result (``--gpu-probe probe.json``) or with a stated speed-up
  factor (``--gpu-speedup``), see docs/scaling.md.

Writes everything as JSON with ``--out``. Keep it modest on a shared machine: the defaults
(8 subjects of 64x64 pixels x 12 frames, 100 steps) take about three minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

SMALL = {"dim": 2, "shape": (64, 64, 1), "spacing": (2.0, 2.0, 8.0), "n_frames": 12}
SMALL_3D = {"dim": 3, "shape": (64, 64, 8), "spacing": (2.0, 2.0, 8.0), "n_frames": 12}


def _phantom_config(dim: int):
    from cardioinr.phantoms import PhantomConfig

    return PhantomConfig(**(SMALL if dim == 2 else SMALL_3D))


def _fit_overrides(steps: int) -> dict:
    # The default field and point budget (what a real cohort uses); steps as a prior's adaptation
    # would use (ADAPT_DEFAULTS: 100), with early stopping off so every subject costs the same.
    return {"steps": steps, "patience": 10**9}


# ---------------------------------------------------------------------------------------------
# Local Ray cohort
# ---------------------------------------------------------------------------------------------


def _driver_peak_rss_mb() -> float:
    from cardioinr.app.cohort import peak_rss_mb

    return peak_rss_mb()


def _row_stats(rows: list[dict], out: Path) -> dict:
    """Per-subject times split into the optimisation (metrics.json fit_seconds) and the rest."""
    seconds, fit, post, rss = [], [], [], []
    for r in rows:
        if r["status"] != "ok":
            continue
        m = json.loads((Path(r["output"]) / "metrics.json").read_text())
        seconds.append(r["seconds"])
        fit.append(m["fit_seconds"])
        post.append(r["seconds"] - m["fit_seconds"])
        rss.append(r["worker_peak_rss_mb"] or 0.0)

    def s(v: list[float]) -> dict:
        return {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)} if v else {}

    return {"subject_s": s(seconds), "fit_s": s(fit), "post_s": s(post), "worker_peak_rss_mb": max(rss, default=None)}


def run_local(data: Path, warm: Path, out: Path, workers: int, steps: int, report: bool) -> dict:
    """One worker count: fresh Ray, warm-up cohort, measured cohort."""
    import logging

    import ray

    from cardioinr.app.cohort import run_cohort

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        init_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        # Same task options as the measured run, so the warmed worker processes are reused.
        run_cohort(warm, out / "warm", workers=workers, fit_overrides={"steps": 2}, progress=False, report=report)
        warm_s = time.perf_counter() - t1
        s = run_cohort(data, out / "run", workers=workers, fit_overrides=_fit_overrides(steps), progress=False,
                       report=report)
    finally:
        ray.shutdown()
    ok = s.n_ok
    res = {
        "workers": workers,
        "subjects": len(s.rows),
        "ok": ok,
        "ray_init_s": round(init_s, 2),
        "warmup_s": round(warm_s, 2),
        "wall_s": s.seconds,
        "subjects_per_min": round(60.0 * ok / s.seconds, 3),
        "end_to_end_subjects_per_min": round(60.0 * ok / (s.seconds + init_s + warm_s), 3),
    }
    res.update(_row_stats(s.rows, out / "run"))
    return res


def cmd_cohort(args: argparse.Namespace) -> dict:
    from cardioinr.phantoms import write_cases

    root = Path(args.work or tempfile.mkdtemp(prefix="cardioinr-scale-"))
    data, warm = root / "data", root / "warm"
    cfg = _phantom_config(args.dim)
    if not (data / "manifest.json").is_file():
        write_cases(data, args.subjects, cfg, seed=1, progress=False)
    if not (warm / "manifest.json").is_file():
        write_cases(warm, max(args.workers), cfg, seed=2, progress=False)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    runs = []
    for w in args.workers:
        print(f"  {w} worker(s): fitting {args.subjects} subjects ...", file=sys.stderr, flush=True)
        runs.append(run_local(data, warm, root / f"w{w}", w, args.steps, not args.no_report))
    base = runs[0]
    for r in runs:
        r["speedup"] = round(r["subjects_per_min"] / base["subjects_per_min"] * base["workers"], 3) if base["workers"] == 1 else None
        r["efficiency"] = round(r["speedup"] / r["workers"], 3) if r["speedup"] else None
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_1min_before": load0, "load_avg_1min_after": os.getloadavg()[0] if load0 is not None else None},
        "settings": {"subjects": args.subjects, "phantom": {k: list(v) if isinstance(v, tuple) else v
                                                            for k, v in (SMALL if args.dim == 2 else SMALL_3D).items()},
                     "fit": _fit_overrides(args.steps), "threads_per_task": 1, "report": not args.no_report},
        "runs": runs,
        "driver_peak_rss_mb": _driver_peak_rss_mb(),
        "work_dir": str(root),
    }
    result["model"] = model(result, args)
    return result


# ---------------------------------------------------------------------------------------------
# Probe: one fit's time on a device with k fits at once
# ---------------------------------------------------------------------------------------------


def _probe_worker(rank: int, device: str, threads: int, dim: int, steps: int, fits: int, contract: bool,
                  barrier, queue) -> None:
    import torch

    from cardioinr.fit import FitConfig, Fitter
    from cardioinr.phantoms import make_phantom
    from cardioinr.outputs import save_fit

    torch.set_num_threads(threads)
    ph = make_phantom(_phantom_config(dim), (7, rank))
    seq = ph.sequence
    seq = replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]})  # as a cohort fit sees it
    Fitter(FitConfig(steps=3, device=device)).fit(seq)  # CUDA context, kernels, caches
    cfg = FitConfig(device=device, **_fit_overrides(steps))
    barrier.wait()
    t0 = time.time()
    times, post = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(fits):
            t = time.perf_counter()
            res = Fitter(cfg).fit(seq)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t, res.metrics["fit_seconds"]))
            if contract:  # the CPU work a cohort task does after the fit: the whole output contract
                t = time.perf_counter()
                save_fit(res, Path(tmp) / f"s{i}", report=True)
                post.append(time.perf_counter() - t)
    queue.put({"rank": rank, "start": t0, "end": time.time(), "times": times, "post": post,
               "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None})


def cmd_probe(args: argparse.Namespace) -> dict:
    import multiprocessing as mp

    import torch

    ctx = mp.get_context("spawn")
    out = {"device": args.device, "dim": args.dim, "steps": args.steps, "threads": args.threads, "fits": args.fits,
           "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor(),
           "cpus": os.cpu_count(), "torch": torch.__version__, "concurrency": []}
    for k in args.concurrency:
        barrier, queue = ctx.Barrier(k), ctx.Queue()
        procs = [ctx.Process(target=_probe_worker, args=(r, args.device, args.threads, args.dim, args.steps, args.fits,
                                                          args.contract, barrier, queue)) for r in range(k)]
        for p in procs:
            p.start()
        res = [queue.get(timeout=args.timeout) for _ in procs]
        for p in procs:
            p.join()
        per_fit = [t for r in res for t, _ in r["times"]]
        span = max(r["end"] for r in res) - min(r["start"] for r in res)
        row = {"k": k, "per_fit_s_median": round(statistics.median(per_fit), 3),
               "per_fit_optimise_s_median": round(statistics.median(f for r in res for _, f in r["times"]), 3),
               "post_s_median": round(statistics.median(x for r in res for x in r["post"]), 3) if args.contract else None,
               "fits_per_min": round(60.0 * k * args.fits / span, 2),
               "gpu_peak_mb_per_process": max((r["gpu_peak_mb"] or 0) for r in res) or None}
        out["concurrency"].append(row)
        print(f"  k={k}: {row}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def model(result: dict, args: argparse.Namespace) -> dict:
    """10,000 subjects (``--model-subjects``) on N GPUs.

    One GPU node's throughput (subjects/s) comes, in order of preference, from

    1. a ``probe --contract`` on the GPU machine: the best measured rate with k fits at once,
       each followed by the whole output contract on that machine's CPU (all measured);
    2. a ``probe`` without ``--contract``: ``k / (t_fit_gpu(k) + t_post)``, with ``t_post`` the
       CPU work after the fit measured here (dense outputs, labels, strain, report);
    3. no probe: ``1 / (t_fit_cpu / speedup + t_post)``, ``speedup`` the stated ``--gpu-speedup``.

    N GPUs give N times that (subjects are independent; Ray's per-task overhead is milliseconds);
    the wall time adds a start-up and the tail of the last wave. ``--cpu-probe`` (a ``probe
    --device cpu --contract`` on a CPU node) adds the same figures for CPU-only nodes.
    """
    one = result["runs"][0]
    t_fit_cpu = one["subject_s"]["median"] - one["post_s"]["median"]
    t_post = one["post_s"]["median"]
    n = args.model_subjects
    out: dict = {"subjects": n, "t_fit_cpu_here_s": round(t_fit_cpu, 3), "t_post_here_s": t_post,
                 "startup_s": args.startup_s}
    if args.gpu_probe:
        probe = json.loads(Path(args.gpu_probe).read_text())
        best = max(probe["concurrency"], key=lambda r: r["fits_per_min"])
        single = next((r for r in probe["concurrency"] if r["k"] == 1), best)
        k, t_subject = best["k"], best["per_fit_s_median"] + (best.get("post_s_median") or t_post)
        if best.get("post_s_median") is not None:
            per_node = best["fits_per_min"] / 60.0
            out["source"] = (f"measured: {probe['device_name']} with {probe['cpus']} CPU cores, {k} fits at once, "
                             "output contract included")
        else:
            per_node = k / t_subject
            out["source"] = f"measured fit: {probe['device_name']}, {k} fits at once; CPU work after it as measured here"
        out.update(fits_per_gpu=k, t_fit_gpu_s=best["per_fit_s_median"], t_fit_gpu_alone_s=single["per_fit_s_median"],
                   gpu_speedup_single_fit_vs_cpu_here=round(t_fit_cpu / single["per_fit_s_median"], 2))
    else:
        k, t_fit_gpu = 1, t_fit_cpu / args.gpu_speedup
        t_subject = t_fit_gpu + t_post
        per_node = 1.0 / t_subject
        out["source"] = f"assumed: one fit per GPU, {args.gpu_speedup:g}x faster than one CPU thread here"
        out.update(fits_per_gpu=1, t_fit_gpu_s=round(t_fit_gpu, 3))

    def table(rate: float, counts: list[int]) -> list[dict]:
        return [{"nodes": g, "hours": round((args.startup_s + n / (g * rate) + t_subject) / 3600.0, 2),
                 "subjects_per_hour": round(g * rate * 3600)} for g in counts]

    out["subjects_per_gpu_hour"] = round(per_node * 3600)
    out["by_gpus"] = table(per_node, args.gpus)
    if args.cpu_probe:
        cp = json.loads(Path(args.cpu_probe).read_text())
        bc = max(cp["concurrency"], key=lambda r: r["fits_per_min"])
        rate = bc["fits_per_min"] / 60.0
        out["cpu_node"] = {"source": f"measured: {cp['cpus']}-core CPU node, {bc['k']} fits at once (1 thread each), "
                                     "output contract included" if bc.get("post_s_median") is not None else "measured fit only",
                           "subjects_per_node_hour": round(rate * 3600), "by_nodes": table(rate, args.gpus)}
    out["one_cpu_thread_here_hours"] = round(n * (t_fit_cpu + t_post) / 3600.0, 1)
    return out


def _print_cohort(result: dict) -> None:
    print(f"\nmeasured here ({result['machine']['cpus']} CPUs, load {result['machine']['load_avg_1min_before']}):")
    print(f"{'workers':>7} {'subj/min':>9} {'speed-up':>8} {'eff.':>5} {'subject s':>9} {'fit s':>6} {'post s':>6} "
          f"{'worker RSS MB':>13} {'warm-up s':>9}")
    for r in result["runs"]:
        print(f"{r['workers']:>7} {r['subjects_per_min']:>9.2f} {r['speedup'] or 1:>8.2f} {r['efficiency'] or 1:>5.2f} "
              f"{r['subject_s']['median']:>9.2f} {r['fit_s']['median']:>6.2f} {r['post_s']['median']:>6.2f} "
              f"{r['worker_peak_rss_mb'] or 0:>13.0f} {r['ray_init_s'] + r['warmup_s']:>9.1f}")
    _print_model(result["model"])


def _print_model(m: dict) -> None:
    print(f"\nmodel: {m['subjects']} subjects; {m['source']}")
    print(f"  {m['subjects_per_gpu_hour']} subjects per GPU-hour ({m['fits_per_gpu']} fits per GPU, "
          f"{m['t_fit_gpu_s']} s per fit on the GPU; one CPU thread here: {m['t_fit_cpu_here_s']} s fit "
          f"+ {m['t_post_here_s']} s outputs)")
    cpu = m.get("cpu_node")
    print(f"{'GPUs':>6} {'hours':>8} {'subjects/h':>11}" + (f" | {'CPU nodes':>9} {'hours':>8}" if cpu else ""))
    for i, r in enumerate(m["by_gpus"]):
        extra = f" | {cpu['by_nodes'][i]['nodes']:>9} {cpu['by_nodes'][i]['hours']:>8.2f}" if cpu else ""
        print(f"{r['nodes']:>6} {r['hours']:>8.2f} {r['subjects_per_hour']:>11}{extra}")
    if cpu:
        print(f"  CPU node: {cpu['source']}")
    print(f"  one CPU thread as here: {m['one_cpu_thread_here_hours']} hours")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("cohort", help="local Ray throughput with 1 and 2 workers, and the GPU model (default)")
    for q in (p, c):
        q.add_argument("--subjects", type=int, default=8)
        q.add_argument("--workers", type=int, nargs="+", default=[1, 2])
        q.add_argument("--steps", type=int, default=100)
        q.add_argument("--dim", type=int, default=2, choices=(2, 3))
        q.add_argument("--no-report", action="store_true", help="skip report.html (not the default contract)")
        q.add_argument("--work", help="working folder (default: a new temporary folder)")
        q.add_argument("--out", help="write the results as JSON here")
    m = sub.add_parser("model", help="recompute the model from a saved cohort JSON (--cohort-json)")
    m.add_argument("--cohort-json", required=True, help="the --out JSON of an earlier cohort run")
    m.add_argument("--out", help="write the cohort JSON with the new model here")
    for q in (p, c, m):
        q.add_argument("--gpu-probe", help="probe JSON from a GPU machine (overrides --gpu-speedup)")
        q.add_argument("--cpu-probe", help="probe JSON (--device cpu --contract) from a CPU node, for comparison")
        q.add_argument("--gpu-speedup", type=float, default=3.0,
                       help="assumed GPU / one-CPU-thread speed-up of one fit when there is no probe")
        q.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
        q.add_argument("--model-subjects", type=int, default=10_000)
        q.add_argument("--startup-s", type=float, default=120.0, help="cluster start + worker warm-up, s")
    pr = sub.add_parser("probe", help="one fit's time on a device with k fits at once")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--concurrency", type=int, nargs="+", default=[1])
    pr.add_argument("--threads", type=int, default=1)
    pr.add_argument("--dim", type=int, default=2, choices=(2, 3))
    pr.add_argument("--steps", type=int, default=100)
    pr.add_argument("--fits", type=int, default=3, help="fits per process")
    pr.add_argument("--contract", action="store_true", help="also write the output contract after each fit (timed apart)")
    pr.add_argument("--timeout", type=float, default=550)
    pr.add_argument("--out")
    args = p.parse_args(argv)
    if args.cmd == "probe":
        result = cmd_probe(args)
        print(json.dumps(result, indent=1))
    elif args.cmd == "model":
        result = json.loads(Path(args.cohort_json).read_text())
        result["model"] = model(result, args)
        _print_cohort(result)
    else:
        result = cmd_cohort(args)
        _print_cohort(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
