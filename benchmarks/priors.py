"""Prior benchmark: train every kind of prior, then adapt to held-out hearts from each prior
and from random initialisation, and record accuracy against the number of steps.

Two phases, which may run on different machines:

* ``train``: phantoms (seeds 1000+) -> one checkpoint per kind in ``OUT/priors/`` (a GPU helps:
  ``--device cuda``); for ``--loo-kinds``, also 3D priors trained on the phantoms plus all
  Sunnybrook cases but one (leave-one-out). ``--skip-existing`` resumes an interrupted run.
* ``eval``: held-out phantoms (seeds 2000+), robustness variants (stronger noise, half the
  frames, voxels twice as thick along one axis) and the Sunnybrook cases (3D priors trained on
  3D phantoms, and the leave-one-out ones; ED labels carried to ES). With ``--test-3d N``,
  also N held-out 3D stacks per ``--variants-3d`` (plain, and slices twice as thick) fitted
  from the 3D priors and from scratch at a few budgets (3D fits are ~10x dearer). Threads pinned; timings
  are CPU wall seconds of the whole fit call (set-up, optimisation, dense field, label
  propagation).

Each fit uses a step *budget* (the learning-rate schedule spans the budget), so the curve is
"accuracy of a fit given k steps", the quantity a user chooses. Prints Markdown tables, writes
``OUT/priors.json``, ``OUT/priors.md`` and adaptation-curve PNGs.

    python benchmarks/priors.py --out bench_out/priors                 # train + eval on CPU
    python benchmarks/priors.py --out DIR --phase train --device cuda  # train elsewhere
    python benchmarks/priors.py --out DIR --phase eval                 # then evaluate here
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

from cardioinr.fit import FitConfig, Fitter  # noqa: E402
from cardioinr.phantoms import PhantomConfig, make_phantom  # noqa: E402
from cardioinr.priors import KINDS, PriorConfig, load_prior, save_prior, train_prior  # noqa: E402
from cardioinr.fit.warp import propagate_labels  # noqa: E402

PHANTOM_2D = PhantomConfig(dim=2)
# 3D priors are evaluated on real stacks (Sunnybrook), so they are trained on a population as
# broad as a clinic's: the stack geometry of a short-axis cine and failing hearts as well as
# healthy ones (EF 20-70 %, circumferential strain -8..-25 %, end-systole at 30-50 % of the
# cycle), with an LV of realistic length (65-95 mm) instead of one stretched over the stack.
# Measured on Sunnybrook: with healthy hearts only (EF 50-70 %, 80 x 80 x 8 stacks) priors
# were 0.001-0.003 LV Dice behind scratch at 200 steps; the broad population made them level
# at 200 steps; the realistic length (with LV-only coordinate frames) lifted consensus at 50
# steps from 0.935 to 0.938 (scratch 0.937).
PHANTOM_3D = PhantomConfig(dim=3, shape=(80, 80, 12), spacing=(1.37, 1.37, 10.0), n_frames=20,
                           ef_range=(0.2, 0.7), circumferential_strain_range=(-0.25, -0.08),
                           es_fraction_range=(0.3, 0.5), long_axis_mm_range=(65.0, 95.0))
SCRATCH_BUDGETS = (0, 10, 25, 50, 75, 100, 250, 500, 800)
PRIOR_BUDGETS = (0, 5, 10, 25, 50, 75, 100)
SCRATCH_BUDGETS_3D = (100, 800)


def _ref_only(seq):
    return replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]})


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def prior_config(kind: str, dim: int, device: str, scale: float) -> PriorConfig:
    steps = int((300 if kind == "meta" else 600) * scale)
    return PriorConfig(kind=kind, steps=max(steps, 1), subject_steps=max(int(400 * scale), 1),
                       encoder_steps=max(int(400 * scale), 1), inner_steps=8, batch=4, device=device, seed=0)


def _sunnybrook_cases() -> list[tuple[str, object, object]]:
    """``(name, entry, full sequence)`` of the shared Sunnybrook cases; empty without the data."""
    from cardioinr.io.datasets import index_dataset, load_entry, shared_data_dir

    data = shared_data_dir()
    if data is None:
        return []
    return [(e.name, e, load_entry(e)) for e in index_dataset(data)]


def loo_name(kind: str, case: str) -> str:
    """Checkpoint stem of a 3D prior trained on phantoms plus every Sunnybrook case but ``case``."""
    return f"{kind}_3d_loo-{case}"


def phase_train(out: Path, n_train: int, device: str, kinds: list[str], scale: float, dims: list[int],
                loo_kinds: list[str] | tuple[str, ...] = (), skip_existing: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    record = {}

    def train(stem: str, kind: str, dim: int, seqs: list) -> None:
        if skip_existing and (out / f"{stem}.ckpt").exists():
            print(f"[train] {stem}: checkpoint exists, kept", flush=True)
            return
        t0 = time.perf_counter()
        prior = train_prior(seqs, prior_config(kind, dim, device, scale), progress=False)
        secs = time.perf_counter() - t0
        save_prior(out / f"{stem}.ckpt", prior)
        record[stem] = {"seconds": secs, "n_train": len(seqs), "device": device}
        print(f"[train] {stem}: {secs:.1f} s", flush=True)

    for dim in dims:
        pc = PHANTOM_2D if dim == 2 else PHANTOM_3D
        n = n_train if dim == 2 else max(4, n_train // 2)
        t0 = time.perf_counter()
        seqs = [_ref_only(make_phantom(pc, 1000 + s, name=f"train{s:03d}").sequence) for s in range(n)]
        print(f"[train] {n} {dim}D training phantoms in {time.perf_counter() - t0:.1f} s", flush=True)
        for kind in kinds:
            train(f"{kind}_{dim}d", kind, dim, seqs)
        if dim == 3 and loo_kinds:
            # Leave-one-out on the real cases: the phantoms plus every Sunnybrook case but one,
            # evaluated on the one left out (reference labels only, as a user's data would be).
            real = _sunnybrook_cases()
            for name, _, _ in real:
                extra = [_ref_only(full) for other, _, full in real if other != name]
                for kind in loo_kinds:
                    train(loo_name(kind, name), kind, dim, seqs + extra)
    (out / f"train_{'-'.join(kinds)}_{'-'.join(map(str, dims))}d.json").write_text(json.dumps(record, indent=1))
    return record


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _scores(res, truth_disp, truth_labels, seq, carried: np.ndarray) -> dict:
    """Scores of one fit. ``carried``: the reference labels carried by the TRUE displacement
    (X, Y, Z, T). Dice against it isolates the motion error from the grid: on coarse voxels
    even the true motion scores well below 1 against the phantom's own labels of each frame."""
    from cardioinr.analysis.metrics import evaluate_arrays, label_scores

    ev = evaluate_arrays(res.displacement, res.labels, truth_disp, truth_labels, spacing=seq.spacing,
                         label_map=seq.label_map, ref_frame=seq.ref_frame, with_hd95=False)
    s = ev["labels"]["summary"]
    vs = label_scores(res.labels, carried, seq.label_map, seq.spacing, with_hd95=False)["summary"]
    return {"dice_lv_min": s["LV"]["dice_min"], "dice_myo_min": s["MYO"]["dice_min"],
            "dice_lv_mean": s["LV"]["dice_mean"], "dice_myo_mean": s["MYO"]["dice_mean"],
            "vs_carried_lv_min": vs["LV"]["dice_min"], "vs_carried_myo_min": vs["MYO"]["dice_min"],
            "epe_myo": ev["epe"]["MYO"]["mean"], "folded_pct": ev["folding"]["heart"]["percent_folded"]}


