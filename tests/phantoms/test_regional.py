"""Regional wall-motion abnormalities (akinetic / dyskinetic segments) in the synthetic phantoms.

The setting is off by default and must then leave every phantom bit for bit as it was (hashes
recorded before the feature existed); switched on, the map must stay exact (forward / inverse to
round-off), incompressible in the wall, fold-free, and its metadata honest (the EF includes the
segment; measured on the rendered labels).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from cardioinr.core.errors import ConfigError
from cardioinr.phantoms.config import PhantomConfig
from cardioinr.phantoms.draw import draw_motion
from cardioinr.phantoms.profiles import segment_weight
from cardioinr.phantoms.render import make_phantom

# a failing heart: low EF with the weak strain that goes with it
FAILING = dict(ef_range=(0.1, 0.3), circumferential_strain_range=(-0.12, -0.03))
FAILING_3D = dict(FAILING, base_descent_mm_range=(2.0, 5.0))
THIN_3D = dict(dim=3, shape=(72, 72, 40), spacing=(1.6, 1.6, 1.6), n_frames=6, supersample=1, z_supersample=1,
               noise_sigma=0.0)


def _hash(*arrays: np.ndarray) -> str:
    m = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        m.update(str(a.dtype).encode())
        m.update(str(a.shape).encode())
        m.update(a.tobytes())
    return m.hexdigest()[:16]


def _json_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _points(motion, config, n: int, seed: int) -> np.ndarray:
    """``(n, 3)`` points: half near the heart (including well outside the epicardium, where the
    inverse uses Newton), half anywhere in the field of view."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, np.array(config.shape) * config.spacing, size=(n, 3))
    X[: n // 2, :2] = np.asarray(motion.geometry.center_mm) + rng.normal(0.0, 25.0, size=(n // 2, 2))
    if config.dim == 2:
        X[:, 2] = 0.0
    return X


def _myocardial_points(motion, config, n: int, seed: int) -> np.ndarray:
    """Material points whose finite-difference stencil (0.01 mm) stays in the myocardium."""
    geom = motion.geometry
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, np.array(config.shape) * config.spacing, size=(60 * n, 3))
    if config.dim == 2:
        X[:, 2] = 0.0
    keep = geom.tissue(X) == 2
    for d in np.vstack([np.eye(3), -np.eye(3)]) * 0.01:
        keep &= geom.tissue(X + d) == 2
    assert keep.sum() >= n
    return X[keep][:n]


def _endo_radial_motion(motion, angle_deg: float, z: float, frame: int) -> float:
    """Radial motion (mm, + outward: change of the distance to the LV axis, so the twist does
    not count) of the material endocardial point at ``angle_deg``, net of the global translation."""
    g = motion.geometry
    a = math.radians(angle_deg)
    c = np.asarray(g.center_mm)
    r_en = math.sqrt(float(g.endo_r2(np.array([z]))[0]))
    X = np.array([[*(c + r_en * np.array([math.cos(a), math.sin(a)])), z]])
    x = motion.forward(X, frame)[0, :2] - motion.translation(frame)
    return float(np.linalg.norm(x - c)) - r_en


@pytest.fixture(scope="module")
def akinetic2():
    cfg = PhantomConfig(dim=2, n_frames=10, noise_sigma=0.0, regional_motion_range=(0.0, 0.0), **FAILING)
    return make_phantom(cfg, seed=3)


@pytest.fixture(scope="module")
def dyskinetic2():
    cfg = PhantomConfig(dim=2, n_frames=10, noise_sigma=0.0, regional_motion_range=(-0.3, -0.3), **FAILING)
    return make_phantom(cfg, seed=4)


@pytest.fixture(scope="module")
def akinetic3():
    """3D with thin slices (label counts measure volumes), a failing heart with an akinetic segment."""
    return make_phantom(PhantomConfig(**THIN_3D, regional_motion_range=(0.0, 0.0), **FAILING_3D), seed=1)


# ---------------------------------------------------------------------------------------------
# off: nothing changes
# ---------------------------------------------------------------------------------------------


