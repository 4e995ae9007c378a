"""Coordinates and voxel grids: the one owner of how indices, millimetres and world relate.

Conventions used throughout the package
---------------------------------------
* *voxel indices* ``ijk``: fractional positions along the array axes (i, j, k); the centre of
  voxel ``image[i, j, k]`` is at ``ijk = (i, j, k)``.
* *array-aligned millimetres* ("mm space"): ``p = index * spacing`` per array axis (i, j, k),
  where ``spacing`` is the voxel size in mm (:func:`spacing_from_affine`). Displacements are
  expressed along the array axes in millimetres (the output contract). For any affine whose
  columns are orthogonal (every scanner geometry, oblique included; :func:`validate_affine`
  refuses others) this is an isometry of world space: a rotation plus a translation. So
  distances, strains and Jacobians computed in mm space are physical.
* *world*: ``affine @ [i, j, k, 1]``, used to read and write files and to relate several
  grids. World coordinates are NIfTI's RAS+ millimetres (+x towards the patient's right, +y
  anterior, +z superior), as nibabel and dcm2niix write them.
* A grid of spatial shape ``(X, Y, Z)`` with ``Z == 1`` is a single slice: 2D motion
  (:func:`spatial_dim`).

Several views of one heart (short axis, long-axis slices), each with its own affine, share the
world frame: :meth:`Grid.mm_to` carries points from one grid's mm space into another's.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from cardioinr.core.errors import InputError

__all__ = [
    "Grid",
    "make_affine",
    "mm_to_voxel",
    "spacing_from_affine",
    "spatial_dim",
    "validate_affine",
    "voxel_grid_mm",
    "voxel_grid_mm_torch",
    "voxel_to_mm",
    "voxel_to_world",
    "world_to_voxel",
]


def spatial_dim(shape: SequenceABC[int]) -> int:
    """2 for a single slice (``Z == 1``), else 3; ``shape`` is ``(X, Y, Z)`` or ``(X, Y, Z, ...)``."""
    return 2 if shape[2] == 1 else 3


def validate_affine(affine: np.ndarray, name: str) -> None:
    """Check a ``(4, 4)`` voxel-to-world affine: finite, invertible, orthogonal voxel axes."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{name}: affine must be a finite 4x4 matrix")
    lin = affine[:3, :3]
    if abs(np.linalg.det(lin)) < 1e-9:
        raise InputError(f"{name}: affine is not invertible (zero voxel size or collinear axes)")
    sp = spacing_from_affine(affine)
    # Array-aligned mm space is an isometry only when the voxel axes are orthogonal.
    cos = (lin.T @ lin) / np.outer(sp, sp)
    if np.max(np.abs(cos - np.eye(3))) > 1e-3:
        raise InputError(f"{name}: affine has sheared (non-orthogonal) voxel axes, which no scanner produces")


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size along the array axes: the norms of the affine's first three columns (mm)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def voxel_to_mm(ijk: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Voxel indices ``(..., 3)`` (fractional allowed) to array-aligned mm: ``ijk * spacing``."""
    return np.asarray(ijk, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)


