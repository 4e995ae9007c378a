"""Side-by-side benchmark: cardioinr against the field's standard registration tools.

Methods (wrappers in ``benchmarks/peer_methods.py``; every one returns a displacement in the
output contract: ``(X, Y, Z, T, 3)`` mm along the array axes, Lagrangian from the reference):

* ``cardioinr``: a fit from scratch with the default :class:`~cardioinr.fit.fitter.FitConfig`;
* ``cardioinr-prior``: a fit from each ``--prior`` checkpoint (its dimension picks the cases:
  a 2D prior for slices, a 3D prior for stacks), via ``prior.fit_config(FitConfig())`` and
  ``prior.init_field(seq)``;
* ``bspline``: SimpleITK B-spline FFD (LBFGSB, multi-resolution), reference -> each frame;
* ``syn``: ANTs SyN (antspyx, ``SyNOnly`` from the identity), reference -> each frame;
* ``voxelmorph``: voxelmorph 0.3.4 (PyTorch) 2D network trained here, unsupervised, on
  training phantoms, applied to every (reference, frame) pair slice by slice;
* ``identity``: no motion (the reference labels copied to every frame), the floor.

Cases: 2D phantoms (test seeds 2000+), 3D phantom stacks (seeds 2000+) and the Sunnybrook cases
(ED, the last frame, is the reference; ED labels are carried to ES). Peer settings are tuned on
*training* phantoms (seeds 1000+, the population the priors are trained on) with a small grid
(``OUT/tuning.json``); the test cases are never used for tuning.

Every (method, case) runs in a fresh process with one thread (torch, OpenMP, ITK, ANTs), so the
wall time and peak resident memory (``ru_maxrss``, C extensions included) are its own. Wall time
covers registering every frame, the dense displacement and carrying the labels (the same
:func:`cardioinr.fit.warp.propagate_labels` for every method); VoxelMorph's training is reported
separately.

    python benchmarks/peers.py --out bench_out/peers [--prior P2D.ckpt --prior P3D.ckpt] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import peer_methods as pm  # noqa: E402

PHANTOM_2D = dict(dim=2)
PHANTOM_3D = dict(dim=3, shape=(80, 80, 8), spacing=(1.4, 1.6, 10.0), n_frames=20)
TRAIN_SEED, TEST_SEED = 1000, 2000

# Tuning grids (training phantoms only). Selection: lowest mean myocardial end-point error.
BSPLINE_GRID = [dict(metric=m, mesh_mm=g) for m in ("meansquares", "correlation", "mattes") for g in (12.0, 16.0, 20.0)]
BSPLINE_GRID_3D = [dict(metric=m, mesh_mm=g, iterations=50) for m in ("meansquares", "correlation") for g in (16.0, 20.0)]
SYN_GRID = [dict(metric="mattes", sampling=32, reg_iterations=(40, 20, 0)),
            dict(metric="mattes", sampling=32, reg_iterations=(100, 70, 20)),
            dict(metric="CC", sampling=2, reg_iterations=(40, 20, 0)),
            dict(metric="CC", sampling=2, reg_iterations=(100, 70, 20))]
SYN_GRID_3D = SYN_GRID
VXM_GRID = [dict(lam=0.5), dict(lam=2.0)]


def _phantom_config(kind: str):
    from cardioinr.phantoms import PhantomConfig

    return PhantomConfig(**(PHANTOM_2D if kind == "2d" else PHANTOM_3D))


# =============================================================================================
# Cases
# =============================================================================================


def _save_case(path: Path, seq, extra: dict) -> None:
    np.savez_compressed(path, image=seq.image, affine=seq.affine, frame_interval_ms=seq.frame_interval_ms,
                        ref_frame=seq.ref_frame, ref_labels=seq.labels[seq.ref_frame],
                        label_map=json.dumps(seq.label_map.as_dict()), name=seq.name, **extra)


def load_case(path: Path):
    """(Sequence with the reference labels only, dict of the rest of the file)."""
    from cardioinr.io import LabelMap, Sequence

    z = dict(np.load(path, allow_pickle=False))
    ref = int(z["ref_frame"])
    seq = Sequence(image=z["image"], affine=z["affine"], frame_interval_ms=float(z["frame_interval_ms"]),
                   labels={ref: z["ref_labels"]}, ref_frame=ref,
                   label_map=LabelMap.coerce(json.loads(str(z["label_map"]))), name=str(z["name"]))
    return seq, z


def make_cases(folder: Path, n2d: int, n3d: int, sunnybrook: int) -> list[dict]:
    """Write the test cases (once) and return their descriptions."""
    from cardioinr.phantoms import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for kind, n in (("2d", n2d), ("3d", n3d)):
        for s in range(n):
            name = f"phantom{kind}_{TEST_SEED + s}"
            path = folder / f"{name}.npz"
            if not path.exists():
                ph = make_phantom(_phantom_config(kind), TEST_SEED + s, name=name)
                seq = ph.sequence
                _save_case(path, seq, dict(truth_displacement=ph.displacement, truth_labels=ph.labels,
                                           es_frame=seq.meta["es_frame"]))
            cases.append({"name": name, "group": f"phantom {kind.upper()}", "path": str(path), "dim": 2 if kind == "2d" else 3})
    if sunnybrook:
        from cardioinr.io.datasets import index_dataset, load_entry, shared_data_dir

        data = shared_data_dir()
        if data is None:
            print("[cases] Sunnybrook data not found; skipped", flush=True)
        else:
            for entry in index_dataset(data)[:sunnybrook]:
                path = folder / f"{entry.name}.npz"
                if not path.exists():
                    full = load_entry(entry)
                    seq = replace(full, labels={full.ref_frame: full.labels[full.ref_frame]})
                    _save_case(path, seq, dict(es_frame=entry.es_frame, es_labels=full.labels[entry.es_frame]))
                cases.append({"name": entry.name, "group": "Sunnybrook", "path": str(path), "dim": 3})
    return cases


# =============================================================================================
# Tuning (training phantoms only)
# =============================================================================================


def _tuning_frames(seq) -> list[int]:
    es = int(seq.meta["es_frame"])
    return sorted({es} | {t for t in range(seq.n_frames) if t % 4 == 2} - {seq.ref_frame})


def _myo_epe(u, ph, frames) -> float:
    from cardioinr.analysis.metrics import epe_by_region

    seq = ph.sequence
    return float(epe_by_region(u, ph.displacement, seq.labels[seq.ref_frame], seq.label_map, frames)["MYO"]["mean"])


def tune(out: Path, quick: bool) -> dict:
    """Small grids on training phantoms; writes and returns ``{method: {2d|3d: params}}``."""
    from cardioinr.phantoms import make_phantom

    pm.pin_threads(1)
    record: dict = {"selection": "lowest mean myocardial EPE over frames (ES + every 4th) of training phantoms",
                    "grids": {}, "chosen": {}}
    train = {"2d": [make_phantom(_phantom_config("2d"), TRAIN_SEED + s, name=f"train2d_{s}") for s in range(1 if quick else 2)],
             "3d": [make_phantom(_phantom_config("3d"), TRAIN_SEED + s, name=f"train3d_{s}") for s in range(1)]}
    grids = {"bspline": {"2d": BSPLINE_GRID, "3d": BSPLINE_GRID_3D}, "syn": {"2d": SYN_GRID, "3d": SYN_GRID_3D}}
    if quick:
        grids = {"bspline": {"2d": BSPLINE_GRID[:2], "3d": BSPLINE_GRID_3D[:1]}, "syn": {"2d": SYN_GRID[:2], "3d": SYN_GRID_3D[:1]}}
    for method, by_dim in grids.items():
        if not pm.available(method):
            continue
        for dim, grid in by_dim.items():
            rows = []
            for params in grid:
                t0 = time.perf_counter()
                errs = []
                for ph in train[dim]:
                    frames = _tuning_frames(ph.sequence)[: 2 if quick else None]
                    if method == "bspline":
                        u = pm.bspline_sequence(ph.sequence, replace(pm.BSplineConfig(), **params), frames)
                    else:
                        u = pm.syn_sequence(ph.sequence, replace(pm.SynConfig(), **params), frames)
                    errs.append(_myo_epe(u, ph, frames))
                rows.append({"params": params, "epe_myo": float(np.mean(errs)), "seconds": time.perf_counter() - t0})
                print(f"[tune] {method} {dim} {params}: EPE MYO {rows[-1]['epe_myo']:.3f} mm "
                      f"({rows[-1]['seconds']:.0f} s)", flush=True)
            best = min(rows, key=lambda r: r["epe_myo"])
            record["grids"].setdefault(method, {})[dim] = rows
            record["chosen"].setdefault(method, {})[dim] = best["params"]
    _write_json(out / "tuning.json", record)
    return record


def train_voxelmorph(out: Path, quick: bool) -> dict:
    """Train one VoxelMorph per grid point on training phantoms (2D frames + 3D stack slices),
    keep the one with the lowest myocardial EPE on validation phantoms (also training seeds)."""
    from cardioinr.phantoms import make_phantom

    pm.pin_threads(1)
    n2, n3, nval = (1, 0, 1) if quick else (10, 3, 2)
    t0 = time.perf_counter()
    train = [make_phantom(_phantom_config("2d"), TRAIN_SEED + s).sequence for s in range(n2)]
    train += [make_phantom(_phantom_config("3d"), TRAIN_SEED + s).sequence for s in range(n3)]
    val = [make_phantom(_phantom_config("2d"), TRAIN_SEED + n2 + s) for s in range(nval)]
    print(f"[voxelmorph] {n2} 2D + {n3} 3D training phantoms, {nval} validation ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    grid = VXM_GRID[:1] if quick else VXM_GRID
    rows = []
    best = None
    for params in grid:
        cfg = replace(pm.VxmConfig(), **params, **({"iterations": 30} if quick else {}))
        t0 = time.perf_counter()
        model, hist = pm.train_vxm(train, cfg, log_every=100)
        secs = time.perf_counter() - t0
        errs = []
        for ph in val:
            frames = _tuning_frames(ph.sequence)
            errs.append(_myo_epe(pm.vxm_sequence(ph.sequence, model, frames), ph, frames))
        row = {"params": params, "config": cfg.to_dict(), "epe_myo_val": float(np.mean(errs)), "train_seconds": secs,
               "final_loss": hist[-1]}
        rows.append(row)
        print(f"[voxelmorph] {params}: val EPE MYO {row['epe_myo_val']:.3f} mm, trained in {secs:.0f} s", flush=True)
        if best is None or row["epe_myo_val"] < best[0]["epe_myo_val"]:
            best = (row, model, cfg, hist)
    row, model, cfg, hist = best
    path = pm.save_vxm(out / "voxelmorph.pt", model, cfg, hist, {"n_train_2d": n2, "n_train_3d": n3, "grid": rows})
    rec = {"checkpoint": str(path), "chosen": row["params"], "grid": rows, "train_seconds": row["train_seconds"],
           "threads": 1}
    _write_json(out / "voxelmorph.json", rec)
    return rec


# =============================================================================================
# One (method, case) in its own process
# =============================================================================================


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    v = _status_mb("VmRSS")
    return float("nan") if v is None else v


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, C extensions included. ``VmHWM`` (Linux) is reset at
    exec; ``ru_maxrss`` is not (a child started by ``subprocess`` reports its parent's peak when
    that was higher), so it is only the fallback."""
    v = _status_mb("VmHWM")
    return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(job_path: Path) -> None:
    """Run one job: register, carry labels, save ``result.npz`` and ``result.json``."""
    job = json.loads(job_path.read_text())
    pm.pin_threads(1)
    from cardioinr.fit.warp import propagate_labels

    method, params = job["method"], job.get("params") or {}
    if method == "bspline":
        import SimpleITK  # noqa: F401
    elif method == "syn":
        import ants  # noqa: F401
    elif method == "voxelmorph":
        import voxelmorph  # noqa: F401
    seq, _ = load_case(Path(job["case"]))
    base_rss = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    extra = {}
    labels = None
    if method in ("cardioinr", "cardioinr-prior"):
        disp, labels, metrics = pm.cardioinr_sequence(seq, job.get("prior"), job.get("steps"))
        extra = {"steps": metrics.get("steps"), "fit_seconds": metrics.get("fit_seconds")}
    elif method == "bspline":
        disp = pm.bspline_sequence(seq, replace(pm.BSplineConfig(), **_tuples(params)))
    elif method == "syn":
        disp = pm.syn_sequence(seq, replace(pm.SynConfig(), **_tuples(params)))
    elif method == "voxelmorph":
        model, _ = pm.load_vxm(job["checkpoint"])
        disp = pm.vxm_sequence(seq, model)
    elif method == "identity":
        disp = np.zeros(seq.shape + (seq.n_frames, 3), np.float32)
    else:
        raise SystemExit(f"unknown method {method}")
    if labels is None:
        labels = propagate_labels(seq.labels[seq.ref_frame], disp, seq.spacing, sorted(seq.label_map.codes()))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(job["out"])
    np.savez_compressed(out / "result.npz", displacement=disp.astype(np.float32), labels=labels.astype(np.uint8))
    peak = _peak_rss_mb()
    _write_json(out / "result.json", {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "base_rss_mb": base_rss,
                                        **extra})


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def run_job(out: Path, method: str, label: str, case: dict, params: dict | None = None, **extra) -> dict | None:
    folder = out / "runs" / label / case["name"]
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "result.json").exists() and (folder / "result.npz").exists():
        return json.loads((folder / "result.json").read_text())
    job = {"method": method, "params": params or {}, "case": case["path"], "out": str(folder), **extra}
    (folder / "job.json").write_text(json.dumps(job, indent=1))
    env = dict(os.environ, **{v: "1" for v in pm.THREAD_VARS})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(folder / "job.json")],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        print(f"[run] {label} {case['name']}: FAILED ({msg[0][:200]})", flush=True)
        (folder / "error.txt").write_text(proc.stdout + "\n" + proc.stderr)
        return None
    res = json.loads((folder / "result.json").read_text())
    res["process_s"] = time.perf_counter() - t0
    return res


