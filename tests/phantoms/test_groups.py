"""Phantom groups (hypertrophic, dilated, post-infarct, abnormal RV) and ED/ES pairs: each group
draws the hearts it names, the strong contraction of a hypertrophic heart stays an exact,
invertible map, the basal RV is triangular, and a pair is the cine's two frames with their
labels and truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cardioinr.core.errors import ConfigError
from cardioinr.phantoms import make_phantom
from cardioinr.phantoms.anatomy import _in_hull
from cardioinr.phantoms.config import PhantomConfig
from cardioinr.phantoms.draw import draw_motion
from cardioinr.phantoms.groups import GROUPS, HEALTHY_RV, ed_es_pair, group_config

FAST = dict(noise_sigma=0.0, supersample=1, z_supersample=1)


def _draws(group: str, dim: int, n: int = 12) -> list[dict]:
    cfg = group_config(group, dim)
    return [draw_motion(cfg, np.random.default_rng(s))[1] for s in range(n)]


@pytest.mark.parametrize("dim", [2, 3])
def test_each_group_draws_the_hearts_it_names(dim: int) -> None:
    normal, hyp, dil, inf, rv = (_draws(g, dim) for g in ("normal", "hypertrophic", "dilated", "infarct", "rv"))
    for p in hyp:
        assert 0.70 <= p["ef"] <= 0.85 and 12.0 <= p["wall_thickness_mm"] <= 20.0
    # the ES cavity keeps 15-30 % of its volume: the wall next to it is stretched beyond the
    # default draw's limit (1.9) in some of them
    stretch = [p["endo_radius_mm"] / p["endo_radius_es_mm"] / (1.0 + p.get("peak_longitudinal_strain", 0.0)) for p in hyp]
    assert max(stretch) > 2.0 and max(stretch) <= 3.0 + 1e-9
    for p in dil:
        assert 0.15 <= p["ef"] <= 0.35 and p["endo_radius_mm"] >= 27.0 and p["wall_thickness_mm"] <= 10.0
    for p in inf:
        assert p["regional_motion_scale"] <= 0.2 + 1e-9 or p["regional_motion_scale"] > p["regional_motion_scale_drawn"]
        assert p["ef"] < p["ef_global_drawn"]  # the segment takes its share of the EF
    assert np.mean([p["rv_width_mm"] for p in rv]) > np.mean([p["rv_width_mm"] for p in normal]) + 5.0
    assert max(p["rv_shortening"] for p in rv) <= 0.25 < min(p["rv_shortening"] for p in normal)


@pytest.mark.parametrize("dim", [2, 3])
def test_hypertrophic_contraction_is_an_exact_invertible_map(dim: int) -> None:
    cfg = group_config("hypertrophic", dim, **FAST)
    motion, params = draw_motion(cfg, np.random.default_rng(4))
    g = motion.geometry
    rng = np.random.default_rng(0)
    z = rng.uniform(g.z_base_mm, g.z_apex_mm, 4000) if dim == 3 else np.zeros(4000)
    ang, rad = rng.uniform(0, 2 * np.pi, 4000), rng.uniform(0, g.epi_radius_mm + 10.0, 4000)
    X = np.stack([g.center_mm[0] + rad * np.cos(ang), g.center_mm[1] + rad * np.sin(ang), z], 1)
    x = motion.forward(X, motion.es_frame)
    np.testing.assert_allclose(motion.inverse(x, motion.es_frame), X, atol=1e-6)
    # the cavity at ES is what the EF says (2D: area; the equatorial slice in 3D)
    ph = make_phantom(group_config("hypertrophic", 2, **FAST), 4)
    assert abs(ph.params["ef_labels"] - ph.params["ef"]) < 0.02


def test_unknown_group_is_a_config_error_and_defaults_are_unchanged() -> None:
    with pytest.raises(ConfigError, match="unknown phantom group"):
        group_config("athlete")
    with pytest.raises(ConfigError, match="max_endo_stretch"):
        PhantomConfig(max_endo_stretch=0.5)
    assert "max_endo_stretch" not in PhantomConfig().to_dict()  # old manifests stay what they were
    assert group_config("normal") == PhantomConfig(**HEALTHY_RV)  # the defaults but the RV
    assert set(GROUPS) == {"normal", "hypertrophic", "dilated", "infarct", "rv"}


def test_pair_is_the_cines_ed_and_es_frames() -> None:
    cine = make_phantom(PhantomConfig(ed_frame=3, n_frames=12, **FAST), 7)
    es = cine.motion.es_frame
    pair = ed_es_pair(cine)
    seq = pair.sequence
    assert seq.n_frames == 2 and seq.ref_frame == 0 and seq.meta["es_frame"] == 1
    np.testing.assert_array_equal(seq.image[..., 0], cine.sequence.image[..., 3])
    np.testing.assert_array_equal(seq.image[..., 1], cine.sequence.image[..., es])
    np.testing.assert_array_equal(seq.labels[1], cine.sequence.labels[es])
    np.testing.assert_array_equal(pair.displacement[..., 1, :], cine.displacement[..., es, :])
    assert not pair.displacement[..., 0, :].any()
    assert pair.params["pair_frames"] == [3, es]


def test_synth_command_writes_a_group(tmp_path, capsys) -> None:
    import json

    from cardioinr.app.cli import main

    assert main(["synth", "--out", str(tmp_path / "h"), "--n", "1", "--group", "hypertrophic"]) == 0
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    p = manifest["cases"][0]["params"]
    assert 0.70 <= p["ef"] <= 0.85 and 12.0 <= p["wall_thickness_mm"] <= 20.0
    assert manifest["config"]["max_endo_stretch"] == 3.0
    assert main(["synth", "--out", str(tmp_path / "x"), "--group", "athlete"]) == 2
    assert "unknown phantom group 'athlete'" in capsys.readouterr().err


# -- the right ventricle ----------------------------------------------------------------------


def test_healthy_rv_ejects_40_to_65_percent_and_the_abnormal_rv_less() -> None:
    """RV EF from the labels (as a reader measures it) of a healthy RV lies in the normal range
    (40-65 %) on a mid-ventricular slice and on a 10 mm stack; the abnormal-RV group's is below."""
    stack = dict(shape=(96, 96, 6), spacing=(1.6, 1.6, 10.0))
    for dim, kw in ((2, {}), (3, stack)):
        for seed in (31000, 31002):
            ef = make_phantom(group_config("normal", dim, **FAST, **kw), seed).params["rv_ef_labels"]
            assert 0.38 <= ef <= 0.65, (dim, seed, ef)
            assert make_phantom(group_config("rv", dim, **FAST, **kw), seed).params["rv_ef_labels"] < 0.37


