"""Geometry: voxel grids and the maps between voxel indices, array-aligned mm and world mm.

See :mod:`cardioinr.geometry.grid` for the conventions (units, shapes, the mm space).
"""

from cardioinr.geometry.grid import (
    Grid,
    make_affine,
    mm_to_voxel,
    spacing_from_affine,
    spatial_dim,
    validate_affine,
    voxel_grid_mm,
    voxel_grid_mm_torch,
    voxel_to_mm,
    voxel_to_world,
    world_to_voxel,
)

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
