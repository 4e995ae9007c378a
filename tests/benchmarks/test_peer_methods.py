"""Smoke tests of the peer wrappers of benchmarks/peer_methods.py: each must return our contract
(Lagrangian mm along array axes) with the right sign on a known translation. Skipped when the
optional benchmark packages ([bench] extra: antspyx, voxelmorph) are missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import peer_methods as pm  # noqa: E402

SP2 = (1.5, 1.25, 8.0)
SP3 = (1.5, 1.25, 3.0)


def _scene(shape, spacing, shift_mm):
    """A smooth two-blob image and the same image with its content moved by ``shift_mm``
    (``moving(x) = fixed(x - d)``: a material point at X goes to X + d, so u = +d)."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing)]
    grid = np.meshgrid(*axes, indexing="ij")
    centre = [(n - 1) * s / 2 for n, s in zip(shape, spacing)]
    widths = [10.0, 10.0, 20.0]

    def image(d):
        r1 = sum(((x - di - c) / w) ** 2 for x, di, c, w in zip(grid, d, centre, widths))
        r2 = sum(((x - di - c - (7.0 if a == 0 else 0.0)) / 4.0) ** 2 for a, (x, di, c) in enumerate(zip(grid, d, centre)))
        return (np.exp(-r1) + 0.6 * np.exp(-r2)).astype(np.float32)

    return image([0.0] * len(shape)), image(shift_mm)


def _check(u, fixed, shift, tol):
    inside = fixed > 0.3
    mean = u[inside].mean(axis=0)
    moved = np.asarray(shift) != 0
    assert np.all(np.sign(mean[moved]) == np.sign(np.asarray(shift)[moved])), (mean, shift)  # the classic bug
    np.testing.assert_allclose(mean, shift, atol=tol)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    n = torch.get_num_threads()
    pm.pin_threads(1)
    yield
    torch.set_num_threads(n)


def test_sitk_image_geometry_is_array_mm():
    pytest.importorskip("SimpleITK")
    vol = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    img = pm.sitk_image(vol, SP3)
    assert img.GetSize() == (5, 4, 3)
    assert img.GetPixel(4, 1, 2) == pytest.approx(vol[4, 1, 2])
    assert img.TransformIndexToPhysicalPoint((4, 1, 2)) == pytest.approx((4 * 1.5, 1.25, 2 * SP3[2]))


def test_sitk_translation_field_sign():
    sitk = pytest.importorskip("SimpleITK")
    fixed = np.zeros((6, 5), np.float32)
    tx = sitk.TranslationTransform(2, (2.0, -1.0))  # maps fixed points X to X + (2, -1)
    u = pm.sitk_transform_displacement(tx, pm.sitk_image(fixed, SP2))
    assert u.shape == (6, 5, 2)
    np.testing.assert_allclose(u, np.broadcast_to([2.0, -1.0], u.shape))


@pytest.mark.parametrize("dim", [2, 3])
def test_bspline_recovers_translation(dim):
    pytest.importorskip("SimpleITK")
    shape, sp = ((48, 44), SP2) if dim == 2 else ((32, 28, 12), SP3)
    shift = [2.5, -1.5] + ([2.0] if dim == 3 else [])  # through-plane too: catches axis-order bugs
    fixed, moving = _scene(shape, sp, shift)
    cfg = pm.BSplineConfig(mesh_mm=16.0, metric="meansquares", sampling=1.0, iterations=30 if dim == 3 else 60)
    u = pm.bspline_pair(fixed, moving, sp, cfg)
    assert u.shape == tuple(shape) + (dim,)
    _check(u, fixed, shift, tol=0.8)


@pytest.mark.parametrize("dim", [2, 3])
def test_syn_recovers_translation(dim):
    pytest.importorskip("ants")
    shape, sp = ((48, 44), SP2) if dim == 2 else ((32, 28, 12), SP3)
    shift = [2.5, -1.5] + ([2.0] if dim == 3 else [])
    fixed, moving = _scene(shape, sp, shift)
    u = pm.syn_pair(fixed, moving, sp, pm.SynConfig(metric="CC", sampling=2, reg_iterations=(40, 20, 10)))
    assert u.shape == tuple(shape) + (dim,)
    _check(u[..., :2], fixed, shift[:2], tol=0.8)
    if dim == 3:  # SyN recovers only part of the through-plane shift here (its smoothing is in
        # voxels); the sign is what this checks, the warp-file reading is checked exactly below
        assert 0.1 * shift[2] < u[fixed > 0.3][:, 2].mean() < 1.3 * shift[2]


