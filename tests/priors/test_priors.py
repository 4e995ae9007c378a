"""Priors: every kind trains on a tiny cohort and adapts faster than random initialisation;
checkpoints round-trip exactly and bad files fail with one clear line."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cardioinr.core.errors import CheckpointError, ConfigError
from cardioinr.fit.fields import FieldConfig
from cardioinr.fit import FitConfig, Fitter, evaluate_loss
from cardioinr.phantoms import PhantomConfig, make_phantom
from cardioinr.priors import (KINDS, PriorConfig, check_through_plane, load_prior, random_prior, save_prior, train_prior,
                              trimmed_mean)

SMALL = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=8)
FIELD = FieldConfig(hidden=48, layers=2)
FIT = FitConfig(field=FIELD, points=1024, reg_points=128)


def _ref_only(seq):
    return replace(seq, labels={seq.ref_frame: seq.labels[seq.ref_frame]})


@pytest.fixture(scope="module")
def cohort():
    return [_ref_only(make_phantom(SMALL, s).sequence) for s in range(3)]


@pytest.fixture(scope="module")
def held_out():
    return _ref_only(make_phantom(SMALL, 50).sequence)


def _config(kind: str) -> PriorConfig:
    return PriorConfig(kind=kind, field=FIELD, fit=FIT, steps=40, batch=2, subject_steps=60, inner_steps=5,
                       encoder_steps=30, latent_dim=16)


@pytest.fixture(scope="module")
def trained(cohort):
    return {kind: train_prior(cohort, _config(kind)) for kind in KINDS}


def _adapted_loss(prior, seq, steps: int) -> float:
    if prior.kind == "random":
        f = Fitter(replace(FIT, seed=0)).new_field(seq)
        cfg = replace(FIT, steps=steps, patience=10**9)
    else:
        f = prior.init_field(seq)
        cfg = prior.fit_config(FIT, steps=steps, patience=10**9)
    Fitter(cfg).optimise(seq, f)
    return evaluate_loss(f, seq, FIT)


@pytest.mark.parametrize("kind", KINDS)
def test_prior_adapts_faster_than_random_init(kind, trained, held_out) -> None:
    prior = trained[kind]
    base = _adapted_loss(random_prior(FIELD, 2), held_out, 10)
    ours = _adapted_loss(prior, held_out, 10)
    assert ours < base, (kind, ours, base)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_is_exact(kind, trained, held_out, tmp_path) -> None:
    prior = trained[kind]
    path = save_prior(tmp_path / f"{kind}.ckpt", prior)
    back = load_prior(path)
    assert back.kind == kind
    for (k, a), (k2, b) in zip(prior.field.state_dict().items(), back.field.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert back.data_summary["n_sequences"] == 3
    assert back.config["train"]["kind"] == kind
    x = torch.rand(32, 2) * 100
    torch.testing.assert_close(back.init_field(held_out)(x), prior.init_field(held_out)(x), rtol=0, atol=0)
    if kind == "encoder":
        assert back.encoder is not None


def test_bad_checkpoints_fail_clearly(trained, tmp_path) -> None:
    good = save_prior(tmp_path / "p.ckpt", trained["population"])
    raw = good.read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_prior(tmp_path / "trunc.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_prior(tmp_path / "junk.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_prior(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="expected a 'meta' prior"):
        load_prior(good, kind="meta")
    obj = torch.load(good, weights_only=True)
    obj["version"] = 99
    torch.save(obj, tmp_path / "v99.ckpt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_prior(tmp_path / "v99.ckpt")
    torch.save({"format": "something-else"}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a cardioinr prior"):
        load_prior(tmp_path / "other.ckpt")


def test_prior_dimension_mismatch_is_clear(trained) -> None:
    seq3 = make_phantom(PhantomConfig(dim=3, shape=(56, 56, 5), spacing=(2.0, 2.0, 8.0), n_frames=6), 0).sequence
    with pytest.raises(ConfigError, match="2D fields but the sequence is 3D"):
        trained["population"].init_field(seq3)


def test_training_resumes_from_state(cohort, tmp_path) -> None:
    cfg = replace(_config("population"), steps=6, save_every=3)
    full = train_prior(cohort, cfg)
    state = tmp_path / "p.ckpt.state"

    class Stop(Exception):
        pass

    def stop_at_4(step, logs):
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        train_prior(cohort, cfg, state_path=state, callback=stop_at_4)
    assert state.exists()
    resumed = train_prior(cohort, cfg, state_path=state)
    assert not state.exists()
    for a, b in zip(full.field.parameters(), resumed.field.parameters()):
        torch.testing.assert_close(a, b)


def test_trimmed_mean() -> None:
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert trimmed_mean(x, 0.2).item() == pytest.approx(2.0)
    assert trimmed_mean(x, 0.0).item() == pytest.approx(21.2)


def test_bad_prior_settings() -> None:
    with pytest.raises(ConfigError):
        PriorConfig(kind="maml++")
    with pytest.raises(ConfigError):
        PriorConfig(trim=0.6)


def test_short_budget_moves_the_weights_not_only_the_code(trained, held_out) -> None:
    """The code-only phase is capped at a third of the budget: a 9-step adaptation of an
    auto-decoder prior (default 30 code-only steps) still moves the shared weights."""
    prior = trained["autodecoder"]
    f = prior.init_field(held_out)
    before = {k: v.clone() for k, v in f.state_dict().items()}
    cfg = prior.fit_config(FIT, steps=9, patience=10**9)
    assert cfg.latent_steps > 9
    Fitter(cfg).optimise(held_out, f)
    moved = [k for k, v in f.state_dict().items() if not torch.equal(v, before[k])]
    assert "latent" in moved and any(k.startswith("mlp.") for k in moved), moved


def test_adaptation_defaults_depend_on_kind_and_dimension() -> None:
    """2D priors adapt for their kind's 2D budget, 3D priors (stacks) for the 3D one; explicit
    settings win, and the other adaptation settings are the kind's in both."""
    from cardioinr.priors import ADAPT_3D, ADAPT_DEFAULTS, ADAPT_STEPS_3D, Prior

    for kind in KINDS:
        p2, p3 = (Prior(kind, random_prior(FIELD, dim).field) for dim in (2, 3))
        assert p2.fit_config().steps == ADAPT_DEFAULTS[kind]["steps"]
        assert p3.fit_config().steps == ADAPT_STEPS_3D[kind] > p2.fit_config().steps
        assert p3.fit_config(steps=7).steps == 7
        assert p3.fit_config().patience == p2.fit_config().patience == ADAPT_DEFAULTS[kind]["patience"]
        assert p3.fit_config().field == FIELD
        # stacks from a prior: the LV cavity follows its wall along k; not in 2D (no k)
        assert p3.fit_config().w_cavity_follow == ADAPT_3D["w_cavity_follow"] > 0
        assert p2.fit_config().w_cavity_follow == 0
        assert p3.fit_config(w_cavity_follow=0.0).w_cavity_follow == 0  # the user's setting wins
    assert random_prior(FIELD, 3).fit_config().steps == FitConfig().steps
    assert random_prior(FIELD, 3).fit_config().w_cavity_follow == 0  # a random start is a fit from scratch