def test_off_is_bitwise_what_it_was():
    """Hashes recorded before the feature existed (the same numbers match the golden run's synth
    digests of the CLI's phantoms). A numpy that rounds differently would change them all, with
    or without this feature: then record them again from a checkout without it."""
    ph = make_phantom(PhantomConfig(dim=2), seed=3)
    assert _hash(ph.sequence.image) == "b183b1f91df29cd1"
    assert _hash(ph.labels) == "06d117cc1921e82e"
    assert _hash(ph.displacement) == "a98f88b126b9da93"
    assert _json_hash(ph.params) == "a6ec2839bef9e583"
    assert not any(k.startswith("regional") or k == "ef_global_drawn" for k in ph.params)
    ph = make_phantom(PhantomConfig(**{**THIN_3D, "noise_sigma": 0.0}), seed=1)
    assert _hash(ph.sequence.image) == "0a90ab7696d57f90"
    for dim, digest in ((2, "2c110df8f0e8f3f0"), (3, "b626b4dfd35f2cd9")):
        draws = [draw_motion(PhantomConfig(dim=dim), np.random.default_rng(s))[1] for s in range(300)]
        assert _json_hash(draws) == digest, dim
    # the manifest's copy of the config has no new keys while the setting is off
    assert not any(k.startswith("regional") for k in PhantomConfig(dim=3).to_dict())
    on = PhantomConfig(regional_motion_range=(-0.3, 0.2)).to_dict()
    assert on["regional_motion_range"] == [-0.3, 0.2] and on["regional_extent_deg_range"] == [60.0, 120.0]
    json.dumps(on)


def test_scale_one_renders_the_phantom_without_segment():
    """``s = 1`` takes the axisymmetric code path: the same arrays as with the setting off (the
    extra draws come last in the motion stream; appearance and noise have their own)."""
    base = PhantomConfig(dim=2, n_frames=6, supersample=1)
    a = make_phantom(base, seed=5)
    b = make_phantom(PhantomConfig(dim=2, n_frames=6, supersample=1, regional_motion_range=(1.0, 1.0)), seed=5)
    np.testing.assert_array_equal(a.sequence.image, b.sequence.image)
    np.testing.assert_array_equal(a.displacement, b.displacement)
    assert b.params["ef"] == a.params["ef"] == b.params["ef_global_drawn"]
    assert b.params["regional_motion_scale"] == 1.0


@pytest.mark.parametrize("dim", [2, 3])
def test_segment_is_drawn_last_leaving_the_rest_of_the_seed(dim):
    for seed in range(10):
        _, off = draw_motion(PhantomConfig(dim=dim), np.random.default_rng(seed))
        _, on = draw_motion(PhantomConfig(dim=dim, regional_motion_range=(-0.3, 0.2)), np.random.default_rng(seed))
        assert {k: v for k, v in on.items() if k in off and k != "ef"} == {k: v for k, v in off.items() if k != "ef"}
        assert on["ef_global_drawn"] == off["ef"] and on["ef"] < off["ef"]
        assert -0.3 <= on["regional_motion_scale_drawn"] <= on["regional_motion_scale"] <= 1.0
        assert 60.0 <= on["regional_extent_deg"] <= 120.0 and 0.0 <= on["regional_centre_from_rv_deg"] <= 360.0


def test_config_validation():
    for bad in (dict(regional_motion_range=(-1.5, 0.0)), dict(regional_motion_range=(0.0, 1.2)),
                dict(regional_motion_range=(0.3, 0.1)), dict(regional_extent_deg_range=(0.0, 60.0)),
                dict(regional_extent_deg_range=(60.0, 300.0)), dict(regional_centre_deg_range=(10.0, float("nan")))):
        with pytest.raises(ConfigError):
            PhantomConfig(**bad)


