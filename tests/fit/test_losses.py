"""Losses against analytic identities."""

from __future__ import annotations

import math

import torch

from cardioinr.fit.fields import FieldConfig, MotionField
from cardioinr.fit.losses import (
    det_f_from_grad_u,
    folding_loss,
    label_overlap_loss,
    lncc_loss,
    mse_loss,
    ncc_loss,
    temporal_smoothness_loss,
    volume_change_loss,
)


def test_ncc_invariant_to_affine_intensity_change() -> None:
    a = torch.rand(500, 3)
    assert ncc_loss(a, 2.5 * a + 0.3).abs() < 1e-3
    assert ncc_loss(a, -a) > 1.99
    assert 0.8 < ncc_loss(a, torch.rand(500, 3)) < 1.2


def test_lncc_and_mse() -> None:
    a = torch.rand(20, 25, 2)
    assert lncc_loss(a, 3 * a - 1).abs() < 1e-3
    assert mse_loss(a, a + 0.5) == torch.tensor(0.25)


def test_det_f_from_grad_u_matches_linalg() -> None:
    for d in (2, 3):
        j = torch.randn(50, 4, d, d, dtype=torch.float64) * 0.3
        ref = torch.linalg.det(j + torch.eye(d, dtype=torch.float64))
        torch.testing.assert_close(det_f_from_grad_u(j), ref)


def test_folding_and_volume_terms() -> None:
    assert folding_loss(torch.tensor([1.0, 0.9])) == 0
    assert folding_loss(torch.tensor([-0.5])) > 0.4
    assert volume_change_loss(torch.ones(10)) == 0
    w = torch.tensor([1.0, 0.0])
    assert volume_change_loss(torch.tensor([1.0, 5.0]), w) == 0
    torch.testing.assert_close(volume_change_loss(torch.tensor([math.e])), torch.tensor(1.0))


def test_temporal_smoothness_equals_mean_squared_acceleration() -> None:
    """Parseval identity against a finely sampled second derivative of the field in time."""
    torch.manual_seed(0)
    n_frames = 16
    f = MotionField(FieldConfig(hidden=16, layers=1, harmonics=5), 2, n_frames, 0, scale=30.0).double()
    with torch.no_grad():
        f.mlp.head.weight.normal_(0, 0.5)
    x = torch.rand(10, 2, dtype=torch.float64) * 30
    coeffs = f.coefficients(x)
    h = 1e-2
    t = torch.arange(0, n_frames, h, dtype=torch.float64)
    u = f(x, t)
    acc = (u[:, 2:] - 2 * u[:, 1:-1] + u[:, :-2]) / h**2
    numeric = acc.pow(2).sum(-1).mean()
    # with the cycle as the time unit's reference: n_frames units per cycle give per-frame values
    torch.testing.assert_close(temporal_smoothness_loss(coeffs, n_frames), numeric, rtol=1e-3, atol=1e-9)


def test_temporal_smoothness_does_not_depend_on_the_frame_count() -> None:
    """The same motion over the cycle, sampled with 20 or 10 frames, costs the same."""
    torch.manual_seed(0)
    x = torch.rand(10, 2, dtype=torch.float64) * 30
    f20 = MotionField(FieldConfig(hidden=16, layers=1, harmonics=4), 2, 20, 0, scale=30.0).double()
    with torch.no_grad():
        f20.mlp.head.weight.normal_(0, 0.5)
    f10 = MotionField(FieldConfig(hidden=16, layers=1, harmonics=4), 2, 10, 0, scale=30.0).double()
    f10.load_state_dict(f20.state_dict())
    u20, u10 = f20(x, torch.arange(0.0, 20.0, 2.0, dtype=torch.float64)), f10(x, torch.arange(10.0, dtype=torch.float64))
    torch.testing.assert_close(u20, u10)  # one motion, two samplings
    torch.testing.assert_close(temporal_smoothness_loss(f20.coefficients(x)), temporal_smoothness_loss(f10.coefficients(x)))


def test_label_overlap() -> None:
    a = torch.zeros(10, 2, 2)
    a[:5, :, 0] = 1
    a[5:, :, 1] = 1
    assert label_overlap_loss(a, a).abs() < 1e-6
    assert label_overlap_loss(a, a.flip(-1)) > 0.99
