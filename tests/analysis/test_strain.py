"""Strain, AHA segments, cavity/EF and twist, checked against analytic references:
rigid motions have zero strain, a homogeneous stretch has a known E, an incompressible radial
motion has known E_rr/E_cc, and the phantoms' analytic motion gives the truth for the pipeline."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from cardioinr.core.errors import ConfigError, InputError
from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.io import LabelMap, make_affine
from cardioinr.phantoms import PhantomConfig, make_phantom
from cardioinr.analysis.aha import aha_segments, segment_of_angle
from cardioinr.analysis.cardiac_frame import cardiac_frame
from cardioinr.analysis.cavity import cavity_sizes, ejection_fraction
from cardioinr.analysis.config import StrainConfig
from cardioinr.geometry.kinematics import (
    deformation_gradient_dense,
    deformation_gradient_field,
    engineering_strain,
    green_strain,
    normal_strain,
)
from cardioinr.analysis.strain import CSV_COLUMNS, CYCLE_COLUMNS, analyse_displacement, analyse_field
from cardioinr.outputs.tables import read_strain_csv, write_cycle_csv, write_strain_csv

torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def rot2(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def rot3(axis: np.ndarray, a: float) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * K @ K


def ring_labels(n: int = 100, sp: float = 0.5, endo: float = 10.0, epi: float = 18.0,
                rv_angle_deg: float | None = 180.0, n_z: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A short-axis ring (LV 3, MYO 2) centred in an n x n grid, with an RV blob (1) outside the
    epicardium at ``rv_angle_deg`` (array (i, j) angle), repeated over ``n_z`` slices."""
    c = (n - 1) / 2 * sp
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1) * sp - c
    R = np.hypot(ij[..., 0], ij[..., 1])
    lab = np.zeros((n, n), np.uint8)
    lab[R < endo] = 3
    lab[(R >= endo) & (R < epi)] = 2
    if rv_angle_deg is not None:
        a = math.radians(rv_angle_deg)
        rc = np.array([math.cos(a), math.sin(a)]) * (epi + 5.0)
        lab[(np.hypot(ij[..., 0] - rc[0], ij[..., 1] - rc[1]) < 4.0) & (lab == 0)] = 1
    return np.repeat(lab[:, :, None], n_z, axis=2), np.array([c, c])


class RigidField:
    """A field-like object with an exact rigid motion per frame: rotation by ``angles[t]`` about
    ``axis`` through ``centre`` plus a translation ``shift[t]`` (torch, exact Jacobian)."""

    def __init__(self, dim: int, angles: np.ndarray, centre: np.ndarray, shift: np.ndarray,
                 axis: np.ndarray = np.array([0.0, 0.0, 1.0])) -> None:
        self.dim = dim
        self.n_frames = len(angles)
        R = [rot3(axis, a)[:dim, :dim] if dim == 3 else rot2(a) for a in angles]
        self.R = torch.tensor(np.stack(R))  # (T, D, D)
        self.c = torch.tensor(np.asarray(centre, float)[:dim])
        self.b = torch.tensor(np.asarray(shift, float)[:, :dim])
        self.centre = torch.zeros(dim)

    def displacement_and_jacobian(self, x: torch.Tensor, t=None):
        x = x.double()
        y = torch.einsum("tij,nj->nti", self.R, x - self.c) + self.c + self.b[None]
        u = y - x[:, None, :]
        jac = (self.R - torch.eye(self.dim, dtype=torch.float64))[None].expand(x.shape[0], -1, -1, -1)
        return u, jac


