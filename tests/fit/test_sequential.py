"""The sequential similarity (``FitConfig.sequential``, ``cardioinr fit --tagged``): each frame
against the one before it, in cycle order from the reference. Reference: a tagged phantom whose
blood tags wash out (``PhantomConfig.blood_tag_washout``), as in real SPAMM cines, where the
end-diastolic reference holds tagged blood that no later frame shows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cardioinr.analysis.strain import analyse_field, analyse_fit_result
from cardioinr.fit import FitConfig, Fitter
from cardioinr.fit.objective import Objective
from cardioinr.phantoms import PhantomConfig, make_phantom
from cardioinr.priors.builtin import choose_start


def test_pairs_follow_the_cycle_from_the_reference():
    """With the reference at frame 2 of 5, the frames other than it are paired 2-3, 3-4, 4-0, 0-1."""
    ph = make_phantom(PhantomConfig(dim=2, shape=(64, 64, 1), spacing=(1.6, 1.6, 8.0), n_frames=5, ed_frame=2, supersample=1), 1)
    obj = Objective(ph.sequence, FitConfig(sequential=True), torch.device("cpu"))
    assert obj.others.tolist() == [0, 1, 3, 4]
    assert obj.others[obj.cycle_order].tolist() == [3, 4, 0, 1]


def test_sequential_loss_is_the_pairs_ncc():
    """At a field, the sequential similarity is the NCC of consecutive frames (cycle order) read
    at the points' positions; the reference-based one is each frame against the reference."""
    ph = make_phantom(PhantomConfig(dim=2, shape=(64, 64, 1), spacing=(1.6, 1.6, 8.0), n_frames=6, ed_frame=3, supersample=1), 2)
    seq = ph.sequence
    from cardioinr.fit.fields import FieldConfig, MotionField
    from cardioinr.fit.losses import ncc_loss
    from cardioinr.fit.warp import sample, sample_frames

    torch.manual_seed(0)
    field_ = MotionField(FieldConfig(hidden=16, layers=2), 2, seq.n_frames, seq.ref_frame)
    for sequential in (False, True):
        cfg = FitConfig(sequential=sequential, points=256, reg_points=0, w_temporal=0.0, w_smooth=0.0, w_fold=0.0,
                        w_incompress=0.0)
        obj = Objective(seq, cfg, torch.device("cpu"))
        _, logs = obj.loss(field_, obj.n_levels - 1, torch.Generator().manual_seed(3))
        x = obj.sample_points(cfg.points, torch.Generator().manual_seed(3), obj.jitter_z_similarity)
        with torch.no_grad():
            u = torch.einsum("nkd,tk->tnd", field_.coefficients(x), field_.basis()[obj.others])
            frames = obj.levels[-1]
            ref = sample(frames[seq.ref_frame].unsqueeze(0), x, obj.spacing).t()  # (1, N)
            mov = sample_frames(frames[obj.others], x.unsqueeze(0) + u, obj.spacing)  # (T-1, N)
        if sequential:
            order = [int(t) for t in obj.cycle_order]
            chain = torch.cat([ref, mov[order]], 0)
            want = ncc_loss(chain[:-1].t(), chain[1:].t())
        else:
            want = ncc_loss(ref.t(), mov.t())
        assert logs["sim"] == pytest.approx(float(want), abs=1e-5)


@pytest.mark.slow
def test_tagged_cine_with_blood_washout_strain():
    """Against the reference, the washed-out blood biases the fit (radial peak ~13 points low);
    frame against frame, the peaks are within 2 points (default fit: built-in prior)."""
    torch.set_num_threads(2)
    ph = make_phantom(PhantomConfig(dim=2, tagged=True, blood_tag_washout=0.1), 5)
    full = ph.sequence
    seq = replace(full, labels={full.ref_frame: full.labels[full.ref_frame]}, label_sources={})
    kw = dict(label_map=seq.label_map, ref_frame=seq.ref_frame, affine=seq.affine)
    truth = analyse_field(ph.truth_field(), seq.spacing, seq.ref_labels, **kw).summary()["peak"]
    err = {}
    for sequential in (False, True):
        start = choose_start(seq, "builtin", explicit={"sequential": sequential}, device="cpu")
        cfg = start.fit_config(FitConfig())
        assert cfg.sequential is sequential
        init, _ = start.init_field(seq, "auto", cfg)
        peak = analyse_fit_result(Fitter(cfg).fit(seq, init=init)).summary()["peak"]
        err[sequential] = (peak["radial_pct"] - truth["radial_pct"], peak["circumferential_pct"] - truth["circumferential_pct"])
    assert err[False][0] < -6.0, err
    assert abs(err[True][0]) < 2.0 and abs(err[True][1]) < 2.0, err


def test_fit_tagged_flag_sets_the_sequential_similarity(tmp_path: Path):
    from cardioinr.app.cli import main

    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--n", "1", "--tagged", "--blood-tag-washout", "0.1", "--seed", "1"]) == 0
    case = json.loads((data / "manifest.json").read_text())["cases"][0]
    out = tmp_path / "fit"
    assert main(["fit", str(data / case["image"]), "--out", str(out), "--steps", "2", "--tagged", "--quiet",
                 "--no-report"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["sequential"] is True
    assert np.isfinite(metrics["steps"])


def test_tag_grid_tells_tagged_from_plain_cines():
    from cardioinr.fit.preprocess import TAG_GRID_RATIO, tag_grid

    for seed in (0, 1):
        for tagged in (False, True):
            ph = make_phantom(PhantomConfig(dim=2, tagged=tagged, n_frames=4, tag_spacing_mm=7.0), seed)
            ratio, period = tag_grid(ph.sequence.image[:, :, 0, ph.sequence.ref_frame], ph.sequence.spacing)
            if tagged:
                assert ratio > 1.5 * TAG_GRID_RATIO and period == pytest.approx(7.0, abs=0.5)
            else:
                assert ratio < 0.3 * TAG_GRID_RATIO


def test_fit_hints_tagged_for_a_tagged_slice(tmp_path: Path, capsys):
    from cardioinr.app.cli import main

    for tagged in (False, True):
        data = tmp_path / f"data{int(tagged)}"
        assert main(["synth", "--out", str(data), "--n", "1", "--seed", "4"] + (["--tagged"] if tagged else [])) == 0
        case = json.loads((data / "manifest.json").read_text())["cases"][0]
        capsys.readouterr()
        for flag in ([], ["--tagged"]):
            assert main(["fit", str(data / case["image"]), "--out", str(tmp_path / f"fit{int(tagged)}{len(flag)}"),
                         "--steps", "1", "--quiet", "--no-report", *flag]) == 0
            said = capsys.readouterr().out
            assert ("fit with --tagged" in said) == (tagged and not flag), said
