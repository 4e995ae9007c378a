"""Long-axis views of the 3D phantom and breath-hold misalignment (:mod:`cardioinr.phantoms.views`):
the views see the same heart as the stack at shared world points, the 4CH plane holds the long
axis and the RV, shifts follow the documented convention, studies are reproducible and adding
views leaves the stack alone, and ``synth --views`` writes the files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardioinr.app.cli import main
from cardioinr.geometry import Grid
from cardioinr.io import phase_to_sax_frame
from cardioinr.phantoms import (
    PhantomConfig,
    lax_view_grid,
    make_phantom,
    make_phantom_study,
    render_view,
)

# small and fast: 48 x 48 x 6 at 2.2 mm (the in-plane field of view must reach 100 mm)
CFG = PhantomConfig(dim=3, shape=(48, 48, 6), spacing=(2.2, 2.2, 8.0), n_frames=6, supersample=1, z_supersample=2)
# one sample per voxel and no noise: a view's pixel and a stack voxel at one point must then agree exactly
CFG_EXACT = PhantomConfig(dim=3, shape=(48, 48, 6), spacing=(2.2, 2.2, 8.0), n_frames=6, supersample=1,
                          z_supersample=1, noise_sigma=0.0)
SEED = 4


@pytest.fixture(scope="module")
def study():
    return make_phantom_study(CFG, SEED, views=("2ch", "4ch"), lax_frames=8)


@pytest.fixture(scope="module")
def study_misaligned():
    return make_phantom_study(CFG, SEED, views=("2ch", "4ch"), lax_frames=8, misalign_mm=4.0)


def _sax_plane_grid(j0: int) -> Grid:
    """A single-slice grid whose pixel (a, b) is the centre of stack voxel (a, j0, b): the plane
    j = j0 of the stack, axis 0 along i and axis 1 along k (the long axis), as a LAX view's."""
    sx, sy, sz = CFG_EXACT.spacing
    aff = np.zeros((4, 4))
    aff[:3, 0] = (sx, 0.0, 0.0)
    aff[:3, 1] = (0.0, 0.0, sz)
    aff[:3, 2] = (0.0, sy, 0.0)
    aff[:3, 3] = (0.0, j0 * sy, 0.0)
    aff[3, 3] = 1.0
    return Grid((CFG_EXACT.shape[0], CFG_EXACT.shape[2], 1), aff)


# ---------------------------------------------------------------------------------------------
# (a) one heart: views and stack agree at shared world points
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1, 2])
def test_view_agrees_with_the_stack_where_pixels_are_voxels(ratio):
    ph = make_phantom(CFG_EXACT, SEED)
    j0 = round(ph.motion.geometry.center_mm[1] / CFG_EXACT.spacing[1])
    grid = _sax_plane_grid(j0)
    T = CFG_EXACT.n_frames
    seq, truth = render_view(ph, grid, n_frames=ratio * T, view="test", supersample=1, slab_samples=1)
    assert seq.image.shape == (48, 6, 1, ratio * T) and truth.shape == (48, 6, 1, ratio * T, 3)
    for t in range(T):
        tv = ratio * t  # same phase: view frame ratio * t is stack frame t
        assert float(phase_to_sax_frame(np.array([tv]), seq, ph.sequence)[0]) == pytest.approx(t)
        sax_lab = ph.sequence.labels[t][:, j0, :]
        assert np.count_nonzero(sax_lab == 3) > 0
        np.testing.assert_array_equal(seq.labels[tv][:, :, 0], sax_lab)
        world = grid.mm_vectors_to_world(truth[:, :, 0, tv].astype(np.float64))
        np.testing.assert_allclose(world, ph.displacement[:, j0, :, t], atol=1e-5)
        np.testing.assert_allclose(seq.image[:, :, 0, tv], ph.sequence.image[:, j0, :, t], atol=1e-6)
    assert np.abs(truth).max() > 1.0