def radial_motion(d: np.ndarray, a: float, endo: float) -> tuple[np.ndarray, np.ndarray]:
    """Incompressible radial contraction ``r^2 = R^2 - a`` outside the endocardium (radius
    ``endo``), uniform scaling of the cavity inside; ``d`` ``(N, 2)`` from the centre, mm.
    Returns ``u`` ``(N, 2)`` and ``du/dX`` ``(N, 2, 2)``."""
    R = np.linalg.norm(d, axis=1)
    inside = R < endo
    Rs = np.where(inside, endo, R)
    f = np.sqrt(Rs**2 - a)
    s_in = math.sqrt(1.0 - a / endo**2)
    g = np.where(inside, s_in - 1.0, f / Rs - 1.0)
    n = d / np.maximum(R, 1e-12)[:, None]
    k = np.where(inside, 0.0, Rs / f - f / Rs)
    jac = g[:, None, None] * np.eye(2) + k[:, None, None] * n[:, :, None] * n[:, None, :]
    return g[:, None] * d, jac


class RadialField:
    """Field-like object: :func:`radial_motion` with amplitude ``a[t]`` per frame (2D)."""

    def __init__(self, a: np.ndarray, centre: np.ndarray, endo: float) -> None:
        self.dim, self.n_frames = 2, len(a)
        self.a, self.c, self.endo = np.asarray(a, float), np.asarray(centre, float), endo
        self.centre = torch.zeros(2)

    def displacement_and_jacobian(self, x: torch.Tensor, t=None):
        d = x.double().numpy() - self.c
        out = [radial_motion(d, a, self.endo) for a in self.a]
        u = np.stack([o[0] for o in out], axis=1)
        jac = np.stack([o[1] for o in out], axis=1)
        return torch.tensor(u), torch.tensor(jac)


def analytic_strain_pct(ph, result, frame: int) -> np.ndarray:
    """Mean engineering strain (%) over the reference myocardium from the phantom's analytic
    deformation gradient, projected on the directions the analysis uses."""
    seq = ph.sequence
    X = np.argwhere(seq.ref_labels == seq.label_map.myo).astype(float) * seq.spacing
    d = result.dim
    F = ph.motion.deformation_gradient(X, frame)[:, :d, :d]
    E = green_strain(F)
    dirs = result.frame.directions(X)
    out = [100 * engineering_strain(normal_strain(E, e[:, :d])).mean() for e in dirs[:d]]
    return np.array(out + [np.nan] * (3 - len(out)))


# ---------------------------------------------------------------------------------------------
# Tensor identities
# ---------------------------------------------------------------------------------------------


def test_rotations_have_zero_green_strain():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert np.allclose(green_strain(rot2(rng.uniform(-3, 3))), 0, atol=1e-14)
        assert np.allclose(green_strain(rot3(rng.normal(size=3), rng.uniform(-3, 3))), 0, atol=1e-14)


def test_homogeneous_stretch_has_known_strain():
    E = green_strain(np.diag([1.1, 0.9]))
    assert np.allclose(E, np.diag([0.105, -0.095]), atol=1e-14)
    assert np.allclose(engineering_strain(np.diag(E)), [0.10, -0.10], atol=1e-14)
    # rotated afterwards: same strain (E is Lagrangian), and along the axes the same numbers
    Fr = rot2(0.7) @ np.diag([1.1, 0.9])
    assert np.allclose(green_strain(Fr), np.diag([0.105, -0.095]), atol=1e-14)
    # 3D incompressible stretch
    F3 = np.diag([1.1, 0.9, 1 / (1.1 * 0.9)])
    assert np.allclose(engineering_strain(normal_strain(green_strain(F3), np.eye(3))), [0.1, -0.1, 1 / 0.99 - 1])


def test_engineering_strain_is_fibre_length_change():
    rng = np.random.default_rng(1)
    F = np.eye(3) + 0.3 * rng.normal(size=(50, 3, 3))
    e = rng.normal(size=(50, 3))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    eng = engineering_strain(normal_strain(green_strain(F), e))
    assert np.allclose(eng, np.linalg.norm(np.einsum("nij,nj->ni", F, e), axis=1) - 1, atol=1e-12)


