"""The command line end to end: synth -> fit -> evaluate -> report, the output contract, and
one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardioinr.app.cli import main
from cardioinr.analysis.metrics import dice
from cardioinr.fit.warp import propagate_labels


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--n", "1", "--dim", "2", "--seed", "3"]) == 0
    img = nib.load(out / "case000_4d.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), out / "one_frame_3d.nii.gz")
    return out


def _ref_labels(synth_dir: Path, tmp: Path, frame: int) -> Path:
    lab = nib.load(synth_dir / "case000_labels.nii.gz")
    ref = np.asarray(lab.dataobj)[..., frame]
    p = tmp / "ref_labels.nii.gz"
    nib.save(nib.Nifti1Image(ref.astype(np.uint8), lab.affine), p)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("ref_frame", [0, -1])
def test_fit_writes_the_output_contract(synth_dir: Path, tmp_path: Path, ref_frame: int) -> None:
    img = nib.load(synth_dir / "case000_4d.nii.gz")
    n_frames = img.shape[3]
    ref = ref_frame % n_frames
    seg = _ref_labels(synth_dir, tmp_path, ref)
    out = tmp_path / "fit"
    rc = main(["fit", str(synth_dir / "case000_4d.nii.gz"), "--out", str(out), "--seg", str(seg),
               "--ref-frame", str(ref_frame), "--steps", "150", "--quiet"])
    assert rc == 0
    for name in ("displacement.nii.gz", "labels.nii.gz", "strain.csv", "metrics.json", "report.html", "field.pt"):
        assert (out / name).is_file(), name
    disp_img = nib.load(out / "displacement.nii.gz")
    disp = np.asarray(disp_img.dataobj)
    assert disp.dtype == np.float32
    assert disp.shape == (*img.shape[:3], n_frames, 3)
    np.testing.assert_allclose(disp_img.affine, img.affine, atol=1e-5)
    assert np.all(disp[..., ref, :] == 0)
    labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    assert labels.dtype == np.uint8 and labels.shape == (*img.shape[:3], n_frames)
    # Sign convention and units: carrying the reference labels with the written field (mm, along
    # array axes, Lagrangian) reproduces both the written labels and the phantom's true labels.
    spacing = np.linalg.norm(img.affine[:3, :3], axis=0)
    ref_lab = np.asarray(nib.load(seg).dataobj)
    carried = propagate_labels(ref_lab, disp, spacing)
    truth = np.asarray(nib.load(synth_dir / "case000_labels.nii.gz").dataobj)
    truth_disp = np.asarray(nib.load(synth_dir / "case000_truth_displacement.nii.gz").dataobj)
    es = int(np.argmax(np.abs(truth_disp).reshape(-1, n_frames, 3).max(axis=(0, 2))))
    assert dice(carried[..., es], labels[..., es], 3) > 0.98
    assert dice(labels[..., es], truth[..., es], 3) > 0.85
    assert dice(labels[..., es], truth[..., es], 3) > dice(ref_lab, truth[..., es], 3) + 0.05
    # The field moves the right way: its mean displacement in the LV points like the truth's.
    lv = ref_lab == 3
    d_fit = disp[lv][:, es].mean(0)
    d_true = truth_disp[lv][:, es].mean(0)
    assert np.dot(d_fit, d_true) > 0
    m = json.loads((out / "metrics.json").read_text())
    # the default start is the built-in prior, whose adaptation stops once the loss levels off
    assert m["prior"]["source"] == "builtin" and 0 < m["steps"] <= 150 and m["sequence"]["ref_frame"] == ref
    assert m["percent_negative_jacobian"] == 0.0
    # Strain from the fitted field tracks the phantom's analytic peaks (within 3 points).
    params = json.loads((synth_dir / "manifest.json").read_text())["cases"][0]["params"]
    peak = m["strain"]["peak"]
    assert abs(peak["circumferential_pct"] - 100 * params["peak_circumferential_strain"]) < 3.0
    assert abs(peak["radial_pct"] - 100 * params["peak_radial_strain"]) < 3.0
    assert abs(m["strain"]["ef_pct"] - 100 * params["ef"]) < 5.0
    header = (out / "strain.csv").read_text().splitlines()[0]
    assert header.startswith("frame,time_ms,region,n_voxels,E_rr,E_cc,E_ll")

    rc = main(["evaluate", str(out), "--truth-labels", str(synth_dir / "case000_labels.nii.gz"),
               "--truth-displacement", str(synth_dir / "case000_truth_displacement.nii.gz"),
               "--json", str(tmp_path / "scores.json")])
    assert rc == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["labels"]["summary"]["LV"]["dice_mean"] > 0.85
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "missing.nii.gz", "--out", "o"], "not found"),
        (["fit", "{synth}/one_frame_3d.nii.gz", "--out", "o", "--steps", "1"], "expected a 4D cine"),
        (["fit", "{synth}/case000_truth_displacement.nii.gz", "--out", "o", "--steps", "1"], "vector|5D|4D"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--device", "tpu"], "device"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--model", "unet"], "unknown field model"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--ref-frame", "99"], "out of range"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--prior", "nope.ckpt"], "not found"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--prior", "none", "--prior-through-plane", "0"], "give --prior"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--prior-through-plane", "half"], "'auto' or a number"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--prior-through-plane", "2"], r"in \[0, 1\]"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--seg", "{synth}/case000_truth_displacement.nii.gz"], "label map"),
        (["fit", "{synth}/case000_4d.nii.gz", "--out", "o", "--label-map", "lv=x"], "not an integer"),
        (["synth", "--out", "o", "--blood-tag-washout", "0.1"], "needs --tagged"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, synth_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    args = [a.replace("{synth}", str(synth_dir)) for a in args]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("cardioinr: error:")
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_synth_tagged_with_blood_washout(tmp_path: Path) -> None:
    """``synth --tagged --blood-tag-washout F`` writes tagged cines whose blood loses its tags
    (recorded in the manifest); the muscle keeps them."""
    out = tmp_path / "wash"
    assert main(["synth", "--out", str(out), "--n", "1", "--tagged", "--blood-tag-washout", "0.1", "--seed", "2"]) == 0
    case = json.loads((out / "manifest.json").read_text())["cases"][0]
    assert case["params"]["blood_tag_washout"] == 0.1 and case["params"]["tagged"] is True
    img = np.asarray(nib.load(out / case["image"]).dataobj, dtype=np.float64)
    lab = np.asarray(nib.load(out / case["labels"]).dataobj)
    t = img.shape[-1] // 2  # past the washout
    from scipy import ndimage

    st = np.ones((3, 3, 1), bool)
    blood = ndimage.binary_erosion(lab[..., t] == 3, st, iterations=2)
    muscle = ndimage.binary_erosion(lab[..., t] == 2, st, iterations=1)
    assert blood.sum() > 50 and muscle.sum() > 50
    # blood: uniform up to the noise (sigma 0.03, no tag lines); the muscle keeps its tag lines
    assert img[..., t][blood].std() < 0.045
    assert img[..., t][muscle].std() > 0.045
