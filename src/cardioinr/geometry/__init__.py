"""Geometry: voxel grids and the maps between voxel indices, array-aligned mm and world mm.

See :mod:`cardioinr.geometry.grid` for the conventions (units, shapes, the mm space).
"""

from cardioinr.geometry.grid import (
    RAS_TO_LPS,
    Grid,
    lps_to_ras,
    make_affine,
    mm_to_voxel,
    ras_to_lps,
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