def _fit(seq, prior, budget: int, seed: int = 0, through_plane: float | str = "auto"):
    """One fit; its seconds include binding the prior (and the through-plane search of "auto"),
    and ``res.metrics["prior_through_plane"]`` holds the scale it started from."""
    t0 = time.perf_counter()
    if prior is None:
        cfg = FitConfig(steps=budget, patience=10**9, seed=seed)
        init, used = None, 1.0
    else:
        cfg = prior.fit_config(FitConfig(), steps=budget, patience=10**9, seed=seed)
        init, used = prior.start(seq, through_plane, cfg)
    res = Fitter(cfg).fit(seq, init=init)
    res.metrics["prior_through_plane"] = used
    return res, time.perf_counter() - t0


def _variant(ph, variant: str):
    """(sequence with reference labels only, truth displacement, truth labels of every frame)."""
    seq = ph.sequence
    truth_labels = np.stack([seq.labels[t] for t in range(seq.n_frames)], -1)
    disp = ph.displacement
    if variant == "half_frames":
        keep = [t for t in range(seq.n_frames) if (t - seq.ref_frame) % 2 == 0]
        ref = keep.index(seq.ref_frame)
        seq = replace(seq, image=seq.image[..., keep], labels={ref: seq.labels[seq.ref_frame]}, ref_frame=ref,
                      frame_interval_ms=seq.frame_interval_ms * 2)
        return seq, disp[..., keep, :], truth_labels[..., keep]
    return _ref_only(seq), disp, truth_labels