def test_healthy_rv_descends_farther_than_the_lv_base_with_an_exact_fold_free_map() -> None:
    """In 3D the RV free wall moves toward the apex 1.3-2 times as far as the LV wall at the base
    (TAPSE against MAPSE), the map stays exact and invertible, and no voxel folds."""
    cfg = group_config("normal", 3, shape=(96, 96, 6), spacing=(1.6, 1.6, 10.0), **FAST)
    ph = make_phantom(cfg, 31000)
    m, g = ph.motion, ph.motion.geometry
    es = m.es_frame
    c, e = np.asarray(g.center_mm), np.asarray(g.rv_direction)
    z = g.z_base_mm + 1.0
    lv_wall = np.r_[c - e * (g.epi_radius_mm - 2.0), z]
    free_wall = np.r_[c + e * (g.epi_radius_mm + g.rv_width_mm + 0.5 * g.rv_wall_mm), z]
    X = np.stack([lv_wall, free_wall])
    assert list(g.tissue(X)) == [2, 4]  # LV myocardium, RV free wall
    dz = (m.forward(X, es) - X)[:, 2]
    assert 1.3 <= dz[1] / dz[0] <= 2.0, dz
    rng = np.random.default_rng(0)
    P = np.stack([rng.uniform(0, 96 * 1.6, 5000), rng.uniform(0, 96 * 1.6, 5000), rng.uniform(0, 60.0, 5000)], 1)
    for t in (es, es // 2):
        np.testing.assert_allclose(m.inverse(m.forward(P, t), t), P, atol=1e-6)
    u = ph.displacement
    grads = [np.gradient(u[..., c_], *cfg.spacing, axis=(0, 1, 2)) for c_ in range(3)]
    J = np.stack([np.stack(gr, -1) for gr in grads], -2) + np.eye(3)
    assert np.linalg.det(J).min() > 0.2


def test_rv_descent_gain_is_drawn_last_and_off_by_default() -> None:
    """The RV's own long-axis motion leaves a seed's other draws as they were, and the default
    config does not draw it (phantoms drawn before stay bit for bit the same)."""
    base = PhantomConfig(dim=3, rv_shortening_range=(0.55, 0.65))
    with_gain = PhantomConfig(dim=3, rv_shortening_range=(0.55, 0.65), rv_descent_gain_range=(1.0, 1.5))
    _, p0 = draw_motion(base, np.random.default_rng(5))
    _, p1 = draw_motion(with_gain, np.random.default_rng(5))
    assert "rv_descent_gain" not in p0 and 1.0 <= p1.pop("rv_descent_gain") <= 1.5
    assert p0 == p1
    assert "rv_descent_gain_range" not in PhantomConfig().to_dict()
    with pytest.raises(ConfigError, match="rv_descent_gain_range"):
        PhantomConfig(dim=3, rv_descent_gain_range=(0.0, 3.0))


# -- the triangular basal RV ------------------------------------------------------------------


def test_in_hull_of_two_discs_matches_the_union_of_interpolated_discs() -> None:
    """The closed-form hull test against the hull as the union of the discs interpolated between
    the two (dense in s), on random discs and points away from the boundary."""
    rng = np.random.default_rng(3)
    n = 2000
    c1, c2 = rng.uniform(-20, 20, (n, 2)), rng.uniform(-20, 20, (n, 2))
    r1, r2 = rng.uniform(5, 15, n), rng.uniform(0.5, 6, n)
    p = rng.uniform(-25, 25, (n, 2))
    s = np.linspace(0.0, 1.0, 2001)[None, :, None]
    c = c1[:, None] + s * (c2 - c1)[:, None]
    gap = (np.linalg.norm(p[:, None] - c, axis=2) - (r1[:, None] + s[..., 0] * (r2 - r1)[:, None])).min(axis=1)
    clear = np.abs(gap) > 1e-3
    assert clear.sum() > 1900 and 0.1 < (gap < 0).mean() < 0.9
    got = _in_hull(p, c1, r1, c2, r2)
    np.testing.assert_array_equal(got[clear], (gap < 0)[clear])


def test_basal_rv_is_triangular_and_a_crescent_from_mid_ventricle() -> None:
    """A group heart's RV has its corner where the geometry puts it at the base (the cavity ends
    ``rv_corner_mm`` beyond the crescent's rim on the corner's ray), the ray widths the motion uses
    end where the labels do, and from mid-ventricle down the tissue is the crescent's."""
    ph = make_phantom(group_config("normal", 3, shape=(96, 96, 6), spacing=(1.6, 1.6, 10.0), **FAST), 31000)
    g = ph.motion.geometry
    assert g.rv_corner_mm == pytest.approx(ph.params["rv_corner_mm"]) and 4.0 <= g.rv_corner_mm <= 10.0
    crescent = replace(g, rv_corner_mm=0.0)
    c = np.asarray(g.center_mm)
    a = np.radians(g.rv_corner_deg)
    e = np.asarray(g.rv_direction)
    v = np.array([e[0] * np.cos(a) - e[1] * np.sin(a), e[0] * np.sin(a) + e[1] * np.cos(a)])
    z = g.z_base_mm + 0.5
    r = np.arange(0.0, 90.0, 0.02)
    ray = np.c_[c[0] + r * v[0], c[1] + r * v[1], np.full(r.size, z)]
    end, end0 = r[g.tissue(ray) == 1].max(), r[crescent.tissue(ray) == 1].max()
    assert end - end0 == pytest.approx(float(g.rv_corner_reach(np.array([z]))[0]), abs=0.05)
    assert g.rv_corner_reach(np.array([z]))[0] > 0.95 * g.rv_corner_mm
    # ray widths (the RV motion's) agree with the labels on every ray that crosses the RV
    ang = np.radians(np.arange(0.0, 360.0, 3.0))
    u = np.stack([np.cos(ang), np.sin(ang)], 1)
    zz = np.full(len(ang), z)
    w = g.rv_ray_width(u, zz)
    R = np.sqrt(g.epi_r2(zz)) + w
    on = w > 1.0
    inside = np.c_[c + (R - 0.05)[:, None] * u, zz][on]
    outside = np.c_[c + (R + 0.05)[:, None] * u, zz][on]
    assert on.sum() >= 20
    assert np.all(g.tissue(inside) == 1) and not np.any(g.tissue(outside) == 1)
    # mid-ventricle and below: the crescent's tissue, point for point
    rng = np.random.default_rng(0)
    z_mid = g.z_base_mm + 0.5 * (g.z_apex_mm - g.z_base_mm)
    P = np.c_[c[0] + rng.uniform(-60, 60, 20000), c[1] + rng.uniform(-60, 60, 20000), rng.uniform(z_mid, g.z_apex_mm, 20000)]
    np.testing.assert_array_equal(g.tissue(P), crescent.tissue(P))
    assert (g.tissue(ray) == 1).sum() > (crescent.tissue(ray) == 1).sum()


def test_rv_corner_is_drawn_last_and_off_by_default() -> None:
    """The corner leaves a seed's other draws as they were (the RV shortening at most lowered to
    the gradient bound of the wider RV); the default config draws none; 2D hearts have none."""
    base = PhantomConfig(dim=3, **{**HEALTHY_RV, "rv_corner_mm_range": None})
    tri = PhantomConfig(dim=3, **HEALTHY_RV)
    _, p0 = draw_motion(base, np.random.default_rng(5))
    _, p1 = draw_motion(tri, np.random.default_rng(5))
    assert "rv_corner_mm" not in p0 and 4.0 <= p1.pop("rv_corner_mm") <= 10.0
    assert -30.0 <= p1.pop("rv_corner_deg") <= 30.0
    assert p1.pop("rv_shortening") <= p0.pop("rv_shortening")
    assert p1.pop("rv_free_wall_motion_mm") <= p0.pop("rv_free_wall_motion_mm")
    assert p0 == p1
    assert "rv_corner_mm_range" not in PhantomConfig().to_dict()
    _, p2 = draw_motion(PhantomConfig(dim=2, **HEALTHY_RV), np.random.default_rng(5))
    assert "rv_corner_mm" not in p2
    with pytest.raises(ConfigError, match="rv_corner_mm_range"):
        PhantomConfig(dim=3, rv_corner_mm_range=(0.0, 30.0))
