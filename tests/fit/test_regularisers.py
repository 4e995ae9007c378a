"""Regularisers that use the reference labels: the RV free-wall band (incompressibility on the
RV's unlabelled muscle) and the LV cavity following its wall along the long axis (3D); without
labels, the LV outlines found in the images standing in for them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cardioinr.fit import FitConfig, Fitter
from cardioinr.fit.fields import FieldConfig
from cardioinr.fit.preprocess import rv_free_wall
from cardioinr.io import LabelMap, Sequence, make_affine
from cardioinr.phantoms import make_phantom
from cardioinr.phantoms.groups import group_config


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _labelled(lab: np.ndarray, spacing=(1.5, 1.5, 8.0)) -> Sequence:
    img = np.random.default_rng(0).random(lab.shape + (4,)).astype(np.float32)
    seq = Sequence(img, make_affine(spacing), 40.0, ref_frame=0, label_map=LabelMap.parse("acdc"))
    return replace(seq, labels={0: lab})


def test_rv_free_wall_is_the_unlabelled_band_hugging_the_rv_cavity() -> None:
    n, sp = 64, 1.5
    x, y = np.meshgrid(np.arange(n) * sp, np.arange(n) * sp, indexing="ij")
    lab = np.zeros((n, n, 2), np.uint8)
    r_lv = np.hypot(x - 55.0, y - 48.0)
    lab[..., 0][r_lv < 18.0] = 2
    lab[..., 0][r_lv < 10.0] = 3
    d_rv = np.hypot(x - 25.0, y - 48.0)
    lab[..., 0][(d_rv < 10.0) & (lab[..., 0] == 0)] = 1  # an RV crescent against the LV wall
    wall = rv_free_wall(_labelled(lab), 3.0)
    assert wall is not None and wall.shape == lab.shape
    assert not wall[..., 1].any()  # no RV on that slice
    assert not (wall & (lab > 0)).any()  # never labelled tissue (the septum is the LV's)
    rv_pts = np.argwhere(lab[..., 0] == 1) * sp
    band = np.argwhere(wall[..., 0]) * sp
    dist = np.min(np.linalg.norm(band[:, None, :] - rv_pts[None, :, :], axis=2), axis=1)
    assert dist.max() <= 3.0 + 1e-9 and dist.min() > 0
    # the free wall (away from the LV) is covered all around: the voxel 2 mm outside the rim
    assert wall[int(round((25.0 - 12.0) / sp)), int(round(48.0 / sp)), 0]
    assert rv_free_wall(_labelled(lab), 0.0) is None
    lab_no_rv = np.where(lab == 1, 0, lab).astype(np.uint8)
    assert rv_free_wall(_labelled(lab_no_rv), 3.0) is None


def _cavity_lag(seq: Sequence, lab: np.ndarray, es: int, w: float) -> float:
    """Mean |cavity - wall| motion along k (mm) at ``es`` over the slices with a cavity
    (``lab``: the ED labels, acdc codes) of a short fit of ``seq`` with cavity-follow weight ``w``."""
    cfg = FitConfig(field=FieldConfig(hidden=64, layers=2), steps=60, points=1024, reg_points=512,
                    w_cavity_follow=w)
    uz = Fitter(cfg).fit(seq, progress=False).displacement[..., es, 2]
    gaps = [abs(uz[:, :, k][lab[:, :, k] == 3].mean() - uz[:, :, k][lab[:, :, k] == 2].mean())
            for k in range(lab.shape[2]) if (lab[:, :, k] == 3).sum() > 20]
    return float(np.mean(gaps))


def test_cavity_follows_its_wall_along_k() -> None:
    """On a 10 mm stack, the cavity-follow term (at the weight fits from a prior use) brings the
    LV cavity's motion along k to its wall's: without it the cavity lags the wall's descent."""
    cfg_ph = group_config("normal", 3, shape=(64, 64, 6), spacing=(1.6, 1.6, 10.0), n_frames=6,
                          noise_sigma=0.0, supersample=1, z_supersample=1)
    ph = make_phantom(cfg_ph, 31000)
    seq = replace(ph.sequence, labels={0: ph.sequence.labels[0]}, label_sources={})
    es = ph.motion.es_frame
    lab = seq.labels[0]
    assert FitConfig().w_cavity_follow == 0  # off from scratch (it harms those fits)

    plain, follow = _cavity_lag(seq, lab, es, 0.0), _cavity_lag(seq, lab, es, 0.03)
    assert follow < 0.5 * plain, (plain, follow)