def test_segment_of_angle_table():
    deg = np.radians([-90, -30, 30, 90, 150, -150, 179.9, -179.9])
    assert segment_of_angle(deg, "basal").tolist() == [1, 2, 3, 4, 5, 6, 5, 6]
    assert segment_of_angle(deg, "mid").tolist() == [7, 8, 9, 10, 11, 12, 11, 12]
    assert segment_of_angle(np.radians([-90, 0, 90, 180, 44, -44]), "apical").tolist() == [13, 14, 15, 16, 14, 14]


def test_config_is_validated():
    with pytest.raises(ConfigError):
        StrainConfig(long_axis="x")
    with pytest.raises(ConfigError):
        StrainConfig(slice_level_2d="top")


# ---------------------------------------------------------------------------------------------
# Radial / circumferential projection on a ring with an analytic incompressible motion
# ---------------------------------------------------------------------------------------------


def test_ring_projection_gives_analytic_radial_and_circumferential_strain():
    lab, c = ring_labels()
    sp = np.array([0.5, 0.5, 8.0])
    frame = cardiac_frame(lab, sp)
    assert np.allclose(frame.slice_centres[0, :2], c, atol=1e-9)
    X = np.argwhere(lab == 2).astype(float) * sp
    d = X[:, :2] - c
    R = np.linalg.norm(d, axis=1)
    a = 60.0
    f = np.sqrt(R**2 - a)
    n = d / R[:, None]
    F = (f / R)[:, None, None] * np.eye(2) + (R / f - f / R)[:, None, None] * n[:, :, None] * n[:, None, :]
    E = green_strain(F)
    r, cc, _ = frame.directions(X)
    assert np.allclose(normal_strain(E, r[:, :2]), 0.5 * ((R / f) ** 2 - 1), atol=1e-12)
    assert np.allclose(normal_strain(E, cc[:, :2]), 0.5 * ((f / R) ** 2 - 1), atol=1e-12)
    # incompressible: radial and circumferential stretches are reciprocal
    er = engineering_strain(normal_strain(E, r[:, :2]))
    ec = engineering_strain(normal_strain(E, cc[:, :2]))
    assert np.allclose((1 + er) * (1 + ec), 1.0, atol=1e-12)

    # The same motion through the field path (exact) and the dense path (finite differences).
    field_ = RadialField(np.array([0.0, a]), c, endo=10.0)
    res_f = analyse_field(field_, sp, lab)
    want_rr, want_cc = 0.5 * ((R / f) ** 2 - 1).mean(), 0.5 * ((f / R) ** 2 - 1).mean()
    assert res_f.source == "field"
    assert abs(res_f.green[1, 0, 0] - want_rr) < 1e-5 and abs(res_f.green[1, 0, 1] - want_cc) < 1e-5
    assert np.allclose(res_f.green[0, :, :2], 0, atol=1e-12)
    ij = np.argwhere(np.ones(lab.shape, bool)).astype(float) * sp
    u, _ = radial_motion(ij[:, :2] - c, a, 10.0)
    disp = np.zeros(lab.shape + (2, 3))
    disp[..., 1, :2] = u.reshape(lab.shape + (2,))
    res_d = analyse_displacement(disp, sp, lab)
    assert res_d.source == "displacement"
    assert abs(res_d.green[1, 0, 0] - want_rr) < 3e-3 and abs(res_d.green[1, 0, 1] - want_cc) < 1e-3
    # the cavity loses pi a mm^2 (r^2 = R^2 - a at the endocardium), up to its voxelisation
    for res in (res_f, res_d):
        assert abs(res.cavity_jacobian[0] - res.cavity_jacobian[1] - math.pi * a) / (math.pi * a) < 0.05


# ---------------------------------------------------------------------------------------------
# Rigid motions: zero strain through both paths, known rotation
# ---------------------------------------------------------------------------------------------


