"""Property-based checks (hypothesis) of geometry and parsing, and reproducibility of fits.

Geometry: voxel <-> mm <-> world round trips; an orthogonal affine (oblique or not, mirrored or
not) maps array-aligned mm to the world isometrically and is accepted; a sheared or singular
affine is refused; voxel centres sampled at their mm position give the voxel values; oblique
geometry survives a NIfTI round trip; DICOM affines have orthogonal columns of the pixel spacing.

Reproducibility: the same seed on the same device (CPU here) gives a bit-identical field and
displacement (tolerance 0); a different seed gives a different one. Every output records the
package version, the configuration and the SHA-256 of every input file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cardioinr import __version__
from cardioinr.core.errors import InputError
from cardioinr.geometry import (
    mm_to_voxel,
    spacing_from_affine,
    validate_affine,
    voxel_to_mm,
    voxel_to_world,
    world_to_voxel,
)
from cardioinr.io.dicom import dicom_affine
from cardioinr.io.load import load_sequence
from cardioinr.io.nifti import save_nifti
from cardioinr.io.sequence import LabelMap, Sequence, check_frame_index
from cardioinr.phantoms import PhantomConfig, make_phantom

PROPS = settings(max_examples=200, deadline=None, database=None)
TINY = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=6)

# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

spacings = st.tuples(*[st.floats(0.2, 12.0) for _ in range(3)])
origins = st.tuples(*[st.floats(-500.0, 500.0) for _ in range(3)])
quaternions = st.tuples(*[st.floats(-1.0, 1.0) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.1)


def rotation(q) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@st.composite
def orthogonal_affines(draw) -> np.ndarray:
    """rotation @ (optional mirror) @ diag(spacing), any origin: every scanner geometry."""
    aff = np.eye(4)
    mirror = np.diag([draw(st.sampled_from([1.0, -1.0])) for _ in range(3)])
    aff[:3, :3] = rotation(draw(quaternions)) @ mirror @ np.diag(draw(spacings))
    aff[:3, 3] = draw(origins)
    return aff


voxels = st.tuples(*[st.floats(-50.0, 300.0) for _ in range(3)])

# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@PROPS
@given(orthogonal_affines(), st.lists(voxels, min_size=1, max_size=8))
def test_voxel_world_round_trip(aff, ijk) -> None:
    ijk = np.array(ijk)
    back = world_to_voxel(aff, voxel_to_world(aff, ijk))
    np.testing.assert_allclose(back, ijk, rtol=0, atol=1e-8 * (1 + np.abs(ijk).max()))


@PROPS
@given(spacings, st.lists(voxels, min_size=1, max_size=8))
def test_voxel_mm_round_trip(sp, ijk) -> None:
    ijk = np.array(ijk)
    np.testing.assert_allclose(mm_to_voxel(voxel_to_mm(ijk, sp), sp), ijk, rtol=1e-12, atol=1e-10)


@PROPS
@given(orthogonal_affines(), voxels, voxels)
def test_orthogonal_affine_is_accepted_and_mm_space_is_an_isometry(aff, a, b) -> None:
    """Distances (hence strain, Jacobians) measured in array-aligned mm equal world distances."""
    validate_affine(aff, "oblique")
    sp = spacing_from_affine(aff)
    a, b = np.array(a), np.array(b)
    d_mm = np.linalg.norm(voxel_to_mm(a, sp) - voxel_to_mm(b, sp))
    d_world = np.linalg.norm(voxel_to_world(aff, a) - voxel_to_world(aff, b))
    assert d_mm == pytest.approx(d_world, rel=1e-9, abs=1e-9)


@PROPS
@given(orthogonal_affines(), st.sampled_from([(0, 1), (0, 2), (1, 2), (1, 0), (2, 0), (2, 1)]),
       st.floats(0.01, 2.0), st.sampled_from([1.0, -1.0]))
def test_sheared_affine_is_refused(aff, pair, amount, sign) -> None:
    """Adding a fraction of one voxel axis to another (a shear of at least 1 %) is refused."""
    i, j = pair
    sheared = aff.copy()
    sheared[:3, j] = aff[:3, j] + sign * amount * aff[:3, i] * np.linalg.norm(aff[:3, j]) / np.linalg.norm(aff[:3, i])
    with pytest.raises(InputError, match="sheared"):
        validate_affine(sheared, "sheared")


@PROPS
@given(orthogonal_affines(), st.floats(0.0, 1e-5))
def test_rounding_noise_in_the_affine_is_tolerated(aff, noise) -> None:
    """Affines written with a few decimals (DICOM strings, float32 sform) are not 'sheared'."""
    noisy = aff.copy()
    noisy[:3, 1] += noise * np.linalg.norm(aff[:3, 1]) * aff[:3, 0] / np.linalg.norm(aff[:3, 0])
    validate_affine(noisy, "noisy")


@PROPS
@given(orthogonal_affines(), st.integers(0, 2), st.sampled_from(["zero", "collinear"]))
def test_singular_affine_is_refused(aff, k, how) -> None:
    bad = aff.copy()
    bad[:3, k] = 0.0 if how == "zero" else 2.0 * aff[:3, (k + 1) % 3]
    with pytest.raises(InputError, match="not invertible"):
        validate_affine(bad, "singular")


@PROPS
@given(spacings, st.integers(0, 2**31 - 1))
def test_voxel_centres_sample_to_their_values(sp, seed) -> None:
    """The mm convention of the sampler matches the array: voxel (i, j, k) lives at ijk * spacing."""
    from cardioinr.fit.warp import sample

    rng = np.random.default_rng(seed)
    vol = rng.normal(size=(1, 7, 6, 5)).astype(np.float32)
    ijk = np.stack([rng.integers(0, n, size=20) for n in vol.shape[1:]], -1)
    pts = torch.as_tensor(voxel_to_mm(ijk, sp), dtype=torch.float32)
    got = sample(torch.from_numpy(vol), pts, torch.as_tensor(sp, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(got, vol[0][tuple(ijk.T)], rtol=0, atol=1e-4)


@settings(max_examples=40, deadline=None, database=None)
@given(orthogonal_affines())
def test_oblique_geometry_survives_a_nifti_round_trip(tmp_path_factory, aff) -> None:
    path = tmp_path_factory.mktemp("rt") / "c.nii.gz"
    img = np.random.default_rng(0).normal(100, 10, size=(6, 5, 2, 3)).astype(np.float32)
    save_nifti(path, img, aff, frame_interval_ms=30.0)
    seq = load_sequence(path)
    np.testing.assert_allclose(seq.affine, aff, rtol=0, atol=1e-4 * (1 + np.abs(aff).max()))
    np.testing.assert_allclose(seq.spacing, spacing_from_affine(aff), rtol=1e-5)
    np.testing.assert_array_equal(seq.image, img)


@PROPS
@given(st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(lambda v: np.linalg.norm(v) > 0.1),
       st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(lambda v: np.linalg.norm(v) > 0.1),
       origins, st.tuples(st.floats(0.3, 4.0), st.floats(0.3, 4.0)), st.floats(-12.0, 12.0).filter(lambda s: abs(s) > 0.1))
def test_dicom_affine_has_orthogonal_columns_of_the_pixel_spacing(r, c, ipp, ps, step) -> None:
    row = np.array(r) / np.linalg.norm(r)
    col = np.array(c) - (np.array(c) @ row) * row  # make the column direction orthogonal
    if np.linalg.norm(col) < 0.1:
        return
    col /= np.linalg.norm(col)
    aff = dicom_affine(np.concatenate([row, col]), np.array(ipp), np.array(ps), step)
    validate_affine(aff, "dicom")
    np.testing.assert_allclose(spacing_from_affine(aff), [ps[1], ps[0], abs(step)], rtol=1e-9)
    np.testing.assert_allclose(voxel_to_world(aff, np.zeros(3)), np.array(ipp) * [-1, -1, 1], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@PROPS
@given(st.text(max_size=40))
def test_label_map_parse_gives_a_map_or_one_clear_line(text) -> None:
    try:
        lm = LabelMap.parse(text)
    except InputError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(lm, LabelMap) and lm.codes()


@PROPS
@given(st.lists(st.integers(1, 255), min_size=3, max_size=3, unique=True), st.permutations(["lv", "myo", "rv"]))
def test_label_map_round_trip(codes, order) -> None:
    given_codes = dict(zip(order, codes))
    lm = LabelMap.parse(",".join(f"{k}={v}" for k, v in given_codes.items()))
    assert lm.as_dict() == given_codes
    assert LabelMap.coerce(lm.as_dict()) == lm


@PROPS
@given(st.integers(1, 50), st.integers(-200, 200))
def test_frame_index(n, t) -> None:
    if -n <= t < n:
        assert check_frame_index(t, n) == t % n
    else:
        with pytest.raises(InputError, match="out of range"):
            check_frame_index(t, n)


# ---------------------------------------------------------------------------------------------
# Reproducibility and provenance
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_seq() -> Sequence:
    return make_phantom(TINY, 2).sequence


def _fit(seq: Sequence, seed: int):
    from cardioinr.fit import FitConfig, Fitter

    return Fitter(FitConfig(steps=6, seed=seed)).fit(seq.with_ref_frame(0))


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
