"""The end-to-end demo behind ``make demo`` / ``cardioinr demo``.

A synthetic phantom with known motion is fitted as ``cardioinr fit`` does by default (from the
built-in 2D prior) and, for comparison, from scratch with the same step budget, and both are
scored against the truth; the shared Sunnybrook cases are fitted from the built-in 3D prior when
present (ED labels carried to ES). Every fit writes the full output contract and report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardioinr.analysis.metrics import dice, evaluate_arrays
from cardioinr.fit.fitter import FitConfig, Fitter, FitResult
from cardioinr.io import Sequence
from cardioinr.io.datasets import index_dataset, load_entry, shared_data_dir
from cardioinr.outputs import save_fit
from cardioinr.phantoms import PhantomConfig, case_seed, make_phantom, write_cases
from cardioinr.priors import choose_start


def _reference_only(seq):
    """The sequence with only its reference-frame labels (what a user gives with --seg)."""
    from dataclasses import replace

    return replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]})


def fit_like_cli(seq: Sequence, prior: str | None = None, steps: int | None = None, log=print) -> tuple[FitResult, dict]:
    """Fit ``seq`` as ``cardioinr fit --prior PRIOR [--steps N]`` does; returns the result and
    the ``prior`` entry of metrics.json."""
    from dataclasses import replace

    start = choose_start(seq, prior, log=lambda line: log(f"note: {line}"))
    cfg = start.fit_config(FitConfig())
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    init, extra = start.init_field(seq, "auto", cfg)
    return Fitter(cfg).fit(seq, init=init, progress=True), extra


def run_demo(out: Path, quick: bool = False, log=print) -> list[dict]:
    """Run the demo into ``out``; returns one summary row per fit."""
    out = Path(out)
    rows: list[dict] = []
    log(f"[1/3] writing a synthetic 2D+t phantom with ground truth to {out / 'phantoms'}")
    write_cases(out / "phantoms", n=1, config=PhantomConfig(dim=2), seed=0)
    test = make_phantom(PhantomConfig(dim=2), case_seed(0, 0), name="case000")
    seq = _reference_only(test.sequence)

    log(f"[2/3] fitting {seq.name} from the built-in 2D prior (the default), then from scratch with the same steps")
    res, extra = fit_like_cli(seq, log=log)
    rows.append(_phantom_row("built-in prior", test, res, out / "fit_phantom_prior", extra))
    res, extra = fit_like_cli(seq, "none", steps=res.metrics["steps"], log=log)
    rows.append(_phantom_row("scratch, same steps", test, res, out / "fit_phantom_scratch", extra))

    data = shared_data_dir()
    if data is None:
        log("[3/3] Sunnybrook data not found (set CARDIOINR_DATA); skipped")
        return rows
    entries = index_dataset(data)
    entries = entries[:1] if quick else entries
    for entry in entries:
        log(f"[3/3] fitting Sunnybrook {entry.name} from the built-in 3D prior: ED (frame {entry.ed_frame}) labels "
            f"carried to ES (frame {entry.es_frame})")
        full = load_entry(entry)
        res, extra = fit_like_cli(_reference_only(full), log=log)
        es = entry.es_frame
        lv = full.label_map.lv
        truth = full.labels[es] == lv
        slices = [k for k in range(truth.shape[2]) if truth[:, :, k].any()]
        d = dice(res.labels[:, :, slices, es] == lv, truth[:, :, slices])
        save_fit(res, out / f"fit_{entry.name}", extra_metrics=dict(extra, evaluation={"lv_dice_es": d}))
        rows.append({"case": entry.name, "method": "built-in prior", "seconds": res.metrics["total_seconds"],
                     "steps": res.metrics["steps"], "dice_lv_es": d,
                     "folded_pct": res.metrics["percent_negative_jacobian"]})
    return rows


def _phantom_row(method: str, ph, res, out_dir: Path, extra: dict) -> dict:
    seq = ph.sequence
    truth_labels = np.stack([seq.labels[t] for t in range(seq.n_frames)], -1)
    ev = evaluate_arrays(res.displacement, res.labels, ph.displacement, truth_labels, spacing=seq.spacing,
                         label_map=seq.label_map, ref_frame=seq.ref_frame)
    save_fit(res, out_dir, extra_metrics=dict(extra, evaluation=ev))
    s = ev["labels"]["summary"]
    return {"case": seq.name, "method": method, "seconds": res.metrics["total_seconds"], "steps": res.metrics["steps"],
            "dice_lv_min": s["LV"]["dice_min"], "dice_myo_min": s["MYO"]["dice_min"],
            "epe_myo_mm": ev["epe"]["MYO"]["mean"], "folded_pct": res.metrics["percent_negative_jacobian"]}


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cardioinr demo (Dice: min over frames; LV@ES: Sunnybrook ED labels carried to ES)")
    cols = [("case", "case"), ("method", "method"), ("steps", "steps"), ("seconds", "s"),
            ("dice_lv_min", "LV"), ("dice_myo_min", "MYO"), ("epe_myo_mm", "EPE mm"),
            ("dice_lv_es", "LV@ES"), ("folded_pct", "fold %")]
    for key, title in cols:
        table.add_column(title, justify="left" if key in ("case", "method") else "right", no_wrap=True)
    for r in rows:
        table.add_row(*[_cell(r.get(key)) for key, _ in cols])
    Console(width=max(100, Console().width)).print(table)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    return str(v)


__all__ = ["print_rows", "run_demo"]