# ---------------------------------------------------------------------------------------------
# the map: exact, incompressible, fold-free
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_regional_map_is_exact_incompressible_and_fold_free(dim):
    """Across seeds and motion scales (dyskinetic, akinetic, hypokinetic; septal segments, where
    the RV band must stay off the bulging LV wall; in 3D the descent must stay uniform on it):
    forward(inverse(x)) == x and inverse(forward(X)) == X to 1e-8 mm, det F == 1 in the wall,
    det F > 0 everywhere."""
    ranges = [dict(regional_motion_range=(-1.0, -0.5), regional_centre_deg_range=(-20.0, 20.0)),
              dict(regional_motion_range=(0.0, 0.0), regional_extent_deg_range=(30.0, 240.0)),
              dict(regional_motion_range=(-0.3, 0.6))]
    worst_inv, worst_det = 0.0, 0.0
    for i, extra in enumerate(ranges):
        cfg = PhantomConfig(dim=dim, **(FAILING_3D if dim == 3 else FAILING), **extra)
        for seed in range(3):
            m, p = draw_motion(cfg, np.random.default_rng(10 * i + seed))
            assert m.lv_stage.regional
            X = _points(m, cfg, 2000, seed)
            W = _myocardial_points(m, cfg, 400, seed)
            for t in (m.es_frame, (m.es_frame + 3) % cfg.n_frames, (m.ed_frame + 1) % cfg.n_frames):
                assert m.jacobian_determinant(X, t).min() > 0.25
                worst_inv = max(worst_inv, np.abs(m.inverse(m.forward(X, t), t) - X).max(),
                                np.abs(m.forward(m.inverse(X, t), t) - X).max())
                worst_det = max(worst_det, np.abs(m.jacobian_determinant(W, t) - 1.0).max())
    assert worst_inv < 1e-8, worst_inv
    assert worst_det < 1e-5, worst_det


def test_strong_heart_keeps_the_gradient_bound():
    """A normal-EF heart with a narrow dyskinetic segment: the border zone would shear strongly,
    so ``s`` is raised toward 1 until |grad u| <= 0.9 there (measured on a fine analytic grid at
    ES, twist and all: at most a little above 0.9), and the grid determinant stays positive."""
    cfg = PhantomConfig(dim=2, regional_motion_range=(-1.0, -1.0), regional_extent_deg_range=(40.0, 40.0))
    m, p = draw_motion(cfg, np.random.default_rng(2))
    assert p["regional_motion_scale"] > p["regional_motion_scale_drawn"] == -1.0
    c = np.asarray(m.geometry.center_mm)
    h = 0.1
    ax = np.arange(-45.0, 45.0, h)
    X = np.stack(np.meshgrid(c[0] + ax, c[1] + ax, [0.0], indexing="ij"), axis=-1).reshape(-1, 3)
    u = (m.forward(X, m.es_frame) - X)[:, :2].reshape(ax.size, ax.size, 2)
    g = np.stack(np.gradient(u, h, axis=(0, 1)), axis=-1)  # (.., 2 components, 2 derivatives)
    assert np.linalg.det(g + np.eye(2)).min() > 0.2
    assert np.linalg.norm(g, ord=2, axis=(-2, -1)).max() < 0.95


# ---------------------------------------------------------------------------------------------
# physiology and metadata
# ---------------------------------------------------------------------------------------------


def test_akinetic_segment_does_not_move_radially(akinetic2, akinetic3):
    for ph in (akinetic2, akinetic3):
        m, p, g = ph.motion, ph.params, ph.motion.geometry
        centre = p["regional_centre_deg"]
        z = g.z_base_mm + 0.1 * g.long_axis_mm if ph.config.dim == 3 else 0.0
        for frame in (m.es_frame, 2):
            # the segment's core (|delta| <= extent / 4) stays put radially; the opposite wall moves in
            for d in (-0.2, 0.0, 0.2):
                assert abs(_endo_radial_motion(m, centre + d * p["regional_extent_deg"], z, frame)) < 1e-9
        opposite = _endo_radial_motion(m, centre + 180.0, z, m.es_frame)
        assert opposite < -1.5, opposite
        if ph.config.dim == 2:
            # the core neither shortens nor thickens
            assert p["regional_peak_circumferential_strain"] == pytest.approx(0.0, abs=1e-12)
            assert p["regional_peak_radial_strain"] == pytest.approx(0.0, abs=1e-12)


