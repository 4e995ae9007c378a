"""Fitting from scratch: known motion is recovered, no motion gives no field, bad settings fail clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cardioinr.core.errors import ConfigError
from cardioinr.fit.fields import FieldConfig
from cardioinr.fit import FitConfig, Fitter, frame_of_reference
from cardioinr.io import Sequence, make_affine

SPACING = 1.5
N = 56
T = 8


def _texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth random-looking analytic image (mm coordinates)."""
    rng = np.random.default_rng(3)
    k = rng.normal(size=(24, 2)) * 0.25
    ph = rng.uniform(0, 2 * np.pi, 24)
    v = sum(np.cos(k[i, 0] * x + k[i, 1] * y + ph[i]) for i in range(24))
    return (v - v.min()) / (v.max() - v.min())


def _affine_sequence(ref: int) -> tuple[Sequence, np.ndarray]:
    """Frames of an analytic texture moved by a periodic rotation + scaling + translation about
    the image centre; returns the sequence and the true displacement (X, Y, T, 2) in mm."""
    c = (N - 1) / 2 * SPACING
    g = np.stack(np.meshgrid(np.arange(N) * SPACING, np.arange(N) * SPACING, indexing="ij"), -1) - c
    frames, disp = [], []
    for t in range(T):
        p = 0.5 * (1 - math.cos(2 * math.pi * (t - ref) / T))
        th, s, b = math.radians(5.0) * p, 1 - 0.06 * p, np.array([1.5, -1.0]) * p
        a = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        disp.append(g @ (a - np.eye(2)).T + b)  # x_t = A X + b
        x_ref = (g - b) @ np.linalg.inv(a).T  # pull back: X = A^-1 (x - b)
        frames.append(_texture(x_ref[..., 0], x_ref[..., 1]))
    img = np.stack(frames, -1)[:, :, None, :].astype(np.float32)
    return Sequence(img, make_affine((SPACING, SPACING, 8.0)), 40.0, ref_frame=ref), np.stack(disp, 2)


def _cfg(**kw) -> FitConfig:
    base = dict(field=FieldConfig(hidden=64, layers=2), steps=300, points=2048, reg_points=256, patience=100)
    base.update(kw)
    return FitConfig(**base)


@pytest.mark.parametrize("ref", [0, pytest.param(T - 1, marks=pytest.mark.slow)])
def test_recovers_known_affine_motion(ref: int) -> None:
    seq, truth = _affine_sequence(ref)
    res = Fitter(_cfg()).fit(seq)
    assert res.displacement.shape == (N, N, 1, T, 3)
    assert np.all(res.displacement[..., ref, :] == 0)
    assert np.all(res.displacement[..., 2] == 0)
    c = (N - 1) / 2 * SPACING
    g = np.stack(np.meshgrid(np.arange(N) * SPACING, np.arange(N) * SPACING, indexing="ij"), -1) - c
    inner = np.hypot(g[..., 0], g[..., 1]) < 25  # away from the borders that move out of view
    err = np.linalg.norm(res.displacement[:, :, 0, :, :2] - truth, axis=-1)[inner]
    peak = np.linalg.norm(truth, axis=-1)[inner].max()
    assert peak > 2.5  # the motion is not trivial
    assert err.mean() < 0.25, err.mean()
    assert np.percentile(err, 95) < 0.6
    assert res.metrics["percent_negative_jacobian"] == 0.0


def test_static_sequence_gives_zero_field() -> None:
    seq, _ = _affine_sequence(0)
    still = np.repeat(seq.image[..., :1], T, axis=3)
    rng = np.random.default_rng(0)
    still = still + rng.normal(0, 0.01, still.shape).astype(np.float32)
    res = Fitter(_cfg(steps=200)).fit(Sequence(still, seq.affine, 40.0))
    mag = np.linalg.norm(res.displacement, axis=-1)
    assert np.percentile(mag, 99) < 0.25  # mm, against a 1.5 mm voxel: only noise-driven wiggle
    assert mag.max() < 0.75


def test_same_seed_same_field() -> None:
    seq, _ = _affine_sequence(0)
    a = Fitter(_cfg(steps=20)).fit(seq).displacement
    b = Fitter(_cfg(steps=20)).fit(seq).displacement
    c = Fitter(_cfg(steps=20, seed=1)).fit(seq).displacement
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_heart_centred_frame_of_reference() -> None:
    seq, _ = _affine_sequence(0)
    lab = np.zeros(seq.shape, np.uint8)
    lab[10:20, 30:40, 0] = 3
    centre, scale = frame_of_reference(seq.with_labels(0, lab))
    np.testing.assert_allclose(centre, [14.5 * SPACING, 34.5 * SPACING])
    assert scale == pytest.approx(2 * math.sqrt(100 * SPACING**2 / math.pi))
    # An RV label beside the LV leaves the frame where it is: datasets label the RV or not
    # (Sunnybrook does not), and a prior must land on the same heart either way.
    lab[20:26, 30:40, 0] = 1
    np.testing.assert_allclose(frame_of_reference(seq.with_labels(0, lab))[0], centre)
    assert frame_of_reference(seq.with_labels(0, lab))[1] == pytest.approx(scale)
    # without LV labels, the whole labelled heart
    rv_only = np.where(lab == 1, 1, 0).astype(np.uint8)
    np.testing.assert_allclose(frame_of_reference(seq.with_labels(0, rv_only))[0], [22.5 * SPACING, 34.5 * SPACING])


