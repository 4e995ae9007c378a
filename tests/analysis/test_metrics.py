"""Metrics against analytic identities and an independent scipy reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cardioinr.core.errors import InputError
from cardioinr.io import ACDC, SUNNYBROOK, LabelMap
from cardioinr.geometry.kinematics import det_f, folding_stats_regions, jacobian_determinant_grid
from cardioinr.analysis.metrics import (
    dice,
    dice_per_label,
    endpoint_error,
    epe_by_region,
    evaluate_arrays,
    find_reference_frame,
    folding_stats,
    hd95,
    heart_mask,
    label_scores,
)
from cardioinr.core.serialise import json_ready
from cardioinr.outputs import evaluate_folder

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def grid_mm(shape, spacing):
    return np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")


def ball(shape, centre_mm, radius_mm, spacing):
    """Voxels whose centre lies within ``radius_mm`` of ``centre_mm`` (disc or sphere in mm)."""
    g = grid_mm(shape, spacing)
    return sum((gi - ci) ** 2 for gi, ci in zip(g, centre_mm)) <= radius_mm**2


def hd95_reference(a, b, spacing):
    """Independent HD95: boundary = mask minus erosion, distances by a scipy EDT on the full array."""
    ea = a & ~ndimage.binary_erosion(a)
    eb = b & ~ndimage.binary_erosion(b)
    d_ab = ndimage.distance_transform_edt(~eb, sampling=spacing)[ea]
    d_ba = ndimage.distance_transform_edt(~ea, sampling=spacing)[eb]
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))


def affine_field(A, shape, spacing, centre=None):
    """u(X) = (A - I)(X - c): a displacement whose deformation gradient is A everywhere."""
    g = np.stack(grid_mm(shape, spacing), axis=-1)
    c = np.zeros(3) if centre is None else np.asarray(centre)
    return (g - c) @ (np.asarray(A) - np.eye(3)).T


def heart_labels(shape, spacing, centre, lmap=ACDC):
    """A ring (MYO) around a disc/ball (LV) with an RV blob to the side, in mm."""
    lab = np.zeros(shape, np.uint8)
    lab[ball(shape, centre, 14.0, spacing)] = lmap.myo
    lab[ball(shape, centre, 9.0, spacing)] = lmap.lv
    rv_c = (centre[0] + 22.0,) + tuple(centre[1:])
    lab[ball(shape, rv_c, 7.0, spacing) & (lab == 0)] = lmap.rv
    return lab


# ---------------------------------------------------------------------------------------------
# Dice
# ---------------------------------------------------------------------------------------------


def test_dice_identities():
    a = np.zeros((10, 10, 3), np.uint8)
    a[2:6, 2:6] = 3
    assert dice(a, a, 3) == 1.0
    b = np.zeros_like(a)
    b[6:9, 6:9] = 3
    assert dice(a, b, 3) == 0.0
    assert dice(a, np.zeros_like(a), 3) == 0.0  # one empty
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a), 3))  # both empty: undefined


def test_dice_known_overlap():
    a = np.zeros((20, 20, 1), np.uint8)
    b = np.zeros_like(a)
    a[0:10, 0:10] = 2  # 100 voxels
    b[5:15, 0:10] = 2  # 100 voxels, 50 shared
    assert dice(a, b, 2) == pytest.approx(2 * 50 / 200)
    per = dice_per_label(a, b, ACDC)
    assert set(per) == {"LV", "MYO", "RV"}
    assert per["MYO"] == pytest.approx(0.5)
    assert math.isnan(per["LV"]) and math.isnan(per["RV"])
    assert set(dice_per_label(a, b, SUNNYBROOK)) == {"LV", "MYO"}


def test_dice_shape_mismatch():
    with pytest.raises(InputError, match="shape"):
        dice(np.zeros((4, 4, 1)), np.zeros((4, 5, 1)), 1)


# ---------------------------------------------------------------------------------------------
# HD95
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r1, r2", [(8.0, 12.0), (10.0, 16.0), (12.0, 13.0)])
def test_hd95_concentric_discs_2d(r1, r2):
    sp = (0.7, 1.3, 1.0)  # anisotropic in-plane
    shape = (96, 64, 1)
    c = (33.1, 41.7, 0.0)
    a, b = ball(shape, c, r1, sp), ball(shape, c, r2, sp)
    h = hd95(a, b, 1, sp)
    assert abs(h - (r2 - r1)) <= math.hypot(*sp[:2])  # within a voxel (its diagonal)
    # Z == 1 is a 2D image: same as passing the 2D slices, and equal to the reference
    assert h == pytest.approx(hd95(a[..., 0], b[..., 0], 1, sp[:2]))
    assert h == pytest.approx(hd95_reference(a[..., 0], b[..., 0], sp[:2]), rel=1e-5)


@pytest.mark.parametrize("r1, r2", [(8.0, 12.0), (9.0, 17.0)])
def test_hd95_concentric_spheres_anisotropic(r1, r2):
    sp = (1.0, 1.0, 4.0)
    shape = (56, 56, 14)
    c = (27.3, 28.2, 26.5)
    a, b = ball(shape, c, r1, sp), ball(shape, c, r2, sp)
    h = hd95(a, b, 1, sp)
    assert abs(h - (r2 - r1)) <= math.sqrt(sum(s * s for s in sp))
    assert h == pytest.approx(hd95_reference(a, b, sp), rel=1e-5)


def test_hd95_honours_slice_thickness():
    """Two cylinders differing only in height by two slices: HD95 = 2 slices x 4 mm exactly."""
    sp = (1.0, 1.0, 4.0)
    disc = ball((40, 40, 1), (20.0, 20.0, 0.0), 10.0, sp)[..., 0]
    a = np.zeros((40, 40, 14), bool)
    b = np.zeros_like(a)
    a[:, :, 4:9] = disc[..., None]
    b[:, :, 4:11] = disc[..., None]
    assert hd95(a, b, 1, sp) == pytest.approx(8.0)
    assert hd95(a, b, 1, (1.0, 1.0, 1.0)) == pytest.approx(2.0)


def test_hd95_matches_scipy_reference_random_blobs():
    rng = np.random.default_rng(0)
    sp = (1.2, 0.8, 3.0)
    for _ in range(3):
        a = ndimage.gaussian_filter(rng.standard_normal((40, 36, 10)), 2.0) > 0.05
        b = ndimage.gaussian_filter(rng.standard_normal((40, 36, 10)), 2.0) > 0.05
        lab_a, lab_b = a.astype(np.uint8) * 3, b.astype(np.uint8) * 3
        assert hd95(lab_a, lab_b, 3, sp) == pytest.approx(hd95_reference(a, b, sp), rel=1e-5)


def test_hd95_identical_and_empty():
    a = ball((30, 30, 6), (15, 15, 10), 8.0, (1, 1, 4))
    assert hd95(a, a, 1, (1, 1, 4)) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a), 1, (1, 1, 4)))
    assert math.isnan(hd95(np.zeros_like(a), np.zeros_like(a), 1, (1, 1, 4)))


def test_hd95_crop_does_not_change_result_at_array_border():
    sp = (1.0, 1.0, 1.0)
    a = np.zeros((30, 30, 1), bool)
    b = np.zeros_like(a)
    a[0:12, 0:10] = True  # touching the array border
    b[0:15, 3:10] = True
    ref = hd95_reference(a[..., 0], b[..., 0], sp[:2])
    assert hd95(a, b, 1, sp) == pytest.approx(ref, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# label_scores
# ---------------------------------------------------------------------------------------------


def test_label_scores_4d_and_sunnybrook_style_dict():
    sp = (1.5, 1.5, 1.0)
    shape = (48, 40, 1)
    lab = heart_labels(shape, sp, (30.0, 30.0, 0.0))
    pred = np.stack([lab, np.roll(lab, 1, axis=0), lab], axis=-1)
    s = label_scores(pred, pred.copy(), ACDC, sp)
    assert sorted(s["frames"]) == [0, 1, 2]
    for name in ("LV", "MYO", "RV"):
        assert s["summary"][name]["dice_min"] == 1.0
        assert s["summary"][name]["hd95_max"] == 0.0
        assert s["summary"][name]["n_frames"] == 3

    truth = np.stack([lab, lab, lab], axis=-1)
    s = label_scores(pred, truth, ACDC, sp)
    d1 = dice(pred[..., 1], lab, ACDC.lv)
    assert s["frames"][1]["LV"]["dice"] == pytest.approx(d1)
    assert s["summary"]["LV"]["dice_min"] == pytest.approx(d1)
    assert s["summary"]["LV"]["dice_mean"] == pytest.approx((2 + d1) / 3)
    assert s["frames"][1]["LV"]["hd95"] == pytest.approx(1.5)  # one-voxel shift along i
    fast = label_scores(pred, truth, ACDC, sp, with_hd95=False)
    assert fast["summary"]["LV"] == {k: s["summary"]["LV"][k] for k in ("n_frames", "dice_min", "dice_mean")}
    assert fast["frames"][1]["LV"] == {"dice": s["frames"][1]["LV"]["dice"]}

    # Sunnybrook-style: LV+MYO at ED (frame 0), LV only at ES (frame 2)
    es = np.where(lab == ACDC.lv, ACDC.lv, 0).astype(np.uint8)
    s = label_scores(pred, {0: lab, 2: es[:, :, 0]}, ACDC, sp)
    assert sorted(s["frames"]) == [0, 2]
    assert set(s["frames"][2]) == {"LV"}
    assert s["summary"]["MYO"]["n_frames"] == 1 and s["summary"]["LV"]["n_frames"] == 2
    assert label_scores(pred, {0: lab, 2: es}, ACDC, sp, frames=[2])["frames"].keys() == {2}

    with pytest.raises(InputError, match="shape"):
        label_scores(pred, truth[:-1], ACDC, sp)
    with pytest.raises(InputError, match="frame 7"):
        label_scores(pred, {7: lab}, ACDC, sp)


def test_label_scores_lost_structure():
    sp = (1.0, 1.0, 1.0)
    lab = heart_labels((48, 40, 1), sp, (24.0, 20.0, 0.0))
    pred = np.stack([lab, np.where(lab == ACDC.rv, 0, lab)], axis=-1).astype(np.uint8)
    s = label_scores(pred, np.stack([lab, lab], -1), ACDC, sp)
    assert s["frames"][1]["RV"]["dice"] == 0.0
    assert math.isnan(s["frames"][1]["RV"]["hd95"])
    assert s["summary"]["RV"]["hd95_n_undefined"] == 1
    assert s["summary"]["RV"]["dice_min"] == 0.0


# ---------------------------------------------------------------------------------------------
# End-point error
# ---------------------------------------------------------------------------------------------


def test_endpoint_error_self_and_shift():
    rng = np.random.default_rng(1)
    u = rng.standard_normal((12, 10, 3, 4, 3)).astype(np.float32)
    e = endpoint_error(u, u)
    assert e["mean"] == 0.0 and e["max"] == 0.0 and e["n"] == 12 * 10 * 3 * 4
    shift = np.array([0.3, -0.4, 1.2])  # |shift| = 1.3 mm
    e = endpoint_error(u + shift, u)
    for k in ("mean", "median", "p95", "max"):
        assert e[k] == pytest.approx(1.3, rel=1e-5)
    assert e["per_frame_mean"] == pytest.approx([1.3] * 4, rel=1e-5)
    # mask and frame selection
    v = u.copy()
    v[:6, :, :, 2, :] += np.array([3.0, 4.0, 0.0])
    m = np.zeros((12, 10, 3), bool)
    m[:6] = True
    e = endpoint_error(v, u, mask=m, frames=[2])
    assert e["mean"] == pytest.approx(5.0, rel=1e-5) and e["frames"] == [2]
    assert endpoint_error(v, u, mask=~m)["max"] == 0.0
    with pytest.raises(InputError, match="shape"):
        endpoint_error(u, u[:, :, :, :2])


def test_epe_by_region():
    sp = (1.0, 1.0, 1.0)
    lab = heart_labels((48, 40, 1), sp, (20.0, 20.0, 0.0))
    true = np.zeros((48, 40, 1, 3, 3), np.float32)
    pred = true.copy()
    pred[lab == ACDC.myo, 1, 0] = 2.0  # error of 2 mm only in the myocardium at frame 1
    r = epe_by_region(pred, true, lab, ACDC)
    assert set(r) == {"all", "heart", "LV", "MYO", "RV"}
    assert r["MYO"]["mean"] == pytest.approx(2.0 / 3)  # 3 frames, error in one
    assert r["MYO"]["max"] == pytest.approx(2.0)
    assert r["LV"]["max"] == 0.0
    n_myo, n_heart = (lab == ACDC.myo).sum(), (lab > 0).sum()
    assert r["heart"]["mean"] == pytest.approx(2.0 * n_myo / (3 * n_heart))
    assert set(epe_by_region(pred, true, lab[..., 0], SUNNYBROOK)) <= {"all", "heart", "LV", "MYO"}


# ---------------------------------------------------------------------------------------------
# Jacobian determinant and folding
# ---------------------------------------------------------------------------------------------


def test_jacobian_affine_3d_anisotropic():
    sp = (1.25, 0.9, 3.0)
    A = np.array([[1.1, 0.2, 0.05], [-0.1, 0.9, 0.1], [0.03, 0.02, 1.2]])
    u = affine_field(A, (12, 10, 6), sp, centre=(7.0, 4.0, 9.0))
    det = jacobian_determinant_grid(u, sp)
    assert det.shape == (12, 10, 6)
    np.testing.assert_allclose(det, np.linalg.det(A), rtol=1e-10)  # linear: exact even at the border


def test_jacobian_rotation_is_one():
    sp = (1.0, 1.0, 1.0)
    th = 0.3
    R = np.array([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0], [0, 0, 1]])
    np.testing.assert_allclose(jacobian_determinant_grid(affine_field(R, (9, 9, 5), sp), sp), 1.0, atol=1e-12)
    # a non-linear rotation field (angle grows with radius): det = 1 analytically, FD approximates it
    sp2 = (0.5, 0.5, 1.0)
    g = np.stack(grid_mm((64, 64, 1), sp2), axis=-1)
    c = np.array([16.0, 16.0, 0.0])
    x = g - c
    r = np.hypot(x[..., 0], x[..., 1])
    ang = 0.02 * r
    u = np.zeros_like(g)
    u[..., 0] = np.cos(ang) * x[..., 0] - np.sin(ang) * x[..., 1] - x[..., 0]
    u[..., 1] = np.sin(ang) * x[..., 0] + np.cos(ang) * x[..., 1] - x[..., 1]
    det = jacobian_determinant_grid(u, sp2)
    np.testing.assert_allclose(det[2:-2, 2:-2], 1.0, atol=2e-3)


def test_jacobian_2d_ignores_k_component():
    sp = (0.8, 1.4, 8.0)
    A = np.array([[1.3, 0.1, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, 1.0]])
    u = affine_field(A, (10, 12, 1), sp)
    u[..., 2] = 5.0 * np.random.default_rng(0).standard_normal(u.shape[:3])  # junk out of plane
    det = jacobian_determinant_grid(u, sp)
    assert det.shape == (10, 12, 1)
    np.testing.assert_allclose(det, 1.3 * 0.7, rtol=1e-10)


def folding_field(shape, sp, amp):
    """u_0 = amp * sin(2 pi X / L) along i: det = 1 + amp * 2 pi / L cos(.), folds where amp*2pi/L > 1."""
    g = grid_mm(shape, sp)
    L = shape[0] * sp[0] / 2
    u = np.zeros(shape + (3,))
    u[..., 0] = amp * np.sin(2 * np.pi * g[0] / L)
    return u, 2 * np.pi / L


@pytest.mark.parametrize("shape, sp", [((64, 8, 1), (0.5, 1.0, 1.0)), ((64, 6, 5), (0.5, 1.0, 3.0))])
def test_folding_field_and_stats(shape, sp):
    u_fold, k = folding_field(shape, sp, amp=2.0 / (2 * np.pi / (shape[0] * sp[0] / 2)))  # peak slope 2
    u_ok, _ = folding_field(shape, sp, amp=0.5 / k)  # peak slope 0.5: det in [0.5, 1.5]
    det = jacobian_determinant_grid(u_fold, sp)
    assert det.min() < 0
    disp = np.stack([np.zeros_like(u_ok), u_ok, u_fold], axis=3)  # (X, Y, Z, 3 frames, 3)
    s = folding_stats(disp, sp)
    frac = np.count_nonzero(det <= 0) / det.size
    assert s["per_frame_percent"][0] == 0.0 and s["per_frame_percent"][1] == 0.0
    assert s["per_frame_percent"][2] == pytest.approx(100 * frac)
    # analytic fraction of 1 + 2 cos(phi) <= 0 is 1/3 (phi in [2pi/3, 4pi/3])
    assert s["per_frame_percent"][2] == pytest.approx(100 / 3, abs=4.0)
    assert s["percent_folded"] == pytest.approx(100 * frac / 3)
    assert s["min_det"] == pytest.approx(det.min())
    assert s["n_voxels"] == 3 * int(np.prod(shape))
    # a mask on the non-folding half-period: nothing folds there
    m = det[..., :] > 0.5
    s_m = folding_stats(disp, sp, mask=m)
    assert s_m["percent_folded"] == 0.0 and s_m["n_voxels"] == 3 * int(m.sum())
    # several regions in one pass: each exactly what its own call gives
    both = folding_stats_regions(disp, sp, {"all": None, "calm": m})
    assert both["all"] == s and both["calm"] == s_m


def test_det_of_a_slice_needs_only_its_neighbours():
    """What the report's folding map relies on: det F at slice k from slices k-1..k+1 alone
    (two at the ends) equals det F at k on the whole grid."""
    rng = np.random.default_rng(5)
    disp = rng.normal(0.0, 2.0, (9, 8, 5, 3))
    sp = (1.5, 1.5, 8.0)
    full = jacobian_determinant_grid(disp, sp)
    for k in range(5):
        lo, hi = max(k - 1, 0), min(k + 2, 5)
        np.testing.assert_array_equal(jacobian_determinant_grid(disp[:, :, lo:hi], sp)[:, :, k - lo], full[:, :, k])


@pytest.mark.parametrize("d", [2, 3, 4])
def test_det_f_closed_form_matches_lu(d):
    rng = np.random.default_rng(d)
    F = np.eye(d) + rng.normal(0.0, 0.6, (50, 7, d, d))  # folded and unfolded gradients
    np.testing.assert_allclose(det_f(F), np.linalg.det(F), rtol=1e-12, atol=1e-12)
    assert np.any(det_f(F) < 0) and np.any(det_f(F) > 0)


def test_heart_mask_margin_in_mm():
    sp = (1.0, 1.0, 4.0)
    lab = np.zeros((30, 30, 7), np.uint8)
    lab[15, 15, 3] = ACDC.lv
    m = heart_mask(lab, ACDC, sp, margin_mm=4.5)
    assert m[15, 19, 3] and not m[15, 20, 3]  # 4 mm in-plane in, 5 mm out
    assert m[15, 15, 4] and not m[15, 15, 5]  # one slice (4 mm) in, two (8 mm) out


# ---------------------------------------------------------------------------------------------
# evaluate_arrays / evaluate_folder
# ---------------------------------------------------------------------------------------------


def _case(ref=1):
    """A 2D+t case: reference labels, a true affine-contraction motion, its propagated labels."""
    sp = (1.5, 1.5, 8.0)
    shape = (40, 40, 1)
    c = (30.0, 30.0, 0.0)
    lab = heart_labels(shape, sp, c)
    T = 4
    true = np.zeros(shape + (T, 3), np.float32)
    for t, s in enumerate([1.0, 0.95, 0.9, 0.97]):
        A = np.diag([s, s, 1.0])
        true[:, :, :, t] = affine_field(A, shape, sp, centre=c)
    true -= true[:, :, :, ref : ref + 1]  # zero at the reference frame
    labels = np.repeat(lab[..., None], T, axis=-1)
    return sp, lab, true, labels


def test_evaluate_arrays_perfect_and_json():
    sp, lab, true, labels = _case(ref=1)
    r = evaluate_arrays(true, labels, true, labels, spacing=sp, label_map=ACDC)
    assert r["ref_frame"] == 1 == find_reference_frame(true)
    assert r["epe"]["all"]["max"] == 0.0 and r["epe"]["all"]["frames"] == [0, 2, 3]
    assert set(r["epe"]) == {"all", "heart", "LV", "MYO", "RV"}
    assert r["folding"]["all"]["percent_folded"] == 0.0
    assert r["folding"]["heart"]["n_voxels"] < r["folding"]["all"]["n_voxels"]
    assert r["labels"]["summary"]["LV"]["dice_min"] == 1.0
    json.dumps(r, allow_nan=False)  # JSON-ready: no NaN anywhere


def test_evaluate_arrays_errors_and_nan_to_none():
    sp, lab, true, labels = _case()
    pred = true + np.array([0.1, 0.0, 0.0], np.float32)
    r = evaluate_arrays(pred, truth_disp=true, ref_frame=1, spacing=sp)
    assert set(r["epe"]) == {"all"} and r["epe"]["all"]["mean"] == pytest.approx(0.1, rel=1e-4)
    assert "labels" not in r
    with pytest.raises(InputError, match="shape"):
        evaluate_arrays(true, labels[:, :-1], spacing=sp)
    with pytest.raises(InputError, match="shape"):
        evaluate_arrays(true, truth_disp=true[:, :, :, :3], spacing=sp)
    assert json_ready({"a": float("nan"), 1: [np.float32(2.0), np.inf]}) == {"a": None, "1": [2.0, None]}


def _write(path, data, sp):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), np.diag(list(sp) + [1.0])), str(path))


def test_evaluate_folder(tmp_path):
    sp, lab, true, labels = _case(ref=0)
    out = tmp_path / "fit"
    out.mkdir()
    pred = true.copy()
    pred[..., 1:, 0] += 0.2  # 0.2 mm error along i in every non-reference frame
    _write(out / "displacement.nii.gz", pred.astype(np.float32), sp)
    shifted = labels.copy()
    shifted[..., 2] = np.roll(labels[..., 2], 1, axis=1)
    _write(out / "labels.nii.gz", shifted.astype(np.uint8), sp)
    (out / "metrics.json").write_text(json.dumps({"ref_frame": 0}))
    truth = tmp_path / "truth"
    truth.mkdir()
    _write(truth / "case001_truth_displacement.nii.gz", true.astype(np.float32), sp)
    _write(truth / "case001_labels.nii.gz", labels.astype(np.uint8), sp)

    r = evaluate_folder(out, truth / "case001_truth_displacement.nii.gz", truth / "case001_labels.nii.gz")
    assert r["spacing_mm"] == pytest.approx(list(sp))
    assert r["ref_frame"] == 0
    assert r["epe"]["MYO"]["mean"] == pytest.approx(0.2, rel=1e-4)
    lv = r["labels"]["summary"]["LV"]
    assert lv["dice_min"] == pytest.approx(dice(shifted[..., 2], labels[..., 2], ACDC.lv))
    assert lv["hd95_max"] == pytest.approx(1.5)
    assert r["folding"]["all"]["percent_folded"] == 0.0
    json.dumps(r, allow_nan=False)

    # frame labels only (Sunnybrook-style), given as per-frame files
    _write(truth / "ed.nii.gz", lab.astype(np.uint8), sp)
    es = np.where(labels[..., 2] == ACDC.lv, ACDC.lv, 0).astype(np.uint8)
    _write(truth / "es.nii.gz", es, sp)
    r = evaluate_folder(out, frame_labels={0: truth / "ed.nii.gz", 2: truth / "es.nii.gz"})
    assert set(r["labels"]["frames"]) == {"0", "2"}
    assert set(r["labels"]["frames"]["2"]) == {"LV"}
    assert "epe" not in r

    # mismatches and missing files raise one-line InputErrors
    _write(truth / "small_disp.nii.gz", true[:-2].astype(np.float32), sp)
    with pytest.raises(InputError, match="shape"):
        evaluate_folder(out, truth_displacement=truth / "small_disp.nii.gz")
    _write(truth / "small_labels.nii.gz", labels[:, :-1].astype(np.uint8), sp)
    with pytest.raises(InputError, match="shape"):
        evaluate_folder(out, truth_labels=truth / "small_labels.nii.gz")
    with pytest.raises(InputError, match="shape"):
        evaluate_folder(out, frame_labels={2: truth / "small_labels.nii.gz"})
    _write(truth / "coarse_disp.nii.gz", true.astype(np.float32), (2.0, 2.0, 8.0))
    with pytest.raises(InputError, match="voxel size"):
        evaluate_folder(out, truth_displacement=truth / "coarse_disp.nii.gz")
    with pytest.raises(InputError, match="not found"):
        evaluate_folder(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not found"):
        evaluate_folder(out, truth_displacement=truth / "missing.nii.gz")
    with pytest.raises(InputError, match="frame 9"):
        evaluate_folder(out, frame_labels={9: truth / "es.nii.gz"})


def test_label_map_other_codes():
    lmap = LabelMap(lv=5, myo=7, rv=None)
    a = np.zeros((10, 10, 1, 2), np.uint8)
    a[2:5, 2:5] = 5
    a[6:8, 6:8] = 7
    s = label_scores(a, a, lmap, (1, 1, 1))
    assert set(s["summary"]) == {"LV", "MYO"}
