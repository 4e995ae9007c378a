"""Running prior training data-parallel under ``torchrun`` (gloo on CPU, nccl on GPU).

The same command runs in one process without torchrun: :func:`init_from_env` then returns a
single-process context and nothing else changes. Ranks split every global batch of
sequences round-robin and sum their gradients, and point sampling depends only on
(seed, step, batch position), so N processes reproduce one process with the same global batch.
Only rank 0 writes checkpoints (atomically).
"""

from __future__ import annotations

import os

import torch

from cardioinr.priors import DistContext


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment, if any."""
    import torch.distributed as td

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and td.is_available() and not td.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group(backend=backend)
    return DistContext()


def is_rank0(dist: DistContext) -> bool:
    return dist.rank == 0


def shutdown(dist: DistContext) -> None:
    """Leave the process group after a successful run, every rank together.

    The barrier keeps a rank from tearing down its gloo connections while a peer is still
    finishing the last collective, a known gloo hazard (gloo's teardown does not drain in-flight
    writes) and our best explanation of a rare SIGABRT once seen in the two-process test.
    """
    import torch.distributed as td

    if dist.active and td.is_initialized():
        td.barrier()
        td.destroy_process_group()
