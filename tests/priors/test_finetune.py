"""Fine-tuning a prior on a new cohort (lineage, what it starts from, what it refuses), the
training-distribution record and the applicability flag at fit time."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cardioinr.app.cli import main
from cardioinr.core.errors import ConfigError
from cardioinr.core.files import file_sha256
from cardioinr.fit import FitConfig
from cardioinr.fit.fields import FieldConfig
from cardioinr.io import Sequence, save_nifti
from cardioinr.phantoms import PhantomConfig, make_phantom
from cardioinr.priors import (PriorConfig, applicability, case_record, load_prior, save_prior, show_prior,
                              train_prior)
from cardioinr.priors.distribution import START_MARGIN, orientation

SMALL = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=8)
FIELD = FieldConfig(hidden=32, layers=2)
FIT = FitConfig(field=FIELD, points=512, reg_points=64)


def _ref_only(seq: Sequence) -> Sequence:
    return replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]})


def _config(kind: str = "population", steps: int = 12) -> PriorConfig:
    return PriorConfig(kind=kind, field=FIELD, fit=FIT, steps=steps, batch=2, subject_steps=10, latent_dim=8,
                       encoder_steps=4)


@pytest.fixture(scope="module")
def cohort() -> list[Sequence]:
    return [_ref_only(make_phantom(SMALL, s).sequence) for s in range(4)]


@pytest.fixture(scope="module")
def parent(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("parent") / "a.ckpt"
    save_prior(path, train_prior(cohort, _config()))
    return path


def _record(path) -> dict:
    return {"source": "file", "path": str(path), "sha256": file_sha256(path), "name": path.stem, "kind": "population"}


def test_lineage_round_trips_through_two_fine_tunings(cohort, parent, tmp_path) -> None:
    a = load_prior(parent)
    b = train_prior(cohort[:2], _config(steps=4), parent=a, parent_record=_record(parent))
    save_prior(tmp_path / "b.ckpt", b)
    b2 = load_prior(tmp_path / "b.ckpt")
    assert len(b2.lineage) == 1
    stage = b2.lineage[0]
    assert stage["sha256"] == file_sha256(parent) and stage["kind"] == "population" and stage["name"] == "a"
    assert stage["recipe"] == a.config["train"] and stage["data_summary"] == a.data_summary
    assert stage["distribution"] == a.distribution and len(stage["distribution"]["cases"]) == 4
    assert b2.config["fine_tuned_from"]["sha256"] == file_sha256(parent)
    assert b2.data_summary["n_sequences"] == 2 and len(b2.distribution["cases"]) == 2

    c = train_prior(cohort[2:], _config(steps=4), parent=b2, parent_record=_record(tmp_path / "b.ckpt"))
    save_prior(tmp_path / "c.ckpt", c)
    c2 = load_prior(tmp_path / "c.ckpt")
    assert [s["sha256"] for s in c2.lineage] == [file_sha256(parent), file_sha256(tmp_path / "b.ckpt")]
    assert c2.lineage[1]["data_summary"]["names"] == [s.name for s in cohort[:2]]
    text = "\n".join(show_prior(str(tmp_path / "c.ckpt"), cases=True))
    assert "lineage (oldest first)" in text and "1. a (file, population" in text and "3. this prior" in text
    assert cohort[2].name in text  # the --cases listing


def test_fine_tuning_starts_from_the_parent(cohort, parent) -> None:
    a = load_prior(parent)
    one = train_prior(cohort[:2], replace(_config(steps=1), lr=1e-6), parent=a, record_distribution=False)
    fresh = train_prior(cohort[:2], replace(_config(steps=1), lr=1e-6), record_distribution=False)
    d_parent = max((p - q).abs().max().item() for p, q in zip(one.field.parameters(), a.field.parameters()))
    d_fresh = max((p - q).abs().max().item() for p, q in zip(fresh.field.parameters(), a.field.parameters()))
    assert d_parent < 1e-4 < d_fresh


def test_consensus_fine_tuning_averages_fits_started_from_the_parent(cohort) -> None:
    a = train_prior(cohort, _config("consensus"), record_distribution=False)
    # One per-subject step of an Adam that hardly moves (the subject fits use the fit's rate).
    b = train_prior(cohort[:2], replace(_config("consensus"), subject_steps=1, fit=replace(FIT, lr=1e-8)), parent=a,
                    record_distribution=False)
    for p, q in zip(a.field.parameters(), b.field.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=0)


def test_encoder_fine_tuning_starts_from_the_parent_encoder(cohort) -> None:
    a = train_prior(cohort, _config("encoder", steps=4), record_distribution=False)
    b = train_prior(cohort[:2], replace(_config("encoder", steps=2), encoder_steps=1), parent=a,
                    record_distribution=False)
    for p, q in zip(a.encoder.parameters(), b.encoder.parameters()):
        assert (p - q).abs().max().item() < 0.05  # one small step from the parent's weights, not a fresh CNN
    assert torch.equal(b.codes.mean(0) * 0, torch.zeros(8))  # codes exist for the new cohort


def test_fine_tuning_keeps_the_architecture(cohort, parent) -> None:
    a = load_prior(parent)
    with pytest.raises(ConfigError, match="keeps the parent prior's field"):
        train_prior(cohort[:2], replace(_config("autodecoder"), latent_dim=8), parent=a)
    with pytest.raises(ConfigError, match="keeps the parent prior's field"):
        train_prior(cohort[:2], replace(_config(), field=FieldConfig(hidden=16, layers=2)), parent=a)
    three = _ref_only(make_phantom(PhantomConfig(dim=3, shape=(52, 52, 6), spacing=(2.0, 2.0, 8.0), n_frames=6), 1).sequence)
    with pytest.raises(ConfigError, match="is 2D but the training sequences are 3D"):
        train_prior([three], _config(), parent=a)


def test_cli_fine_tunes_and_records_the_parent(parent, tmp_path, capsys) -> None:
    from cardioinr.phantoms import write_cases

    write_cases(tmp_path / "data", n=2, config=SMALL, seed=40, progress=False)
    cfg = tmp_path / "p.toml"
    cfg.write_text("[prior]\nsteps = 3\nbatch = 2\n[prior.fit]\npoints = 256\nreg_points = 32\n")
    out = tmp_path / "ft.ckpt"
    assert main(["train-prior", str(tmp_path / "data"), "--from", str(parent), "--out", str(out), "--config", str(cfg),
                 "--threads", "1", "--quiet"]) == 0
    assert f"fine-tuned {parent} as a population prior on 2 sequences" in capsys.readouterr().out
    ft = load_prior(out)
    assert ft.kind == "population" and ft.field.config == load_prior(parent).field.config
    assert ft.lineage[0]["sha256"] == file_sha256(parent)
    # Truth of written phantoms (manifest params) lands in the record.
    assert all("ef" in c.get("truth", {}) for c in ft.distribution["cases"])
    assert main(["train-prior", str(tmp_path / "data"), "--from", str(parent), "--out", str(tmp_path / "x.ckpt"),
                 "--model", "hashgrid", "--quiet"]) == 2
    assert "fine-tuning keeps the parent prior's siren field" in capsys.readouterr().err
    assert main(["train-prior", str(tmp_path / "data"), "--from", str(tmp_path / "missing.ckpt"),
                 "--out", str(tmp_path / "y.ckpt"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"cardioinr: error: {tmp_path / 'missing.ckpt'}: prior checkpoint not found"]


# -- the training-distribution record and the applicability flag --------------------------------


def test_record_describes_each_case(cohort, parent) -> None:
    a = load_prior(parent)
    cases = a.distribution["cases"]
    assert [c["name"] for c in cases] == [s.name for s in cohort]
    c = cases[0]
    assert c["shape"] == [56, 56, 1] and c["frames"] == 8 and c["slice_mm"] == 8.0 and c["in_plane_mm"] == 2.0
    assert c["heart"]["method"] == "labels" and 20 < c["heart"]["diameter_mm"] < 80
    assert 0 < c["start_loss"] and 0 < c["still_loss"] and c["start_ratio"] == pytest.approx(
        c["start_loss"] / c["still_loss"], rel=1e-3)
    assert a.distribution["loss_settings"]["steps"] == a.fit_config().steps


def test_orientation_names_the_plane() -> None:
    o = orientation(np.diag([1.5, 1.5, 8.0, 1.0]))
    assert o["plane"] == "axial" and o["oblique_deg"] == 0.0 and o["handedness"] == "right"
    tilt = np.eye(4)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    tilt[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]
    o = orientation(tilt @ np.diag([1.0, 1.0, 8.0, 1.0]))
    assert o["plane"] == "axial" and o["oblique_deg"] == pytest.approx(30.0, abs=0.1)


def test_flag_fires_on_out_of_distribution_geometry_not_on_a_training_like_case(cohort, parent) -> None:
    a = load_prior(parent)
    like = _ref_only(make_phantom(SMALL, 77).sequence)
    verdict = a.applicability(a.describe_case(like))
    assert verdict["in_distribution"] is True, verdict["reasons"]
    thick = _ref_only(make_phantom(replace(SMALL, spacing=(2.0, 2.0, 20.0)), 77).sequence)
    verdict = a.applicability(a.describe_case(thick))
    assert verdict["in_distribution"] is False and any("slice thickness 20 mm" in r for r in verdict["reasons"])
    long = _ref_only(make_phantom(replace(SMALL, n_frames=30), 77).sequence)
    verdict = a.applicability(a.describe_case(long))
    assert verdict["in_distribution"] is False and any("frame count 30" in r for r in verdict["reasons"])
    still = replace(like, image=np.repeat(like.image[..., :1], like.n_frames, axis=3), labels={})
    verdict = a.applicability(a.describe_case(still))
    assert verdict["in_distribution"] is False and any("no beating heart" in r for r in verdict["reasons"])
    # The reference frame slid across the field of view, beating not at all.
    from scipy.ndimage import shift

    frames = [shift(like.image[..., 0], (3 * np.sin(np.pi * t / 8), -2 * np.sin(np.pi * t / 8), 0), order=3,
                    mode="nearest") for t in range(8)]
    slide = replace(like, image=np.stack(frames, axis=-1).astype(np.float32))
    case = a.describe_case(slide)
    assert case["rigid_fraction"] > 0.9 > max(c["rigid_fraction"] for c in a.distribution["cases"])
    verdict = a.applicability(case)
    assert "rigid_fraction" in verdict["flags"] and any("slide rather than beat" in r for r in verdict["reasons"])


def test_start_loss_rule() -> None:
    cases = [dict(name=f"c{i}", dim=2, in_plane_mm=2.0, slice_mm=8.0, slices=1, frames=20,
                  heart={"found": True, "diameter_mm": 50.0}, start_ratio=r) for i, r in enumerate((0.3, 0.5, 0.6))]
    record = {"cases": cases}
    ok = dict(cases[0], start_ratio=0.6 + START_MARGIN - 0.01)
    bad = dict(cases[0], start_ratio=0.6 + START_MARGIN + 0.01)
    assert applicability(ok, record)["in_distribution"] is True
    v = applicability(bad, record)
    assert v["in_distribution"] is False and "fits this case's images poorly" in v["reasons"][0]
    # Too few cases to trust their spread: the start loss is not judged.
    assert applicability(bad, {"cases": cases[:2]})["in_distribution"] is True
    # Ancestors' cases widen the geometry ranges, not the start-loss range.
    wide = dict(cases[0], frames=60, start_ratio=0.2)
    assert applicability(wide, record)["in_distribution"] is False
    assert applicability(wide, record, [{"distribution": {"cases": [dict(cases[0], frames=50)]}}])["in_distribution"]
    assert applicability(ok, {})["in_distribution"] is None


def test_fit_reports_a_case_outside_the_prior(parent, tmp_path, capsys) -> None:
    ph = make_phantom(replace(SMALL, spacing=(2.0, 2.0, 20.0)), 5)
    save_nifti(tmp_path / "thick.nii.gz", ph.sequence.image, ph.sequence.affine)
    lab = ph.sequence.labels[ph.sequence.ref_frame]
    save_nifti(tmp_path / "seg.nii.gz", lab, ph.sequence.affine)
    out = tmp_path / "fit"
    assert main(["fit", str(tmp_path / "thick.nii.gz"), "--seg", str(tmp_path / "seg.nii.gz"), "--prior", str(parent),
                 "--steps", "3", "--out", str(out), "--threads", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: thick lies outside what the prior was trained on: slice thickness 20 mm" in err
    m = json.loads((out / "metrics.json").read_text())
    app = m["prior"]["applicability"]
    assert app["in_distribution"] is False and app["checks"]["slice_mm"]["ok"] is False
    assert m["prior"]["sha256"] == file_sha256(parent)
    html = (out / "report.html").read_text()
    assert "outside what the prior was trained on" in html


def test_case_record_reads_phantom_truth() -> None:
    ph = make_phantom(SMALL, 3)
    seq = replace(ph.sequence, meta=dict(ph.sequence.meta, params=ph.params))
    rec = case_record(seq)
    assert rec["truth"]["ef"] == pytest.approx(ph.params["ef"], abs=1e-4)
    assert rec["ef_labels"] == pytest.approx(ph.params["ef"], abs=0.06)  # labelled ED and ES frames


def test_ef_check_and_the_declared_population_ranges() -> None:
    cases = [dict(name="a", dim=2, frames=20, ef_labels=0.30), dict(name="b", dim=2, frames=20, truth={"ef": 0.50})]
    high = dict(dim=2, frames=20, ef_labels=0.70)
    v = applicability(high, {"cases": cases})
    assert v["flags"] == ["ef"] and "EF 70 % (from the labels) is outside the training cases' 30-50 %" in v["reasons"][0]
    # A population drawn from EF 15-78 % covers it, though its sample did not reach it.
    assert applicability(high, {"cases": cases, "declared": {"ef": [0.15, 0.78]}})["in_distribution"] is True
    assert applicability(dict(high, ef_labels=0.49), {"cases": cases})["in_distribution"] is True
