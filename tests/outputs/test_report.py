"""The HTML report: built from a real (tiny) fit output folder, self-contained (no external
references, every image a decodable data: URI), with every section, the animation holding one
frame per cine frame, and, where Chromium is installed, rendered headless to a non-blank page."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cardioinr.fit.fields import FieldConfig
from cardioinr.fit.fitter import FitConfig, Fitter
from cardioinr.outputs.contract import write_fit_outputs
from cardioinr.outputs.tables import write_strain_csv
from cardioinr.io import save_sequence_nifti
from cardioinr.analysis.metrics import evaluate_arrays
from cardioinr.phantoms import PhantomConfig, make_phantom
from cardioinr.outputs.report import SECTIONS, build_report
from cardioinr.analysis.strain import analyse_fit_result

torch.set_num_threads(2)

N_FRAMES = 8


@pytest.fixture(scope="module")
def fit_folder(tmp_path_factory) -> tuple[Path, object]:
    """A fit output folder from 30 steps on a small 2D phantom, with strain.csv and an evaluation."""
    root = tmp_path_factory.mktemp("fit")
    ph = make_phantom(PhantomConfig(dim=2, shape=(64, 64, 1), n_frames=N_FRAMES, spacing=(2.0, 2.0, 8.0),
                                    supersample=1), seed=0, name="tiny")
    cine = root / "cine.nii.gz"
    seq = ph.sequence
    seq = replace(seq, labels={seq.ref_frame: seq.ref_labels}, meta={**seq.meta, "source": str(cine)})
    save_sequence_nifti(cine, seq)
    cfg = FitConfig(steps=30, points=512, reg_points=128, field=FieldConfig(hidden=32, layers=2))
    res = Fitter(cfg).fit(seq)
    ev = evaluate_arrays(res.displacement, res.labels, ph.displacement, ph.labels, spacing=seq.spacing)
    out = root / "out"
    write_fit_outputs(res, out, extra_metrics={"evaluation": ev})
    strain = analyse_fit_result(res)  # the cardioinr fit hook
    write_strain_csv(strain, out / "strain.csv")
    assert strain is not None and (out / "strain.csv").is_file()
    assert analyse_fit_result(replace(res, sequence=replace(seq, labels={}))) is None  # no labels: no strain
    return out, seq


def _images(doc: str) -> list[tuple[str, bytes]]:
    out = []
    for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', doc):
        m = re.fullmatch(r"data:(image/(?:png|gif));base64,([A-Za-z0-9+/=]+)", src)
        assert m, f"image source is not an inline base64 PNG/GIF: {src[:60]}"
        out.append((m.group(1), base64.b64decode(m.group(2), validate=True)))
    return out


def test_report_is_self_contained_with_every_section(fit_folder):
    out, _ = fit_folder
    path = build_report(out)  # the cine is found through metrics.json's source
    assert path == out / "report.html"
    doc = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 5_000_000
    # no external references of any kind, no scripts
    assert not re.search(r'(?:src|href)\s*=\s*"(?!data:|#)', doc)
    assert not re.search(r"https?://", doc)
    assert "<script" not in doc.lower() and "<link" not in doc.lower() and "@import" not in doc
    assert not re.search(r"url\(", doc)
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in doc
    images = _images(doc)
    assert len(images) >= 7
    gifs = []
    for mime, data in images:
        im = Image.open(io.BytesIO(data))
        im.verify()
        assert im.format == ("GIF" if mime == "image/gif" else "PNG")
        if mime == "image/gif":
            gifs.append(data)
    assert len(gifs) == 1
    anim = Image.open(io.BytesIO(gifs[0]))
    assert anim.n_frames == N_FRAMES and anim.is_animated
    # content: the image was loaded, strain.csv agrees, accuracy tables are there
    assert "image shown</b>yes" in doc
    assert "strain.csv matches this analysis" in doc
    assert "Dice mean" in doc and "End-point error" in doc
    assert "EF (%)" in doc and "mid anteroseptal" in doc
    assert "exact gradients of the continuous field" in doc


def test_report_flags_a_stale_strain_csv(fit_folder, tmp_path):
    out, seq = fit_folder
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lines = (copy / "strain.csv").read_text().splitlines()
    cols = lines[1].split(",")
    cols[8] = str(float(cols[8] or 0) - 5.0)  # circumferential_pct of the first row
    lines[1] = ",".join(cols)
    (copy / "strain.csv").write_text("\n".join(lines) + "\n")
    doc = build_report(copy, seq=seq).read_text()
    assert "strain.csv differs from this report" in doc


def test_report_degrades_gracefully_without_inputs(fit_folder, tmp_path):
    out, _ = fit_folder
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "displacement.nii.gz", bare)
    doc = build_report(bare).read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in doc
    assert "no metrics.json" in doc and "no labels.nii.gz" in doc
    assert "strain not computed" in doc
    assert len(_images(doc)) >= 2  # animation and folding map still drawn
    # labels but no field and no cine: finite-difference strain, no image
    shutil.copy(out / "labels.nii.gz", bare)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["sequence"]["source"] = str(tmp_path / "gone.nii.gz")
    (bare / "metrics.json").write_text(json.dumps(metrics))
    doc = build_report(bare).read_text()
    assert "finite differences of displacement.nii.gz" in doc
    assert "not found; images are not shown" in doc
    with pytest.raises(Exception, match="not found"):
        build_report(tmp_path / "nowhere")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(fit_folder, tmp_path):
    out, seq = fit_folder
    page = build_report(out, seq=seq, path=tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2400",
           page.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[:2] == (2400, 1200)
    # not blank: the header band is dark, the page has plots (many distinct colours), real contrast
    assert img.std() > 20
    assert img[:40].mean() < 80
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 200
