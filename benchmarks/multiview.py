"""Multi-view benchmark: a short-axis stack alone against the stack plus long-axis cines, with and
without breath-hold misalignment, on 3D phantoms with thick slices and a large base descent.

    python benchmarks/multiview.py --out bench_out/multiview [--seeds 2] [--slice-mm 10]
                                   [--views 2ch,3ch,4ch] [--misalign 3] [--steps N] [--prior builtin|none]

Every case is fitted as ``cardioinr fit`` fits it (the built-in 3D prior and its adaptation
settings by default), from the end-diastolic labels of the stack only:

* ``sax``: the stack alone (what ``fit SAX`` does, and what main did before long-axis views);
* ``sax+lax``: the stack and the long-axis views, one field;
* ``misaligned``: the same views with random breath-hold shifts (each slice and view translated
  in its plane by up to ``--misalign`` mm), fitted without correction;
* ``misaligned+align``: the same data with the offsets learned (``--align-views``).

Scores, all against the phantom's exact truth, over the reference myocardium of the stack and
every frame: through-plane EPE (mm, the error along the stack's slice normal, i.e. the long axis),
3D EPE (mm); Dice of LV and MYO at end-systole on the stack and of MYO on each long-axis view
(carried view labels against the view's truth labels); peak global strains (radial,
circumferential, longitudinal from the voxel tensors, and the midwall GLS), the fit's as
``cardioinr fit`` analyses it (exact gradients of the fitted field) against the phantom's analytic
motion through the same analysis (:meth:`Phantom.truth_field`), in points (until the eighth
session both were finite differences of the displacement on the grid, which along 8-10 mm slices
is not what the fit command reports); the recovered offsets against the true ones (mm);
seconds of the fit. Held-out seeds (31000+). Prints Markdown tables and writes
``multiview.json`` / ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cardioinr.analysis.metrics import dice  # noqa: E402
from cardioinr.analysis.strain import analyse_field, analyse_fit_result  # noqa: E402
from cardioinr.fit import FitConfig, Fitter  # noqa: E402
from cardioinr.fit.multiview import fit_study, views_config  # noqa: E402
from cardioinr.io import Study  # noqa: E402
from cardioinr.phantoms.groups import group_config  # noqa: E402
from cardioinr.phantoms.views import make_phantom_study  # noqa: E402
from cardioinr.priors.builtin import choose_start  # noqa: E402

SEED0 = 31000  # held out: training and tuning phantoms use other seeds
SCENARIOS = ("sax", "sax+lax", "misaligned", "misaligned+align")


def _ref_only(seq):
    """The sequence with its reference labels only (what a user has)."""
    return replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]}, label_sources={})


def fit_scenario(ps, scenario: str, prior: str, settings: dict, views_settings: dict | None = None) -> tuple:
    """Fit one scenario of a phantom study as the ``fit`` command does: ``(result, seconds)``."""
    sax = _ref_only(ps.study.sax)
    t0 = time.perf_counter()
    start = choose_start(sax, prior, explicit=settings, device="cpu")
    cfg = start.fit_config(replace(FitConfig(), **settings))
    init, _ = start.init_field(sax, "auto", cfg)
    if scenario == "sax":
        res = Fitter(cfg).fit(sax, init=init)
    else:
        study = Study.of(sax, {v: _ref_only(s) for v, s in ps.study.lax.items()}, name=ps.study.name)
        vc = views_config(settings, **{**(views_settings or {}), "align": scenario.endswith("align")})
        res = fit_study(study, cfg, vc, init=init)
    return res, time.perf_counter() - t0


def strain_peaks(summary: dict) -> dict:
    """Peak global strains (%) of a strain summary (:meth:`StrainResult.summary`)."""
    pk = summary["peak"]
    return {"radial": pk["radial_pct"], "circumferential": pk["circumferential_pct"],
            "longitudinal": pk["longitudinal_pct"], "gls_midwall": summary.get("gls_midwall_pct")}


def truth_strain_peaks(phantom, seq) -> dict:
    """Peak global strains of the phantom's true motion, analysed as a fit's (exact gradients)."""
    return strain_peaks(analyse_field(phantom.truth_field(), seq.spacing, seq.ref_labels, label_map=seq.label_map,
                                      ref_frame=seq.ref_frame, affine=seq.affine).summary())


def score(ps, res, seconds: float, truth_peaks: dict) -> dict:
    ph = ps.phantom
    seq = ps.study.sax
    myo = seq.ref_labels == seq.label_map.myo
    err = res.displacement - ph.displacement
    es = int(ph.motion.es_frame)
    row = {
        "seconds": round(seconds, 1),
        "steps": res.metrics["steps"],
        "epe_through_plane": float(np.abs(err[..., 2])[myo].mean()),
        "epe_3d": float(np.linalg.norm(err, axis=-1)[myo].mean()),
        "epe_in_plane": float(np.linalg.norm(err[..., :2], axis=-1)[myo].mean()),
        "no_motion_through_plane": float(np.abs(ph.displacement[..., 2])[myo].mean()),
        "dice_lv_es": dice(res.labels[..., es], seq.labels[es], seq.label_map.lv),
        "dice_myo_es": dice(res.labels[..., es], seq.labels[es], seq.label_map.myo),
    }
    for vf in getattr(res, "views", []):
        vs = ps.study.lax[vf.name]
        v_es = int(vs.meta["es_frame"])
        if vf.labels is not None:
            row[f"dice_myo_{vf.name}"] = dice(vf.labels[..., v_es], vs.labels[v_es], vs.label_map.myo)
        vm = vs.ref_labels == vs.label_map.myo
        row[f"epe_{vf.name}"] = float(np.linalg.norm(vf.displacement - ps.view_truth[vf.name], axis=-1)[vm].mean())
    peaks = strain_peaks(analyse_fit_result(res).summary())
    for k, v in peaks.items():
        if v is not None and truth_peaks.get(k) is not None:
            row[f"{k}_peak"] = v
            row[f"{k}_error"] = v - truth_peaks[k]
    shifts = res.metrics.get("views", {}).get("shifts_mm")
    if shifts:
        errs = [np.linalg.norm(np.asarray(shifts["sax"]) - ps.shifts["sax"], axis=1)]
        errs += [np.atleast_1d(np.linalg.norm(np.asarray(shifts[v]) - ps.shifts[v])) for v in ps.study.lax]
        e = np.concatenate(errs)
        row["shift_error_mean"] = float(e.mean())
        row["shift_error_max"] = float(e.max())
    return row


def markdown(rows: list[dict], title: str) -> str:
    cols = [("scenario", "scenario"), ("seed", "seed"), ("epe_through_plane", "EPE through-plane"),
            ("epe_3d", "EPE 3D"), ("dice_lv_es", "LV Dice ES"), ("dice_myo_es", "MYO Dice ES"),
            ("dice_myo_views", "MYO Dice views"), ("radial_error", "GRS err"), ("circumferential_error", "GCS err"),
            ("longitudinal_error", "GLS err (voxel)"), ("gls_midwall_error", "GLS err (midwall)"),
            ("shift_error_mean", "offset err mean/max"), ("seconds", "s")]
    out = [f"### {title}", "", "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for key, _ in cols:
            if key == "dice_myo_views":
                v = [f"{r[k]:.3f}" for k in sorted(r) if k.startswith("dice_myo_") and k != "dice_myo_es"]
                cells.append("/".join(v) or "-")
            elif key == "shift_error_mean":
                cells.append(f"{r[key]:.2f}/{r['shift_error_max']:.2f}" if key in r else "-")
            elif key not in r or r[key] is None:
                cells.append("-")
            elif isinstance(r[key], float):
                cells.append(f"{r[key]:+.1f}" if key.endswith("_error") else f"{r[key]:.3f}")
            else:
                cells.append(str(r[key]))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/multiview"))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--seed0", type=int, default=SEED0)
    ap.add_argument("--group", default="normal")
    ap.add_argument("--slice-mm", type=float, default=10.0)
    ap.add_argument("--descent", default="8,12", help="base descent range, mm")
    ap.add_argument("--views", default="2ch,3ch,4ch")
    ap.add_argument("--misalign", type=float, default=3.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--settings", default="{}", help="JSON of fit settings (FitConfig) to change")
    ap.add_argument("--views-settings", default="{}", help="JSON of multi-view settings (ViewsConfig) to change")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    nz = max(5, round(80.0 / args.slice_mm))
    lo, hi = (float(v) for v in args.descent.split(","))
    cfg = group_config(args.group, 3, shape=(96, 96, nz), spacing=(1.6, 1.6, args.slice_mm), base_descent_mm_range=(lo, hi))
    views = tuple(v for v in args.views.split(",") if v)
    settings = json.loads(args.settings)
    if args.steps is not None:
        settings["steps"] = args.steps
    rows = []
    for i in range(args.seeds):
        seed = args.seed0 + i
        aligned = make_phantom_study(cfg, seed, views=views)
        misaligned = make_phantom_study(cfg, seed, views=views, misalign_mm=args.misalign) if args.misalign > 0 else None
        truth_peaks = truth_strain_peaks(aligned.phantom, aligned.study.sax)
        for sc in args.scenarios.split(","):
            ps = misaligned if sc.startswith("misaligned") else aligned
            if ps is None:
                continue
            res, sec = fit_scenario(ps, sc, args.prior, settings, json.loads(args.views_settings))
            row = {"scenario": sc, "seed": seed, **score(ps, res, sec, truth_peaks),
                   "truth_peaks": truth_peaks, "base_descent_mm": aligned.phantom.params["base_descent_mm"]}
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                              if k != "truth_peaks"}), flush=True)
    title = (f"{args.group} 3D phantoms 96x96x{nz}, {args.slice_mm:g} mm slices, base descent {args.descent} mm, "
             f"views {args.views}, misalignment up to {args.misalign:g} mm, prior {args.prior}")
    md = markdown(rows, title)
    print(md)
    (args.out / "multiview.md").write_text(md + "\n")
    (args.out / "multiview.json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "rows": rows},
                                                        indent=1, default=float))


if __name__ == "__main__":
    main()