# =============================================================================================
# Scoring
# =============================================================================================


def score(case: dict, folder: Path) -> dict:
    from cardioinr.analysis.metrics import dice, evaluate_arrays, folding_stats, heart_mask, hd95

    seq, z = load_case(Path(case["path"]))
    r = np.load(folder / "result.npz")
    disp, labels = r["displacement"], r["labels"]
    lm, sp, es = seq.label_map, seq.spacing, int(z["es_frame"])
    ref = seq.labels[seq.ref_frame]
    out: dict = {}
    if "truth_displacement" in z:
        ev = evaluate_arrays(disp, labels, z["truth_displacement"], z["truth_labels"], spacing=sp, label_map=lm,
                             ref_frame=seq.ref_frame)
        summ, frames = ev["labels"]["summary"], ev["labels"]["frames"]
        es_key = es if es in frames else str(es)
        for name in ("LV", "MYO", "RV"):
            if name in summ:
                out[f"dice_{name}_es"] = frames[es_key][name]["dice"]
                out[f"dice_{name}_min"] = summ[name]["dice_min"]
                out[f"hd95_{name}_es"] = frames[es_key][name]["hd95"]
                out[f"hd95_{name}_mean"] = summ[name]["hd95_mean"]
        out["epe_myo"] = ev["epe"]["MYO"]["mean"]
        out["epe_heart"] = ev["epe"]["heart"]["mean"]
        out["folded_pct_heart"] = ev["folding"]["heart"]["percent_folded"]
        out["folded_pct_all"] = ev["folding"]["all"]["percent_folded"]
    else:  # Sunnybrook: LV at ES on the slices with an ES contour
        truth = z["es_labels"]
        sl = [k for k in range(truth.shape[2]) if np.any(truth[:, :, k] == lm.lv)]
        p, t = labels[:, :, sl, es], truth[:, :, sl]
        out["dice_LV_es"] = dice(p, t, lm.lv)
        out["hd95_LV_es"] = hd95(p, t, lm.lv, sp)
        out["es_slices"] = sl
        out["folded_pct_heart"] = folding_stats(disp, sp, heart_mask(ref, lm, sp, 5.0))["percent_folded"]
        out["folded_pct_all"] = folding_stats(disp, sp)["percent_folded"]
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


