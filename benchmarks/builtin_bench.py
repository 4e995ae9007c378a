"""The built-in priors as a user meets them: the whole ``cardioinr fit`` command, default settings.

Four parts, side by side in one run (``make bench-builtin``):

* ``speed``: the whole command (process start to exit, every output written: displacement,
  labels, strain.csv, metrics.json, report.html) on a 112 x 112 x 20 slice and a
  128 x 128 x 10 x 25 stack, wall seconds at 2 threads; then CPU seconds at one thread against the
  project's SimpleITK B-spline configuration (benchmarks/peer_methods.py, one registration per
  frame, same machine, same run), with myocardial EPE, Dice and folding of both.
* ``accuracy``: held-out phantoms of the built-in priors' population (seeds never used in
  training, benchmarks/builtin_priors.py) in 2D and 3D: the default fit (built-in prior) against an
  800-step fit from scratch (``--prior none --steps 800``).
* ``sunnybrook``: the three real cines (ED labels carried to ES): the same two fits.
* ``noseg``: the default fit without ``--seg`` (the heart located from the images) against the
  labelled one on the held-out phantoms and Sunnybrook: the located centre's distance to the
  labelled LV centre, and the Dice of the reference labels carried by each fit.

Prints Markdown tables and writes ``OUT/builtin_bench.json``.

    python benchmarks/builtin_bench.py --out bench_out/builtin [--parts speed,accuracy,sunnybrook,noseg]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from builtin_priors import HELD_OUT_SEED, population_case  # noqa: E402

from cardioinr.analysis.metrics import evaluate_arrays  # noqa: E402
from cardioinr.io.sequence import SUNNYBROOK  # noqa: E402
from cardioinr.phantoms import PhantomConfig, write_cases  # noqa: E402

SPEED_2D = PhantomConfig(dim=2, shape=(112, 112, 1), spacing=(1.6, 1.6, 8.0), n_frames=20)
SPEED_3D = PhantomConfig(dim=3, shape=(128, 128, 10), spacing=(1.4, 1.4, 8.0), n_frames=25,
                         long_axis_mm_range=(65.0, 95.0), ef_range=(0.4, 0.65))


def write_case(folder: Path, cfg: PhantomConfig, seed: int) -> dict:
    """One phantom on disk: cine, reference labels, every frame's labels and the true motion."""
    m = write_cases(folder, n=1, config=cfg, seed=seed, progress=False)
    case = m["cases"][0]
    files = {k: folder / case[k] for k in ("image", "labels", "truth_displacement")}
    lab = nib.load(str(files["labels"]))
    ref = cfg.ed_frame
    seg = folder / "seg_ref.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[..., ref].astype(np.uint8), lab.affine), str(seg))
    return {"image": files["image"], "seg": seg, "labels": files["labels"], "truth": files["truth_displacement"],
            "ref": ref, "label_map": "acdc"}


def run_fit(case: dict, out: Path, threads: int, extra: list[str] = (), seg: bool = True) -> dict:
    """The whole command in a fresh process: wall and CPU seconds, and what metrics.json says
    (``seg`` False: without the reference labels, the heart located from the images)."""
    cmd = [sys.executable, "-m", "cardioinr", "fit", str(case["image"]), *(["--seg", str(case["seg"])] if seg else []),
           "--out", str(out), "--ref-frame", str(case["ref"]), "--label-map", case["label_map"],
           "--threads", str(threads), "--quiet", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "steps": metrics["steps"], "fit_s": metrics["fit_seconds"],
            "prior": metrics.get("prior", {}).get("name") or metrics.get("prior", {}).get("source"),
            "report": (out / "report.html").is_file(), "heart_location": metrics.get("heart_location")}


def score_folder(case: dict, out: Path) -> dict:
    disp = np.asarray(nib.load(str(out / "displacement.nii.gz")).dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj).astype(np.uint8)
    return score_arrays(case, disp, labels)


def score_arrays(case: dict, disp: np.ndarray, labels: np.ndarray) -> dict:
    from cardioinr.io import LabelMap

    truth_img = nib.load(str(case["truth"]))
    truth = np.asarray(truth_img.dataobj, dtype=np.float32) if case.get("truth") else None
    true_lab = np.asarray(nib.load(str(case["labels"])).dataobj).astype(np.uint8)
    sp = np.asarray(truth_img.header.get_zooms()[:3], dtype=np.float64)
    lm = LabelMap.parse(case["label_map"])
    ev = evaluate_arrays(disp, labels, truth, true_lab, true_lab[..., case["ref"]], spacing=sp, label_map=lm,
                         ref_frame=case["ref"], with_hd95=False)
    summ = ev["labels"]["summary"]
    out = {k: summ[k]["dice_min"] for k in ("LV", "MYO", "RV") if k in summ}
    out["epe_myo"] = ev["epe"]["MYO"]["mean"]
    out["folded_pct"] = ev["folding"]["all"]["percent_folded"]
    return out


