"""The HTML report: built from a real (tiny) fit output folder, self-contained (no external
references, every image a decodable data: URI), with every section, the animation holding one
frame per cine frame, and, where Chromium is installed (.ci/run installs it), opened offline in headless
Chromium: no errors, every figure decoded, a non-blank screenshot."""

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


def test_folding_figures_recorded_by_the_fit_are_those_of_the_grid(fit_folder):
    from cardioinr.outputs.folder import load_fit_folder
    from cardioinr.outputs.report.figures import folding_figure

    out, seq = fit_folder
    f = load_fit_folder(out, seq)
    assert len(f.metrics["per_frame_percent_negative_jacobian"]) == N_FRAMES
    recorded, png_recorded = folding_figure(f, 0)
    f.metrics = {k: v for k, v in f.metrics.items() if k != "per_frame_percent_negative_jacobian"}
    computed, png_computed = folding_figure(f, 0)  # an older folder: from the displacement file
    assert recorded["per_frame_percent"] == pytest.approx(computed["per_frame_percent"], abs=1e-12)
    assert recorded["percent_folded"] == pytest.approx(computed["percent_folded"], abs=1e-12)
    assert recorded["min_det"] == pytest.approx(computed["min_det"], rel=1e-6)
    assert png_recorded == png_computed


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


