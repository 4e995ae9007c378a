"""The phantom's motion as a continuous field (:class:`cardioinr.phantoms.TruthField`): what the
strain benchmarks analyse as the truth. It must be the rendered truth at the voxel centres, its
gradient must be the map's (volume kept in the myocardium, as the model is built), and its strain
through the fit's exact-gradient analysis must agree with the drawn peaks and with finite
differences where the grid is fine enough for them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardioinr.analysis.strain import analyse_displacement, analyse_field
from cardioinr.phantoms import PhantomConfig, TruthField, make_phantom


@pytest.fixture(scope="module")
def ph2():
    return make_phantom(PhantomConfig(dim=2, n_frames=10), seed=3)


@pytest.fixture(scope="module")
def ph3_thin():
    """Thin slices, so that finite differences along k are as good as in-plane."""
    cfg = PhantomConfig(dim=3, shape=(64, 64, 36), spacing=(1.6, 1.6, 1.6), n_frames=6, supersample=1,
                        z_supersample=1, noise_sigma=0.0)
    return make_phantom(cfg, seed=1)


def _myo_points(ph) -> tuple[np.ndarray, np.ndarray]:
    seq = ph.sequence
    myo = seq.ref_labels == seq.label_map.myo
    return myo, np.argwhere(myo) * seq.spacing


@pytest.mark.parametrize("which", ["ph2", "ph3_thin"])
def test_truth_field_is_the_rendered_truth(which, request):
    ph = request.getfixturevalue(which)
    d = ph.sequence.ndim_space
    myo, pts = _myo_points(ph)
    tf = ph.truth_field()
    assert isinstance(tf, TruthField) and tf.dim == d and tf.n_frames == ph.sequence.n_frames
    u, grad = tf.displacement_and_jacobian(torch.from_numpy(pts[:, :d]))
    assert u.shape == (len(pts), ph.sequence.n_frames, d) and grad.shape == u.shape + (d,)
    np.testing.assert_allclose(u.numpy(), ph.displacement[myo][..., :d], atol=1e-5)
    # the reference frame is the identity: no displacement, no gradient
    assert np.abs(grad.numpy()[:, ph.sequence.ref_frame]).max() < 1e-6
    # the myocardium keeps its volume (3D) / area (2D, no base descent) under the analytic map
    det = np.linalg.det(grad.numpy() + np.eye(d))
    assert np.abs(det - 1.0).max() < 1e-6, np.abs(det - 1.0).max()


def test_truth_strain_matches_drawn_peaks_and_fine_grid_differences(ph2, ph3_thin):
    seq = ph2.sequence
    common = dict(label_map=seq.label_map, ref_frame=seq.ref_frame, affine=seq.affine)
    exact = analyse_field(ph2.truth_field(), seq.spacing, seq.ref_labels, **common).summary()["peak"]
    # the drawn peaks are mid-wall values; the voxel average over the wall is within a point
    assert exact["radial_pct"] == pytest.approx(100 * ph2.params["peak_radial_strain"], abs=1.0)
    assert exact["circumferential_pct"] == pytest.approx(100 * ph2.params["peak_circumferential_strain"], abs=1.0)
    seq = ph3_thin.sequence
    common = dict(label_map=seq.label_map, ref_frame=seq.ref_frame, affine=seq.affine)
    exact = analyse_field(ph3_thin.truth_field(), seq.spacing, seq.ref_labels, **common).summary()
    fd = analyse_displacement(ph3_thin.displacement, seq.spacing, seq.ref_labels, **common).summary()
    for key in ("radial_pct", "circumferential_pct", "longitudinal_pct"):
        assert exact["peak"][key] == pytest.approx(fd["peak"][key], abs=0.6), key
    # the base descends: longitudinal shortening, and the midwall line agrees in sign
    assert exact["peak"]["longitudinal_pct"] < -3.0 and exact["gls_midwall_pct"] < -3.0