def test_oblique_view_is_the_phantom_at_its_pixel_centres(study):
    ph, seq = study.phantom, study.study.lax["4ch"]
    truth = study.view_truth["4ch"]
    grid, motion = seq.grid, ph.motion
    world = grid.voxel_to_world(np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1))
    world = world.reshape(-1, 3)
    T, Tv = ph.sequence.n_frames, seq.n_frames
    for tv in range(Tv):
        t = float(phase_to_sax_frame(np.array([tv]), seq, ph.sequence)[0])
        lab = motion.geometry.labels(motion.inverse(world, t))
        np.testing.assert_array_equal(seq.labels[tv].reshape(-1), lab)
        u = grid.mm_vectors_to_world(truth[:, :, 0, tv].reshape(-1, 3).astype(np.float64))
        np.testing.assert_allclose(u, motion.forward(world, t) - world, atol=1e-5)
    assert seq.frame_interval_ms == pytest.approx(ph.sequence.frame_interval_ms * T / Tv)
    assert seq.ref_frame == 0 and seq.meta["view"] == "4ch"
    assert np.all(truth[..., 0, :] == 0)  # exactly 0 at ED


# ---------------------------------------------------------------------------------------------
# (b) view planes
# ---------------------------------------------------------------------------------------------


def test_four_chamber_plane_holds_the_long_axis_and_the_rv(study):
    geom = study.phantom.motion.geometry
    grid = study.study.lax["4ch"].grid
    R = grid.rotation
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)  # orthogonal axes
    np.testing.assert_allclose(R[:, 1], [0.0, 0.0, 1.0], atol=1e-12)  # axis 1: base to apex
    normal = R[:, 2]
    rv = np.array([*geom.rv_direction, 0.0])
    assert abs(normal @ rv) < 1e-12 and R[:, 0] @ rv > 0.999
    origin = grid.affine[:3, 3]
    for z in (0.0, 20.0, 40.0):  # points of the long axis lie in the plane
        assert abs(normal @ (np.array([*geom.center_mm, z]) - origin)) < 1e-9
    # RV labelled on the RV side of the LV axis, over several pixels
    lab = study.study.lax["4ch"].labels[0][:, :, 0]
    u_axis = grid.world_to_voxel(np.array([*geom.center_mm, 0.0]))[0]
    rv_u = np.nonzero(lab == 1)[0]
    assert rv_u.size > 5 and np.all(rv_u > u_axis)
    # the 2CH plane is the 4CH plane turned 90 degrees about the long axis
    R2 = study.study.lax["2ch"].grid.rotation
    assert abs(R2[:, 0] @ R[:, 0]) < 1e-12 and R2[:, 1] @ R[:, 1] == pytest.approx(1.0)
    g3 = lax_view_grid(geom, study.phantom.sequence.grid, "3ch")
    assert g3.rotation[:, 0] @ R[:, 0] == pytest.approx(np.cos(np.radians(135.0)))
    assert grid.spacing == pytest.approx([1.8, 1.8, 8.0])
    # the field of view covers the stack's z range plus margin
    ks = grid.voxel_to_world(np.array([[0, 0, 0], [0, grid.shape[1] - 1, 0]]))[:, 2]
    assert ks[0] < -4.0 - 5.0 and ks[1] > 44.0 + 5.0


# ---------------------------------------------------------------------------------------------
# (c) misalignment
# ---------------------------------------------------------------------------------------------


def test_shifts_bounded_and_gauge_fixed(study, study_misaligned):
    s = study_misaligned.shifts
    assert set(s) == {"sax", "2ch", "4ch"} and s["sax"].shape == (6, 2)
    np.testing.assert_allclose(s["sax"].mean(axis=0), 0.0, atol=1e-12)
    assert np.all(np.linalg.norm(s["sax"], axis=1) <= 8.0) and np.linalg.norm(s["sax"], axis=1).max() > 0.5
    for v in ("2ch", "4ch"):
        assert 0 < np.linalg.norm(s[v]) <= 4.0
        assert study_misaligned.study.lax[v].meta["shift_mm"] == pytest.approx(list(s[v]))
    assert all(np.all(v == 0) for v in study.shifts.values())
    # the truth stays on the aligned grids
    np.testing.assert_array_equal(study_misaligned.phantom.displacement, study.phantom.displacement)
    for v in ("2ch", "4ch"):
        np.testing.assert_array_equal(study_misaligned.view_truth[v], study.view_truth[v])
    assert not np.array_equal(study_misaligned.study.sax.image, study.study.sax.image)