def test_rigid_field_has_zero_strain_and_known_rotation_2d():
    lab, c = ring_labels(n=80, sp=0.6)
    sp = np.array([0.6, 0.6, 8.0])
    angles = np.radians([0.0, 5.0, 12.0, -7.0])
    shift = np.array([[0, 0, 0], [1.0, -2.0, 0], [3.0, 0.5, 0], [0, 1.0, 0]])
    res = analyse_field(RigidField(2, angles, np.r_[c, 0], shift), sp, lab)
    assert np.nanmax(np.abs(res.green)) < 1e-12
    assert np.nanmax(np.abs(res.engineering)) < 1e-12
    # no affine: right-handed, apex along +k, so counter-clockwise in (i, j) is positive
    assert res.frame.apex_from == "default"
    assert np.allclose(res.rotation_deg["global"], np.degrees(angles), atol=1e-9)
    ef, _, _ = ejection_fraction(res.cavity_jacobian)
    assert abs(ef) < 1e-9

    # dense path on the same motion: finite differences of a linear field are exact
    pts = np.argwhere(np.ones(lab.shape, bool)).astype(float) * sp
    u, _ = RigidField(2, angles, np.r_[c, 0], shift).displacement_and_jacobian(torch.tensor(pts[:, :2]))
    disp = np.zeros(lab.shape + (len(angles), 3))
    disp[..., :2] = u.numpy().reshape(lab.shape + (len(angles), 2))
    dres = analyse_displacement(disp, sp, lab)
    assert np.nanmax(np.abs(dres.green)) < 1e-10
    assert np.allclose(dres.rotation_deg["global"], np.degrees(angles), atol=1e-8)


def test_rigid_motion_3d_has_zero_strain_both_paths():
    lab, c = ring_labels(n=60, sp=0.8, n_z=5)
    sp = np.array([0.8, 0.8, 4.0])
    centre = np.r_[c, 8.0]
    angles = np.radians([0.0, 10.0, -20.0])
    shift = np.array([[0, 0, 0], [1.0, 2.0, -1.5], [-2.0, 0.5, 3.0]])
    axis = np.array([0.3, -0.2, 1.0])
    field_ = RigidField(3, angles, centre, shift, axis=axis)
    res = analyse_field(field_, sp, lab)
    assert np.nanmax(np.abs(res.engineering)) < 1e-12
    pts = np.argwhere(np.ones(lab.shape, bool)).astype(float) * sp
    u, _ = field_.displacement_and_jacobian(torch.tensor(pts))
    disp = u.numpy().reshape(lab.shape + (3, 3))
    dres = analyse_displacement(disp, sp, lab)
    assert np.nanmax(np.abs(dres.engineering)) < 1e-10
    # a rotation about k alone is seen as pure rotation at every level: no twist
    res_k = analyse_field(RigidField(3, angles, centre, shift), sp, lab)
    assert np.allclose(res_k.rotation_deg["global"], np.degrees(angles), atol=1e-9)


def test_field_path_is_exact_against_finite_differences_of_the_field():
    torch.manual_seed(0)
    f = MotionField(FieldConfig(hidden=32, layers=2, omega=10.0, output_gain=2.0), 3, 6, 0,
                    centre=torch.tensor([20.0, 20.0, 10.0]), scale=20.0).double()
    with torch.no_grad():  # a field with visible motion
        f.mlp.head.weight.normal_(0, 0.05)
    pts = np.random.default_rng(0).uniform(0, 40, size=(30, 3))
    u, F = deformation_gradient_field(f, pts, chunk=7)
    h = 1e-5
    num = np.empty_like(F)
    with torch.no_grad():
        for j in range(3):
            dp = np.zeros(3)
            dp[j] = h
            up = f(torch.tensor(pts + dp)).numpy()
            um = f(torch.tensor(pts - dp)).numpy()
            num[..., j] = (up - um) / (2 * h)
    assert np.abs(F - np.eye(3)).max() > 1e-2  # non-trivial motion
    assert np.allclose(F - np.eye(3), num, atol=1e-6)
    assert np.allclose(u[:, 0], 0)  # reference frame


