"""The per-sequence fit's optimiser: Adam, written out.

``torch.optim.Adam`` is the same algorithm, but constructing any ``torch.optim`` optimiser
imports ``torch._dynamo`` (its step functions are wrapped to opt out of compilation), which
costs 0.7-1.9 s on this 2-core machine: as long as a whole 2D fit from a prior. A fit never
compiles, so it uses this class. It follows torch's default Adam update operation for operation
(no weight decay, no AMSGrad), so fits agree with ``torch.optim.Adam`` to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Adam over parameter groups (Kingma and Ba 2015).

    Args:
        groups: dicts with ``params`` (tensors) and ``lr``; other keys are kept (a fit stores
            each group's base rate there). Each group's ``lr`` may be changed between steps.
        betas: decay rates of the first and second moment estimates.
        eps: added to the root of the second moment (numerical floor).
    """

    def __init__(self, groups: Iterable[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param_groups = [dict(g, params=list(g["params"])) for g in groups]
        self.betas, self.eps = betas, eps
        self.state: dict[int, dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for g in self.param_groups:
            lr = g["lr"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state.get(id(p))
                if st is None:
                    st = self.state[id(p)] = {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)}
                st["step"] += 1
                m, v, grad = st["m"], st["v"], p.grad
                m.lerp_(grad, 1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                step_size = lr / (1 - b1 ** st["step"])
                denom = (v.sqrt() / math.sqrt(1 - b2 ** st["step"])).add_(self.eps)
                p.addcdiv_(m, denom, value=-step_size)


__all__ = ["Adam"]
