"""Data-parallel prior training: two gloo processes give the same weights as one process with the
same global batch (ranks split every batch round-robin, sum their gradients, and point sampling
depends only on (seed, step, batch position)).

Two routes: the Python API in processes started by ``torch.multiprocessing`` (every kind), and
the ``cardioinr train-prior`` command under ``torchrun`` (population), which also exercises
:func:`cardioinr.app.distributed.init_from_env`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

from cardioinr.app.distributed import shutdown
from cardioinr.fit.fields import FieldConfig
from cardioinr.fit import FitConfig
from cardioinr.phantoms import PhantomConfig, make_phantom, write_cases
from cardioinr.priors import DistContext, PriorConfig, load_prior, train_prior

pytestmark = pytest.mark.slow  # several processes under torchrun

SMALL = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=8)
FIELD = FieldConfig(hidden=32, layers=2)
FIT = FitConfig(field=FIELD, points=256, reg_points=64)
ATOL = 1e-5
# What a rank's C++ runtime prints when std::terminate ends it (see _torchrun_train_prior).
GLOO_ABORT = "terminate called without an active exception"
KINDS = ("population", "autodecoder", "meta", "consensus", "encoder")


def _config(kind: str, batch: int = 4) -> PriorConfig:
    # Three sequences and a batch of four: the batch repeats a sequence, as small cohorts do.
    # A large learning rate makes three steps move the weights by ~1e-2, far above ATOL.
    return PriorConfig(kind=kind, field=FIELD, fit=FIT, steps=3, batch=batch, lr=3e-3, subject_steps=3,
                       inner_steps=2, encoder_steps=3, latent_dim=8)


def _weights(prior) -> dict[str, torch.Tensor]:
    out = {f"field.{k}": v.detach().clone() for k, v in prior.field.state_dict().items() if v.is_floating_point()}
    if prior.codes is not None:
        out["codes"] = prior.codes.detach().clone()
    if prior.encoder is not None:
        out.update({f"encoder.{k}": v.detach().clone() for k, v in prior.encoder.state_dict().items()})
    return out


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _rank_main(rank: int, store: str, out: str, seqs: list) -> None:
    """One rank (module level: torch.multiprocessing pickles it by name)."""
    torch.set_num_threads(1)  # two processes on a shared two-core machine
    td.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    dist = DistContext()
    res = {kind: _weights(train_prior(seqs, _config(kind), dist=dist)) for kind in KINDS}
    if rank == 0:
        torch.save(res, out)
    shutdown(dist)  # the product's teardown: barrier, then destroy


@pytest.fixture(scope="module")
def seqs():
    out = []
    for s in range(3):
        q = make_phantom(SMALL, s).sequence
        out.append(replace(q, labels={q.ref_frame: q.labels[q.ref_frame]}))
    return out


@pytest.fixture(scope="module")
def two_ranks(seqs, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(str(d / "store"), str(d / "w.pt"), seqs), nprocs=2, join=True)
    return torch.load(d / "w.pt", weights_only=True)


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_match_one(kind, seqs, two_ranks) -> None:
    one = _weights(train_prior(seqs, _config(kind)))
    assert _max_diff(one, two_ranks[kind]) < ATOL


def test_the_check_can_fail(seqs, two_ranks) -> None:
    """Negative control: each rank training on its own half of the batch (no all-reduce) is far
    from the data-parallel result, so the tolerance above is meaningful."""
    half = _weights(train_prior(seqs, _config("population", batch=2)))
    assert _max_diff(half, two_ranks["population"]) > 100 * ATOL


def _torchrun_train_prior(data: Path, cfg: PriorConfig, out: Path, *extra: str):
    """``cardioinr train-prior DATA`` with ``cfg`` (a settings file beside ``out``) in two
    processes under torchrun; the checkpoint it wrote."""
    cfg_file = out.with_suffix(".json")
    cfg_file.write_text(json.dumps({"prior": cfg.to_dict()}, default=list))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "cardioinr.app.cli", "train-prior", str(data), *extra, "--out", str(out),
           "--config", str(cfg_file), "--threads", "1", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and GLOO_ABORT in proc.stderr:
        # A rank's C++ runtime called std::terminate (a thread still joinable when destroyed, as
        # gloo's threads can be at teardown; pytorch/pytorch#179291 describes one such path).
        # Seen twice in this project's CI, never in 24 runs here (quiet or with both cores
        # loaded), with no Python error from either rank. Once more from a clean folder, said
        # aloud; any other failure, or the same one twice, fails the test.
        warnings.warn(f"torchrun: a rank aborted ({GLOO_ABORT!r}); running the command once more", stacklevel=2)
        for leftover in (out, Path(str(out) + ".state")):
            leftover.unlink(missing_ok=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_prior(out)


def test_torchrun_command_matches_one_process(tmp_path) -> None:
    from cardioinr.app.cli import load_training_sequences

    data = tmp_path / "data"
    write_cases(data, 3, SMALL, seed=0, progress=False)
    cfg = _config("population")
    out = tmp_path / "prior.ckpt"
    dist_prior = _torchrun_train_prior(data, cfg, out, "--kind", "population")
    assert dist_prior.config["world_size"] == 2
    one = train_prior(load_training_sequences(data), cfg)
    assert _max_diff(_weights(one), _weights(dist_prior)) < ATOL
    assert not Path(str(out) + ".state").exists()  # rank 0 cleaned up its training state


def test_torchrun_fine_tuning_matches_one_process(tmp_path) -> None:
    """``train-prior --from`` under torchrun: the parent on every rank, the same weights and
    lineage as one process."""
    from cardioinr.app.cli import load_training_sequences
    from cardioinr.core.files import file_sha256
    from cardioinr.priors import save_prior

    data = tmp_path / "data"
    write_cases(data, 3, SMALL, seed=5, progress=False)
    seqs = load_training_sequences(data)
    parent = tmp_path / "parent.ckpt"
    save_prior(parent, train_prior(seqs, _config("population"), record_distribution=False))
    cfg = _config("population")
    dist_prior = _torchrun_train_prior(data, cfg, tmp_path / "ft.ckpt", "--from", str(parent))
    assert dist_prior.config["world_size"] == 2 and dist_prior.lineage[0]["sha256"] == file_sha256(parent)
    one = train_prior(seqs, cfg, parent=load_prior(parent), record_distribution=False)
    assert _max_diff(_weights(one), _weights(dist_prior)) < ATOL
    assert 100 * ATOL < _max_diff(_weights(one), _weights(load_prior(parent)))  # it did train