@pytest.mark.parametrize("dim", [2, 3])
def test_syn_warp_read_matches_ants_resampling(dim):
    """The displacement we read from the warp file moves points the way ants.apply_transforms
    samples: moving(X + u(X)) equals the image ANTs warps to the fixed grid (every axis, the
    coarse through-plane one included: a field in voxels there would not match)."""
    ants = pytest.importorskip("ants")
    from scipy.ndimage import map_coordinates

    shape, sp = ((40, 36), SP2[:2]) if dim == 2 else ((32, 28, 12), SP3)
    fixed, moving = _scene(shape, sp, [2.0, 1.0, 2.0][:dim])
    f, m = pm.ants_image(fixed, sp), pm.ants_image(moving, sp)
    reg = ants.registration(f, m, type_of_transform="SyNOnly", initial_transform="Identity",
                            syn_metric="CC", syn_sampling=2, reg_iterations=(20, 10, 0))
    u = pm.ants_forward_displacement(reg["fwdtransforms"], f)
    assert np.abs(u[..., -1]).max() > 0.1
    warped = ants.apply_transforms(f, m, reg["fwdtransforms"], interpolator="linear").numpy()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    idx = grid + np.moveaxis(u, -1, 0) / np.reshape(sp[:dim], (dim,) + (1,) * dim)
    ours = map_coordinates(moving, idx, order=1, mode="nearest")
    inner = (slice(3, -3),) * dim
    np.testing.assert_allclose(ours[inner], warped[inner], atol=2e-3)


def test_voxelmorph_field_convention():
    """A VoxelMorph-style pull-back field v on the fixed grid (moving(X + v) ~ fixed) is the
    Lagrangian displacement: warping the moving image with the network's own spatial
    transformer, and a constant field of +d voxels, reads moving at X + d."""
    pytest.importorskip("voxelmorph")
    import torch
    import voxelmorph as vxm

    fixed, moving = _scene((32, 32), (1.0, 1.0), [3.0, -2.0])
    st = vxm.nn.modules.SpatialTransformer()
    v = torch.zeros(1, 2, 32, 32)
    v[:, 0], v[:, 1] = 3.0, -2.0  # voxels along tensor axes 0 and 1 = our axes i, j
    warped = st(torch.from_numpy(moving)[None, None], v)[0, 0].numpy()
    np.testing.assert_allclose(warped[6:-6, 6:-6], fixed[6:-6, 6:-6], atol=1e-4)


def test_voxelmorph_sequence_contract():
    pytest.importorskip("voxelmorph")
    from cardioinr.io import Sequence, make_affine

    rng = np.random.default_rng(0)
    img = rng.random((40, 36, 1, 4)).astype(np.float32)
    seq = Sequence(img, make_affine((1.5, 1.25, 8.0)), ref_frame=2)
    cfg = pm.VxmConfig(features=(4, 4, 4, 4, 4), iterations=2, batch=2, crop=32)
    model, hist = pm.train_vxm([seq], cfg, log_every=1)
    assert len(hist) == 2
    u = pm.vxm_sequence(seq, model)
    assert u.shape == (40, 36, 1, 4, 3) and u.dtype == np.float32
    assert not u[:, :, :, 2].any() and not u[..., 2].any()
    # voxels -> mm: the field the network returns, times the spacing per axis
    raw = pm.vxm_pair_displacement(model, pm.normalised_frames(seq)[:, :, 0, 2], pm.normalised_frames(seq)[:, :, 0, 0])
    np.testing.assert_allclose(u[:, :, 0, 0, 0], raw[..., 0] * 1.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u[:, :, 0, 0, 1], raw[..., 1] * 1.25, rtol=1e-5, atol=1e-6)


def test_sequence_wrappers_zero_at_reference():
    pytest.importorskip("SimpleITK")
    from cardioinr.io import Sequence, make_affine

    fixed, moving = _scene((40, 36), SP2, [2.0, 0.0])
    img = np.stack([fixed, moving, fixed], -1)[:, :, None, :]
    seq = Sequence(img, make_affine(SP2), ref_frame=0)
    u = pm.bspline_sequence(seq, pm.BSplineConfig(iterations=20, sampling=1.0, mesh_mm=16.0))
    assert u.shape == (40, 36, 1, 3, 3)
    assert not u[:, :, :, 0].any()
    assert u[:, :, 0][fixed > 0.3][:, 1, 0].mean() > 1.0  # frame 1 moved by +2 mm along i