def test_an_unlabelled_stack_follows_the_wall_its_images_show() -> None:
    """Without reference labels the term takes each slice's cavity and wall from the outlines
    that located the heart (and the incompressibility its myocardium): they match the
    phantom's labels closely, and the cavity's lag behind its wall's descent shrinks as with
    labels."""
    from cardioinr.fit.objective import Objective

    cfg_ph = group_config("normal", 3, shape=(64, 64, 6), spacing=(1.6, 1.6, 10.0), n_frames=6,
                          noise_sigma=0.0, supersample=1, z_supersample=1)
    ph = make_phantom(cfg_ph, 31000)
    lab = ph.sequence.labels[0]
    seq = replace(ph.sequence, labels={}, label_sources={})
    es = ph.motion.es_frame
    obj = Objective(seq, FitConfig(w_cavity_follow=0.03), torch.device("cpu"))
    walls = obj.walls
    assert walls is not None and obj.myo is not None
    cav = walls.cavity.numpy()
    myo = obj.myo[0].numpy() > 0
    assert int(myo.sum()) == len(walls.xy) and not (myo & cav).any()
    # measured: Dice 0.97 against the ED myocardium label
    assert 2 * (myo & (lab == 2)).sum() / (myo.sum() + (lab == 2).sum()) > 0.9
    # measured: cavity Dice 0.99 against the ED labels (on the slices with a wall); each
    # slice's wall within 2 % in size
    assert 2 * (cav & (lab == 3)).sum() / (cav.sum() + (lab == 3).sum()) > 0.95
    mid = [k for k in range(lab.shape[2]) if (lab[:, :, k] == 2).sum() > 300]
    for k in mid:
        assert abs(int(walls.count[k]) - int((lab[:, :, k] == 2).sum())) < 0.15 * (lab[:, :, k] == 2).sum()
    assert Objective(seq, FitConfig(), torch.device("cpu")).walls is None  # off by default
    none = Objective(seq, FitConfig(w_incompress=0.0), torch.device("cpu"))
    assert none.walls is None and none.myo is None
    # points are drawn where the located heart is, as where the labelled heart is
    w = obj.weights.reshape(seq.shape).numpy()
    assert w[cav | myo].mean() > 2.6 * w[~(cav | myo)].mean()  # measured 3.3; 1.9 without the mask
    tiny = dict(field=FieldConfig(hidden=16, layers=1), steps=2, points=256, reg_points=128)
    said = Fitter(FitConfig(w_cavity_follow=0.03, **tiny)).fit(seq, progress=False).metrics["heart_location"]
    assert said["method"] == "images"
    assert said["outlines_used_by"] == ["point sampling", "cavity follow", "incompressibility"]
    off = FitConfig(w_incompress=0.0, heart_fraction=0.0, **tiny)
    said = Fitter(off).fit(seq, progress=False).metrics["heart_location"]
    assert "outlines_used_by" not in said  # metrics.json says so only when they were used

    plain, follow = _cavity_lag(seq, lab, es, 0.0), _cavity_lag(seq, lab, es, 0.03)  # measured 0.97, 0.19 mm
    assert follow < 0.5 * plain, (plain, follow)


def test_an_unlabelled_slice_gets_the_located_myocardium_too() -> None:
    """A single slice without labels: its located wall is the incompressibility term's
    myocardium and its heart draws the points, as a labelled slice's; there is no cavity-follow
    term in 2D (nothing along k)."""
    from cardioinr.fit.objective import Objective

    ph = make_phantom(group_config("normal", 2, n_frames=6, noise_sigma=0.0, supersample=1), 31000)
    lab = ph.sequence.labels[0]
    seq = replace(ph.sequence, labels={}, label_sources={})
    obj = Objective(seq, FitConfig(w_cavity_follow=0.03), torch.device("cpu"))
    assert obj.walls is None and obj.myo is not None
    myo = obj.myo[0].numpy() > 0
    assert 2 * (myo & (lab == 2)).sum() / (myo.sum() + (lab == 2).sum()) > 0.95  # measured 0.99
    tiny = dict(field=FieldConfig(hidden=16, layers=1), steps=2, points=256, reg_points=128)
    said = Fitter(FitConfig(**tiny)).fit(seq, progress=False).metrics["heart_location"]
    assert said["outlines_used_by"] == ["point sampling", "incompressibility"]


def test_slice_walls_group_each_slice_wall_and_keep_cavities_with_a_wall() -> None:
    """The cavity-follow target reads each slice's own wall: the table groups the myocardial
    voxels by slice, and a cavity on a slice without wall (nothing to follow) is left out."""
    from cardioinr.fit.objective import slice_walls

    lab = np.zeros((8, 8, 3), np.uint8)
    lab[2:6, 2:6, 0] = 2
    lab[3:5, 3:5, 0] = 3  # slice 0: a ring around a cavity
    lab[1, 1, 1] = 2  # slice 1: one wall voxel, no cavity
    lab[3:5, 3:5, 2] = 3  # slice 2: a cavity and no wall
    w = slice_walls(lab, lv=3, myo=2, spacing=np.array([1.5, 2.0, 10.0]), device=torch.device("cpu"))
    assert w is not None
    assert w.count.tolist() == [12, 1, 0] and w.start.tolist() == [0, 12, 13]
    assert w.cavity[..., 0].sum() == 4 and not w.cavity[..., 1:].any()
    ring = w.xy[:12].numpy()
    assert set(map(tuple, ring)) == {(i * 1.5, j * 2.0) for i, j in np.argwhere(lab[..., 0] == 2)}
    assert w.xy[12].tolist() == [1.5, 2.0]
    assert slice_walls(np.where(lab == 2, 0, lab).astype(np.uint8), 3, 2, np.ones(3), torch.device("cpu")) is None
