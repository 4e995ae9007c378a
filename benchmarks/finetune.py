"""Fine-tuning a built-in prior on a user's cohort (``cardioinr train-prior --from builtin``).

Two experiments, each comparing fits of held-out cases started from the built-in prior and from
the fine-tuned one, at 25 and 50 adaptation steps and at the default budget (the kind's
adaptation settings, plateau stop included):

* ``sunnybrook``: the built-in 3D prior fine-tuned on the Sunnybrook stacks, leave one out
  (images only: the ED labels place the normalised frame and mark the myocardium for the
  incompressibility term, no label of another frame enters the loss); the
  held-out stack's ED labels carried to ES, LV Dice at ES against the expert's (Sunnybrook's ES
  contours are the endocardium only). Note
  the built-in prior already saw these three stacks' images among its 11 training cases.
* ``failing``: the built-in 2D prior fine-tuned on a population of failing hearts (true EF
  about 12-21 %: drawn 15-38 % before the segment; one akinetic or dyskinetic segment each, which the built-in population lacks) and
  tested on held-out hearts of that population: myocardial EPE against the exact motion, LV
  and MYO Dice (minimum over frames).

Fits run in this process (one thread, as a cohort worker does); ``fit_s`` is the fit itself.
Prints Markdown tables and writes ``OUT/finetune_<kind>.json``; fine-tuned checkpoints go to
``OUT/``. ``--kind`` chooses how to fine-tune: ``consensus`` (per-subject fits from the parent,
averaged) or ``population`` (the parent's weights trained jointly on the cohort); ``--w-labels``
fine-tunes with the cohort's ES labels as well (the fit's label term), as a labelled cohort can.

    python benchmarks/finetune.py --out bench_out/finetune [--parts sunnybrook,failing] [--kind population]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from builtin_priors import GROUPS  # noqa: E402

from cardioinr.analysis.metrics import evaluate_arrays  # noqa: E402
from cardioinr.core.files import file_sha256  # noqa: E402
from cardioinr.fit import FitConfig, Fitter  # noqa: E402
from cardioinr.io import Sequence  # noqa: E402
from cardioinr.phantoms import PhantomConfig, make_phantom  # noqa: E402
from cardioinr.priors import PriorConfig, load_prior, resolve_prior, save_prior, train_prior  # noqa: E402

BUDGETS = (25, 50, None)  # None: the kind's default adaptation budget (with its plateau stop)
FAILING_TRAIN_SEED = 50_000
FAILING_TEST_SEED = 60_000


def failing_config(seed: int) -> PhantomConfig:
    """A failing heart with one akinetic or dyskinetic segment, on a clinical 2D geometry."""
    rng = np.random.default_rng([seed, 2, 91])
    sp = float(rng.uniform(1.2, 2.0))
    n = int(round(float(rng.uniform(150.0, 200.0)) / sp))
    return PhantomConfig(dim=2, shape=(n, n, 1), spacing=(sp, sp, 8.0), n_frames=int(rng.choice([20, 25, 30])),
                         ed_frame=int(rng.choice([0, -1])), noise_sigma=float(rng.uniform(0.02, 0.06)),
                         es_fraction_range=(0.30, 0.45),
                         **dict(GROUPS["failing"], ef_range=(0.15, 0.38), circumferential_strain_range=(-0.12, -0.03)),
                         regional_motion_range=(-0.3, 0.2))


def ref_only(seq: Sequence) -> Sequence:
    return replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]}, label_sources={})


def adapt(prior, seq: Sequence, steps: int | None) -> tuple[object, float]:
    """Fit ``seq`` from ``prior`` with its adaptation settings (``steps`` None: the default)."""
    over = {} if steps is None else {"steps": steps, "patience": 10**9}
    cfg = prior.fit_config(FitConfig(), **over)
    t0 = time.perf_counter()
    res = Fitter(cfg).fit(seq, init=prior.init_field(seq, config=cfg))
    return res, time.perf_counter() - t0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


# How the benchmark fine-tunes (set from the command line): the kind trained from the parent and
# its budget. ``consensus``: per-subject fits from the parent, averaged; ``population``: the
# parent's weights trained jointly on the batch-mean loss of the cohort.
METHOD = {"kind": "consensus", "subject_steps": 300, "steps": 150, "lr": 1e-4, "w_labels": 0.0}


def tag() -> str:
    """File-name tag of the method: its kind, and ``labels`` when the ES labels are used."""
    return METHOD["kind"] + ("_labels" if METHOD["w_labels"] > 0 else "")


def fine_tune(parent, parent_record: dict, seqs: list[Sequence], out: Path) -> tuple[object, float]:
    """Fine-tuning of ``parent`` on ``seqs`` by :data:`METHOD` (resumable), written to ``out``."""
    if out.is_file():
        return load_prior(out), float(load_prior(out).config.get("train_seconds", 0.0))
    base = PriorConfig()
    cfg = PriorConfig(kind=METHOD["kind"], subject_steps=METHOD["subject_steps"], steps=METHOD["steps"],
                      lr=METHOD["lr"], batch=min(4, len(seqs)), field=replace(parent.field.config, latent_dim=0),
                      fit=replace(base.fit, w_labels=METHOD["w_labels"]))
    t0 = time.perf_counter()
    prior = train_prior(seqs, cfg, parent=parent, parent_record=parent_record, clear_state=False,
                        state_path=out.with_name(out.name + ".state"))
    save_prior(out, prior)
    out.with_name(out.name + ".state").unlink(missing_ok=True)
    return prior, time.perf_counter() - t0


def part_sunnybrook(out: Path) -> dict:
    from cardioinr.io.datasets import index_dataset, load_entry, shared_data_dir

    data = shared_data_dir()
    if data is None:
        print("[sunnybrook] data not found; skipped")
        return {}
    entries = index_dataset(data)
    full = [load_entry(e) for e in entries]
    choice = resolve_prior("builtin", 3)
    res = {}
    for i, e in enumerate(entries):
        # Images only, or with the ES labels as well when the method uses them (a labelled cohort).
        train = [s if METHOD["w_labels"] > 0 else ref_only(s) for j, s in enumerate(full) if j != i]
        ft, secs = fine_tune(choice.prior, choice.record, train, out / f"sunnybrook_loo_{e.name}_{tag()}.ckpt")
        seq, es = ref_only(full[i]), e.es_frame
        truth = full[i].labels[es]
        lm = full[i].label_map
        row = {"train_seconds": round(secs, 1)}
        for label, prior in (("builtin", choice.prior), ("finetuned", ft)):
            for steps in BUDGETS:
                r, fit_s = adapt(prior, seq, steps)
                key = f"{label}_{steps or 'default'}"
                # Sunnybrook's ES contours are the endocardium only: LV Dice at ES.
                row[key] = {"lv_es": dice(r.labels[..., es] == lm.lv, truth == lm.lv),
                            "steps": r.metrics["steps"], "fit_s": round(fit_s, 1),
                            "folded_pct": r.metrics["percent_negative_jacobian"]}
                print(f"[sunnybrook] {e.name} {key}: LV {row[key]['lv_es']:.3f} "
                      f"({row[key]['steps']} steps, {fit_s:.0f} s)", flush=True)
        res[e.name] = row
    return res


def part_failing(out: Path, n_train: int, n_test: int) -> dict:
    choice = resolve_prior("builtin", 2)
    train = []
    for s in range(FAILING_TRAIN_SEED, FAILING_TRAIN_SEED + n_train):
        ph = make_phantom(failing_config(s), s, name=f"failing{s}")
        seq = ph.sequence
        if METHOD["w_labels"] > 0:  # ED and ES labels
            es = ph.params["es_frame"]
            seq = replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame], es: seq.labels[es]})
        else:
            seq = ref_only(seq)
        train.append(replace(seq, meta=dict(ph.sequence.meta, params=ph.params)))
    ft, secs = fine_tune(choice.prior, choice.record, train, out / f"failing_2d_{tag()}.ckpt")
    res: dict = {"train_seconds": round(secs, 1), "train_ef": [round(s.meta["params"]["ef"], 3) for s in train],
                 "cases": {}}
    for s in range(FAILING_TEST_SEED, FAILING_TEST_SEED + n_test):
        ph = make_phantom(failing_config(s), s, name=f"failing{s}")
        seq = ref_only(ph.sequence)
        row = {"ef": ph.params["ef"], "regional_motion_scale": ph.params.get("regional_motion_scale")}
        for label, prior in (("builtin", choice.prior), ("finetuned", ft)):
            for steps in BUDGETS:
                r, fit_s = adapt(prior, seq, steps)
                ev = evaluate_arrays(r.displacement, r.labels, ph.displacement, ph.labels, seq.ref_labels,
                                     spacing=seq.spacing, label_map=seq.label_map, ref_frame=seq.ref_frame,
                                     with_hd95=False)
                summ = ev["labels"]["summary"]
                key = f"{label}_{steps or 'default'}"
                row[key] = {"epe_myo": ev["epe"]["MYO"]["mean"], "LV": summ["LV"]["dice_min"],
                            "MYO": summ["MYO"]["dice_min"], "steps": r.metrics["steps"], "fit_s": round(fit_s, 1),
                            "folded_pct": r.metrics["percent_negative_jacobian"]}
                print(f"[failing] {seq.name} (EF {row['ef']:.2f}) {key}: EPE {row[key]['epe_myo']:.3f} "
                      f"LV {row[key]['LV']:.3f} MYO {row[key]['MYO']:.3f} ({row[key]['steps']} steps)", flush=True)
        res["cases"][seq.name] = row
    return res


def tables(results: dict) -> str:
    lines = []
    sb = results.get("sunnybrook") or {}
    if sb:
        lines += ["### Sunnybrook, leave one out (built-in 3D prior vs fine-tuned on the other two stacks)", "",
                  "LV Dice at ES (ED labels carried by the fit; Sunnybrook's ES contours are the endocardium "
                  "only), mean of the three held-out stacks:", "",
                  "| budget | built-in LV | fine-tuned LV | steps (built-in / fine-tuned) | fit s (built-in / fine-tuned) |",
                  "|---|---|---|---|---|"]
        for steps in BUDGETS:
            k = steps or "default"
            m = {f"{p}_{q}": np.mean([r[f"{p}_{k}"][q] for r in sb.values()]) for p in ("builtin", "finetuned")
                 for q in ("lv_es", "steps", "fit_s")}
            lines.append(f"| {k} | {m['builtin_lv_es']:.3f} | {m['finetuned_lv_es']:.3f} | "
                         f"{m['builtin_steps']:.0f} / {m['finetuned_steps']:.0f} | "
                         f"{m['builtin_fit_s']:.0f} / {m['finetuned_fit_s']:.0f} |")
        lines += ["", "| held-out stack | budget | built-in LV | fine-tuned LV |", "|---|---|---|---|"]
        for name, r in sb.items():
            for steps in BUDGETS:
                k = steps or "default"
                lines.append(f"| {name} | {k} | {r[f'builtin_{k}']['lv_es']:.3f} | {r[f'finetuned_{k}']['lv_es']:.3f} |")
        lines.append("")
    fl = results.get("failing") or {}
    if fl.get("cases"):
        cases = fl["cases"].values()
        lines += [f"### Failing hearts with an akinetic or dyskinetic segment (2D; {len(fl['cases'])} held out, "
                  f"fine-tuned on {len(fl['train_ef'])})", "",
                  "| budget | built-in EPE mm | fine-tuned EPE mm | built-in LV | fine-tuned LV | built-in MYO | "
                  "fine-tuned MYO | % folded (max) |", "|---|---|---|---|---|---|---|---|"]
        for steps in BUDGETS:
            k = steps or "default"

            def m(p: str, q: str) -> float:
                return float(np.mean([r[f"{p}_{k}"][q] for r in cases]))

            fold = max(r[f"{p}_{k}"]["folded_pct"] for r in cases for p in ("builtin", "finetuned"))
            lines.append(f"| {k} | {m('builtin', 'epe_myo'):.3f} | {m('finetuned', 'epe_myo'):.3f} | "
                         f"{m('builtin', 'LV'):.3f} | {m('finetuned', 'LV'):.3f} | {m('builtin', 'MYO'):.3f} | "
                         f"{m('finetuned', 'MYO'):.3f} | {fold:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/finetune"))
    ap.add_argument("--parts", default="sunnybrook,failing")
    ap.add_argument("--n-train", type=int, default=12)
    ap.add_argument("--n-test", type=int, default=8)
    ap.add_argument("--kind", default="consensus", choices=("consensus", "population"),
                    help="how to fine-tune: the kind trained from the built-in (consensus) prior")
    ap.add_argument("--subject-steps", type=int, default=300, help="consensus: steps per fine-tuning subject")
    ap.add_argument("--steps", type=int, default=150, help="population: joint training steps")
    ap.add_argument("--lr", type=float, default=1e-4, help="population: learning rate of the joint training")
    ap.add_argument("--w-labels", type=float, default=0.0,
                    help="> 0: fine-tune with the cohort's ES labels as well (the fit's label term, this weight)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tables", action="store_true", help="only print the tables of OUT/finetune.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    METHOD.update(kind=args.kind, subject_steps=args.subject_steps, steps=args.steps, lr=args.lr,
                  w_labels=args.w_labels)
    path = args.out / f"finetune_{tag()}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if args.tables:
        print(tables(results))
        return 0
    parts = args.parts.split(",")
    if "sunnybrook" in parts:
        results["sunnybrook"] = part_sunnybrook(args.out)
        path.write_text(json.dumps(results, indent=1))
    if "failing" in parts:
        results["failing"] = part_failing(args.out, args.n_train, args.n_test)
        path.write_text(json.dumps(results, indent=1))
    results["method"] = dict(METHOD)
    results["checkpoints"] = {p.name: file_sha256(p) for p in sorted(args.out.glob(f"*_{tag()}.ckpt"))}
    path.write_text(json.dumps(results, indent=1))
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
