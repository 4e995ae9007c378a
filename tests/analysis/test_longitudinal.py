"""Clinical GLS (midwall line length change) against analytic references: a cylindrical LV under a
uniform longitudinal stretch, rigid motions, a long-axis horseshoe and the 3D phantom's truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from cardioinr.analysis.longitudinal import LAX_SEGMENTS, lax_gls, midwall_gls
from cardioinr.analysis.strain import CSV_COLUMNS, GLS_MIDWALL, analyse_displacement
from cardioinr.core.errors import InputError
from cardioinr.outputs.tables import read_strain_csv, write_strain_csv
from cardioinr.phantoms import PhantomConfig, make_phantom

SP3 = np.array([3.0, 3.0, 8.0])
Z_APEX = 64.0  # mm, the apical-most slice (k = 8) of the cylinder


def cylinder_lv(cap: bool = False) -> np.ndarray:
    """Labels ``(40, 40, 10)`` on a 3 x 3 x 8 mm grid: LV cavity r < 20 mm inside a myocardium
    20 <= r < 30 mm on slices 1..8, a small RV blob on the -i side; ``cap`` closes slice 9 with
    myocardium (an apical cap beyond the cavity)."""
    i, j, k = np.meshgrid(np.arange(40), np.arange(40), np.arange(10), indexing="ij")
    x, y = i * SP3[0] - 60.3, j * SP3[1] - 59.7  # off-grid centre: sub-voxel radii are exercised
    r = np.hypot(x, y)
    lab = np.zeros((40, 40, 10), np.uint8)
    body = (k >= 1) & (k <= 8)
    lab[body & (r < 30)] = 2
    lab[body & (r < 20)] = 3
    lab[body & (np.hypot(x + 38, y) < 7)] = 1
    if cap:
        lab[(k == 9) & (r < 30)] = 2
    return lab


def grid_points(shape: tuple[int, ...], sp: np.ndarray) -> np.ndarray:
    """``shape + (D,)`` voxel centres, mm."""
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) * sp


def stretch_z(shape: tuple[int, ...], eps: float, n_t: int = 4) -> np.ndarray:
    """``(X, Y, Z, T, 3)``: ``u_z = eps_t (z - Z_APEX)``, ``eps_t`` from 0 to ``eps``."""
    z = grid_points(shape, SP3)[..., 2]
    disp = np.zeros(shape + (n_t, 3))
    for t in range(n_t):
        disp[..., t, 2] = eps * t / (n_t - 1) * (z - Z_APEX)
    return disp


def test_uniform_longitudinal_stretch_of_a_cylinder_is_exact():
    lab = cylinder_lv()
    res = midwall_gls(lab, stretch_z(lab.shape, -0.15), SP3)
    assert res.apex_point is None and len(res.lines) == 24
    assert all(len(ln) == 8 for ln in res.lines)  # one midwall point per slice
    # the midwall radius is interpolated sub-voxel: halfway between 20 and 30 mm, up to the
    # discretisation of the labels on 3 mm voxels
    centre = np.array([60.3, 59.7])
    radii = np.concatenate([np.hypot(*(ln[:, :2] - centre).T) for ln in res.lines])
    assert np.allclose(radii, 25.0, atol=1.0)
    assert np.allclose(100 * res.gls, [0, -5, -10, -15], atol=0.2)
    assert abs(res.peak_pct + 15.0) < 0.2 and res.peak()[1] == 3
    assert np.allclose(res.gls_total, res.gls, atol=1e-9)
    peaks = res.segment_peaks_pct()
    assert sorted(peaks) == [f"aha{s:02d}" for s in range(1, 17)]
    assert np.allclose(list(peaks.values()), -15.0, atol=0.2)


def test_apical_cap_is_segment_17():
    lab = cylinder_lv(cap=True)
    res = midwall_gls(lab, stretch_z(lab.shape, -0.15), SP3)
    assert res.apex_point is not None and abs(res.apex_point[2] - 72.0) < 1e-9
    assert 17 in res.segment_strain and all(ln.shape[0] == 9 for ln in res.lines)
    # the cap edge (25 mm across, 8 mm down) barely shortens under a pure z stretch; the
    # slice-to-slice edges shorten by exactly 15 %
    assert -3.0 < 100 * res.segment_strain[17][-1] < 0.0
    assert np.allclose([100 * res.segment_strain[s][-1] for s in range(1, 17)], -15.0, atol=0.2)
    assert -15.0 < res.peak_pct < -10.0


def test_zero_and_rigid_motion_give_zero():
    lab = cylinder_lv(cap=True)
    zero = midwall_gls(lab, np.zeros(lab.shape + (3, 3)), SP3)
    assert np.all(zero.gls == 0.0) and all(np.all(c == 0.0) for c in zero.segment_strain.values())
    # a rotation of 12 degrees about an oblique axis plus a translation (trilinear interpolation
    # of a linear field is exact, so the lines move rigidly)
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    a = math.radians(12.0)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * K @ K
    x = grid_points(lab.shape, SP3)
    c = np.array([60.0, 60.0, 40.0])
    disp = np.zeros(lab.shape + (2, 3))
    disp[..., 1, :] = (x - c) @ R.T + c + np.array([2.0, -3.0, 4.0]) - x
    rig = midwall_gls(lab, disp, SP3)
    assert np.abs(100 * rig.gls).max() < 1e-9
    # the same motion as a callable field
    call = midwall_gls(lab, lambda p: np.stack([np.zeros_like(p), (p - c) @ R.T + c - p], axis=1), SP3)
    assert np.abs(100 * call.gls).max() < 1e-9


def test_phantom_3d_midwall_gls_matches_truth():
    ph = make_phantom(PhantomConfig(dim=3, shape=(64, 64, 8), spacing=(2, 2, 8), n_frames=8, supersample=1,
                                    z_supersample=1, noise_sigma=0), seed=0)
    s = ph.sequence
    res = analyse_displacement(ph.displacement, s.spacing, s.ref_labels, label_map=s.label_map, affine=s.affine,
                               frame_interval_ms=s.frame_interval_ms)
    truth = 100 * ph.params["peak_longitudinal_strain"]  # -b / L: the base descent's uniform stretch
    gls = res.midwall
    assert gls is not None
    # Measured -20.19 % vs truth -20.0 %: the lines run through 8 mm slices and bend in toward the
    # apex where the LV tapers; there the in-plane contraction also changes the line length.
    assert abs(gls.peak_pct - truth) < 1.0, (gls.peak_pct, truth)
    assert gls.peak()[1] == ph.params["es_frame"]
    assert gls.gls[s.ref_frame] == 0.0
    assert all(abs(v - truth) < 2.0 for v in gls.segment_peaks_pct().values())
    summ = res.summary()
    assert summ["gls_midwall_pct"] == pytest.approx(gls.peak_pct)
    assert np.allclose(res.gls_midwall, gls.gls)


def test_strain_csv_gains_gls_rows_in_3d(tmp_path):
    lab = cylinder_lv()
    res = analyse_displacement(stretch_z(lab.shape, -0.15, n_t=3), SP3, lab)
    path = write_strain_csv(res, tmp_path / "strain.csv")
    rows = read_strain_csv(path)
    gls_rows = [r for r in rows if r["region"] == GLS_MIDWALL]
    assert len(gls_rows) == 3 and len(rows) == 3 * (len(res.regions) + 1)
    assert np.allclose([r["longitudinal_pct"] for r in gls_rows], [0, -7.5, -15], atol=0.2)
    for r in gls_rows:
        assert r["n_voxels"] == 0
        assert all(math.isnan(r[c]) for c in CSV_COLUMNS[4:-1])
    # the voxel-mean longitudinal strain of a uniform stretch agrees
    assert abs(res.peaks()["longitudinal_pct"] + 15.0) < 0.5


# ---------------------------------------------------------------------------------------------
# Long-axis slice
# ---------------------------------------------------------------------------------------------

H_MM, R_MM, W_MM, XB, XC, YC = 60.0, 25.0, 10.0, 10.0, 70.0, 60.0


def horseshoe(h: float = 1.25, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A U-shaped myocardium ``(n, n)`` on an ``h`` mm grid, long axis along +i: two straight walls
    (midlines ``y = YC +- R_MM`` from ``x = XB`` to ``XC``) and a semicircular apex (midline
    radius ``R_MM``), ``W_MM`` thick, around an LV cavity; returns labels and x (mm)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x, y = i * h, j * h
    d = np.where(x <= XC, np.abs(y - YC), np.hypot(x - XC, y - YC))
    lab = np.zeros((n, n), np.uint8)
    lab[(x >= XB) & (np.abs(d - R_MM) <= W_MM / 2)] = 2
    lab[(x >= XB) & (d < R_MM - W_MM / 2)] = 3
    return lab, x


def analytic_lax_strain(eps: float) -> float:
    """Length change (%) of the horseshoe's midline scaled by ``1 + eps`` along the long axis:
    the walls scale exactly, the semicircle becomes a half ellipse."""
    s = 1.0 + eps
    half = integrate.quad(lambda t: math.hypot(R_MM * math.cos(t), s * R_MM * math.sin(t)), 0.0, math.pi)[0]
    return 100.0 * ((2 * H_MM * s + half) / (2 * H_MM + math.pi * R_MM) - 1.0)


@pytest.mark.parametrize("eps", [-0.15, 0.10])
def test_lax_horseshoe_under_long_axis_scaling(eps):
    lab, x = horseshoe()
    sp = np.array([1.25, 1.25, 8.0])
    disp = np.zeros(lab.shape + (1, 3, 3))
    for t in range(3):
        disp[:, :, 0, t, 0] = eps * t / 2 * (x - 95.0)
    res = lax_gls(lab, disp, sp)
    want = analytic_lax_strain(eps)
    assert abs(100 * res.gls[-1] - want) < 0.5, (100 * res.gls[-1], want)
    assert res.gls[0] == 0.0
    # the midline runs from one basal end, round the apex, to the other
    L = np.linalg.norm(np.diff(res.line, axis=0), axis=1).sum()
    assert abs(L - (2 * H_MM + math.pi * R_MM)) < 2.0
    assert np.linalg.norm(res.line[res.apex_index] - [XC + R_MM, YC]) < 2.0
    assert list(res.segment_strain) == list(LAX_SEGMENTS)
    for name in ("a_basal", "b_basal"):  # straight wall pieces scale exactly
        assert abs(100 * res.segment_strain[name][-1] - 100 * eps) < 0.3


def test_lax_zero_motion_and_errors():
    lab, _ = horseshoe()
    sp = np.array([1.25, 1.25])
    assert np.all(lax_gls(lab, np.zeros(lab.shape + (2, 2)), sp).gls == 0.0)
    with pytest.raises(InputError, match="myocardium label"):
        lax_gls(np.where(lab == 2, 0, lab), np.zeros(lab.shape + (2, 2)), sp)
    two = lab.copy()
    two[:, 44:52] = 0  # cut the apex: two separate walls
    with pytest.raises(InputError, match="separate pieces"):
        lax_gls(two, np.zeros(lab.shape + (2, 2)), sp)
    i, j = np.meshgrid(np.arange(60), np.arange(60), indexing="ij")
    r = np.hypot(i - 30, j - 30)
    ring = np.where((r >= 12) & (r < 18), 2, 0).astype(np.uint8)
    with pytest.raises(InputError, match="closed ring"):
        lax_gls(ring, np.zeros(ring.shape + (2, 2)), sp)