def _phantom_cases(variant: str, n_test: int, dim: int = 2):
    """Held-out cases of one variant. In 2D "thick" doubles the voxel size along one in-plane
    axis (the 2D stand-in); in 3D it is the real thing: a stack of the same extent with slices
    twice as thick (6 x 20 mm instead of 12 x 10 mm, rendered with through-plane partial
    volume). Same seeds, but not the same hearts: the base plane's depth below the first
    slice is drawn in slice units."""
    cfg = PHANTOM_2D if dim == 2 else PHANTOM_3D
    if variant == "noise":
        cfg = replace(cfg, noise_sigma=0.08)
    elif variant == "thick":
        if dim == 2:
            cfg = replace(cfg, shape=(112, 56, 1), spacing=(1.6, 3.2, 8.0))
        else:
            cfg = replace(cfg, shape=(*cfg.shape[:2], cfg.shape[2] // 2), spacing=(*cfg.spacing[:2], 2 * cfg.spacing[2]))
    return [_variant(make_phantom(cfg, 2000 + s, name=f"test{s:03d}"), variant) for s in range(n_test)]


def _eval_variant(variant: str, n_test: int, dim: int, priors: dict, budgets_of) -> dict:
    """``{init: [row per budget]}`` on the held-out cases of one variant; each row holds the
    mean over cases of :func:`_scores` and the seconds. ``budgets_of(prior)``: the budgets."""
    cases = _phantom_cases(variant, n_test, dim)
    carried = [propagate_labels(seq.ref_labels, disp, seq.spacing) for seq, disp, _ in cases]
    curves: dict = {}
    for name, prior in [("random", None)] + list(priors.items()):
        rows = []
        for budget in budgets_of(prior):
            per = []
            for (seq, disp, labels), car in zip(cases, carried):
                res, secs = _fit(seq, prior, budget)
                per.append({**_scores(res, disp, labels, seq, car), "seconds": secs,
                            "through_plane": res.metrics["prior_through_plane"]})
            row = {"steps": budget, **{k: float(np.mean([p[k] for p in per])) for k in per[0]},
                   "dice_lv_min_worst": float(min(p["dice_lv_min"] for p in per)), "cases": per}
            rows.append(row)
            print(f"[eval {dim}D {variant}] {name:12s} k={budget:4d} LV {row['dice_lv_min']:.3f} MYO "
                  f"{row['dice_myo_min']:.3f} EPE {row['epe_myo']:.3f} {row['seconds']:.2f}s", flush=True)
        curves[name] = rows
    return curves


def _budgets_2d(prior) -> tuple[int, ...]:
    """The curve's budgets, plus a prior's own default so the robustness table scores it there."""
    if prior is None:
        return SCRATCH_BUDGETS
    return tuple(sorted({*PRIOR_BUDGETS, prior.fit_config().steps}))


def _budgets_3d(prior) -> tuple[int, ...]:
    """3D fits are ~10x dearer: scratch at 100 and 800 steps, each prior at 50, 100 and its default."""
    if prior is None:
        return SCRATCH_BUDGETS_3D
    return tuple(sorted({50, 100, prior.fit_config().steps}))


def eval_paired(variants: list[str], n_test: int, priors: dict, dim: int = 2) -> dict:
    """``{variant: {init: {"plain": [scores per case], variant: [...]}}}``: each init at its own
    default budget (scratch 800 steps) on the same held-out phantoms (2D) or stacks (3D), plain
    (fitted once) and with each degradation, so that the accuracy lost can be compared case by
    case (:func:`_paired_table`)."""
    def default_budget(prior) -> tuple[int, ...]:
        return (SCRATCH_BUDGETS[-1],) if prior is None else (prior.fit_config().steps,)

    def cases(v: str) -> dict:
        return {name: rows[0]["cases"] for name, rows in _eval_variant(v, n_test, dim, priors, default_budget).items()}

    plain = cases("plain")
    out: dict = {}
    for v in variants:
        out[v] = {name: {"plain": plain[name], v: per} for name, per in cases(v).items()}
    return out


def phase_eval(out: Path, priors_dir: Path, kinds: list[str], n_test: int, variants: list[str],
               sunnybrook: bool, threads: int, n_test_3d: int = 0, variants_3d: list[str] = (),
               sunnybrook_seeds: int = 1, in_plane_kinds: tuple[str, ...] = (),
               full_start_kinds: tuple[str, ...] = (), paired: int = 0) -> dict:
    torch.set_num_threads(threads)
    results: dict = {"threads": threads, "curves": {}, "curves_3d": {}, "sunnybrook": {}, "paired": {},
                     "paired_3d": {}}
    priors = _load_priors(priors_dir, kinds, 2)
    if paired > 0:
        degraded = [v for v in variants if v != "plain"]
        if degraded:
            results["paired"] = eval_paired(degraded, paired, priors)
            _save(out, results)
        degraded_3d = [v for v in variants_3d if v != "plain"]
        if n_test_3d > 0 and degraded_3d:
            results["paired_3d"] = eval_paired(degraded_3d, n_test_3d, _load_priors(priors_dir, kinds, 3), dim=3)
            _save(out, results)
        variants, variants_3d = [], []  # a paired run replaces the curves
    for variant in variants:
        results["curves"][variant] = _eval_variant(variant, n_test, 2, priors, _budgets_2d)
        _save(out, results)  # a long run keeps what it has measured
    if n_test_3d > 0 and variants_3d:
        priors3 = _load_priors(priors_dir, kinds, 3)
        for variant in variants_3d:
            results["curves_3d"][variant] = _eval_variant(variant, n_test_3d, 3, priors3, _budgets_3d)
            _save(out, results)
    if sunnybrook:
        results["sunnybrook"] = eval_sunnybrook(priors_dir, kinds, tuple(range(sunnybrook_seeds)), in_plane_kinds,
                                                full_start_kinds)
        _save(out, results)
    return results


def _load_priors(priors_dir: Path, kinds: list[str], dim: int) -> dict:
    """``{kind: Prior}`` for every listed kind with a ``KIND_{dim}d.ckpt`` in the folder."""
    paths = {k: priors_dir / f"{k}_{dim}d.ckpt" for k in kinds}
    return {k: load_prior(p) for k, p in paths.items() if p.exists()}


def _save(out: Path, results: dict) -> None:
    tmp = out / "priors.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "priors.json")


def eval_sunnybrook(priors_dir: Path, kinds: list[str], seeds: tuple[int, ...] = (0,),
                    in_plane_kinds: tuple[str, ...] = (), full_start_kinds: tuple[str, ...] = ()) -> dict:
    """LV Dice at ES of ED labels carried by fits from scratch, from phantom-trained 3D priors,
    (where trained) from leave-one-out priors that also saw the other real cases, all with the
    default through-plane start ("auto"), and with fixed starts: ``KIND/in-plane`` for the
    ``in_plane_kinds`` (scale 0), ``KIND/full`` for the ``full_start_kinds`` (scale 1).

    Every fit is repeated with each fit seed (point sampling, and a fresh field's weights):
    between seeds one case's Dice moves by up to 0.009, more than the differences between
    inits. The 800-step scratch fit, a reference, runs with the first seed only."""
    from cardioinr.analysis.metrics import dice

    cases = _sunnybrook_cases()
    if not cases:
        print("[sunnybrook] data not found; skipped")
        return {}
    priors = _load_priors(priors_dir, kinds, 3)
    out: dict = {}
    for case, entry, full in cases:
        seq = _ref_only(full)
        es, lv = entry.es_frame, full.label_map.lv
        truth = full.labels[es] == lv
        sl = [k for k in range(truth.shape[2]) if truth[:, :, k].any()]
        loo = {f"{k}+loo": load_prior(priors_dir / f"{loo_name(k, case)}.ckpt") for k in kinds
               if (priors_dir / f"{loo_name(k, case)}.ckpt").exists()}
        runs = [("random", None, "auto")] + [(k, p, "auto") for k, p in priors.items()]
        runs += [(f"{k}/full", priors[k], 1.0) for k in full_start_kinds if k in priors]
        runs += [(f"{k}/in-plane", priors[k], 0.0) for k in in_plane_kinds if k in priors]
        runs += [(k, p, "auto") for k, p in loo.items()]
        for name, prior, through_plane in runs:
            for budget in (25, 50, 100, 200, 800):
                if prior is not None and budget > 200:
                    continue
                for seed in seeds[:1] if budget > 200 else seeds:
                    res, secs = _fit(seq, prior, budget, seed, through_plane)
                    d = dice(res.labels[:, :, sl, es] == lv, truth[:, :, sl])
                    out.setdefault(case, {}).setdefault(name, []).append(
                        {"steps": budget, "seed": seed, "dice_lv_es": d, "seconds": secs,
                         "folded_pct": res.metrics["percent_negative_jacobian"],
                         "through_plane": res.metrics["prior_through_plane"]})
                    print(f"[sunnybrook] {case} {name:18s} k={budget:4d} seed {seed} LV Dice ES {d:.4f} "
                          f"through-plane {res.metrics['prior_through_plane']:g} {secs:.1f}s", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def steps_to_reach(rows: list[dict], target_dice_lv: float, target_dice_myo: float, target_epe: float):
    """First budget whose mean Dice (LV, MYO) and EPE are at least as good as the targets."""
    for r in rows:
        if r["dice_lv_min"] >= target_dice_lv and r["dice_myo_min"] >= target_dice_myo and r["epe_myo"] <= target_epe:
            return r
    return None


def summarise(results: dict) -> str:
    lines = []
    for variant, curves in results["curves"].items():
        scratch = curves["random"]
        final = scratch[-1]
        lines.append(f"\n### {variant}: scratch final ({final['steps']} steps): LV {final['dice_lv_min']:.3f}, "
                     f"MYO {final['dice_myo_min']:.3f}, EPE {final['epe_myo']:.3f} mm, {final['seconds']:.1f} s\n")
        lines.append("| init | k=0 LV/MYO/EPE | k=10 | k=50 | k=100 | steps to scratch-final | s to scratch-final | step ratio | time ratio |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for name, rows in curves.items():
            by = {r["steps"]: r for r in rows}

            def cell(k):
                r = by.get(k)
                return "-" if r is None else f"{r['dice_lv_min']:.3f}/{r['dice_myo_min']:.3f}/{r['epe_myo']:.2f}"

            hit = steps_to_reach(rows, final["dice_lv_min"] - 0.005, final["dice_myo_min"] - 0.005, final["epe_myo"] * 1.05)
            if hit is None:
                reach = ("not reached", "-", "-", "-")
            else:
                reach = (str(hit["steps"]), f"{hit['seconds']:.2f}",
                         f"{final['steps'] / max(hit['steps'], 1):.1f}x", f"{final['seconds'] / hit['seconds']:.1f}x")
            lines.append(f"| {name} | {cell(0)} | {cell(10)} | {cell(50)} | {cell(100)} | " + " | ".join(reach) + " |")
    if results["curves"]:
        lines += _versus_random(results)
    lines += _robustness(results["curves"], "Robustness: accuracy lost to each degradation (variant minus plain)")
    if results.get("curves_3d"):
        lines += _stack_tables(results["curves_3d"])
        lines += _robustness(results["curves_3d"], "3D stacks: accuracy lost to each degradation (variant minus plain)", 3)
    for variant, per in results.get("paired", {}).items():
        lines += _paired_table(variant, per)
    for variant, per in results.get("paired_3d", {}).items():
        lines += _paired_table(variant, per, "3D stacks")
    if results.get("sunnybrook"):
        lines += _sunnybrook_table(results["sunnybrook"])
    return "\n".join(lines)


PAIRED_METRICS = (("dice_lv_min", "LV Dice, points", 100.0), ("dice_myo_min", "MYO Dice, points", 100.0),
                  ("epe_myo", "EPE, mm", 1.0), ("vs_carried_lv_min", "LV Dice vs truth-carried, points", 100.0),
                  ("vs_carried_myo_min", "MYO Dice vs truth-carried, points", 100.0))


def paired_losses(per: dict, variant: str, name: str, key: str, scale: float) -> np.ndarray:
    """Per case: accuracy lost to ``variant`` (variant minus plain, times ``scale``)."""
    n = min(len(per[name]["plain"]), len(per[name][variant]))
    return np.array([(per[name][variant][i][key] - per[name]["plain"][i][key]) * scale for i in range(n)])


def _paired_table(variant: str, per: dict, cases: str = "phantoms") -> list[str]:
    """Loss of each prior against scratch's, case by case: mean +- standard error over cases."""
    n = len(per["random"][variant])
    lines = [f"\n### {variant}, paired: accuracy lost at each init's default budget ({n} {cases})\n",
             "Each cell: the init's loss (variant minus plain, mean over cases); in brackets, for priors, "
             "the case-by-case difference to scratch's loss, mean +- standard error. EPE: a positive loss is "
             "an increase.\n",
             "| init | " + " | ".join(label for _, label, _ in PAIRED_METRICS) + " |",
             "|---|" + "---|" * len(PAIRED_METRICS)]
    for name in per:
        cells = []
        for key, _, scale in PAIRED_METRICS:
            mine = paired_losses(per, variant, name, key, scale)
            cell = f"{mine.mean():+.2f}"
            if name != "random" and len(mine) > 1:
                d = mine - paired_losses(per, variant, "random", key, scale)
                cell += f" ({d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _sunnybrook_table(sb: dict) -> list[str]:
    """Mean LV Dice at ES over cases and fit seeds, and the difference to scratch at the same
    budget and seed (with its spread over seeds when there are several)."""
    order = ["random", *KINDS, *(f"{k}/full" for k in KINDS), *(f"{k}/in-plane" for k in KINDS),
             *(f"{k}+loo" for k in KINDS)]
    names = sorted({n for case in sb.values() for n in case},
                   key=lambda n: order.index(n) if n in order else len(order))
    ks = (25, 50, 100, 200, 800)

    def per_seed(n: str, k: int) -> dict[int, float]:
        """seed -> mean over cases (only seeds that every case has)."""
        by: dict[int, list[float]] = {}
        for case in sb.values():
            for r in case.get(n, []):
                if r["steps"] == k:
                    by.setdefault(r.get("seed", 0), []).append(r["dice_lv_es"])
        return {s: float(np.mean(v)) for s, v in by.items() if len(v) == len(sb)}

    seeds = sorted({r.get("seed", 0) for case in sb.values() for rows in case.values() for r in rows})
    lines = [f"\n### Sunnybrook: LV Dice at ES, mean over cases and fit seeds {', '.join(map(str, seeds))} "
             "(difference to random init at the same budget and seed; +- its standard deviation over seeds). "
             "KIND: 3D prior trained on phantoms only, through-plane start chosen by the images (auto); "
             "KIND/full and KIND/in-plane: the same, started with all / none of its through-plane motion; "
             "KIND+loo: on phantoms and the other two Sunnybrook cases (leave-one-out), auto start. "
             "k=800 (scratch, for reference): first seed only\n",
             "| init | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for n in names:
        cells = []
        for k in ks:
            mine, ref = per_seed(n, k), per_seed("random", k)
            if not mine:
                cells.append("-")
                continue
            cell = f"{np.mean(list(mine.values())):.4f}"
            both = [mine[s] - ref[s] for s in mine if s in ref]
            if n != "random" and both:
                cell += f" ({np.mean(both):+.4f}" + (f" +- {np.std(both, ddof=1):.4f})" if len(both) > 1 else ")")
            cells.append(cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    auto = [n for n in names if n != "random" and "/" not in n]
    if auto:
        lines += ["\nThrough-plane scale chosen by the auto start, per case (" + ", ".join(sb) + "):\n"]
        for n in auto:
            picks = [sorted({r["through_plane"] for r in sb[c].get(n, []) if "through_plane" in r}) for c in sb]
            lines.append(f"- {n}: " + " / ".join(",".join(f"{v:g}" for v in p) or "-" for p in picks))
    return lines


def _at(rows: list[dict], k: int) -> dict | None:
    return next((r for r in rows if r["steps"] == k), None)


def _versus_random(results: dict) -> list[str]:
    """Does each kind beat random initialisation at 10 and 50 steps (Dice LV, MYO and EPE)?"""
    lines = ["\n### Every kind against random initialisation at equal budgets\n",
             "A kind beats random at k steps when its LV and MYO Dice (min over frames) are at least "
             "random's and its myocardial EPE is lower.\n",
             "| variant | init | k=10 LV/MYO/EPE (random) | beats | k=50 LV/MYO/EPE (random) | beats |",
             "|---|---|---|---|---|---|"]
    for variant, curves in results["curves"].items():
        for name, rows in curves.items():
            if name == "random":
                continue
            cells = []
            for k in (10, 50):
                p, r = _at(rows, k), _at(curves["random"], k)
                if p is None or r is None:
                    cells += ["-", "-"]
                    continue
                wins = p["dice_lv_min"] >= r["dice_lv_min"] and p["dice_myo_min"] >= r["dice_myo_min"] and p["epe_myo"] < r["epe_myo"]
                cells += [f"{p['dice_lv_min']:.3f}/{p['dice_myo_min']:.3f}/{p['epe_myo']:.2f} "
                          f"({r['dice_lv_min']:.3f}/{r['dice_myo_min']:.3f}/{r['epe_myo']:.2f})", "yes" if wins else "NO"]
            lines.append(f"| {variant} | {name} | " + " | ".join(cells) + " |")
    return lines


def _robustness(curves: dict, title: str, dim: int = 2) -> list[str]:
    """Accuracy lost to each degradation, at equal budgets and at each init's default budget:
    against the phantom's labels of each frame, then against the truth-carried labels."""
    if "plain" not in curves or len(curves) < 2:
        return []
    lines = [f"\n### {title}\n",
             "Dice in points of LV/MYO (min over frames), EPE in mm; less lost is better. \"default\" is "
             "each init's own budget (random: 800 steps; priors: their adaptation default, or the "
             "nearest budget below).\n"]
    lines += _loss_table(curves, "dice_lv_min", "dice_myo_min", dim)
    if all("vs_carried_lv_min" in r for c in curves.values() for rows in c.values() for r in rows):
        lines += ["\nThe same, with Dice against the reference labels carried by the true motion (the "
                  "motion error alone: the coarser grid of the thick variant caps even the true "
                  "motion's Dice against the phantom's own labels).\n"]
        lines += _loss_table(curves, "vs_carried_lv_min", "vs_carried_myo_min", dim)
    return lines


def _stack_tables(curves: dict) -> list[str]:
    """Scores of the 3D held-out stacks, one table per variant."""
    lines = []
    for variant, by_init in curves.items():
        lines += [f"\n### 3D stacks, {variant}: 3D priors against random initialisation\n",
                  "| init | k | LV/MYO Dice | EPE mm | vs truth-carried LV/MYO | s |", "|---|---|---|---|---|---|"]
        for name, rows in by_init.items():
            for r in rows:
                lines.append(f"| {name} | {r['steps']} | {r['dice_lv_min']:.3f}/{r['dice_myo_min']:.3f} | "
                             f"{r['epe_myo']:.3f} | {r['vs_carried_lv_min']:.3f}/{r['vs_carried_myo_min']:.3f} | "
                             f"{r['seconds']:.1f} |")
    return lines


def _loss_table(curves: dict, lv_key: str, myo_key: str, dim: int = 2) -> list[str]:
    from cardioinr.priors import adapt_steps

    lines = ["| variant | init | k=50 dLV/dMYO/dEPE | k=100 | default (k) |", "|---|---|---|---|---|"]
    for variant in curves:
        if variant == "plain":
            continue
        for name, rows in curves[variant].items():
            plain = curves["plain"].get(name)
            if plain is None:
                continue
            default = adapt_steps(name, dim) or FitConfig().steps
            kd = max((r["steps"] for r in rows if r["steps"] <= default), default=None)
            cells = []
            for k in (50, 100, kd):
                v, p = _at(rows, k), _at(plain, k)
                cells.append("-" if v is None or p is None else
                             f"{100 * (v[lv_key] - p[lv_key]):+.1f}/{100 * (v[myo_key] - p[myo_key]):+.1f}/"
                             f"{v['epe_myo'] - p['epe_myo']:+.2f}")
            cells[-1] += f" ({kd})"
            lines.append(f"| {variant} | {name} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for variant, curves in results["curves"].items():
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for name, rows in curves.items():
            ks = [max(r["steps"], 1) for r in rows]
            for ax, key in zip(axes, ("dice_lv_min", "dice_myo_min", "epe_myo")):
                ax.plot(ks, [r[key] for r in rows], marker="o", label=name)
        for ax, title in zip(axes, ("LV Dice (min over frames)", "MYO Dice (min over frames)", "myocardial EPE (mm)")):
            ax.set_xscale("log")
            ax.set_xlabel("fit steps (budget; 0 plotted at 1)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"adaptation curves: {variant}")
        fig.tight_layout()
        fig.savefig(out / f"curves_{variant}.png", dpi=90)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/priors"))
    ap.add_argument("--phase", choices=["train", "eval", "all", "summary"], default="all",
                    help="summary: tables and plots again from OUT/priors.json")
    ap.add_argument("--priors", type=Path, default=None, help="folder of checkpoints (default OUT/priors)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--dims", default="2,3")
    ap.add_argument("--train", type=int, default=16, help="training phantoms (2D; half as many 3D)")
    ap.add_argument("--test", type=int, default=4, help="held-out phantoms per variant")
    ap.add_argument("--variants", default="plain,noise,half_frames,thick")
    ap.add_argument("--test-3d", type=int, default=0,
                    help="held-out 3D stacks per 3D variant (3D priors; 0: none; about 3.5 min per stack for plain + thick here)")
    ap.add_argument("--variants-3d", default="plain,thick")
    ap.add_argument("--train-scale", type=float, default=1.0, help="multiplies the training step counts")
    ap.add_argument("--device", default="cpu", help="training device")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sunnybrook", action="store_true")
    ap.add_argument("--paired", type=int, default=0,
                    help="robustness, paired: N 2D phantoms, each init at its default budget only, plain and each "
                         "other --variants, and --test-3d stacks likewise with --variants-3d (replaces the "
                         "adaptation curves; 0: off)")
    ap.add_argument("--in-plane-kinds", default="consensus",
                    help="Sunnybrook: kinds also started without their through-plane motion (KIND/in-plane)")
    ap.add_argument("--full-start-kinds", default="consensus",
                    help="Sunnybrook: kinds also started with all their through-plane motion (KIND/full)")
    ap.add_argument("--sunnybrook-seeds", type=int, default=3,
                    help="fit seeds per Sunnybrook fit (differences between inits are below one seed's spread)")
    ap.add_argument("--skip-existing", action="store_true",
                    help="train: keep checkpoints already in the priors folder (resume an interrupted run)")
    ap.add_argument("--loo-kinds", default="consensus,autodecoder",
                    help="kinds also trained leave-one-out on phantoms + Sunnybrook (3D; empty: none)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    priors_dir = args.priors or args.out / "priors"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase in ("train", "all"):
        phase_train(priors_dir, args.train, args.device, kinds, args.train_scale, [int(d) for d in args.dims.split(",")],
                    [k for k in args.loo_kinds.split(",") if k and not args.no_sunnybrook], args.skip_existing)
    if args.phase in ("eval", "all", "summary"):
        if args.phase == "summary":
            results = json.loads((args.out / "priors.json").read_text())
        else:
            results = phase_eval(args.out, priors_dir, kinds, args.test, [v for v in args.variants.split(",") if v],
                                 not args.no_sunnybrook, args.threads, args.test_3d,
                                 [v for v in args.variants_3d.split(",") if v], args.sunnybrook_seeds,
                                 tuple(k for k in args.in_plane_kinds.split(",") if k),
                                 tuple(k for k in args.full_start_kinds.split(",") if k), args.paired)
        md = summarise(results)
        print(md)
        (args.out / "priors.json").write_text(json.dumps(results, indent=1))
        (args.out / "priors.md").write_text(md + "\n")
        plot_curves(results, args.out)


if __name__ == "__main__":
    main()