def test_dense_differences_stay_inside_the_tissue():
    """A displacement whose gradient jumps at the myocardial boundary: mask-aware differences
    recover the wall's gradient exactly, plain central differences mix in the blood pool."""
    lab = np.zeros((30, 1, 1), np.uint8)
    lab[10:20] = 2
    lab = np.repeat(lab, 30, axis=1)
    x = np.arange(30) * 1.0
    disp = np.zeros((30, 30, 1, 2, 3))
    disp[:, :, 0, 1, 0] = np.where((x >= 10) & (x < 20), 0.2 * x, np.where(x < 10, 2.0, 3.8))[:, None]
    _, F = deformation_gradient_dense(disp, np.array([1.0, 1.0, 1.0]), lab[..., 0:1] == 2)
    assert np.allclose(F[:, 1, 0, 0], 1.2)
    _, F_plain = deformation_gradient_dense(disp, np.array([1.0, 1.0, 1.0]), lab[..., 0:1] == 2, inside_only=False)
    assert not np.allclose(F_plain[:, 1, 0, 0], 1.2)


# ---------------------------------------------------------------------------------------------
# AHA segments and orientation
# ---------------------------------------------------------------------------------------------


def _segment_at(seg: np.ndarray, sp: float, c: np.ndarray, angle_deg: float, radius: float = 14.0) -> int:
    a = math.radians(angle_deg)
    p = c + radius * np.array([math.cos(a), math.sin(a)])
    i, j = np.rint(p / sp).astype(int)
    return int(seg[i, j, 0])


def test_aha_segments_follow_the_septum_and_handedness():
    lab, c = ring_labels(rv_angle_deg=180.0)
    sp = np.array([0.5, 0.5, 8.0])
    frame = cardiac_frame(lab, sp)
    seg = aha_segments(lab, frame)
    assert frame.septum_source == "rv"
    assert set(np.unique(seg[lab == 2]).tolist()) == set(range(7, 13))
    assert np.all(seg[lab != 2] == 0)
    counts = [(seg == s).sum() for s in range(7, 13)]
    assert min(counts) > 0.8 * max(counts)
    # septum at -i; anterior at +j (right-handed, apex toward +k), numbering counter-clockwise
    want = {90: 7, 150: 8, 210: 9, 270: 10, 330: 11, 30: 12}
    assert {a: _segment_at(seg, 0.5, c, a) for a in want} == want

    # a mirrored affine (left-handed array axes) swaps anterior and inferior
    mirrored = make_affine((0.5, 0.5, 8.0)) @ np.diag([-1.0, 1.0, 1.0, 1.0])
    fm = cardiac_frame(lab, sp, affine=mirrored, config=StrainConfig(apex_direction="+k"))
    segm = aha_segments(lab, fm)
    assert fm.handedness == -1
    assert _segment_at(segm, 0.5, c, 90) == 10 and _segment_at(segm, 0.5, c, 270) == 7

    # no RV label: the configured septum direction; basal numbering on request
    no_rv = np.where(lab == 1, 0, lab)
    cfg = StrainConfig(septum_direction_deg=0.0, slice_level_2d="basal")
    f0 = cardiac_frame(no_rv, sp, config=cfg)
    s0 = aha_segments(no_rv, f0, config=cfg)
    assert f0.septum_source == "fixed"
    assert _segment_at(s0, 0.5, c, 270) == 1  # septum at +i: anterior at -j
    assert _segment_at(s0, 0.5, c, 330) == 2 and _segment_at(s0, 0.5, c, 30) == 3


