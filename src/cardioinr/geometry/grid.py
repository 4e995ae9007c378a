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
* *ITK world* (LPS+): ITK, ANTs, 3D Slicer's files and DICOM give points and vectors with x
  towards the patient's left and y posterior, so ``LPS = diag(-1, -1, 1) RAS`` for points and
  vectors alike (:func:`ras_to_lps`). An ITK image of the same grid has origin
  ``diag(-1, -1, 1) affine[:3, 3]``, the spacing above and direction
  ``diag(-1, -1, 1) R`` where ``R = affine[:3, :3] / spacing`` (:meth:`Grid.itk_geometry`): this is
  how ITK itself reads the NIfTI file. A vector along the array axes in mm (a displacement of the
  contract) is ``R v`` in world RAS and ``diag(-1, -1, 1) R v`` in LPS
  (:meth:`Grid.mm_vectors_to_world`). ``R`` may be a reflection (``det R = -1``, a left-handed
  voxel order, as many scanners write): nothing above assumes otherwise.

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
    "RAS_TO_LPS",
    "Grid",
    "lps_to_ras",
    "make_affine",
    "mm_to_voxel",
    "ras_to_lps",
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


#: World RAS+ to LPS+ (and back: the map is its own inverse), for points and vectors alike.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps(xyz: np.ndarray) -> np.ndarray:
    """World points or vectors ``(..., 3)`` from NIfTI's RAS+ to ITK's LPS+ (x and y negated)."""
    return np.asarray(xyz, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])


def lps_to_ras(xyz: np.ndarray) -> np.ndarray:
    """World points or vectors ``(..., 3)`` from ITK's LPS+ to NIfTI's RAS+ (x and y negated)."""
    return ras_to_lps(xyz)


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

    @property
    def rotation(self) -> np.ndarray:
        """``(3, 3)`` direction matrix: column ``c`` is the unit world (RAS) direction of array
        axis ``c`` (the affine's columns over the spacing). Orthogonal; ``det = -1`` for a
        left-handed voxel order."""
        return self.affine[:3, :3] / self.spacing

    def itk_geometry(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """``(origin, spacing, direction)`` of the same grid as an ITK image (LPS): what
        ``SetOrigin``, ``SetSpacing`` and ``SetDirection`` (row-major 3 x 3) of SimpleITK take,
        and what ITK reads from a NIfTI file with this affine."""
        origin = ras_to_lps(self.affine[:3, 3])
        direction = RAS_TO_LPS @ self.rotation
        return (tuple(float(v) for v in origin), tuple(float(v) for v in self.spacing),
                tuple(float(v) for v in direction.ravel()))

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

    def mm_vectors_to_world(self, vectors_mm: np.ndarray) -> np.ndarray:
        """Vectors along the array axes in mm ``(..., 3)`` (displacements) as world RAS vectors
        ``(..., 3)``: rotated by :attr:`rotation`, not translated."""
        return np.asarray(vectors_mm, dtype=np.float64) @ self.rotation.T

    def world_vectors_to_mm(self, vectors: np.ndarray) -> np.ndarray:
        """World RAS vectors ``(..., 3)`` along the array axes in mm: the inverse of
        :meth:`mm_vectors_to_world`."""
        return np.asarray(vectors, dtype=np.float64) @ self.rotation

    def mm_to(self, other: "Grid", points_mm: np.ndarray) -> np.ndarray:
        """Points in this grid's array-aligned mm ``(..., 3)`` expressed in ``other``'s
        array-aligned mm ``(..., 3)``, through world: how two views of one heart, each with
        its own affine, are put in one frame. Distances are preserved (both maps are rigid)."""
        return other.world_to_mm(self.mm_to_world(points_mm))

    def points_mm(self) -> np.ndarray:
        """Array-aligned mm of every voxel centre, ``(X, Y, Z, 3)`` float64."""
        return voxel_grid_mm(self.shape, self.spacing)