def bspline_cpu(case: dict) -> dict:
    """The project's SimpleITK B-spline configuration on the case, in this process at one thread."""
    from peer_methods import BSplineConfig, bspline_sequence, pin_threads

    from cardioinr.fit.warp import propagate_labels
    from cardioinr.io import LabelMap, attach_labels, load_sequence

    pin_threads(1)
    seq = load_sequence(case["image"], label_map=LabelMap.parse(case["label_map"]), ref_frame=case["ref"])
    seq = attach_labels(seq, {seq.ref_frame: case["seg"]})
    c0, t0 = time.process_time(), time.perf_counter()
    disp = bspline_sequence(seq, BSplineConfig())
    labels = propagate_labels(seq.ref_labels, disp, seq.spacing, sorted(seq.label_map.codes()))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return dict(score_arrays(case, disp, labels), cpu_s=cpu, wall_s=wall)


def part_speed(out: Path, dims: tuple[int, ...] = (2, 3)) -> dict:
    res = {}
    for name, cfg in (("2d_112x112x20", SPEED_2D), ("3d_128x128x10x25", SPEED_3D)):
        if cfg.dim not in dims:
            continue
        case = write_case(out / "cases" / name, cfg, HELD_OUT_SEED + 500)
        # One discarded run: the first command after an install or upgrade also compiles the
        # package's bytecode and reads torch from a cold disk cache (measured: 11.5 s instead of
        # 8.0-8.8 s for the 2D case), which no later command pays.
        run_fit(case, out / "fits" / f"{name}_warmup", threads=2)
        wall = run_fit(case, out / "fits" / f"{name}_t2", threads=2)
        one = run_fit(case, out / "fits" / f"{name}_t1", threads=1)
        row = {"wall_2threads": wall, "builtin_1thread": dict(one, **score_folder(case, out / "fits" / f"{name}_t1"))}
        try:
            row["bspline_1thread"] = bspline_cpu(case)
        except ImportError as e:  # pragma: no cover - SimpleITK is a dependency
            row["bspline_1thread"] = {"error": str(e)}
        res[name] = row
        print(f"[speed] {name}: whole command {wall['wall_s']:.1f} s (2 threads, {wall['steps']} steps); "
              f"1 thread {one['cpu_s']:.1f} CPU s vs B-spline {row['bspline_1thread'].get('cpu_s', float('nan')):.1f}",
              flush=True)
    return res


def part_accuracy(out: Path, n2: int, n3: int, threads: int) -> dict:
    res = {}
    for dim, n in ((2, n2), (3, n3)):
        for i in range(n):
            seed = HELD_OUT_SEED + i
            cfg, group = population_case(dim, seed)
            name = f"{dim}d_{group}_{seed}"
            case = write_case(out / "cases" / name, cfg, seed)
            row = {"dim": dim, "group": group}
            for init, extra in (("builtin", []), ("scratch800", ["--prior", "none", "--steps", "800"])):
                folder = out / "fits" / f"{name}_{init}"
                run = run_fit(case, folder, threads, extra)
                row[init] = dict(run, **score_folder(case, folder))
            res[name] = row
            b, s = row["builtin"], row["scratch800"]
            print(f"[accuracy] {name}: builtin LV/MYO/EPE {b['LV']:.3f}/{b['MYO']:.3f}/{b['epe_myo']:.2f} "
                  f"in {b['wall_s']:.1f} s ({b['steps']} steps) | scratch {s['LV']:.3f}/{s['MYO']:.3f}/"
                  f"{s['epe_myo']:.2f} in {s['wall_s']:.1f} s", flush=True)
    return res


def part_sunnybrook(out: Path, threads: int) -> dict:
    from cardioinr.io.datasets import index_dataset, shared_data_dir

    data = shared_data_dir()
    if data is None:
        print("[sunnybrook] data not found; skipped")
        return {}
    res = {}
    for e in index_dataset(data):
        ed, es = e.ed_frame, e.es_frame
        case = {"image": e.image, "seg": e.labels[ed], "ref": ed, "label_map": "sunnybrook"}
        row = {}
        for init, extra in (("builtin", []), ("scratch800", ["--prior", "none", "--steps", "800"])):
            folder = out / "fits" / f"sb_{e.name}_{init}"
            run = run_fit(case, folder, threads, extra)
            lab = np.asarray(nib.load(str(folder / "labels.nii.gz")).dataobj)
            truth = np.asarray(nib.load(str(e.labels[es])).dataobj)
            lm = SUNNYBROOK
            row[init] = dict(run, lv_es=_dice(lab[..., es] == lm.lv, truth == lm.lv),
                             myo_es=_dice(lab[..., es] == lm.myo, truth == lm.myo))
        res[e.name] = row
        b, s = row["builtin"], row["scratch800"]
        print(f"[sunnybrook] {e.name}: LV Dice at ES builtin {b['lv_es']:.3f} ({b['wall_s']:.1f} s, {b['steps']} steps)"
              f" | scratch {s['lv_es']:.3f} ({s['wall_s']:.1f} s)", flush=True)
    return res