def test_aha_16_and_17_segments_on_a_tapering_stack():
    n, sp = 60, np.array([0.8, 0.8, 5.0])
    lab = np.zeros((n, n, 9), np.uint8)
    c = (n - 1) / 2 * sp[0]
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1) * sp[0] - c
    R = np.hypot(ij[..., 0], ij[..., 1])
    rv = np.hypot(ij[..., 0] + 22, ij[..., 1]) < 5
    for k in range(9):
        endo, epi = max(12 - 1.5 * k, 0), 20 - 1.2 * k  # cavity ends before the last slice
        lab[..., k][(R < epi)] = 2
        lab[..., k][(R < endo)] = 3
        if k < 6:
            lab[..., k][rv & (R >= epi)] = 1
    res = analyse_displacement(np.zeros(lab.shape + (3, 3)), sp, lab)
    assert res.frame.apex_from == "cavity" and res.frame.long_axis[2] == 1.0
    assert res.regions == ["global"] + [f"aha{s:02d}" for s in range(1, 17)]
    assert np.all(res.n_voxels > 0)
    assert np.all(res.segments[..., 0][lab[..., 0] == 2] <= 6) and np.all(res.segments[..., 8][lab[..., 8] == 2] >= 13)
    # flipped stack: the base is found at the other end
    flipped = analyse_displacement(np.zeros(lab.shape + (3, 3)), sp, lab[..., ::-1])
    assert flipped.frame.long_axis[2] == -1.0
    assert np.all(flipped.segments[..., 8][lab[..., 0] == 2] <= 6)
    # apex segment
    res17 = analyse_displacement(np.zeros(lab.shape + (3, 3)), sp, lab, config=StrainConfig(apex_segment=True))
    assert "aha17" in res17.regions
    assert np.all(res17.segments[..., 8][lab[..., 8] == 2] == 17)


def test_no_myocardium_is_a_clear_error():
    lab = np.zeros((20, 20, 1), np.uint8)
    lab[5:10, 5:10] = 3
    with pytest.raises(InputError, match="myocardium"):
        analyse_displacement(np.zeros((20, 20, 1, 3, 3)), np.ones(3), lab)
    lab2, _ = ring_labels(n=40, sp=1.0, endo=5, epi=9)
    with pytest.raises(InputError, match="2D"):
        analyse_field(RigidField(3, np.zeros(2), np.zeros(3), np.zeros((2, 3))), np.ones(3), lab2)
    with pytest.raises(InputError, match="shape"):
        analyse_displacement(np.zeros((30, 30, 1, 3, 3)), np.ones(3), lab2)


def test_other_label_codes():
    lab, _ = ring_labels(n=50, sp=1.0, endo=6, epi=12, rv_angle_deg=None)
    sb = np.where(lab == 3, 1, lab)  # Sunnybrook style: LV 1, MYO 2, no RV
    lm = LabelMap(lv=1, myo=2, rv=None)
    res = analyse_displacement(np.zeros(lab.shape + (2, 3)), np.ones(3), sb, label_map=lm,
                               labels=np.repeat(sb[..., None], 2, -1))
    assert res.frame.septum_source == "fixed" and len(res.regions) == 7
    assert res.cavity is not None and res.cavity[0] == (sb == 1).sum()


# ---------------------------------------------------------------------------------------------
# Phantoms: the true displacement reproduces the analytic strain, EF and twist
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom2d():
    return make_phantom(PhantomConfig(dim=2, shape=(80, 80, 1), n_frames=12, spacing=(1.8, 1.8, 8.0), supersample=1), seed=0)


@pytest.fixture(scope="module")
def phantom3d():
    return make_phantom(PhantomConfig(dim=3, shape=(56, 56, 8), n_frames=10, spacing=(2.2, 2.2, 8.0), supersample=1,
                                      z_supersample=1), seed=1)


def _analyse_truth(ph, config=None):
    s = ph.sequence
    return analyse_displacement(ph.displacement, s.spacing, s.ref_labels, labels=ph.labels, label_map=s.label_map,
                                frame_interval_ms=s.frame_interval_ms, affine=s.affine, config=config)