def test_dyskinetic_segment_bulges_out(dyskinetic2):
    m, p, g = dyskinetic2.motion, dyskinetic2.params, dyskinetic2.motion.geometry
    out = _endo_radial_motion(m, p["regional_centre_deg"], 0.0, m.es_frame)
    k = p["cavity_area_shrink"]
    assert out == pytest.approx(g.endo_radius_mm * (math.sqrt(1.0 + 0.3 * k) - 1.0), abs=1e-9)
    assert out > 0.2 and _endo_radial_motion(m, p["regional_centre_deg"] + 180.0, 0.0, m.es_frame) < -1.0
    # the segment's wall stretches along the circumference and thins
    assert p["regional_peak_circumferential_strain"] > 0.0 > p["regional_peak_radial_strain"]
    # the local blood-pool area grows by k |s| in the core
    c = np.array([*g.center_mm, 0.0])
    a = math.radians(p["regional_centre_deg"])
    det = m.jacobian_determinant(c[None] + [[5.0 * math.cos(a), 5.0 * math.sin(a), 0.0]], m.es_frame)
    assert det[0] == pytest.approx(1.0 + 0.3 * k, abs=1e-6)


@pytest.mark.parametrize("fixture", ["akinetic2", "dyskinetic2", "akinetic3"])
def test_ef_is_the_true_ef(fixture, request):
    """``ef`` includes the segment: the angular mean of the cavity shrink by quadrature (and in
    3D the longitudinal factor) matches it, and so does the EF of the rendered labels: within 2
    points in 2D (partial volume of a 1.6 mm grid; measured 0.1 and 0.6), within 3 in 3D, where
    the labels of the base and apex read 1.5-2 points high with or without a segment (so the
    segment's effect is checked against the same heart without it: measured 0.2 points apart)."""
    ph = request.getfixturevalue(fixture)
    p, m, cfg = ph.params, ph.motion, ph.config
    th = np.linspace(-math.pi, math.pi, 20001)[:-1]
    g = m.lv_stage.motion_scale(np.exp(1j * th))
    lam = 1.0 - p.get("base_descent_mm", 0.0) / m.geometry.long_axis_mm if cfg.dim == 3 else 1.0
    assert 1.0 - lam * (1.0 - p["cavity_area_shrink"] * g.mean()) == pytest.approx(p["ef"], abs=1e-6)
    assert p["ef"] < p["ef_global_drawn"]
    json.dumps(p)  # the manifest stores it
    lv = (ph.labels == 3).reshape(-1, cfg.n_frames).sum(axis=0)
    ef_labels = 1.0 - lv[p["es_frame"]] / lv[p["ed_frame"]]
    assert ef_labels == pytest.approx(p["ef_labels"])
    if cfg.dim == 2:
        assert ef_labels == pytest.approx(p["ef"], abs=0.02), (ef_labels, p["ef"])
    else:
        assert ef_labels == pytest.approx(p["ef"], abs=0.03), (ef_labels, p["ef"])
        off = make_phantom(PhantomConfig(**THIN_3D, **FAILING_3D), seed=1).params
        assert ef_labels - off["ef_labels"] == pytest.approx(p["ef"] - off["ef"], abs=0.005)


def test_segment_weight_takes_its_share_of_the_circumference():
    th = np.linspace(-math.pi, math.pi, 200001)[:-1]
    for extent_deg in (30.0, 60.0, 120.0, 240.0):
        e = math.radians(extent_deg)
        w = segment_weight(th, e)
        assert w.mean() == pytest.approx(extent_deg / 360.0, abs=1e-5)
        assert segment_weight(0.5 * e, e) == pytest.approx(0.5) and segment_weight(0.25 * e, e) == 1.0
        assert segment_weight(0.75 * e, e) == 0.0


def test_synth_command_draws_regional_abnormalities(tmp_path, capsys) -> None:
    import json

    from cardioinr.app.cli import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "1", "--ef", "0.2,0.3", "--regional", "0"]) == 0
    case = json.loads((tmp_path / "s" / "manifest.json").read_text())["cases"][0]["params"]
    assert case["regional_motion_scale"] == 0.0 and 0.2 <= case["ef_global_drawn"] <= 0.3
    assert case["ef"] < case["ef_global_drawn"]  # the akinetic segment lowers the true EF
    assert main(["synth", "--out", str(tmp_path / "t"), "--regional", "a,b"]) == 2
    assert "--regional 'a,b': expected a number or LO,HI" in capsys.readouterr().err
