"""A study: one subject's short-axis stack and long-axis cines, in one world frame.

Every cardiac MRI exam acquires, beside the short-axis (SAX) stack, long-axis (LAX) cines: the
2-, 3- and 4-chamber views, each a single oblique slice with its own affine, slice thickness and
frame count. An INR motion field is continuous in world millimetres, so one field can be fitted
to all of them at once (:mod:`cardioinr.fit.multiview`). The SAX stack stays the reference grid
of the output contract; each LAX view is a single-slice :class:`Sequence`.

Time is aligned by cycle phase: frame ``t`` of a view with ``T_v`` frames and reference frame
``r_v`` is at phase ``((t - r_v) / T_v) mod 1``; every view's reference frame is the same cardiac
phase (end-diastole as acquired), which is what :func:`phase_to_sax_frame` assumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cardioinr.core.errors import InputError
from cardioinr.geometry.grid import Grid
from cardioinr.io.sequence import Sequence

__all__ = ["LAX_VIEWS", "Study", "phase_to_sax_frame", "plane_crosses_grid"]

#: Names of the standard long-axis views, in the order they are listed.
LAX_VIEWS = ("2ch", "3ch", "4ch")


def plane_crosses_grid(view: Grid, other: Grid, margin_mm: float = 0.0) -> bool:
    """Whether the single-slice ``view``'s plane, within its field of view, passes through the
    box of ``other``'s voxel centres (grown by ``margin_mm``): a long-axis view that does not
    cross the short-axis stack shows none of the heart the stack shows."""
    nx, ny, _ = view.shape
    ii, jj = np.meshgrid(np.linspace(0, nx - 1, 33), np.linspace(0, ny - 1, 33), indexing="ij")
    pts = view.voxel_to_world(np.stack([ii, jj, np.zeros_like(ii)], -1).reshape(-1, 3))
    ijk = other.world_to_voxel(pts)
    lo = -margin_mm / other.spacing
    hi = np.asarray(other.shape) - 1 + margin_mm / other.spacing
    return bool(np.any(np.all((ijk >= lo) & (ijk <= hi), axis=1)))


def phase_to_sax_frame(t_view: np.ndarray, view: Sequence, sax: Sequence) -> np.ndarray:
    """SAX frame times (real-valued, in ``[0, T_sax)`` from frame 0) of a view's frames ``t_view``,
    matching cycle phase from each sequence's reference frame."""
    phase = np.mod((np.asarray(t_view, dtype=np.float64) - view.ref_frame) / view.n_frames, 1.0)
    return np.mod(sax.ref_frame + phase * sax.n_frames, sax.n_frames)


@dataclass
class Study:
    """One subject's views.

    Attributes:
        sax: the short-axis stack ``(X, Y, Z, T)``, Z >= 2: the reference grid of every output.
        lax: view name (``"2ch"``, ``"3ch"``, ``"4ch"`` or any other) -> single-slice cine
            ``(X, Y, 1, T_v)`` with its own affine in the same world frame; labels optional.
        name: subject identifier.
        meta: free-form provenance, e.g. ``"notes"``: what a loader skipped and why.

    Construction checks that each long-axis view is one slice, shares the SAX label map and
    crosses the SAX stack; it raises a one-line :class:`InputError` naming the view otherwise.
    """

    sax: Sequence
    lax: dict[str, Sequence] = field(default_factory=dict)
    name: str = "study"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.sax, Sequence):
            raise InputError(f"{self.name}: the short-axis stack must be a Sequence")
        if self.sax.is_2d:
            raise InputError(f"{self.sax._where()}: a study needs a short-axis stack of several slices, "
                             f"got one slice of shape {self.sax.shape}")
        lax: dict[str, Sequence] = {}
        for key, seq in dict(self.lax).items():
            name = str(key).strip().lower()
            where = seq._where() if isinstance(seq, Sequence) else name
            if not isinstance(seq, Sequence):
                raise InputError(f"{self.name}: long-axis view {name!r} is not a Sequence")
            if name in lax or name == "sax":
                raise InputError(f"{where}: view name {name!r} is used twice")
            if not seq.is_2d:
                raise InputError(f"{where}: a long-axis view must be a single slice, got shape {seq.shape}")
            if seq.label_map != self.sax.label_map and seq.labels:
                raise InputError(f"{where}: label codes {seq.label_map.as_dict()} differ from the short-axis "
                                 f"stack's {self.sax.label_map.as_dict()}")
            if not plane_crosses_grid(seq.grid, self.sax.grid, margin_mm=float(self.sax.spacing[2])):
                raise InputError(f"{where}: the {name} plane does not cross the short-axis stack "
                                 "(check that both files share one world frame)")
            lax[name] = seq
        self.lax = lax

    @classmethod
    def of(cls, sax: Sequence, lax: Mapping[str, Sequence] | None = None, name: str | None = None) -> "Study":
        return cls(sax=sax, lax=dict(lax or {}), name=name or sax.name)

    def views(self) -> list[tuple[str, Sequence]]:
        """``[("sax", stack), (name, lax view), ...]``: standard views first, in LAX_VIEWS order."""
        order = sorted(self.lax, key=lambda n: (LAX_VIEWS.index(n) if n in LAX_VIEWS else len(LAX_VIEWS), n))
        return [("sax", self.sax)] + [(n, self.lax[n]) for n in order]

    @property
    def view_names(self) -> list[str]:
        return [n for n, _ in self.views()]