def test_phantom_2d_strain_ef_and_segments(phantom2d):
    ph = phantom2d
    res = _analyse_truth(ph)
    es = ph.params["es_frame"]
    peaks = res.peaks()
    assert peaks["circumferential_frame"] == es and peaks["radial_frame"] == es
    # against the drawn mid-wall circumferential strain and wall thickening
    assert abs(peaks["circumferential_pct"] - 100 * ph.params["peak_circumferential_strain"]) < 3.0
    assert abs(peaks["radial_pct"] - 100 * ph.params["peak_radial_strain"]) < 3.0
    # against the analytic deformation gradient at the same voxels (same definition)
    want = analytic_strain_pct(ph, res, es)
    assert np.allclose(100 * res.engineering[es, 0, :2], want[:2], atol=1.5)
    assert np.all(np.isnan(res.engineering[..., 2]))
    # EF
    ef, ed, es_ef = res.ejection()
    assert abs(ef - 100 * ph.params["ef"]) < 5.0
    assert (ed, es_ef) == (ph.sequence.ref_frame, es)
    assert res.cavity_unit == "mm^2"
    assert abs(ejection_fraction(res.cavity_jacobian)[0] - 100 * ph.params["ef"]) < 2.0
    # 6 non-empty mid segments
    assert res.regions == ["global"] + [f"aha{s:02d}" for s in range(7, 13)]
    assert np.all(res.n_voxels[1:] > 0) and res.n_voxels[1:].sum() == res.n_voxels[0]
    # rotation: the phantom's twist is counter-clockwise in (i, j) when positive
    r = _analyse_truth(ph, StrainConfig(apex_direction="+k")).rotation_deg["global"][es]
    tw = ph.params["twist_deg"]
    assert np.sign(r) == np.sign(tw) and 0.5 * abs(tw) < abs(r) <= abs(tw)
    # zero at the reference frame
    assert np.allclose(res.green[ph.sequence.ref_frame, :, :2], 0.0)


def test_phantom_3d_strain_twist_and_16_segments(phantom3d):
    ph = phantom3d
    res = _analyse_truth(ph)
    es = ph.params["es_frame"]
    assert res.frame.apex_from == "cavity" and np.allclose(res.frame.long_axis, [0, 0, 1])
    assert res.regions == ["global"] + [f"aha{s:02d}" for s in range(1, 17)]
    assert np.all(res.n_voxels > 0)
    want = analytic_strain_pct(ph, res, es)
    got = 100 * res.engineering[es, 0]
    assert np.all(np.abs(got - want) < 3.0), (got, want)
    # longitudinal shortening, radial thickening, circumferential shortening
    assert got[0] > 15 and got[1] < -5 and got[2] < -5
    # volume from det F is exact for the phantom's linear blood-pool motion; label counts on
    # 8 mm slices suffer from the base moving through the basal slice (partial volume)
    assert abs(ejection_fraction(res.cavity_jacobian)[0] - 100 * ph.params["ef"]) < 2.0
    assert res.cavity_unit == "ml" and abs(res.ejection()[0] - 100 * ph.params["ef"]) < 5.0
    # twist: base clockwise, apex counter-clockwise seen from the apex
    rot = res.rotation_deg
    assert rot["basal"][es] < 0 < rot["apical"][es]
    assert res.twist_deg[es] > 0 and res.torsion_deg_per_cm[es] > 0
    assert np.allclose(res.twist_deg, rot["apical"] - rot["basal"])
    # a fitted long axis agrees with k for this stack
    fit = _analyse_truth(ph, StrainConfig(long_axis="fit"))
    assert abs(fit.frame.long_axis[2]) > 0.99
    assert np.allclose(100 * fit.engineering[es, 0], got, atol=2.0)


def test_reference_frame_other_than_zero():
    ph = make_phantom(PhantomConfig(dim=2, shape=(64, 64, 1), n_frames=8, spacing=(2.0, 2.0, 8.0), supersample=1,
                                    ed_frame=3), seed=2)
    s = ph.sequence
    res = analyse_displacement(ph.displacement, s.spacing, s.ref_labels, labels=ph.labels)
    assert res.ref_frame == 3
    assert np.allclose(res.green[3, :, :2], 0) and res.peaks()["circumferential_pct"] < -10


