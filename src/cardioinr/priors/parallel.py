"""Data-parallel prior training: the torch.distributed context every kind trains with (a no-op
in one process; joined under torchrun by :mod:`cardioinr.app.distributed`)."""

from __future__ import annotations

import torch


class DistContext:
    """torch.distributed helpers; a no-op for a single process."""

    def __init__(self) -> None:
        import torch.distributed as td

        self.active = td.is_available() and td.is_initialized()
        self.rank = td.get_rank() if self.active else 0
        self.world_size = td.get_world_size() if self.active else 1

    def mine(self, items: list[int]) -> list[tuple[int, int]]:
        """(position, item) pairs this rank handles (round-robin over the global batch)."""
        return [(p, it) for p, it in enumerate(items) if p % self.world_size == self.rank]

    def sum_grads(self, params: list[torch.Tensor]) -> None:
        if not self.active:
            return
        import torch.distributed as td

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            td.all_reduce(p.grad, op=td.ReduceOp.SUM)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.SUM)
        return t

    def mean_float(self, value: float) -> float:
        if not self.active:
            return value
        t = self.sum_(torch.tensor([value], dtype=torch.float64))
        return float(t) / self.world_size


__all__ = ["DistContext"]