def _mirrored(seq):
    """The same scan stored with axis 0 reversed: voxel axes of the other handedness."""
    flip = torch.eye(4, dtype=torch.float64).numpy()
    flip[0, 0], flip[0, 3] = -1.0, seq.shape[0] - 1
    return replace(seq, image=seq.image[::-1].copy(), affine=seq.affine @ flip,
                   labels={k: v[::-1].copy() for k, v in seq.labels.items()})


@pytest.mark.parametrize("kind", KINDS)
def test_prior_motion_keeps_its_sense_of_rotation_on_mirrored_voxel_axes(kind, trained, held_out) -> None:
    """A scan whose voxel axes are left-handed (most DICOM-derived stacks) gets the prior's
    motion of the same physical heart, mirrored back into its array: the twist a prior learned
    keeps its sense of rotation in the world."""
    prior = trained[kind]
    mirror = _mirrored(held_out)
    sp = torch.as_tensor(held_out.spacing)
    u = prior.init_field(held_out).dense(held_out.shape, sp)
    um = prior.init_field(mirror).dense(mirror.shape, sp)
    expected = u.flip(0)
    expected[..., 0] = -expected[..., 0]
    assert float(u.abs().max()) > 0.1  # the check compares real motion
    torch.testing.assert_close(um, expected, rtol=0, atol=1e-4)