# ---------------------------------------------------------------------------------------------
# Output tables
# ---------------------------------------------------------------------------------------------


def test_strain_csv_rows_and_columns(tmp_path, phantom2d):
    res = _analyse_truth(phantom2d)
    path = write_strain_csv(res, tmp_path / "strain.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = rows[1:]
    n_t = phantom2d.sequence.n_frames
    assert len(body) == n_t * len(res.regions)
    keys = {(int(r[0]), r[2]) for r in body}
    assert keys == {(t, reg) for t in range(n_t) for reg in res.regions}
    assert all(r[6] == "" and r[9] == "" for r in body)  # no longitudinal strain in 2D
    back = read_strain_csv(path)
    g = [r for r in back if r["region"] == "global"]
    assert np.allclose([r["circumferential_pct"] for r in g], 100 * res.curve("circumferential"), rtol=1e-5)
    assert np.allclose([r["time_ms"] for r in g], np.arange(n_t) * phantom2d.sequence.frame_interval_ms, rtol=1e-5)
    assert all(r["n_voxels"] == res.n_voxels[0] for r in g)
    cyc = write_cycle_csv(res, tmp_path / "cycle.csv")
    with open(cyc, newline="") as fh:
        crow = list(csv.reader(fh))
    assert tuple(crow[0]) == CYCLE_COLUMNS and len(crow) == n_t + 1
    summary = res.summary()
    assert summary["ef_pct"] == pytest.approx(res.ejection()[0])
    assert summary["peak"]["longitudinal_pct"] is None  # NaN -> None for JSON


def test_cavity_sizes_units():
    lab = np.zeros((10, 10, 1, 3), np.uint8)
    lab[2:5, 2:5, 0, :] = 3
    lab[2:5, 2:4, 0, 1] = 0
    sizes, unit = cavity_sizes(lab, np.array([2.0, 1.5, 8.0]), 3)
    assert unit == "mm^2" and np.allclose(sizes, [27.0, 9.0, 27.0])
    ef, ed, es = ejection_fraction(sizes)
    assert ef == pytest.approx(100 * 18 / 27) and (ed, es) == (0, 1)
    sizes3, unit3 = cavity_sizes(np.repeat(lab, 2, axis=2), np.array([2.0, 1.5, 8.0]), 3)
    assert unit3 == "ml" and np.allclose(sizes3, 2 * 8 * np.array([27.0, 9.0, 27.0]) / 1000)


def test_right_ventricle_is_scored_like_the_lv(phantom2d):
    """With an RV label, the summary holds the RV cavity curve and EF, counted from the carried
    labels exactly as the LV's (here the truth labels: the phantom's own RV EF)."""
    ph = phantom2d
    seq = ph.sequence
    s = analyse_displacement(ph.displacement, seq.spacing, seq.ref_labels, labels=ph.labels, label_map=seq.label_map,
                             ref_frame=seq.ref_frame).summary()
    counts = (ph.labels == seq.label_map.rv).sum((0, 1, 2)).astype(float)
    assert s["rv_ef_pct"] == pytest.approx(100 * (counts.max() - counts.min()) / counts.max(), abs=1e-9)
    assert s["rv_ef_pct"] == pytest.approx(100 * ph.params["rv_ef_labels"], abs=1.0)  # ED/ES by size, not by phase
    assert len(s["rv_cavity"]) == seq.n_frames and s["rv_es_frame"] >= 0
    no_rv = analyse_displacement(ph.displacement, seq.spacing, np.where(seq.ref_labels == 1, 0, seq.ref_labels),
                                 labels=np.where(ph.labels == 1, 0, ph.labels), ref_frame=seq.ref_frame).summary()
    assert "rv_ef_pct" not in no_rv