def mm_to_voxel(points_mm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Array-aligned mm ``(..., 3)`` to (fractional) voxel indices: ``points / spacing``."""
    return np.asarray(points_mm, dtype=np.float64) / np.asarray(spacing, dtype=np.float64)


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Voxel indices ``(..., 3)`` to world (RAS+) mm through the ``(4, 4)`` affine."""
    a = np.asarray(affine, dtype=np.float64)
    return np.asarray(ijk, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """World (RAS+) mm ``(..., 3)`` to (fractional) voxel indices: the inverse of :func:`voxel_to_world`."""
    a = np.asarray(affine, dtype=np.float64)
    return np.linalg.solve(a[:3, :3], (np.asarray(xyz, dtype=np.float64) - a[:3, 3]).reshape(-1, 3).T).T.reshape(
        np.shape(xyz))


def voxel_grid_mm(shape: tuple[int, int, int], spacing: np.ndarray) -> np.ndarray:
    """Array-aligned mm coordinates of every voxel centre, ``(X, Y, Z, 3)`` float64."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def voxel_grid_mm_torch(shape: tuple[int, int, int], spacing, dtype, device) -> "torch.Tensor":
    """:func:`voxel_grid_mm` as a torch tensor ``(X, Y, Z, 3)`` of ``dtype`` on ``device`` (for
    the fit, which evaluates fields and warps on the grid); ``spacing`` any sequence of 3 mm."""
    import torch

    axes = [torch.arange(n, dtype=dtype, device=device) * float(s) for n, s in zip(shape, spacing)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def make_affine(spacing: tuple[float, float, float], origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """An axis-aligned affine with the given voxel size (mm) and origin (mm)."""
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = origin
    return aff


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: spatial shape ``(X, Y, Z)`` and its ``(4, 4)`` voxel-to-world affine (mm).

    Three coordinate systems are related here (see the module docstring): voxel indices,
    array-aligned mm (``index * spacing``, an isometry of world) and world (RAS+ mm). Every
    point method takes and returns arrays ``(..., 3)`` float64. The affine is validated
    (finite, invertible, orthogonal axes) and stored read-only.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"grid: shape must be three positive sizes (X, Y, Z), got {self.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        validate_affine(affine, "grid")
        affine.flags.writeable = False
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return self.shape == other.shape and bool(np.array_equal(self.affine, other.affine))

    def __hash__(self) -> int:
        return hash((self.shape, self.affine.tobytes()))

    # -- properties ----------------------------------------------------------------------------
    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along the array axes, mm, shape ``(3,)``."""
        return spacing_from_affine(self.affine)

    @property
    def ndim_space(self) -> int:
        """2 for a single slice (``Z == 1``), 3 for a stack."""
        return spatial_dim(self.shape)

    @property
    def is_2d(self) -> bool:
        return self.ndim_space == 2

    # -- point maps ----------------------------------------------------------------------------
    def voxel_to_mm(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(..., 3)`` to array-aligned mm ``(..., 3)``."""
        return voxel_to_mm(ijk, self.spacing)

    def mm_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """Array-aligned mm ``(..., 3)`` to fractional voxel indices ``(..., 3)``."""
        return mm_to_voxel(points_mm, self.spacing)

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(..., 3)`` to world (RAS+) mm ``(..., 3)``."""
        return voxel_to_world(self.affine, ijk)

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """World (RAS+) mm ``(..., 3)`` to fractional voxel indices ``(..., 3)``."""
        return world_to_voxel(self.affine, xyz)

    def mm_to_world(self, points_mm: np.ndarray) -> np.ndarray:
        """Array-aligned mm ``(..., 3)`` to world (RAS+) mm ``(..., 3)`` (a rigid map)."""
        return self.voxel_to_world(self.mm_to_voxel(points_mm))

    def world_to_mm(self, xyz: np.ndarray) -> np.ndarray:
        """World (RAS+) mm ``(..., 3)`` to array-aligned mm ``(..., 3)`` (a rigid map)."""
        return self.voxel_to_mm(self.world_to_voxel(xyz))

    def mm_to(self, other: "Grid", points_mm: np.ndarray) -> np.ndarray:
        """Points in this grid's array-aligned mm ``(..., 3)`` expressed in ``other``'s
        array-aligned mm ``(..., 3)``, through world: how two views of one heart, each with
        its own affine, are put in one frame. Distances are preserved (both maps are rigid)."""
        return other.world_to_mm(self.mm_to_world(points_mm))

    def points_mm(self) -> np.ndarray:
        """Array-aligned mm of every voxel centre, ``(X, Y, Z, 3)`` float64."""
        return voxel_grid_mm(self.shape, self.spacing)
