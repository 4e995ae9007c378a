"""Reproducibility and provenance: the same seed on the same device (CPU here) gives a
bit-identical field and displacement (tolerance 0); a different seed gives a different one.
Every output records the package version, the configuration and the SHA-256 of every input file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cardioinr import __version__
from cardioinr.io.nifti import save_nifti
from cardioinr.io.sequence import Sequence
from cardioinr.phantoms import PhantomConfig, make_phantom

TINY = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=6)

# ---------------------------------------------------------------------------------------------
# Reproducibility and provenance
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_seq() -> Sequence:
    return make_phantom(TINY, 2).sequence


def _fit(seq: Sequence, seed: int):
    from cardioinr.fit import FitConfig, Fitter

    return Fitter(FitConfig(steps=6, seed=seed)).fit(seq.with_ref_frame(0))


@pytest.mark.slow
def test_same_seed_same_device_gives_an_identical_field(tiny_seq: Sequence) -> None:
    """CPU, same seed, same thread count: bit-identical (tolerance 0). Other thread counts or
    devices may differ by float rounding (reductions are ordered differently), not more."""
    a, b, c = _fit(tiny_seq, 7), _fit(tiny_seq, 7), _fit(tiny_seq, 8)
    np.testing.assert_array_equal(a.displacement, b.displacement)
    for k, v in a.field.state_dict().items():
        assert torch.equal(v, b.field.state_dict()[k]), k
    assert [h.get("loss") for h in a.history] == [h.get("loss") for h in b.history]
    assert not np.array_equal(a.displacement, c.displacement), "the seed must matter"


def test_outputs_record_version_config_and_input_checksums(tiny_seq: Sequence, tmp_path: Path) -> None:
    from dataclasses import replace

    from cardioinr.app.cli import main
    from cardioinr.fit.fields import FieldConfig
    from cardioinr.priors import random_prior, save_prior

    ph = make_phantom(TINY, 2)
    cine = save_nifti(tmp_path / "cine.nii.gz", ph.sequence.image, ph.sequence.affine, frame_interval_ms=30.0)
    seg = save_nifti(tmp_path / "seg.nii.gz", ph.labels[..., 0], ph.sequence.affine)
    prior = save_prior(tmp_path / "p.ckpt", replace(random_prior(FieldConfig(), 2), kind="population"))
    out = tmp_path / "out"
    assert main(["fit", str(cine), "--seg", str(seg), "--prior", str(prior), "--out", str(out), "--steps", "3",
                 "--seed", "5", "--quiet", "--no-report"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (cine, seg, prior)}
    assert m["cardioinr_version"] == __version__
    assert m["config"]["seed"] == 5 and m["config"]["steps"] == 3 and m["config"]["field"]["model"]
    assert m["inputs"]["sequence"] == {"path": str(cine), "sha256": sha[cine]}
    assert m["inputs"]["labels"] == {"0": {"path": str(seg), "sha256": sha[seg]}}
    assert m["inputs"]["prior"] == {"path": str(prior), "sha256": sha[prior]}
    for name in ("displacement.nii.gz", "labels.nii.gz"):
        descrip = nib.load(out / name).header["descrip"].item().decode()
        assert descrip == f"cardioinr {__version__}"
    field = torch.load(out / "field.pt", weights_only=True)
    assert field["format"] == "cardioinr-field"
