"""The multi-view fit: geometry of the views, breath-hold offsets, and the fit folder of a study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardioinr.fit import FitConfig
from cardioinr.fit.multiview import (
    StudyObjective,
    ViewsConfig,
    fit_study,
    view_displacement,
    view_transform,
    views_config,
)
from cardioinr.io import Study
from cardioinr.phantoms import PhantomConfig
from cardioinr.phantoms.views import make_phantom_study

SMALL = PhantomConfig(dim=3, shape=(64, 64, 6), spacing=(2.0, 2.0, 10.0), n_frames=10, supersample=1, z_supersample=2)


@pytest.fixture(scope="module")
def aligned():
    return make_phantom_study(SMALL, 7, views=("2ch", "4ch"))


@pytest.fixture(scope="module")
def misaligned():
    return make_phantom_study(SMALL, 7, views=("2ch", "3ch", "4ch"), misalign_mm=3.0)


def test_view_transform_is_the_world_map(aligned):
    sax = aligned.study.sax
    for view in aligned.study.lax.values():
        a, b = view_transform(view, sax)
        pts = np.random.default_rng(0).uniform(0, 80, (20, 3))
        np.testing.assert_allclose(pts @ a.T + b, view.grid.mm_to(sax.grid, pts), atol=1e-9)
        np.testing.assert_allclose(a.T @ a, np.eye(3), atol=1e-9)  # a rotation: distances kept


def test_view_displacement_of_the_true_motion_is_the_view_truth(aligned):
    """A field that reproduces the phantom's motion on the stack gives the view's own truth on the
    view: here the 'field' is the analytic motion itself, through the same axis conversion."""
    ph = aligned.phantom

    class Truth(torch.nn.Module):  # the minimal field interface view_displacement uses
        scale = torch.tensor(1.0)

        def forward(self, x, t):
            out = [ph.motion.forward(x.numpy().astype(np.float64), float(tt)) - x.numpy() for tt in t]
            return torch.as_tensor(np.stack(out, 1), dtype=torch.float32)

    for name, view in aligned.study.lax.items():
        got = view_displacement(Truth(), view, aligned.study.sax)
        np.testing.assert_allclose(got, aligned.view_truth[name], atol=2e-3)


def test_a_known_rigid_misalignment_is_recovered(misaligned):
    """The intersection term alone recovers random offsets of up to 3 mm (every slice and view):
    0.18 mm on average, 0.56 mm at worst when this was written."""
    prob = StudyObjective(misaligned.study, FitConfig(), ViewsConfig(align=True), torch.device("cpu"))
    before = np.r_[np.linalg.norm(misaligned.shifts["sax"], axis=1),
                   [np.linalg.norm(misaligned.shifts[v]) for v in misaligned.study.lax]]
    prob.align_only(ViewsConfig().align_steps)
    got = prob.shifts()
    err = np.r_[np.linalg.norm(np.asarray(got["sax"]) - misaligned.shifts["sax"], axis=1),
                [np.linalg.norm(np.asarray(got[v]) - misaligned.shifts[v]) for v in misaligned.study.lax]]
    assert before.mean() > 1.5
    assert err.mean() < 0.3 and err.max() < 0.8, err
    assert abs(np.asarray(got["sax"]).mean(0)).max() < 1e-3  # the stack's mean position is the gauge


def test_aligned_views_stay_put(aligned):
    prob = StudyObjective(aligned.study, FitConfig(), ViewsConfig(align=True, intersection_points=2048),
                          torch.device("cpu"))
    prob.align_only(100)
    got = prob.shifts()
    assert np.abs(np.asarray(got["sax"])).max() < 1.0
    assert max(np.abs(got[v]).max() for v in aligned.study.lax) < 1.0


def test_fit_study_outputs_every_view(aligned):
    study = aligned.study
    res = fit_study(study, FitConfig(steps=4, points=256, reg_points=64), ViewsConfig(lax_points=128))
    assert res.displacement.shape == study.sax.shape + (study.sax.n_frames, 3)
    assert [v.name for v in res.views] == ["2ch", "4ch"]
    for vf in res.views:
        view = study.lax[vf.name]
        assert vf.displacement.shape == view.shape + (view.n_frames, 3)
        assert np.all(vf.displacement[..., view.ref_frame, :] == 0)
        assert vf.labels.shape == view.shape + (view.n_frames,)
    assert res.metrics["views"]["names"] == ["sax", "2ch", "4ch"]
    # with long-axis views the myocardium's incompressibility weight is the views' (recorded as fitted)
    assert res.config.w_incompress == ViewsConfig().w_incompress != FitConfig().w_incompress


def test_views_config_lets_a_named_incompressibility_weight_win():
    assert views_config({}).w_incompress == ViewsConfig().w_incompress
    assert views_config({"w_incompress": 0.07}, align=True) == ViewsConfig(align=True, w_incompress=None)
    assert views_config({"steps": 5}, w_incompress=0.2).w_incompress == 0.2


def test_views_incompressibility_weight_none_keeps_the_fits(aligned):
    cfg = FitConfig(steps=2, points=256, reg_points=64, w_incompress=0.07)
    res = fit_study(aligned.study, cfg, ViewsConfig(lax_points=128, w_incompress=None))
    assert res.config.w_incompress == 0.07


def test_fit_command_on_a_study_folder(tmp_path):
    from typer.testing import CliRunner

    from cardioinr.app.cli import app
    from cardioinr.phantoms.write import write_studies

    write_studies(tmp_path / "data", n=1, config=SMALL, seed=3, views=("2ch", "4ch"), progress=False)
    case = tmp_path / "data" / "case000"
    out = tmp_path / "fit"
    r = CliRunner().invoke(app, ["fit", str(case / "sa.nii.gz"), "--lax", str(case / "la_2ch.nii.gz"),
                                 "--lax", str(case / "la_4ch.nii.gz"), "--out", str(out), "--steps", "3",
                                 "--prior", "none", "--quiet", "--no-report", "--align-views"])
    assert r.exit_code == 0, r.output
    for f in ("displacement.nii.gz", "displacement_2ch.nii.gz", "displacement_4ch.nii.gz", "metrics.json"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["views"]["aligned"] is True and set(m["views"]["shifts_mm"]) == {"sax", "2ch", "4ch"}
    assert m["config"]["w_incompress"] == ViewsConfig().w_incompress
    # a weight the user's settings file names wins over the views' default
    (tmp_path / "fit.json").write_text(json.dumps({"fit": {"w_incompress": 0.07}}))
    out2 = tmp_path / "fit2"
    r = CliRunner().invoke(app, ["fit", str(case / "sa.nii.gz"), "--lax", str(case / "la_2ch.nii.gz"),
                                 "--out", str(out2), "--steps", "2", "--prior", "none", "--quiet", "--no-report",
                                 "--config", str(tmp_path / "fit.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((out2 / "metrics.json").read_text())["config"]["w_incompress"] == 0.07


def test_study_needs_a_crossing_view(aligned):
    from dataclasses import replace

    from cardioinr.core.errors import InputError

    view = aligned.study.lax["4ch"]
    far = view.affine.copy()
    far[:3, 3] += 500.0 * view.grid.rotation[:, 2]  # moved along its normal, far from the stack
    with pytest.raises(InputError, match="does not cross"):
        Study.of(aligned.study.sax, {"4ch": replace(view, affine=far, labels={}, label_sources={})})


def test_fit_command_on_one_long_axis_cine(tmp_path):
    """A single long-axis cine (named la_4ch) is analysed as one: GLS of its midline in
    strain.csv and metrics.json, no short-axis strains; --view sax overrides the name."""
    from typer.testing import CliRunner

    from cardioinr.app.cli import app
    from cardioinr.io import save_nifti
    from cardioinr.outputs.tables import read_strain_csv

    ps = make_phantom_study(SMALL, 3, views=("4ch",))
    v = ps.study.lax["4ch"]
    save_nifti(tmp_path / "la_4ch.nii.gz", v.image, v.affine, frame_interval_ms=40.0)
    save_nifti(tmp_path / "seg.nii.gz", v.labels[0], v.affine)
    out = tmp_path / "fit"
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "la_4ch.nii.gz"), "--seg", str(tmp_path / "seg.nii.gz"),
                                 "--out", str(out), "--steps", "3", "--prior", "none", "--quiet"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["strain"]["view"] == "4ch" and m["strain"]["gls_pct"] < 0
    regions = {row["region"] for row in read_strain_csv(out / "strain.csv")}
    assert "gls_lax" in regions and "global" not in regions
    assert "Longitudinal strain (4ch)" in (out / "report.html").read_text()
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "la_4ch.nii.gz"), "--seg", str(tmp_path / "seg.nii.gz"),
                                 "--out", str(tmp_path / "fit2"), "--steps", "3", "--prior", "none", "--quiet",
                                 "--no-report", "--view", "sax"])
    assert r.exit_code == 0, r.output
    assert "view" not in json.loads((tmp_path / "fit2" / "metrics.json").read_text())["strain"]
