"""The recipe of the built-in priors shipped inside the package (``make priors``).

Trains one ``consensus`` prior per dimension (the kind that wins in docs/priors.md: best EPE at
every budget, no latent code to tune, plain SIREN weights) on a broad phantom population plus
the real Sunnybrook cines, and writes them, with their manifest, into
``src/cardioinr/priors/weights/``. Fully reproducible: fixed seeds, fixed population, fixed
training settings; the same torch build and thread count give the same bytes.

The population (seeds ``TRAIN_SEED + i``; held-out evaluation uses :data:`HELD_OUT_SEED` and up):

* three groups of hearts, drawn in turn: healthy (EF 50-70 %), failing and dilated (EF 15-35 %,
  cavity radius 25-34 mm, thin walls, weak strain) and hypertrophied (walls 11-18 mm, small
  cavity, EF 60-78 %);
* clinical geometries drawn per case: in-plane 1.2-2.0 mm over a 150-200 mm field of view,
  slices 5-10 mm (3D: as many as cover 80-120 mm, 8-16 slices), 20-50 frames in 2D and 20-30
  in 3D, end-diastole at the first or the last frame, noise 0.02-0.06;
* the three Sunnybrook cines (3D: the stacks; 2D: the mid-ventricular slice of each). Their
  reference labels only place the normalised frame, as a user's ``--seg`` does; the prior is
  learned from the images alone (the loss uses no labels).

Not in the population: regional wall-motion abnormalities (akinetic or dyskinetic segments)
and dyssynchrony (fine-tune on such hearts: ``cardioinr train-prior --from builtin``).

Each checkpoint carries its training-distribution record (every case's geometry, heart size,
truth and the loss the prior starts from), computed at the end of training; ``--record`` redoes
it for the shipped weights without retraining.

    python benchmarks/builtin_priors.py                 # both priors (about 20 min on 2 cores; resumable)
    python benchmarks/builtin_priors.py --dims 2 --n2 4 --out /tmp/p   # a quick trial
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

from cardioinr.core.files import file_sha256, write_json_atomic  # noqa: E402
from cardioinr.io import Sequence  # noqa: E402
from cardioinr.phantoms import PhantomConfig, make_phantom  # noqa: E402
from cardioinr.priors import PriorConfig, save_prior, train_prior  # noqa: E402
from cardioinr.priors.builtin import MANIFEST, WEIGHTS_DIR, builtin_name  # noqa: E402
from cardioinr.priors.distribution import TRUTH_KEYS, training_record  # noqa: E402

TRAIN_SEED = 10_000
HELD_OUT_SEED = 20_000
# Bump with any change of the recipe, the population or the file (2026.12.1: the same weights as
# 2026.12 with the training-distribution record added, `--record`).
VERSION = "2026.12.1"

GROUPS: dict[str, dict] = {
    "healthy": {"ef_range": (0.50, 0.70), "circumferential_strain_range": (-0.25, -0.15),
                "endo_radius_mm_range": (18.0, 25.0), "wall_thickness_mm_range": (6.5, 13.0)},
    "failing": {"ef_range": (0.15, 0.35), "circumferential_strain_range": (-0.12, -0.04),
                "endo_radius_mm_range": (25.0, 34.0), "wall_thickness_mm_range": (4.5, 10.0)},
    "hypertrophic": {"ef_range": (0.60, 0.78), "circumferential_strain_range": (-0.22, -0.12),
                     "endo_radius_mm_range": (13.0, 19.0), "wall_thickness_mm_range": (11.0, 18.0)},
}


def population_case(dim: int, seed: int) -> tuple[PhantomConfig, str]:
    """The phantom settings of population case ``seed``: its group and a clinical geometry."""
    rng = np.random.default_rng([seed, dim, 77])
    group = list(GROUPS)[seed % len(GROUPS)]
    sp = float(rng.uniform(1.2, 2.0))
    fov = float(rng.uniform(150.0, 200.0) if dim == 2 else rng.uniform(140.0, 170.0))
    n_xy = int(round(fov / sp))
    common = dict(GROUPS[group], es_fraction_range=(0.30, 0.45), noise_sigma=float(rng.uniform(0.02, 0.06)),
                  ed_frame=int(rng.choice([0, -1])))
    if dim == 2:
        cfg = PhantomConfig(dim=2, shape=(n_xy, n_xy, 1), spacing=(sp, sp, 8.0),
                            n_frames=int(rng.choice([20, 25, 30, 40, 50])), **common)
    else:
        sz = float(rng.uniform(5.0, 10.0))
        nz = int(np.clip(round(float(rng.uniform(80.0, 120.0)) / sz), 8, 16))
        cfg = PhantomConfig(dim=3, shape=(n_xy, n_xy, nz), spacing=(sp, sp, sz),
                            n_frames=int(rng.choice([20, 25, 30])), long_axis_mm_range=(65.0, 95.0),
                            supersample=1, z_supersample=2, **common)
    return cfg, group


def population(dim: int, n: int, first_seed: int) -> list[tuple[Sequence, dict]]:
    """``n`` phantoms (reference labels only, as a user's data) with what was drawn."""
    out = []
    for i in range(n):
        seed = first_seed + i
        cfg, group = population_case(dim, seed)
        ph = make_phantom(cfg, seed, name=f"{group}{seed}")
        seq = replace(ph.sequence, labels={ph.sequence.ref_frame: ph.sequence.labels[ph.sequence.ref_frame]})
        out.append((seq, {"seed": seed, "group": group, "shape": list(cfg.shape), "spacing": list(cfg.spacing),
                          "frames": cfg.n_frames, "ed_frame": cfg.ed_frame,
                          "ef": round(float(ph.params.get("ef", float("nan"))), 3),
                          "truth": {k: ph.params[k] for k in TRUTH_KEYS if k in ph.params}}))
    return out


def mid_slice(seq: Sequence) -> Sequence:
    """The single slice through the middle of the labelled LV of a stack, as a 2D+t sequence."""
    lab = seq.ref_labels
    ks = np.flatnonzero(lab.reshape(-1, lab.shape[2]).any(0)) if lab is not None else np.arange(seq.shape[2])
    k = int(ks[len(ks) // 2])
    aff = np.array(seq.affine, dtype=np.float64)
    aff[:3, 3] = aff[:3, :3] @ np.array([0.0, 0.0, k]) + aff[:3, 3]
    return replace(seq, image=np.ascontiguousarray(seq.image[:, :, k:k + 1]), affine=aff,
                   labels={t: np.ascontiguousarray(v[:, :, k:k + 1]) for t, v in seq.labels.items()},
                   name=f"{seq.name}_slice{k}", label_sources={})


def real_cases(dim: int) -> list[tuple[Sequence, dict]]:
    """The Sunnybrook cines with their reference (ED) labels only; empty without the data."""
    from cardioinr.io.datasets import index_dataset, load_entry, shared_data_dir

    data = shared_data_dir()
    if data is None:
        return []
    out = []
    for e in index_dataset(data):
        full = load_entry(e)
        seq = replace(full, labels={full.ref_frame: full.labels[full.ref_frame]}, label_sources={})
        seq = seq if dim == 3 else mid_slice(seq)
        out.append((seq, {"name": seq.name, "shape": list(seq.shape), "frames": seq.n_frames,
                          "ed_frame": seq.ref_frame, "source": "Sunnybrook (CC0), images only"}))
    return out


def train_config(dim: int, device: str) -> PriorConfig:
    """The training settings: consensus, 300 steps per subject (the PriorConfig default)."""
    return PriorConfig(kind="consensus", subject_steps=300, trim=0.2, device=device, seed=0)


def write_card(name: str, entry: dict, weights: Path, bench: dict | None) -> Path:
    """The model card ``<weights>/<name>.md`` (shipped beside the weights: ``cardioinr priors show``
    prints it): what the prior is, its data, recipe, accuracy and speed (from
    ``benchmarks/builtin_bench.py``'s JSON when given) and known limits."""
    from cardioinr.priors import adapt_steps, load_prior
    from cardioinr.priors.config import ADAPT_DEFAULTS

    prior = load_prior(weights / entry["file"])
    pop = prior.data_summary.get("population", {})
    dim = entry["dim"]
    fc = prior.field.config
    train = prior.config.get("train", {})
    lines = [f"# Built-in prior `{name}` (version {entry['version']})", "",
             f"The prior `cardioinr fit` starts {dim}D cines from by default (`--prior none` fits from scratch). "
             "Shipped inside the package; never downloaded.", "",
             "| | |", "|---|---|",
             f"| file | `src/cardioinr/priors/weights/{entry['file']}` ({entry['bytes'] / 1e3:.0f} kB) |",
             f"| SHA-256 | `{entry['sha256']}` |",
             f"| kind | {entry['kind']}: per-subject fits from one initialisation, trimmed ({train.get('trim')}) "
             "element-wise mean of their weights |",
             f"| field | {fc.model} {fc.layers} x {fc.hidden}, omega {fc.omega}, {fc.harmonics} temporal harmonics |",
             f"| trained | {entry['train_seconds']:.0f} s on {entry['threads']} CPU threads, torch {entry['torch']} |",
             f"| adaptation | {adapt_steps('consensus', dim)} steps at most, coarse-to-fine, stops at a plateau "
             f"(patience {ADAPT_DEFAULTS['consensus'].get('patience')}) |", "",
             "## Training data", "",
             f"{entry['n_phantoms']} phantoms of `benchmarks/builtin_priors.py` (seeds {pop.get('train_seed')} and up; "
             f"held-out evaluation uses {pop.get('held_out_seed')} and up) and {entry['n_real']} real cines, images "
             "only (their ED labels place the normalised frame and mark the myocardium for the "
             "incompressibility term; no label of another frame enters the loss).", "",
             "| group | cases | EF (drawn) | in-plane mm | slices | frames | ED at the last frame |",
             "|---|---|---|---|---|---|---|"]
    for g, rng in pop.get("groups", {}).items():
        rows = [c for c in pop.get("phantoms", []) if c["group"] == g]
        if not rows:
            continue
        efs = [c["ef"] for c in rows]
        sps = [c["spacing"][0] for c in rows]
        zs = [f"{c['shape'][2]} x {c['spacing'][2]:.1f} mm" for c in rows] if dim == 3 else ["1"]
        lines.append(f"| {g} (EF range {rng['ef_range'][0]:.2f}-{rng['ef_range'][1]:.2f}, wall "
                     f"{rng['wall_thickness_mm_range'][0]:g}-{rng['wall_thickness_mm_range'][1]:g} mm) | {len(rows)} | "
                     f"{min(efs):.2f}-{max(efs):.2f} | {min(sps):.2f}-{max(sps):.2f} | "
                     f"{', '.join(sorted(set(zs))) if dim == 3 else '1'} | "
                     f"{', '.join(str(f) for f in sorted({c['frames'] for c in rows}))} | "
                     f"{sum(c['ed_frame'] != 0 for c in rows)} of {len(rows)} |")
    for c in pop.get("real", []):
        lines.append(f"| real: {c['name']} ({c['source']}) | 1 | - | - | {c['shape'][2]} | {c['frames']} | "
                     f"{'yes' if c['ed_frame'] != 0 else 'no'} |")
    lines += ["", "## Recipe", "", "`make priors` (`python benchmarks/builtin_priors.py`): fixed seeds, fixed "
              f"population; consensus, {train.get('subject_steps')} steps per subject, "
              f"{train.get('fit', {}).get('points')} points per step, the fit's own losses. The same torch build and "
              "thread count give the same bytes.", ""]
    lines += bench_section(name, dim, bench)
    lines += ["## Known limits", "",
              "* Phantom hearts are smooth rings with an analytic motion: no papillary muscles, trabeculae or "
              "flow artefacts; the three real cines are the only real appearance it saw.",
              "* Not in the population: regional wall-motion abnormalities (akinetic or dyskinetic segments; the "
              "phantoms can draw them now, `cardioinr synth --regional`, but these weights predate that) and "
              "dyssynchrony. Such hearts still adapt from it, with the step budget doing the regional work; "
              "fine-tuning on such hearts: `cardioinr train-prior --from builtin` (docs/priors/finetune.md).",
              "* Short-axis cines only; the normalised frame is centred on the LV (labels, or the images when "
              "none are given; then the LV outlines found in the images also stand in for the labels in the "
              "fit: docs/priors/builtin.md).",
              "* The right ventricle is only in the phantoms, and no RV accuracy is claimed beyond the tables above.",
              ""]
    if dim == 3:
        lines.insert(-1, "* Through-plane motion: short-axis slices of 8-10 mm barely see the base's descent; the "
                         "fit scales the prior's through-plane start per case (`--prior-through-plane auto`).")
    lines += distribution_section(prior)
    path = weights / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


def distribution_section(prior) -> list[str]:
    """What the training-distribution record says (the applicability check compares with it)."""
    from cardioinr.priors.distribution import summarise_record

    return ["## Training distribution (recorded in the checkpoint)", "",
            "A fit says in metrics.json and its report when a case lies outside it "
            "(docs/priors/applicability.md); `cardioinr priors show " + prior_name(prior) + " --cases` lists every case.",
            "", *[f"* {x}" for x in summarise_record(prior.distribution)], ""]


def prior_name(prior) -> str:
    return prior.config.get("builtin", {}).get("name", "PRIOR")


def bench_section(name: str, dim: int, bench: dict | None) -> list[str]:
    """Accuracy and speed from ``builtin_bench.json`` (docs/priors/builtin.md has the full tables)."""
    if not bench:
        return ["## Accuracy and speed", "", "Not measured yet: run `make bench-builtin`.", ""]
    out = ["## Accuracy and speed", "",
           "From `make bench-builtin` (whole `cardioinr fit` command, this 2-core CPU; full tables in "
           "docs/priors/builtin.md).", ""]
    acc = [r for r in bench.get("accuracy", {}).values() if r["dim"] == dim]
    if acc:
        def mean(init, k):
            return float(np.mean([r[init][k] for r in acc]))

        threads = bench.get("accuracy_threads")
        per = f", {threads} thread{'s' if threads != 1 else ''}" if threads else ""
        out += [f"Held-out phantoms ({len(acc)}), Dice min over frames, myocardial EPE:", "",
                f"| start | LV | MYO | EPE mm | steps | wall s{per} |", "|---|---|---|---|---|---|"]
        for init, label in (("builtin", f"{name} (default)"), ("scratch800", "scratch, 800 steps")):
            out.append(f"| {label} | {mean(init, 'LV'):.3f} | {mean(init, 'MYO'):.3f} | {mean(init, 'epe_myo'):.3f} | "
                       f"{mean(init, 'steps'):.0f} | {mean(init, 'wall_s'):.1f} |")
        out.append("")
    sb = bench.get("sunnybrook", {})
    if dim == 3 and sb:
        out += ["Sunnybrook (ED labels carried to ES), LV Dice at ES:", "", "| case | default | scratch, 800 steps |",
                "|---|---|---|"]
        for case, r in sb.items():
            out.append(f"| {case} | {r['builtin']['lv_es']:.3f} | {r['scratch800']['lv_es']:.3f} |")
        out.append(f"| mean | {np.mean([r['builtin']['lv_es'] for r in sb.values()]):.3f} | "
                   f"{np.mean([r['scratch800']['lv_es'] for r in sb.values()]):.3f} |")
        out.append("")
    for case, r in bench.get("speed", {}).items():
        if case.startswith(f"{dim}d"):
            out.append(f"Whole command on the {case.split('_', 1)[1]} speed case: {r['wall_2threads']['wall_s']:.1f} s "
                       f"(2 threads, {r['wall_2threads']['steps']} steps).")
            out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the checkpoints and manifest go")
    ap.add_argument("--dims", default="2,3")
    ap.add_argument("--n2", type=int, default=24, help="2D phantoms")
    ap.add_argument("--n3", type=int, default=8, help="3D phantoms")
    ap.add_argument("--no-real", action="store_true", help="leave the Sunnybrook cines out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cards", action="store_true", help="only (re)write the model cards (beside the weights)")
    ap.add_argument("--record", action="store_true",
                    help="only (re)compute the training-distribution record of the existing checkpoints (same weights)")
    ap.add_argument("--bench", type=Path, default=Path("bench_out/builtin/builtin_bench.json"),
                    help="the accuracy and speed figures the cards quote")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cards:
        bench = json.loads(args.bench.read_text()) if args.bench.is_file() else None
        for name, entry in json.loads((args.out / MANIFEST).read_text())["priors"].items():
            print(f"wrote {write_card(name, entry, args.out, bench)}")
        return 0
    if args.record:
        return record_existing(args)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"priors": {}}
    for dim in (int(d) for d in args.dims.split(",")):
        t0 = time.perf_counter()
        cases = population(dim, args.n2 if dim == 2 else args.n3, TRAIN_SEED)
        real = [] if args.no_real else real_cases(dim)
        print(f"[{dim}D] {len(cases)} phantoms + {len(real)} real cines in {time.perf_counter() - t0:.0f} s", flush=True)
        cfg = train_config(dim, args.device)
        t0 = time.perf_counter()
        # Resumable: the per-subject fits are kept in OUT/<name>.state until the prior is written.
        state = args.out / f"{builtin_name(dim)}.state"
        prior = train_prior([s for s, _ in cases + real], cfg, progress=False, state_path=state, clear_state=False,
                            callback=lambda i, logs: print(f"  subject {i}: loss {logs['loss']:.4f}", flush=True),
                            truths=[m["truth"] for _, m in cases] + [None] * len(real))
        prior.distribution["declared"] = {k: list(v) for k, v in declared_ranges().items()}
        secs = time.perf_counter() - t0
        name = builtin_name(dim)
        prior.data_summary = dict(prior.data_summary, population={
            "phantoms": [m for _, m in cases], "real": [m for _, m in real],
            "groups": {g: dict((k, list(v)) for k, v in r.items()) for g, r in GROUPS.items()},
            "train_seed": TRAIN_SEED, "held_out_seed": HELD_OUT_SEED})
        prior.config = dict(prior.config, builtin={"name": name, "version": VERSION,
                                                   "recipe": "benchmarks/builtin_priors.py"})
        path = save_prior(args.out / f"{name}.ckpt", prior)
        manifest["priors"][name] = {
            "file": path.name, "dim": dim, "kind": "consensus", "version": VERSION, "sha256": file_sha256(path),
            "bytes": path.stat().st_size, "train_seconds": round(secs, 1), "threads": args.threads,
            "n_phantoms": len(cases), "n_real": len(real), "torch": torch.__version__,
            "card": f"{name}.md",
        }
        write_json_atomic(manifest_path, manifest)
        state.unlink(missing_ok=True)
        print(f"[{dim}D] {name}: trained in {secs:.0f} s -> {path} ({path.stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0


def declared_ranges() -> dict[str, tuple[float, float]]:
    """The ranges the population's phantoms are drawn from (what the applicability check may
    accept beyond the sample's own extremes): EF over the groups."""
    return {"ef": (min(g["ef_range"][0] for g in GROUPS.values()), max(g["ef_range"][1] for g in GROUPS.values()))}


def record_existing(args) -> int:
    """Add (or redo) the training-distribution record of the checkpoints in ``--out``: the
    population is regenerated from its seeds and each case evaluated with the shipped weights,
    which stay bitwise the same; the file, its checksum and the version change."""
    from cardioinr.priors import load_prior

    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for dim in (int(d) for d in args.dims.split(",")):
        name = builtin_name(dim)
        entry = manifest["priors"][name]
        path = args.out / entry["file"]
        prior = load_prior(path)
        n = entry["n_phantoms"]
        cases = population(dim, n, TRAIN_SEED)
        real = [] if not entry["n_real"] else real_cases(dim)
        if len(real) != entry["n_real"]:
            raise SystemExit(f"{name} was trained with {entry['n_real']} real cines, {len(real)} found")
        seqs = [s for s, _ in cases + real]
        t0 = time.perf_counter()
        before = {k: v.clone() for k, v in prior.field.state_dict().items()}
        prior.distribution = training_record(
            [prior.describe_case(s, t) for s, t in zip(seqs, [m["truth"] for _, m in cases] + [None] * len(real))],
            prior.fit_config().to_dict(), declared=declared_ranges())
        assert all(torch.equal(before[k], v) for k, v in prior.field.state_dict().items())
        prior.config = dict(prior.config, builtin=dict(prior.config.get("builtin", {}), version=VERSION))
        save_prior(path, prior)
        entry.update(version=VERSION, sha256=file_sha256(path), bytes=path.stat().st_size, card=f"{name}.md")
        write_json_atomic(manifest_path, manifest)
        print(f"[{dim}D] {name}: recorded {len(seqs)} cases in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