def test_misaligned_labels_show_the_anatomy_at_p_minus_s(study_misaligned):
    ps = study_misaligned
    ph, motion = ps.phantom, ps.phantom.motion
    sax = ph.sequence
    pts = sax.grid.points_mm()
    for t in (0, 2):
        for z in (1, 3):
            p = pts[:, :, z].reshape(-1, 3).copy()
            p[:, :2] -= ps.shifts["sax"][z]
            np.testing.assert_array_equal(sax.labels[t][:, :, z].reshape(-1),
                                          motion.geometry.labels(motion.inverse(p, t)))
    seq = ps.study.lax["4ch"]
    q = seq.grid.points_mm().reshape(-1, 3)
    q[:, :2] -= ps.shifts["4ch"]
    tv = 3
    t = float(phase_to_sax_frame(np.array([tv]), seq, sax)[0])
    np.testing.assert_array_equal(seq.labels[tv].reshape(-1),
                                  motion.geometry.labels(motion.inverse(seq.grid.mm_to_world(q), t)))


def test_integer_pixel_shift_translates_the_slice():
    sx, sy, _ = CFG.spacing
    shifts = np.zeros((CFG.shape[2], 2))
    shifts[2] = (2 * sx, -1 * sy)  # content moves +2 pixels along i, -1 along j
    aligned = make_phantom(CFG, SEED)
    moved = make_phantom(CFG, SEED, slice_shifts_mm=shifts)
    for t in range(CFG.n_frames):
        a, m = aligned.sequence.labels[t], moved.sequence.labels[t]
        np.testing.assert_array_equal(m[2:, :-1, 2], a[:-2, 1:, 2])  # m(p) = a(p - s)
        np.testing.assert_array_equal(m[..., 3], a[..., 3])  # other slices untouched
        assert np.count_nonzero(m[..., 2] == 2) > 0
    np.testing.assert_array_equal(moved.displacement, aligned.displacement)
    # a LAX view the same way, along its own axes
    grid = lax_view_grid(aligned.motion.geometry, aligned.sequence.grid, "4ch")
    a_seq, a_tr = render_view(aligned, grid, 4, noise_seed=1)
    m_seq, m_tr = render_view(aligned, grid, 4, (2 * 1.8, 1.8), noise_seed=1)
    for t in range(4):
        np.testing.assert_array_equal(m_seq.labels[t][2:, 1:], a_seq.labels[t][:-2, :-1])
    np.testing.assert_array_equal(m_tr, a_tr)


# ---------------------------------------------------------------------------------------------
# (d) reproducibility; the stack does not see the views
# ---------------------------------------------------------------------------------------------


def test_study_reproducible_and_stack_independent_of_views(study, study_misaligned):
    ref = make_phantom(CFG, SEED)
    np.testing.assert_array_equal(study.study.sax.image, ref.sequence.image)
    np.testing.assert_array_equal(study.phantom.labels, ref.labels)
    np.testing.assert_array_equal(study.phantom.displacement, ref.displacement)
    again = make_phantom_study(CFG, SEED, views=("2ch", "4ch"), lax_frames=8)
    for v in ("2ch", "4ch"):
        np.testing.assert_array_equal(again.study.lax[v].image, study.study.lax[v].image)
        np.testing.assert_array_equal(again.view_truth[v], study.view_truth[v])
    one = make_phantom_study(CFG, SEED, views=("4ch",), lax_frames=8, misalign_mm=4.0)
    np.testing.assert_array_equal(one.study.sax.image, study_misaligned.study.sax.image)
    np.testing.assert_array_equal(one.shifts["sax"], study_misaligned.shifts["sax"])
    np.testing.assert_array_equal(one.shifts["4ch"], study_misaligned.shifts["4ch"])
    np.testing.assert_array_equal(one.study.lax["4ch"].image, study_misaligned.study.lax["4ch"].image)
    none = make_phantom_study(CFG, SEED, views=(), lax_frames=8)
    np.testing.assert_array_equal(none.study.sax.image, ref.sequence.image)
    assert none.study.view_names == ["sax"]
    other = make_phantom_study(CFG, SEED + 1, views=("4ch",), lax_frames=8)
    assert not np.array_equal(other.study.lax["4ch"].image, study.study.lax["4ch"].image)


