"""Motion fields: exact zero at the reference, periodicity, exact Jacobians, explicit params."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from cardioinr.fit.fields import MODELS, FieldConfig, MotionField, harmonic_basis


def _field(model: str, dim: int = 2, n_frames: int = 12, ref: int = 3) -> MotionField:
    torch.manual_seed(0)
    f = MotionField(FieldConfig(model=model, hidden=32, layers=2), dim, n_frames, ref,
                    centre=torch.full((dim,), 40.0), scale=40.0)
    with torch.no_grad():  # a non-trivial field (the head starts near zero on purpose)
        f.mlp.head.weight.normal_(0, 0.3)
        f.mlp.head.bias.normal_(0, 0.3)
    return f


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dim", [2, 3])
def test_zero_at_reference_and_periodic(model: str, dim: int) -> None:
    f = _field(model, dim)
    x = torch.rand(64, dim) * 80
    t = torch.tensor([3.0, 15.0, -9.0, 5.5, 17.5])  # ref, ref + T, ref - T, any, any + T
    u = f(x, t)
    assert u.shape == (64, 5, dim)
    assert torch.all(u[:, :3] == 0)  # exactly, by construction
    assert u[:, 3].abs().max() > 1e-3
    torch.testing.assert_close(u[:, 3], u[:, 4], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dim", [2, 3])
def test_jacobian_matches_finite_differences(model: str, dim: int) -> None:
    f = _field(model, dim).double()
    x = torch.rand(32, dim, dtype=torch.float64) * 60 + 10
    u, jac = f.displacement_and_jacobian(x)
    eps = 1e-4
    cols = []
    for d in range(dim):
        e = torch.zeros(dim, dtype=torch.float64)
        e[d] = eps
        cols.append((f(x + e) - f(x - e)) / (2 * eps))
    fd = torch.stack(cols, -1)
    torch.testing.assert_close(u, f(x))
    torch.testing.assert_close(jac, fd, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("model", ["siren", "fourier"])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("per_point_code", [False, True])
def test_chain_rule_jacobian_equals_forward_mode_autodiff(model: str, dim: int, per_point_code: bool) -> None:
    """The hand-carried tangents (SIREN, Fourier) against torch.func.jvp, with a mirrored,
    off-centre frame and shift modulations: same coefficients and Jacobian, same gradients."""
    torch.manual_seed(1)
    f = MotionField(FieldConfig(model=model, hidden=32, layers=3, latent_dim=6), dim, 12, 3,
                    centre=torch.randn(dim) * 5, scale=37.0, reflect=torch.tensor([1.0, -1.0, 1.0][:dim]))
    f = f.double()
    with torch.no_grad():
        f.mlp.head.weight.normal_(0, 0.3)
        f.latent.normal_()
    n = 40
    x = torch.rand(n, dim, dtype=torch.float64) * 60 - 30
    z = torch.randn(n, 6, dtype=torch.float64) if per_point_code else None
    coeffs, jac = f.coefficients_and_jacobian(x, z)
    x_rep = x.repeat(dim, 1)
    tangent = torch.eye(dim, dtype=torch.float64).repeat_interleave(n, dim=0)
    z_rep = None if z is None else z.repeat(dim, 1)
    ref_c, ref_d = torch.func.jvp(lambda y: f.coefficients(y, z_rep), (x_rep,), (tangent,))
    ref_j = ref_d.reshape(dim, n, *ref_d.shape[1:]).permute(1, 2, 3, 0)
    torch.testing.assert_close(coeffs, ref_c[:n], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(jac, ref_j, atol=1e-12, rtol=1e-10)
    grads = torch.autograd.grad(jac.pow(2).sum(), [f.mlp.hidden[0].weight, f.modulator.weight])
    ref_grads = torch.autograd.grad(ref_j.pow(2).sum(), [f.mlp.hidden[0].weight, f.modulator.weight])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-8)


def test_regulariser_gradients_reach_the_weights() -> None:
    f = _field("siren")
    x = torch.rand(16, 2) * 80
    _, jac = f.displacement_and_jacobian(x)
    jac.pow(2).sum().backward()
    # every weight but the head's bias, which shifts u by a constant and leaves du/dx alone
    grads = [p.grad for name, p in f.mlp.named_parameters() if name != "head.bias"]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert f.mlp.head.bias.grad is None or float(f.mlp.head.bias.grad.abs().max()) == 0.0
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_functional_call_with_other_weights() -> None:
    f = _field("siren")
    x = torch.rand(8, 2) * 80
    params = {k: v.clone() for k, v in f.named_parameters()}
    torch.testing.assert_close(functional_call(f, params, (x,)), f(x))
    params = {k: torch.zeros_like(v) if k.startswith("mlp.head") else v for k, v in params.items()}
    assert torch.all(functional_call(f, params, (x,)) == 0)


def test_latent_code_modulates_the_field() -> None:
    torch.manual_seed(0)
    f = MotionField(FieldConfig(hidden=32, layers=2, latent_dim=8), 2, 12, 0, scale=40.0)
    with torch.no_grad():
        f.mlp.head.weight.normal_(0, 0.3)
    x = torch.rand(8, 2) * 80
    torch.testing.assert_close(f(x, latent=torch.zeros(8)), f(x))  # the default code is zero
    assert (f(x, latent=torch.ones(8)) - f(x)).abs().max() > 1e-4
    with torch.no_grad():
        f.latent.fill_(1.0)
    torch.testing.assert_close(f(x), f(x, latent=torch.ones(8)))
    u, jac = f.displacement_and_jacobian(x, latent=torch.ones(8))
    torch.testing.assert_close(u, f(x))
    with pytest.raises(ValueError):
        _field("siren")(x, latent=torch.zeros(8))


def test_harmonic_basis_vanishes_at_reference() -> None:
    b = harmonic_basis(torch.arange(10.0), 10, 4, 4)
    assert b.shape == (10, 8)
    assert torch.all(b[4] == 0)
    assert torch.all(b[[0, 1, 2, 3, 5, 6, 7, 8, 9]].abs().sum(1) > 0)


def test_dense_output_layout() -> None:
    f = _field("siren", dim=2, n_frames=6, ref=0)
    d = f.dense((5, 4, 1), torch.tensor([1.5, 1.5, 8.0]))
    assert d.shape == (5, 4, 1, 6, 3)
    assert torch.all(d[..., 0, :] == 0) and torch.all(d[..., 2] == 0)
    x = torch.tensor([[2 * 1.5, 3 * 1.5]])
    torch.testing.assert_close(d[2, 3, 0, :, :2], f(x)[0])


@pytest.mark.parametrize("model", MODELS)
def test_a_field_rebound_to_another_cycle_saves_and_loads_exactly(tmp_path, model):
    """A prior trained on 20-frame cines keeps its 6 harmonics when it starts a 6-frame fit
    (which alone would get 2): the saved field must rebuild with 6, mirrored as it was."""
    from cardioinr.fit import load_field, save_field

    f = MotionField(FieldConfig(model=model), 2, 20, 0, seed=3)
    f.set_frame(torch.tensor([40.0, 50.0]), 30.0, 6, 2, reflect=torch.tensor([-1.0, 1.0]))
    assert f.harmonics == 6
    g = load_field(save_field(tmp_path / "field.pt", f))
    x = torch.rand(64, 2) * 80.0
    assert g.harmonics == 6 and g.n_frames == 6 and g.ref_frame == 2
    assert torch.equal(g(x), f(x))
    assert torch.equal(g.reflect, f.reflect)