def test_report_says_when_folds_were_mended(fit_folder, tmp_path):
    """A fit whose folds were mended (metrics.json ``mended_folds``) says so in the fit section;
    one without says nothing about it."""
    out, seq = fit_folder
    assert "folds mended" not in build_report(out, seq=seq).read_text()
    copy = tmp_path / "mended"
    shutil.copytree(out, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["mended_folds"] = {"folded_voxels_before": 37, "folded_voxels_after": 0, "steps": 60}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    doc = build_report(copy, seq=seq).read_text()
    assert "folds mended" in doc and "37 folded voxels" in doc and "0 after 60 mending steps" in doc


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


def _chromium() -> str | None:
    """The headless browser: Debian's ``chromium`` (what .ci/run installs), else another name."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


#: Flags for a page that must work offline: no network at all (every host resolves to nothing),
#: no background services, a throw-away profile.
_OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9", "--disable-dev-shm-usage"]

#: Injected into a test copy of the page (the report itself has no scripts): records script errors,
#: failed resource loads and console.error calls, then, once the page has loaded, decodes every
#: image (drawn into a canvas) and lists every resource fetched from anywhere but data: URIs, into
#: a <pre> read back from --dump-dom.
_PROBE = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__errs.push('error: ' + (e.message || t.src || t.href || 'resource'));
}, true);
window.addEventListener('securitypolicyviolation', function (e) { window.__errs.push('csp: ' + e.blockedURI); });
(function () { var ce = console.error; console.error = function () {
  window.__errs.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  // Synchronous, so that it has run before --dump-dom serialises the page: every image is drawn
  // into a canvas (a full decode) and must give visible pixels.
  var imgs = Array.prototype.slice.call(document.images), failed = [];
  imgs.forEach(function (i) {
    try {
      if (!(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)) { failed.push('not loaded ' + i.src.slice(0, 30)); return; }
      var c = document.createElement('canvas');
      c.width = i.naturalWidth; c.height = i.naturalHeight;
      var g = c.getContext('2d');
      g.drawImage(i, 0, 0);
      var px = g.getImageData(0, 0, c.width, c.height).data, seen = 0;
      for (var k = 3; k < px.length; k += 4) { if (px[k] > 0) { seen++; } }
      if (seen === 0) { failed.push('blank ' + i.src.slice(0, 30)); }
    } catch (err) { failed.push('undecodable ' + i.src.slice(0, 30) + ': ' + err); }
  });
  var out = document.createElement('pre');
  out.id = 'cardioinr-probe';
  out.textContent = 'PROBE' + JSON.stringify({
    images: imgs.length, gifs: imgs.filter(function (i) { return i.src.indexOf('data:image/gif') === 0; }).length,
    failed: failed, errors: window.__errs,
    external: performance.getEntriesByType('resource').map(function (r) { return r.name; })
      .filter(function (n) { return n.indexOf('data:') !== 0; }),
    title: document.title}) + 'PROBE';
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow  # a real browser
@pytest.mark.skipif(_chromium() is None, reason="no headless browser (chromium) installed; .ci/run installs it "
                                                "with apt-get where the machine has apt")
def test_report_renders_in_headless_chromium(fit_folder, tmp_path):
    """The page in a real browser, offline: it loads, no script or console error, no request
    beyond data: URIs, every figure and the animation decode, and a screenshot shows a page."""
    browser = _chromium()
    out, seq = fit_folder
    page = build_report(out, seq=seq, path=tmp_path / "report.html")
    doc = page.read_text(encoding="utf-8")
    n_images = len(_images(doc))

    # 1. The probe: a copy of the page with the script above at the top of <head>.
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + _PROBE, doc, count=1), encoding="utf-8")
    assert _PROBE in probe.read_text(encoding="utf-8")
    run = subprocess.run([browser, *_OFFLINE, f"--user-data-dir={tmp_path / 'profile1'}",
                          "--virtual-time-budget=15000", "--dump-dom", probe.resolve().as_uri()],
                         capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r"PROBE(\{.*?\})PROBE", run.stdout, re.S)
    assert found, f"the page did not finish loading in chromium (rc {run.returncode}): {run.stderr[-2000:]}"
    import html as _html

    result = json.loads(_html.unescape(found.group(1)))
    assert result["images"] == n_images and n_images >= 7
    assert result["gifs"] == 1
    assert result["failed"] == [], f"figures the browser could not decode: {result['failed']}"
    assert result["errors"] == [], f"errors in the browser: {result['errors']}"
    assert result["external"] == [], f"the page fetched resources: {result['external']}"

    # 2. The screenshot of the page itself (no probe).
    shot = tmp_path / "shot.png"
    run = subprocess.run([browser, *_OFFLINE, f"--user-data-dir={tmp_path / 'profile2'}",
                          f"--screenshot={shot}", "--window-size=1200,2400", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=180, check=False)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {run.returncode}): {run.stderr[-2000:]}"
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[:2] == (2400, 1200)
    # not blank: the header band is dark, the page has plots (many distinct colours), real contrast
    assert img.std() > 20
    assert img[:40].mean() < 80
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 200


def test_long_axis_caveat_only_for_thick_short_axis_stacks_without_views():
    """A 3D fit of thick short-axis slices alone gets the caveat on its longitudinal strain; thin
    slices, a multi-view fit (metrics.json ``views``) and a single slice do not."""
    from types import SimpleNamespace

    from cardioinr.outputs.report.sections import long_axis_caveat

    def strain(dim, spacing, long_axis=(0.0, 0.0, 1.0)):
        return SimpleNamespace(dim=dim, spacing=np.asarray(spacing), frame=SimpleNamespace(long_axis=np.asarray(long_axis)))

    text = long_axis_caveat(strain(3, (1.6, 1.6, 10.0)), {})
    assert text is not None and "10 mm" in text and "--lax" in text
    assert long_axis_caveat(strain(3, (1.6, 1.6, 10.0)), {"views": {"names": ["4ch"]}}) is None
    assert long_axis_caveat(strain(3, (1.6, 1.6, 2.0)), {}) is None
    assert long_axis_caveat(strain(2, (1.6, 1.6, 10.0)), {}) is None
    # a stack whose long axis runs along i: the step along it is the i spacing
    assert long_axis_caveat(strain(3, (8.0, 1.6, 1.6), (1.0, 0.0, 0.0)), {}) is not None
    assert long_axis_caveat(strain(3, (1.6, 1.6, 8.0), (1.0, 0.0, 0.0)), {}) is None


def test_rv_ef_caveat_only_for_thick_stacks_with_an_rv():
    """The RV EF of labels carried through thick short-axis slices gets its caveat (with or
    without long-axis views: it is the labels'); thin slices, a single slice and a fit without an
    RV label do not."""
    from types import SimpleNamespace

    from cardioinr.outputs.report.sections import rv_ef_caveat

    def strain(dim, spacing, rv=True, long_axis=(0.0, 0.0, 1.0)):
        return SimpleNamespace(dim=dim, spacing=np.asarray(spacing), frame=SimpleNamespace(long_axis=np.asarray(long_axis)),
                               rv_cavity=np.array([100.0, 60.0, 90.0]) if rv else None)

    text = rv_ef_caveat(strain(3, (1.6, 1.6, 10.0)))
    assert text is not None and "10 mm" in text and "over-estimated" in text
    assert rv_ef_caveat(strain(3, (1.6, 1.6, 10.0), rv=False)) is None
    assert rv_ef_caveat(strain(3, (1.6, 1.6, 2.0))) is None
    assert rv_ef_caveat(strain(2, (1.6, 1.6, 10.0))) is None
    assert rv_ef_caveat(strain(3, (8.0, 1.6, 1.6), long_axis=(1.0, 0.0, 0.0))) is not None


def test_single_slice_caveat_only_for_one_slice():
    """A single short-axis slice's strain gets the through-plane caveat; a stack does not."""
    from types import SimpleNamespace

    from cardioinr.outputs.report.sections import single_slice_caveat

    text = single_slice_caveat(SimpleNamespace(dim=2))
    assert text is not None and "through" in text and "--lax" in text
    assert single_slice_caveat(SimpleNamespace(dim=3)) is None