def _carry_ed_labels(case: dict, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """A fit's displacement and the case's reference labels carried by it (a fit without
    ``--seg`` writes no labels; this is how its motion is scored like the labelled run's)."""
    from cardioinr.fit.warp import propagate_labels

    img = nib.load(str(out / "displacement.nii.gz"))
    disp = np.asarray(img.dataobj, dtype=np.float32)
    ref = np.asarray(nib.load(str(case["seg"])).dataobj).astype(np.uint8)
    sp = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    codes = sorted(int(c) for c in np.unique(ref) if c)
    return disp, propagate_labels(ref, disp, sp, codes)


def part_noseg(out: Path, n2: int, n3: int, threads: int) -> dict:
    """Without ``--seg``: where the images put the heart against the labelled LV (cavity and
    myocardium) centre, and the Dice of the ED labels carried by that fit against the labelled
    fit's (held-out phantoms, every frame; Sunnybrook at ES)."""
    from cardioinr.io.datasets import index_dataset, shared_data_dir

    cases = []
    for dim, n in ((2, n2), (3, n3)):
        for i in range(n):
            seed = HELD_OUT_SEED + i
            cfg, group = population_case(dim, seed)
            name = f"{dim}d_{group}_{seed}"
            cases.append((name, write_case(out / "cases" / name, cfg, seed), None))
    data = shared_data_dir()
    for e in index_dataset(data) if data is not None else []:
        cases.append((f"sb_{e.name}", {"image": e.image, "seg": e.labels[e.ed_frame], "ref": e.ed_frame,
                                       "label_map": "sunnybrook"}, (e.es_frame, e.labels[e.es_frame])))
    res = {}
    for name, case, es in cases:
        row = {}
        for tag, seg in (("labelled", True), ("noseg", False)):
            folder = out / "fits" / f"{name}_{tag}"
            run = run_fit(case, folder, threads, seg=seg)
            disp, labels = _carry_ed_labels(case, folder)
            if es is None:
                row[tag] = dict(run, **score_arrays(case, disp, labels))
            else:
                truth = np.asarray(nib.load(str(es[1])).dataobj)
                row[tag] = dict(run, LV=_dice(labels[..., es[0]] == SUNNYBROOK.lv, truth == SUNNYBROOK.lv),
                                MYO=_dice(labels[..., es[0]] == SUNNYBROOK.myo, truth == SUNNYBROOK.myo))
        a, b = row["labelled"]["heart_location"], row["noseg"]["heart_location"]
        d = np.asarray(b["centre_mm"], dtype=float) - np.asarray(a["centre_mm"], dtype=float)
        row["centre_error_mm"] = float(np.linalg.norm(d))
        row["centre_error_in_plane_mm"] = float(np.linalg.norm(d[:2]))
        row["method"] = b.get("method")
        res[name] = row
        print(f"[noseg] {name}: centre off by {row['centre_error_mm']:.1f} mm ({row['method']}); LV/MYO Dice "
              f"labelled {row['labelled']['LV']:.3f}/{row['labelled']['MYO']:.3f}, without --seg "
              f"{row['noseg']['LV']:.3f}/{row['noseg']['MYO']:.3f}", flush=True)
    return res


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of ``a`` against the truth ``b``; NaN where the truth does not draw the structure
    (Sunnybrook draws the myocardium at ED only)."""
    if not b.any():
        return float("nan")
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _num(v: float, fmt: str = ".3f") -> str:
    return "n/a" if not np.isfinite(v) else format(v, fmt)


def tables(results: dict) -> str:
    lines = []
    sp = results.get("speed", {})
    if sp:
        lines += ["### Whole `cardioinr fit` command, built-in prior, every output written", "",
                  "| case | wall s (2 threads) | steps | CPU s, 1 thread | B-spline CPU s, 1 thread | ratio | "
                  "EPE myo (ours / B-spline) | Dice LV (ours / B-spline) | MYO | % folded (ours / B-spline) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in sp.items():
            w, o, b = r["wall_2threads"], r["builtin_1thread"], r["bspline_1thread"]
            lines.append(f"| {name} | {w['wall_s']:.1f} | {w['steps']} | {o['cpu_s']:.1f} | {b.get('cpu_s', float('nan')):.1f} | "
                         f"{b.get('cpu_s', float('nan')) / o['cpu_s']:.2f}x | {o['epe_myo']:.2f} / {b.get('epe_myo', float('nan')):.2f} | "
                         f"{o['LV']:.3f} / {b.get('LV', float('nan')):.3f} | {o['MYO']:.3f} / {b.get('MYO', float('nan')):.3f} | "
                         f"{o['folded_pct']:.3f} / {b.get('folded_pct', float('nan')):.3f} |")
        lines.append("")
    acc = results.get("accuracy", {})
    if acc:
        lines += ["### Held-out phantoms: default fit (built-in prior) against 800 steps from scratch", "",
                  "| case | LV (builtin / scratch) | MYO | RV | EPE myo mm | % folded | steps | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in acc.items():
            b, s = r["builtin"], r["scratch800"]
            lines.append(f"| {name} | {b['LV']:.3f} / {s['LV']:.3f} | {b['MYO']:.3f} / {s['MYO']:.3f} | "
                         f"{b.get('RV', float('nan')):.3f} / {s.get('RV', float('nan')):.3f} | "
                         f"{b['epe_myo']:.3f} / {s['epe_myo']:.3f} | {b['folded_pct']:.3f} / {s['folded_pct']:.3f} | "
                         f"{b['steps']} / {s['steps']} | {b['wall_s']:.1f} / {s['wall_s']:.1f} |")
        for dim in (2, 3):
            rows = [r for r in acc.values() if r["dim"] == dim]
            if rows:
                d = {k: np.mean([r["builtin"][k] - r["scratch800"][k] for r in rows]) for k in ("LV", "MYO", "epe_myo")}
                lines.append(f"| **{dim}D mean difference (builtin - scratch)** | {d['LV']:+.4f} | {d['MYO']:+.4f} | | "
                             f"{d['epe_myo']:+.3f} | | | |")
        lines.append("")
    sb = results.get("sunnybrook", {})
    if sb:
        lines += ["### Sunnybrook: ED labels carried to ES", "",
                  "| case | LV Dice at ES (builtin / scratch) | MYO Dice at ES | steps | wall s |", "|---|---|---|---|---|"]
        for name, r in sb.items():
            b, s = r["builtin"], r["scratch800"]
            lines.append(f"| {name} | {b['lv_es']:.3f} / {s['lv_es']:.3f} | {_num(b['myo_es'])} / {_num(s['myo_es'])} | "
                         f"{b['steps']} / {s['steps']} | {b['wall_s']:.1f} / {s['wall_s']:.1f} |")
        lines.append(f"| **mean** | {np.mean([r['builtin']['lv_es'] for r in sb.values()]):.3f} / "
                     f"{np.mean([r['scratch800']['lv_es'] for r in sb.values()]):.3f} | | | |")
    ns = results.get("noseg", {})
    if ns:
        lines += ["", "### Without `--seg`: the heart located from the images", "",
                  "| case | centre error mm (3D / in-plane) | how located | LV Dice (labelled / without) | MYO | "
                  "steps (labelled / without) |", "|---|---|---|---|---|---|"]
        for name, r in ns.items():
            a, b = r["labelled"], r["noseg"]
            lines.append(f"| {name} | {r['centre_error_mm']:.1f} / {r['centre_error_in_plane_mm']:.1f} | {r['method']} | "
                         f"{a['LV']:.3f} / {b['LV']:.3f} | {_num(a['MYO'])} / {_num(b['MYO'])} | {a['steps']} / {b['steps']} |")
        worst = max(np.nanmax([r["labelled"][k] - r["noseg"][k] for k in ("LV", "MYO")]) for r in ns.values())
        lines.append(f"| **worst** | {max(r['centre_error_mm'] for r in ns.values()):.1f} mm | | "
                     f"largest Dice loss {worst:+.4f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/builtin"))
    ap.add_argument("--parts", default="speed,accuracy,sunnybrook,noseg")
    ap.add_argument("--n2", type=int, default=6, help="held-out 2D phantoms")
    ap.add_argument("--n3", type=int, default=3, help="held-out 3D phantoms")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-dims", default="2,3", help="speed cases to run (the others keep their stored rows)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "builtin_bench.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    parts = args.parts.split(",")
    if "speed" in parts:
        dims = tuple(int(d) for d in args.speed_dims.split(","))
        results["speed"] = {**results.get("speed", {}), **part_speed(args.out, dims)}
    if "accuracy" in parts:
        results["accuracy"] = part_accuracy(args.out, args.n2, args.n3, args.threads)
        results["accuracy_threads"] = args.threads
    if "sunnybrook" in parts:
        results["sunnybrook"] = part_sunnybrook(args.out, args.threads)
    if "noseg" in parts:
        results["noseg"] = part_noseg(args.out, args.n2, args.n3, args.threads)
    path.write_text(json.dumps(results, indent=1, default=str))
    md = tables(results)
    (args.out / "builtin_bench.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