@pytest.mark.parametrize(
    "kw",
    [dict(similarity="cosine"), dict(steps=-1), dict(lr=0.0), dict(blur_px=(1.0,), blur_until=(0.5, 1.0)),
     dict(w_cavity_follow=-0.1), dict(rv_wall_mm=-1.0)],
)
def test_bad_settings_raise_config_error(kw: dict) -> None:
    with pytest.raises(ConfigError):
        FitConfig(**kw)


def test_a_config_file_setting_wins_over_a_prior_even_at_the_default_value(tmp_path) -> None:
    """What a --config file names is the user's choice: w_cavity_follow = 0 turns off what a stack
    adapting from a prior would use, steps = 800 beats the prior's short budget."""
    from cardioinr.fit import explicit_settings
    from cardioinr.priors import Prior, random_prior

    p = tmp_path / "fit.toml"
    p.write_text("w_cavity_follow = 0.0\nsteps = 800\n")
    ex = explicit_settings(p)
    assert ex == {"steps": 800, "w_cavity_follow": 0.0}
    prior = Prior("consensus", random_prior(FieldConfig(), 3).field)
    assert prior.fit_config().w_cavity_follow > 0 and prior.fit_config().steps < 800
    cfg = prior.fit_config(**ex)
    assert cfg.w_cavity_follow == 0 and cfg.steps == 800
    # the architecture counts only where it differs (a different one sets the built-in prior aside)
    p.write_text("[fit]\nsteps = 50\n[fit.field]\nhidden = %d\n" % FieldConfig().hidden)
    assert explicit_settings(p) == {"steps": 50}
    p.write_text("[fit]\n[fit.field]\nhidden = 32\n")
    assert explicit_settings(p)["field"].hidden == 32


def test_config_from_dict_rejects_unknown_keys() -> None:
    assert FitConfig.from_dict({"steps": 5, "field": {"model": "fourier"}}).field.model == "fourier"
    with pytest.raises(ConfigError, match="stepz"):
        FitConfig.from_dict({"stepz": 5})
    with pytest.raises(ConfigError, match="unknown field model"):
        FitConfig.from_dict({"field": {"model": "unet"}})


def test_cuda_requested_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    seq, _ = _affine_sequence(0)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Fitter(_cfg(device="cuda", steps=1)).fit(seq)


def _folding_field(seq: Sequence, fitter: Fitter):
    """A field trained to a displacement that folds a band across the middle of the image at
    peak contraction (``du_x / dx`` down to about -1.3), as a fit can end on a fold."""
    f = fitter.new_field(seq)
    g = np.stack(np.meshgrid(np.arange(N) * SPACING, np.arange(N) * SPACING, indexing="ij"), -1).reshape(-1, 2)
    c = (N - 1) / 2 * SPACING
    p = np.array([0.5 * (1 - math.cos(2 * math.pi * t / T)) for t in range(T)])
    target = np.zeros((len(g), T, 2))
    target[:, :, 0] = (-4.0 * np.tanh((g[:, 0] - c) / 3.0) * np.exp(-(((g[:, 1] - c) / 12.0) ** 2)))[:, None] * p[None, :]
    x, tt = torch.tensor(g, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = (f(x) - tt).pow(2).mean()
        loss.backward()
        opt.step()
    return f


def test_a_fit_that_ends_folded_is_mended() -> None:
    """Where the fitted grid folds, the fitter's mending steps (barrier on the folded voxels)
    unfold it; metrics.json says how many voxels folded before and after; with mending off the
    folds stay and the key is absent."""
    seq, _ = _affine_sequence(0)
    f = _folding_field(seq, Fitter(_cfg()))
    kept = Fitter(_cfg(steps=0, mend_steps=0)).fit(seq, init=f)
    assert kept.metrics["percent_negative_jacobian"] > 0.01 and "mended_folds" not in kept.metrics
    mended = Fitter(_cfg(steps=0, mend_steps=30)).fit(seq, init=f)
    info = mended.metrics["mended_folds"]
    assert info["folded_voxels_before"] >= 8 and info["folded_voxels_after"] == 0
    assert mended.metrics["percent_negative_jacobian"] == 0.0
    assert sum(1 for h in mended.history if h.get("mend")) == info["steps"] and info["steps"] in (30, 60, 90)
    # the fold is undone where it is; the motion away from it stays what the field had (a
    # SIREN moves everywhere a little: median 0.01 mm here)
    change = np.abs(mended.displacement - kept.displacement)[..., :2]
    far = np.abs(np.arange(N) * SPACING - (N - 1) / 2 * SPACING) > 25.0
    assert change.max() > 0.5
    assert np.median(change[far]) < 0.05 and np.percentile(change[far], 99) < 0.3


def test_folded_points_are_the_folded_voxels() -> None:
    """The mending points lie at and around (within half a voxel of) the voxels whose grid
    determinant is <= 0, counted over frames; none for an unfolded field."""
    from cardioinr.fit.fitter import _folded_points

    sp = np.array([1.5, 1.5, 8.0])
    disp = np.zeros((20, 20, 1, 3, 3), dtype=np.float32)
    x = np.arange(20) * 1.5
    disp[..., 0][:, :, 0, 2] = (-2.0 * np.tanh((x - 15.0) / 1.0))[:, None]  # du/dx = -2 near x = 15 at frame 2
    pts, n = _folded_points(disp, sp, 2, seed=0)
    # one frame folds: n voxels, each giving its centre and 7 jittered points
    assert 0 < n <= 256 and pts.shape == (8 * n, 2)
    assert np.all(np.abs(pts[:, 0] - 15.0) <= 1.5 * 1.5 + 0.75)
    _, n0 = _folded_points(np.zeros_like(disp), sp, 2, seed=0)
    assert n0 == 0
