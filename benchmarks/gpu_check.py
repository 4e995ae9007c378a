"""Check that fitting runs on CUDA and agrees with CPU; time both.

    python benchmarks/gpu_check.py --out DIR

Fits a 2D+t and a 3D+t phantom from scratch on each available device with the same seed, and
prints a table: device, wall seconds, Dice (min over frames), myocardial EPE, % folded, and the
largest difference between the CPU and CUDA displacement fields (float nondeterminism of the
two backends; not a tolerance of either one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cardioinr.fit import FitConfig, Fitter  # noqa: E402
from cardioinr.analysis.metrics import evaluate_arrays  # noqa: E402
from cardioinr.phantoms import PhantomConfig, make_phantom  # noqa: E402


def run(dim: int, device: str, steps: int) -> tuple[dict, np.ndarray]:
    ph = make_phantom(PhantomConfig(dim=dim), 7)
    seq = replace(ph.sequence, labels={ph.sequence.ref_frame: ph.sequence.labels[ph.sequence.ref_frame]})
    t0 = time.perf_counter()
    res = Fitter(FitConfig(steps=steps, device=device)).fit(seq)
    secs = time.perf_counter() - t0
    truth = np.stack([ph.sequence.labels[t] for t in range(seq.n_frames)], -1)
    ev = evaluate_arrays(res.displacement, res.labels, ph.displacement, truth, spacing=seq.spacing,
                         label_map=seq.label_map, ref_frame=seq.ref_frame)
    s = ev["labels"]["summary"]
    row = {"dim": dim, "device": device, "seconds": round(secs, 2), "steps": res.metrics["steps"],
           "dice_lv_min": s["LV"]["dice_min"], "dice_myo_min": s["MYO"]["dice_min"],
           "epe_myo": ev["epe"]["MYO"]["mean"], "folded_pct": ev["folding"]["heart"]["percent_folded"]}
    return row, res.displacement


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench_out/gpu"))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for dim in (2, 3):
        fields = {}
        for dev in devices:
            row, disp = run(dim, dev, args.steps)
            fields[dev] = disp
            rows.append(row)
            print(json.dumps(row), flush=True)
        if len(fields) == 2:
            diff = float(np.abs(fields["cpu"] - fields["cuda"]).max())
            rows.append({"dim": dim, "cpu_vs_cuda_max_abs_diff_mm": diff})
            print(f"dim {dim}: max |u_cpu - u_cuda| = {diff:.4f} mm", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"torch": torch.__version__, "rows": rows,
                                                         "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}, indent=1))


if __name__ == "__main__":
    main()
