"""The prior benchmark's evaluation plumbing (benchmarks/priors.py) on the smallest inputs: the
3D thick-slice variant covers the same stack with half as many slices twice as thick, one
evaluation pass fills every score, the summary renders the 3D tables beside the 2D ones, and
each prior is scored at its own default budget."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import priors as bench  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.mark.slow
def test_thick_3d_variant_halves_the_slices_over_the_same_stack():
    (plain, _, _), = bench._phantom_cases("plain", 1, dim=3)
    (thick, disp, labels), = bench._phantom_cases("thick", 1, dim=3)
    assert thick.shape[2] * 2 == plain.shape[2]
    np.testing.assert_allclose(thick.spacing, plain.spacing * np.array([1, 1, 2]))
    # Only the reference labels are given to a fit; the truth keeps every frame.
    assert list(thick.labels) == [thick.ref_frame]
    assert labels.shape == (*thick.shape, thick.n_frames)
    assert disp.shape == (*thick.shape, thick.n_frames, 3)
    # The heart still spans several slices, with through-plane motion to recover.
    lv_slices = (thick.labels[thick.ref_frame] == thick.label_map.lv).any(axis=(0, 1))
    assert lv_slices.sum() >= 3
    assert np.abs(disp[..., 2]).max() > 4.0


@pytest.mark.slow
def test_one_evaluation_pass_and_the_summary_with_3d_tables():
    curves = bench._eval_variant("thick", 1, 2, {}, lambda prior: (0, 5))
    rows = curves["random"]
    assert [r["steps"] for r in rows] == [0, 5]
    for r in rows:
        for key in ("dice_lv_min", "dice_myo_min", "vs_carried_lv_min", "epe_myo", "seconds"):
            assert np.isfinite(r[key])
    # Five steps move the field: the motion error drops below the zero field's.
    assert rows[1]["epe_myo"] < rows[0]["epe_myo"]

    def row(k, lv, epe):
        return {"steps": k, "dice_lv_min": lv, "dice_myo_min": lv, "epe_myo": epe, "seconds": 1.0,
                "vs_carried_lv_min": lv, "vs_carried_myo_min": lv}

    results = {
        "curves": {"plain": {"random": [row(50, 0.95, 0.5), row(800, 0.97, 0.3)]},
                   "thick": {"random": [row(50, 0.93, 0.6), row(800, 0.95, 0.4)]}},
        "curves_3d": {"plain": {"random": [row(100, 0.90, 0.8), row(800, 0.92, 0.7)],
                                "consensus": [row(50, 0.91, 0.9), row(100, 0.92, 0.8), row(200, 0.93, 0.75)]},
                      "thick": {"random": [row(100, 0.85, 1.2), row(800, 0.86, 1.3)],
                                "consensus": [row(50, 0.88, 1.0), row(100, 0.89, 0.85), row(200, 0.90, 0.80)]}},
    }
    md = bench.summarise(results)
    assert "3D stacks, thick" in md
    # Loss at each init's default budget: random (800) -6.0 points and +0.60 mm, the 3D
    # consensus prior (its 3D default, 200 steps) -3.0 points and +0.05 mm.
    assert "| thick | random | - | -5.0/-5.0/+0.40 | -6.0/-6.0/+0.60 (800) |" in md
    assert "| thick | consensus | -3.0/-3.0/+0.10 | -3.0/-3.0/+0.05 | -3.0/-3.0/+0.05 (200) |" in md


def test_budgets_include_each_kinds_default():
    from cardioinr.fit.fields import FieldConfig
    from cardioinr.priors import ADAPT_DEFAULTS, ADAPT_STEPS_3D, Prior, random_prior

    field2, field3 = random_prior(FieldConfig(), 2).field, random_prior(FieldConfig(), 3).field
    for kind in ("consensus", "encoder"):
        assert ADAPT_DEFAULTS[kind]["steps"] in bench._budgets_2d(Prior(kind, field2))
        assert ADAPT_STEPS_3D[kind] in bench._budgets_3d(Prior(kind, field3))
        assert {50, 100} <= set(bench._budgets_3d(Prior(kind, field3)))
    assert bench._budgets_2d(None) == bench.SCRATCH_BUDGETS


def test_sunnybrook_table_pairs_each_prior_fit_with_the_scratch_fit_of_its_seed():
    def rows(values, k=100):
        return [{"steps": k, "seed": s, "dice_lv_es": v} for s, v in enumerate(values)]

    sb = {"a": {"random": rows([0.90, 0.92]) + [{"steps": 800, "seed": 0, "dice_lv_es": 0.93}],
                "consensus": rows([0.91, 0.92])},
          "b": {"random": rows([0.94, 0.96]), "consensus": rows([0.95, 0.98])}}
    table = "\n".join(bench._sunnybrook_table(sb))
    # per seed, consensus minus random over the two cases: seed 0 +0.010, seed 1 +0.010
    assert "| random | - | - | 0.9300 | - | - |" in table
    assert "| consensus | - | - | 0.9400 (+0.0100 +- 0.0000) | - | - |" in table
    assert "fit seeds 0, 1" in table
    # a seed that one case lacks is left out, not averaged over the other case alone
    sb["b"]["consensus"] = rows([0.95])
    assert "| consensus | - | - | 0.9300 (+0.0100) | - | - |" in "\n".join(bench._sunnybrook_table(sb))


def test_paired_robustness_compares_losses_case_by_case():
    """A prior that loses less than scratch on every case gets a positive difference (Dice) and
    a negative one (EPE), with its standard error over cases; the table lists every init."""
    def case(lv, epe):
        return {"dice_lv_min": lv, "dice_myo_min": lv, "epe_myo": epe, "vs_carried_lv_min": lv,
                "vs_carried_myo_min": lv, "seconds": 1.0, "steps": 100}

    per = {"random": {"plain": [case(0.97, 0.30), case(0.96, 0.40)], "thick": [case(0.94, 0.50), case(0.94, 0.50)]},
           "consensus": {"plain": [case(0.97, 0.30), case(0.96, 0.40)], "thick": [case(0.955, 0.40), case(0.95, 0.50)]}}
    np.testing.assert_allclose(bench.paired_losses(per, "thick", "random", "dice_lv_min", 100.0), [-3.0, -2.0])
    np.testing.assert_allclose(bench.paired_losses(per, "thick", "consensus", "epe_myo", 1.0), [0.10, 0.10])
    table = "\n".join(bench._paired_table("thick", per))
    assert "2 phantoms" in table
    assert "2 3D stacks" in "\n".join(bench._paired_table("thick", per, "3D stacks"))
    assert "| random | -2.50 |" in table
    assert "| consensus | -1.25 (+1.25 +- 0.25)" in table  # Dice: 1.5 and 1.0 points less lost
    assert "+0.10 (-0.05 +- 0.05)" in table  # EPE: 0.1 mm lost on both, against 0.2 and 0.1


def test_paired_run_fits_the_plain_cases_once_for_every_degradation(monkeypatch):
    calls = []

    def fake_eval(variant, n_test, dim, priors, budgets_of):
        calls.append((variant, dim, budgets_of(None)))
        return {name: [{"cases": [{"variant": variant, "init": name}]}] for name in ("random", *priors)}

    monkeypatch.setattr(bench, "_eval_variant", fake_eval)
    out = bench.eval_paired(["noise", "thick"], 3, {"consensus": None}, dim=3)
    assert calls == [("plain", 3, (800,)), ("noise", 3, (800,)), ("thick", 3, (800,))]
    assert out["thick"]["consensus"] == {"plain": [{"variant": "plain", "init": "consensus"}],
                                         "thick": [{"variant": "thick", "init": "consensus"}]}
    assert set(out) == {"noise", "thick"} and set(out["noise"]) == {"random", "consensus"}