def test_fields_saved_before_the_reflection_load_unmirrored(trained, held_out) -> None:
    f = trained["consensus"].init_field(held_out)
    old = {k: v for k, v in f.state_dict().items() if k != "reflect"}
    g = trained["consensus"].init_field(_mirrored(held_out))
    assert g.reflect.tolist() == [-1.0, 1.0]
    g.load_state_dict(old)
    assert g.reflect.tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="reflect"):
        g.set_frame(g.centre, 1.0, g.n_frames, g.ref_frame, torch.tensor([1.0, 0.5]))


def test_through_plane_scales_only_the_starting_motion_along_k() -> None:
    import numpy as np

    from cardioinr.fit.fields import MotionField
    from cardioinr.io import Sequence
    from cardioinr.priors import Prior

    rng = np.random.default_rng(0)
    seq = Sequence(image=rng.random((16, 16, 4, 8), dtype=np.float32), affine=np.diag([2.0, 2.0, 8.0, 1.0]))
    field = MotionField(FieldConfig(hidden=16, layers=1), 3, 8, 0, seed=0)
    with torch.no_grad():
        field.mlp.head.weight.normal_(0.0, 0.5)
        field.mlp.head.bias.normal_(0.0, 0.5)
    prior = Prior("consensus", field)
    x = torch.rand(64, 3) * torch.tensor([32.0, 32.0, 32.0])
    full = prior.init_field(seq, through_plane=1.0)(x)
    assert float(full[..., 2].abs().max()) > 0.1
    for s in (0.0, 0.5):
        part = prior.init_field(seq, through_plane=s)(x)
        torch.testing.assert_close(part[..., :2], full[..., :2], rtol=0, atol=0)
        torch.testing.assert_close(part[..., 2], s * full[..., 2], rtol=1e-6, atol=1e-7)
    assert torch.equal(prior.field.mlp.head.weight, field.mlp.head.weight)  # the prior itself is untouched
    with pytest.raises(ConfigError, match="through_plane"):
        prior.init_field(seq, through_plane=1.5)
    with pytest.raises(ConfigError, match="'auto' or a number"):
        prior.init_field(seq, through_plane="half")
    assert check_through_plane("0.25") == 0.25 and check_through_plane(" Auto ") == "auto"
    assert check_through_plane("auto", with_prior=False) == "auto"  # the default, harmless without a prior
    with pytest.raises(ConfigError, match="give --prior"):
        check_through_plane(1.0, with_prior=False)


@pytest.mark.slow
def test_auto_through_plane_start_keeps_only_the_descent_the_images_show() -> None:
    """A prior that learned a heart's base descent keeps its through-plane start on that heart
    and drops it on the same heart moving only in-plane: the images choose, no labels needed."""
    import numpy as np

    from cardioinr.priors import THROUGH_PLANE_GRID, Prior

    cfg = PhantomConfig(dim=3, shape=(48, 48, 6), spacing=(2.2, 2.2, 8.0), n_frames=6,
                        base_descent_mm_range=(10.0, 12.0))
    moving = _ref_only(make_phantom(cfg, 3).sequence)
    flat = _ref_only(make_phantom(replace(cfg, base_descent_mm_range=(0.0, 0.0)), 3).sequence)
    assert float(np.abs(flat.image - moving.image).max()) > 0.1  # the same heart, another long-axis motion
    torch.manual_seed(0)
    learned = Fitter(replace(FIT, steps=150, patience=10**9)).fit(moving).field
    prior = Prior("consensus", learned)
    for seq, lo, hi in ((moving, 0.75, 1.0), (flat, 0.0, 0.25)):
        losses = prior.through_plane_losses(seq, FIT)
        assert list(losses) == list(THROUGH_PLANE_GRID)
        # full descent fits the moving heart better than none, and the flat one worse
        assert (losses[1.0] < losses[0.0]) == (seq is moving)
        f, s = prior.start(seq, config=FIT)
        assert lo <= s <= hi and s == min(losses, key=losses.get)
        x = torch.rand(32, 3) * 80.0
        torch.testing.assert_close(f(x), prior.init_field(seq, through_plane=s)(x), rtol=0, atol=0)


def test_auto_through_plane_start_is_free_in_2d(trained, held_out, monkeypatch) -> None:
    import cardioinr.priors.prior as prior_mod

    monkeypatch.setattr(prior_mod, "evaluate_losses", lambda *a, **k: pytest.fail("2D start evaluated losses"))
    f, s = trained["consensus"].start(held_out)
    assert s == 1.0 and f.dim == 2
