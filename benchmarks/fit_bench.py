"""Fitting benchmark (from scratch): phantoms with ground truth and the Sunnybrook cases.

    python benchmarks/fit_bench.py --out bench_out/fit [--quick] [--threads 2]

Prints a Markdown table and writes ``fit_bench.json`` / ``fit_bench.md``:
model, steps, wall seconds (whole fit call), Dice LV/MYO/RV (min and mean over frames), the
same Dice against the labels obtained by carrying the reference labels with the TRUE
displacement ("vs truth-carried": the ceiling any displacement field can reach on this grid;
thick 3D slices cap the frame-label Dice well below 1 even for the truth), myocardial
end-point error (mean, p95), % folded voxels in the heart, and for Sunnybrook the LV Dice of the
ED labels carried to ES (slices with ES contours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cardioinr.fit.fields import FieldConfig  # noqa: E402
from cardioinr.fit import FitConfig, Fitter  # noqa: E402
from cardioinr.analysis.metrics import dice, label_scores  # noqa: E402
from cardioinr.phantoms import PhantomConfig, make_phantom  # noqa: E402
from cardioinr.fit.warp import propagate_labels  # noqa: E402


def phantom_row(group: str, ph, cfg: FitConfig) -> dict:
    from cardioinr.analysis.metrics import evaluate_arrays

    seq = replace(ph.sequence, labels={ph.sequence.ref_frame: ph.sequence.labels[ph.sequence.ref_frame]})
    t0 = time.perf_counter()
    res = Fitter(cfg).fit(seq)
    secs = time.perf_counter() - t0
    truth = np.stack([ph.sequence.labels[t] for t in range(seq.n_frames)], -1)
    ev = evaluate_arrays(res.displacement, res.labels, ph.displacement, truth, spacing=seq.spacing,
                         label_map=seq.label_map, ref_frame=seq.ref_frame)
    carried = propagate_labels(seq.ref_labels, ph.displacement, seq.spacing)
    ceiling = label_scores(carried, truth, seq.label_map, seq.spacing)["summary"]
    vs_carried = label_scores(res.labels, carried, seq.label_map, seq.spacing)["summary"]
    s = ev["labels"]["summary"]
    row = {"group": group, "case": seq.name, "model": cfg.field.model, "steps": res.metrics["steps"],
           "seconds": round(secs, 2), "epe_myo": ev["epe"]["MYO"]["mean"], "epe_myo_p95": ev["epe"]["MYO"]["p95"],
           "epe_heart": ev["epe"]["heart"]["mean"], "folded_heart_pct": ev["folding"]["heart"]["percent_folded"]}
    for name in ("LV", "MYO", "RV"):
        row[f"dice_{name}_min"] = s[name]["dice_min"]
        row[f"dice_{name}_mean"] = s[name]["dice_mean"]
        row[f"ceiling_{name}_min"] = ceiling[name]["dice_min"]
        row[f"vs_truth_carried_{name}_min"] = vs_carried[name]["dice_min"]
    return row


def sunnybrook_rows(cfg: FitConfig, quick: bool) -> list[dict]:
    from cardioinr.io.datasets import index_dataset, load_entry, shared_data_dir

    data = shared_data_dir()
    if data is None:
        print("Sunnybrook data not found (set CARDIOINR_DATA); skipped")
        return []
    rows = []
    for entry in index_dataset(data)[: 1 if quick else None]:
        full = load_entry(entry)
        seq = replace(full, labels={full.ref_frame: full.labels[full.ref_frame]})
        t0 = time.perf_counter()
        res = Fitter(cfg).fit(seq)
        secs = time.perf_counter() - t0
        es, lv = entry.es_frame, full.label_map.lv
        truth = full.labels[es] == lv
        sl = [k for k in range(truth.shape[2]) if truth[:, :, k].any()]
        d = dice(res.labels[:, :, sl, es] == lv, truth[:, :, sl])
        identity = dice(seq.ref_labels[:, :, sl] == lv, truth[:, :, sl])
        rows.append({"group": "sunnybrook", "case": entry.name, "model": cfg.field.model,
                     "steps": res.metrics["steps"], "seconds": round(secs, 2), "dice_LV_es": d,
                     "dice_LV_es_no_motion": identity, "folded_heart_pct": res.metrics.get("percent_negative_jacobian_heart")})
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(rows: list[dict]) -> str:
    out = ["| group | case | model | steps | s | Dice LV min/mean | MYO min/mean | RV min/mean | vs truth-carried LV/MYO/RV min | truth ceiling LV/MYO min | EPE myo mean/p95 mm | folded % |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["group"] == "sunnybrook":
            out.append(f"| sunnybrook | {r['case']} | {r['model']} | {r['steps']} | {r['seconds']:.1f} | ES LV {r['dice_LV_es']:.3f} "
                       f"(no motion {r['dice_LV_es_no_motion']:.3f}) | - | - | - | - | - | {_pct(r['folded_heart_pct'])} |")
            continue
        out.append(
            f"| {r['group']} | {r['case']} | {r['model']} | {r['steps']} | {r['seconds']:.1f} | "
            f"{r['dice_LV_min']:.3f}/{r['dice_LV_mean']:.3f} | {r['dice_MYO_min']:.3f}/{r['dice_MYO_mean']:.3f} | "
            f"{r['dice_RV_min']:.3f}/{r['dice_RV_mean']:.3f} | "
            f"{r['vs_truth_carried_LV_min']:.3f}/{r['vs_truth_carried_MYO_min']:.3f}/{r['vs_truth_carried_RV_min']:.3f} | "
            f"{r['ceiling_LV_min']:.3f}/{r['ceiling_MYO_min']:.3f} | {r['epe_myo']:.3f}/{r['epe_myo_p95']:.3f} | "
            f"{_pct(r['folded_heart_pct'])} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/fit"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one case per group, fewer steps")
    ap.add_argument("--groups", default="2d,2d_tagged,2d_models,3d,sunnybrook")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    groups = args.groups.split(",")
    steps = 200 if args.quick else FitConfig().steps
    base = FitConfig(steps=steps, device=args.device)
    seeds = [11] if args.quick else [11, 12]
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "2d" in groups:
        for s in seeds:
            emit(phantom_row("2d", make_phantom(PhantomConfig(dim=2), s, name=f"2d_{s}"), base))
    if "2d_tagged" in groups:
        for s in seeds:
            emit(phantom_row("2d_tagged", make_phantom(PhantomConfig(dim=2, tagged=True), s, name=f"2dtag_{s}"), base))
    if "2d_models" in groups:
        for model in ("fourier", "hashgrid"):
            cfg = replace(base, field=FieldConfig(model=model))
            emit(phantom_row("2d", make_phantom(PhantomConfig(dim=2), seeds[0], name=f"2d_{seeds[0]}"), cfg))
    if "3d" in groups:
        for s in seeds[:1] if args.quick else seeds:
            emit(phantom_row("3d", make_phantom(PhantomConfig(dim=3), s, name=f"3d_{s}"), base))
    if "sunnybrook" in groups:
        for r in sunnybrook_rows(base, args.quick):
            emit(r)
    md = markdown(rows)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit_bench.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    (args.out / "fit_bench.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