COLUMNS = [("dice_LV_es", "LV Dice ES", 3), ("dice_MYO_es", "MYO Dice ES", 3), ("dice_RV_es", "RV Dice ES", 3),
           ("dice_LV_min", "LV Dice min", 3), ("dice_MYO_min", "MYO Dice min", 3), ("dice_RV_min", "RV Dice min", 3),
           ("hd95_LV_es", "LV HD95 ES mm", 2), ("epe_myo", "EPE MYO mm", 3), ("folded_pct_heart", "% folded (heart)", 3),
           ("wall_s", "wall s", 1), ("cpu_s", "CPU s", 1), ("peak_rss_mb", "peak RSS MB", 0)]


def summarise(rows: list[dict]) -> tuple[list[dict], str]:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["group"], r["method"]), []).append(r)
    summary = []
    for (group, method), rs in groups.items():
        s = {"group": group, "method": method, "n": len(rs)}
        for key, _, _ in COLUMNS:
            vals = [r[key] for r in rs if r.get(key) is not None]
            s[key] = float(np.mean(vals)) if vals else None
        if group == "Sunnybrook":
            vals = [r["dice_LV_es"] for r in rs if r.get("dice_LV_es") is not None]
            s["dice_LV_es_min_case"] = float(min(vals)) if vals else None
        summary.append(s)
    lines = []
    for group in dict.fromkeys(s["group"] for s in summary):
        ss = [s for s in summary if s["group"] == group]
        cols = [c for c in COLUMNS if any(s.get(c[0]) is not None for s in ss)]
        lines.append(f"\n### {group} (mean over {ss[0]['n']} case{'s' if ss[0]['n'] > 1 else ''})\n")
        lines.append("| method | " + " | ".join(c[1] for c in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for s in ss:
            cells = ["-" if s.get(k) is None else f"{s[k]:.{d}f}" for k, _, d in cols]
            lines.append(f"| {s['method']} | " + " | ".join(cells) + " |")
    return summary, "\n".join(lines)


def _write_json(path: Path, obj) -> None:
    from cardioinr.core.serialise import json_ready

    path.write_text(json.dumps(json_ready(obj), indent=1, allow_nan=False))


# =============================================================================================
# Main
# =============================================================================================


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/peers"))
    ap.add_argument("--prior", action="append", default=[], help="prior checkpoint (2D and/or 3D; repeatable)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 2D phantom + 1 Sunnybrook case, few steps")
    ap.add_argument("--methods", default="cardioinr,cardioinr-prior,bspline,syn,voxelmorph,identity",
                    help="comma-separated; 'identity' (u = 0, the labels of the reference copied) is a floor")
    ap.add_argument("--n2d", type=int, default=4)
    ap.add_argument("--n3d", type=int, default=2)
    ap.add_argument("--sunnybrook", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated case-name prefixes to run (results are cached per "
                    "method and case, so lanes can run side by side and a final full call gathers them)")
    ap.add_argument("--retune", action="store_true", help="tune again even if OUT/tuning.json exists")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    if args.quick:
        args.n2d, args.n3d, args.sunnybrook = 1, 0, 1
    cases = make_cases(out / "cases", args.n2d, args.n3d, args.sunnybrook)
    if args.only:
        cases = [c for c in cases if any(c["name"].startswith(p) for p in args.only.split(",") if p)]
    print(f"[cases] {len(cases)}: " + ", ".join(c["name"] for c in cases), flush=True)

    missing = [m for m in ("bspline", "syn", "voxelmorph") if m in methods and not pm.available(m)]
    for m in missing:
        print(f"[peers] {m}: optional package not installed (pip install -e '.[bench]'); skipped", flush=True)
    methods = [m for m in methods if m not in missing]
    tuning = {"chosen": {}}
    if {"bspline", "syn"} & set(methods):
        tp = out / "tuning.json"
        tuning = json.loads(tp.read_text()) if tp.exists() and not args.retune else tune(out, args.quick)
    vxm = None
    if "voxelmorph" in methods:
        vp = out / "voxelmorph.json"
        vxm = json.loads(vp.read_text()) if vp.exists() and not args.retune else train_voxelmorph(out, args.quick)

    priors = []
    if "cardioinr-prior" in methods:
        from cardioinr.priors import load_prior

        for p in args.prior:
            priors.append((p, load_prior(p).field.dim))
    quick_steps = 30 if args.quick else None
    rows = []
    for case in cases:
        dim = "2d" if case["dim"] == 2 else "3d"
        jobs = []
        if "cardioinr" in methods:
            jobs.append(("cardioinr", "cardioinr", None, {"steps": quick_steps}))
        for p, pdim in priors:
            if pdim == case["dim"]:
                jobs.append(("cardioinr-prior", f"cardioinr-prior ({Path(p).stem})", None,
                             {"prior": str(Path(p).resolve()), "steps": quick_steps}))
        if "bspline" in methods:
            params = dict(tuning["chosen"].get("bspline", {}).get(dim, {}))
            if args.quick:  # no full-resolution level: the smoke test checks plumbing, not accuracy
                params.update(iterations=5, shrink=(4, 2), sigmas_mm=(3.0, 1.5))
            jobs.append(("bspline", "SimpleITK B-spline", params, {}))
        if "syn" in methods:
            params = dict(tuning["chosen"].get("syn", {}).get(dim, {}))
            if args.quick:
                params["reg_iterations"] = (10, 5, 0)
            jobs.append(("syn", "ANTs SyN", params, {}))
        if vxm is not None:
            jobs.append(("voxelmorph", "VoxelMorph", None, {"checkpoint": vxm["checkpoint"]}))
        if "identity" in methods:
            jobs.append(("identity", "no motion (u = 0)", None, {}))
        for method, label, params, extra in jobs:
            res = run_job(out, method, label, case, params, **extra)
            if res is None:
                continue
            sc = score(case, out / "runs" / label / case["name"])
            row = {"case": case["name"], "group": case["group"], "method": label, "params": params, **res, **sc}
            rows.append(row)
            print(f"[run] {label:34s} {case['name']:16s} LV ES {_f(sc.get('dice_LV_es'))} MYO min "
                  f"{_f(sc.get('dice_MYO_min'))} EPE {_f(sc.get('epe_myo'))} fold {_f(sc.get('folded_pct_heart'))}% "
                  f"{res['wall_s']:.1f} s {res['peak_rss_mb']:.0f} MB", flush=True)
            _write_json(out / "peers_rows.json", rows)
    summary, md = summarise(rows)
    header = (f"Threads: 1 per method (torch, OpenMP, ITK, ANTs). VoxelMorph training: "
              f"{vxm['train_seconds']:.0f} s (not in the per-case wall time).\n" if vxm else "")
    print(header + md)
    _write_json(out / "peers.json", {"rows": rows, "summary": summary, "tuning": tuning, "voxelmorph": vxm,
                                      "cases": cases, "quick": args.quick, "priors": args.prior})
    (out / "peers.md").write_text(header + md + "\n")


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    main()
