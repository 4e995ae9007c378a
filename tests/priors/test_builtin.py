"""The built-in priors: shipped intact, listed, used by default, set aside or refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cardioinr.app.cli import main
from cardioinr.core.files import file_sha256
from cardioinr.phantoms import PhantomConfig, write_cases
from cardioinr.priors import builtin as bi
from cardioinr.priors import load_prior

REPO = Path(__file__).resolve().parents[2]
SMALL = PhantomConfig(dim=2, shape=(64, 64, 1), spacing=(1.8, 1.8, 8.0), n_frames=10)


def test_every_builtin_prior_is_shipped_intact_and_documented() -> None:
    entries = bi.manifest()
    assert set(entries) == {bi.builtin_name(2), bi.builtin_name(3)}
    for name, e in entries.items():
        path = bi.WEIGHTS_DIR / e["file"]
        assert path.is_file() and path.stat().st_size == e["bytes"] < 5_000_000
        assert file_sha256(path) == e["sha256"]
        prior = load_prior(path)
        assert prior.kind == e["kind"] == "consensus" and prior.field.dim == e["dim"]
        assert prior.config["builtin"] == {"name": name, "version": e["version"], "recipe": "benchmarks/builtin_priors.py"}
        assert prior.data_summary["population"]["phantoms"], "the training population is recorded"
        card = bi.WEIGHTS_DIR / e["card"]  # shipped beside the weights (cardioinr priors show prints it)
        assert card.is_file() and e["version"] in card.read_text() and e["sha256"] in card.read_text()
    assert bi.builtin_path(2).name == entries[bi.builtin_name(2)]["file"]


@pytest.mark.parametrize("dim", [2, 3])
def test_a_shipped_prior_fits_a_new_heart_better_than_random_init_in_10_steps(dim: int) -> None:
    """Ten adaptation steps from the built-in prior against ten from a random field of the same
    architecture, same settings, on a small phantom neither has seen: myocardial EPE to the truth."""
    from cardioinr.fit.config import FitConfig
    from cardioinr.phantoms import make_phantom
    from cardioinr.priors import fit_from_prior, random_prior

    torch.set_num_threads(1)
    cfg = SMALL if dim == 2 else PhantomConfig(dim=3, shape=(52, 52, 6), spacing=(2.0, 2.0, 10.0), n_frames=10,
                                               supersample=1, z_supersample=1)
    ph = make_phantom(cfg, 77 + dim)
    seq = ph.sequence
    myo = seq.ref_labels == seq.label_map.myo

    def epe(disp: np.ndarray) -> float:
        return float(np.linalg.norm(disp - ph.displacement, axis=-1)[myo].mean())

    prior = load_prior(bi.builtin_path(dim))
    base = FitConfig(points=1024, reg_points=256)
    ours = fit_from_prior(seq, prior, base, steps=10)
    rand = fit_from_prior(seq, random_prior(prior.field.config, dim), base, steps=10)
    assert ours.metrics["steps"] <= 10 and rand.metrics["steps"] == 10
    # measured: 0.92 against 3.30 mm (2D), 1.57 against 3.53 mm (3D); no motion 3.80 / 3.57 mm
    assert epe(ours.displacement) < 0.75 * epe(rand.displacement)


def test_priors_command_lists_them(capsys) -> None:
    assert main(["priors"]) == 0
    out = capsys.readouterr().out
    for name, e in bi.manifest().items():
        line = next(x for x in out.splitlines() if x.startswith(name))
        assert f"{e['dim']}" in line and e["version"] in line and " ok " in line and e["sha256"][:12] in line


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("case")
    m = write_cases(folder, n=1, config=SMALL, seed=3, progress=False)
    files = {k: folder / m["cases"][0][k] for k in ("image", "labels")}
    lab = nib.load(str(files["labels"]))
    seg = folder / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[..., 0].astype(np.uint8), lab.affine), str(seg))
    img = nib.load(str(files["image"]))
    static = folder / "static.nii.gz"  # the reference frame over and over, fresh noise each frame: no motion
    a = np.asarray(img.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    still = np.repeat(a[..., :1], a.shape[-1], axis=-1) + rng.normal(0, 0.03, a.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(still, img.affine, img.header), str(static))
    return {"image": files["image"], "seg": seg, "static": static}


def _fit(case: dict, out: Path, *extra: str) -> tuple[int, dict | None]:
    rc = main(["fit", str(case["image"]), "--out", str(out), "--steps", "4", "--quiet", "--no-report", *extra])
    m = out / "metrics.json"
    return rc, json.loads(m.read_text()) if m.is_file() else None


def test_fit_starts_from_the_builtin_prior_by_default(case, tmp_path) -> None:
    rc, m = _fit(case, tmp_path / "a", "--seg", str(case["seg"]))
    assert rc == 0
    e = bi.manifest()[bi.builtin_name(2)]
    applic = m["prior"].pop("applicability")
    assert m["prior"] == {"source": "builtin", "name": bi.builtin_name(2), "version": e["version"],
                          "kind": "consensus", "path": str(bi.WEIGHTS_DIR / e["file"]), "sha256": e["sha256"]}
    # The tiny test cine has 10 frames; the built-in population has 20-50: a warning, not a refusal.
    assert applic["in_distribution"] is False and applic["flags"] == ["frames"] and applic["n_training_cases"] == 27
    assert m["inputs"]["prior"]["sha256"] == e["sha256"]
    assert m["heart_location"]["method"] == "labels"
    rc, m = _fit(case, tmp_path / "b", "--seg", str(case["seg"]), "--prior", "none")
    assert rc == 0 and m["prior"] == {"source": "none", "kind": "random"}


def test_report_says_which_prior(case, tmp_path) -> None:
    from cardioinr.outputs import build_report

    rc, m = _fit(case, tmp_path / "a", "--seg", str(case["seg"]))
    html = build_report(tmp_path / "a").read_text()
    assert f"built-in prior {bi.builtin_name(2)} (version {m['prior']['version']}" in html
    assert "heart located by" in html


def test_without_labels_the_heart_is_found_in_the_images(case, tmp_path, capsys) -> None:
    rc, m = _fit(case, tmp_path / "a")
    assert rc == 0 and m["prior"]["source"] == "builtin"
    assert m["heart_location"]["method"] == "images" and m["heart_location"]["found"]
    capsys.readouterr()
    # No beating heart: the default prior is set aside with one notice, never placed at random.
    rc, m = _fit({"image": case["static"]}, tmp_path / "b")
    said = capsys.readouterr().out
    assert rc == 0 and m["prior"]["source"] == "none" and "no beating heart" in m["prior"]["reason"]
    assert m["heart_location"]["method"] == "image-centre" and not m["heart_location"]["found"]
    assert sum("note:" in line and "fitting from scratch" in line for line in said.splitlines()) == 1
    # Asked for by name, the same case is refused in one line.
    rc, _ = _fit({"image": case["static"]}, tmp_path / "c", "--prior", "builtin")
    err = capsys.readouterr().err
    assert rc == 2 and "no beating heart" in err and "--prior none" in err and len(err.strip().splitlines()) == 1


def test_another_architecture_sets_the_default_prior_aside(case, tmp_path, capsys) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text("[field]\nhidden = 32\nlayers = 2\n")
    rc, m = _fit(case, tmp_path / "a", "--seg", str(case["seg"]), "--config", str(cfg))
    assert rc == 0 and m["prior"]["source"] == "none" and "siren 2 x 32" in m["prior"]["reason"]
    assert "fitting from scratch" in capsys.readouterr().out
    rc, _ = _fit(case, tmp_path / "b", "--seg", str(case["seg"]), "--config", str(cfg), "--prior", "builtin")
    assert rc == 2 and "siren 3 x 128" in capsys.readouterr().err


def test_a_damaged_install_is_refused(case, tmp_path, monkeypatch, capsys) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(bi.WEIGHTS_DIR, weights)
    f = weights / bi.manifest()[bi.builtin_name(2)]["file"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    monkeypatch.setattr(bi, "WEIGHTS_DIR", weights)
    rc, _ = _fit(case, tmp_path / "a", "--seg", str(case["seg"]))
    err = capsys.readouterr().err
    assert rc == 2 and "does not match its checksum" in err and len(err.strip().splitlines()) == 1
    (weights / bi.MANIFEST).unlink()
    assert main(["priors"]) == 0 and "ships no built-in priors" in capsys.readouterr().out


def test_priors_show_prints_the_record_and_the_card(capsys) -> None:
    assert main(["priors", "show", bi.builtin_name(2), "--cases"]) == 0
    out = capsys.readouterr().out
    e = bi.manifest()[bi.builtin_name(2)]
    assert f"{bi.builtin_name(2)} (built-in, version {e['version']})" in out and e["sha256"] in out
    assert "training distribution:" in out and "27 cases, 24 with ground truth" in out
    assert "healthy10002" in out  # --cases lists every training case
    assert f"# Built-in prior `{bi.builtin_name(2)}`" in out  # the model card
    assert main(["priors", "show", "consensus-9d"]) == 2
    err = capsys.readouterr().err
    assert "consensus-9d: neither a built-in prior (builtin, consensus-2d, consensus-3d) nor a checkpoint file" in err


def test_builtin_priors_record_their_training_distribution() -> None:
    for dim in (2, 3):
        prior = load_prior(bi.builtin_path(dim))
        cases = prior.distribution["cases"]
        e = bi.manifest()[bi.builtin_name(dim)]
        assert len(cases) == e["n_phantoms"] + e["n_real"]
        assert all("start_ratio" in c and "motion_scale" in c and c["heart"]["found"] for c in cases)
        assert sum("ef" in c.get("truth", {}) for c in cases) == e["n_phantoms"]
