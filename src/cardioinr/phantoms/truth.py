"""The phantom's analytic motion as a continuous field: :class:`TruthField`.

A fit's strain is analysed with exact gradients of its field at the reference voxel centres
(:func:`cardioinr.analysis.strain.analyse_field`). Finite differences of the rendered truth on the
grid are not the same analysis: across a wall a few voxels thick they mix in the motion beyond
the myocardium's edge (2D tagged phantom seed 31000: peak radial strain +33.9 % by central
differences, +34.3 % exactly), so a benchmark that compared the two would credit or blame the fit
for the difference. :class:`TruthField` gives the truth to the same analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cardioinr.phantoms.motion import PhantomMotion

__all__ = ["TruthField"]


@dataclass(frozen=True)
class TruthField:
    """The analytic map ``u(X, t)`` of a phantom with the interface of a fitted field
    (:class:`cardioinr.geometry.kinematics.FieldLike`): ``dim``, ``n_frames`` and
    ``displacement_and_jacobian``.

    Attributes:
        motion: the phantom's analytic motion.
        dim: 2 or 3, the sequence's spatial dimension (2: the i, j components only).
        n_frames: frames ``0 .. n_frames - 1`` of the phantom's cycle.
    """

    motion: PhantomMotion
    dim: int
    n_frames: int

    def displacement_and_jacobian(self, x_mm: Any, t: Any = None) -> tuple[Any, Any]:
        """Displacement ``(N, T, D)`` mm and its gradient ``du/dX`` ``(N, T, D, D)`` (central
        differences of the analytic map with a 1e-4 mm step: exact to round-off) at
        reference points ``x_mm`` ``(N, D)`` (a torch tensor, array-aligned mm, the phantom's
        coordinates), every frame; returned as float64 tensors on ``x_mm``'s device. ``t`` is
        not supported (every frame is returned)."""
        import torch

        if t is not None:
            raise NotImplementedError("TruthField evaluates every frame")
        d = self.dim
        pts = np.zeros((int(x_mm.shape[0]), 3))
        pts[:, :d] = x_mm.detach().double().cpu().numpy()[:, :d]
        frames = np.arange(self.n_frames)
        u = self.motion.displacement(pts, frames)[..., :d]
        grad = np.stack([self.motion.deformation_gradient(pts, float(f))[:, :d, :d] for f in frames], axis=1)
        grad -= np.eye(d)
        return torch.from_numpy(u).to(x_mm.device), torch.from_numpy(grad).to(x_mm.device)