def test_bad_requests_are_config_errors():
    from cardioinr.core.errors import ConfigError

    with pytest.raises(ConfigError, match="view"):
        make_phantom_study(CFG, 0, views=("5ch",))
    with pytest.raises(ConfigError, match="3D"):
        make_phantom_study(PhantomConfig(dim=2), 0)
    with pytest.raises(ConfigError, match="misalign"):
        make_phantom_study(CFG, 0, misalign_mm=-1.0)


# ---------------------------------------------------------------------------------------------
# (e) synth --views
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_configs(monkeypatch):
    """``synth`` with the small test configs (its group machinery is tested elsewhere)."""
    from cardioinr.phantoms import groups

    small2 = PhantomConfig(dim=2, shape=(64, 64, 1), spacing=(1.8, 1.8, 8.0), n_frames=5, supersample=1)
    monkeypatch.setattr(groups, "group_config", lambda group, dim, **kw: CFG if dim == 3 else small2)


def test_synth_writes_study_folders(tmp_path: Path, small_configs):
    out = tmp_path / "set"
    rc = main(["synth", "--out", str(out), "--n", "1", "--dim", "3", "--seed", "2",
               "--views", "sax,2ch,4ch", "--misalign", "3"])
    assert rc == 0
    case = out / "case000"
    for stem in ("sa", "la_2ch", "la_4ch"):
        img = nib.load(case / f"{stem}.nii.gz")
        seg = nib.load(case / f"seg_{stem}.nii.gz")
        truth = nib.load(case / f"truth_{stem}.nii.gz")
        assert seg.shape == img.shape and truth.shape == (*img.shape, 3)
        np.testing.assert_allclose(seg.affine, img.affine)
    assert nib.load(case / "la_4ch.nii.gz").shape[2] == 1
    record = json.loads((case / "truth.json").read_text())
    assert set(record["shifts_mm"]) == {"sax", "2ch", "4ch"} and len(record["shifts_mm"]["sax"]) == 6
    assert record["params"]["misalign_mm"] == 3.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["views"] == ["sax", "2ch", "4ch"]
    assert manifest["cases"][0]["views"]["4ch"]["image"] == "case000/la_4ch.nii.gz"
    ps = make_phantom_study(CFG, (2, 0), views=("2ch", "4ch"), misalign_mm=3.0)
    np.testing.assert_allclose(np.asarray(nib.load(case / "la_2ch.nii.gz").dataobj), ps.study.lax["2ch"].image)


def test_synth_without_views_is_unchanged_and_bad_views_fail(tmp_path: Path, small_configs, capsys):
    assert main(["synth", "--out", str(tmp_path / "a"), "--n", "1", "--dim", "2"]) == 0
    assert (tmp_path / "a" / "case000_4d.nii.gz").is_file() and not (tmp_path / "a" / "case000").exists()
    for args, msg in ((["--dim", "2", "--views", "sax,4ch"], "--dim 3"),
                      (["--dim", "2", "--misalign", "2"], "--dim 3"),
                      (["--dim", "3", "--views", "sax,5ch"], "--views")):
        capsys.readouterr()
        assert main(["synth", "--out", str(tmp_path / "b"), "--n", "1", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err
