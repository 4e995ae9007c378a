"""Grids and coordinates: voxel indices, array-aligned mm (``index * spacing``) and world mm."""

from __future__ import annotations

import numpy as np
import pytest

from builders import rotation
from cardioinr.core.errors import InputError
from cardioinr.geometry import Grid, make_affine, spacing_from_affine, spatial_dim, voxel_grid_mm
from cardioinr.io.sequence import Sequence


def oblique(spacing=(1.4, 1.3, 8.0), origin=(-52.4, 8.8, 6.9), angles=(0.4, -0.7, 1.9)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation(*angles) * np.asarray(spacing)
    aff[:3, 3] = origin
    return aff


def test_spatial_dim_is_the_single_slice_rule():
    assert spatial_dim((8, 9, 1)) == 2 and spatial_dim((8, 9, 1, 5)) == 2
    assert spatial_dim((8, 9, 2)) == 3 and spatial_dim((8, 9, 12, 5)) == 3


@pytest.mark.parametrize("affine", [make_affine((1.5, 1.25, 8.0), (3.0, -2.0, 1.0)), oblique()])
def test_grid_round_trips(affine):
    g = Grid((12, 10, 3), affine)
    np.testing.assert_allclose(g.spacing, spacing_from_affine(affine))
    ijk = np.random.default_rng(0).uniform(-2, 12, size=(7, 4, 3))
    mm = g.voxel_to_mm(ijk)
    np.testing.assert_allclose(mm, ijk * g.spacing)
    np.testing.assert_allclose(g.mm_to_voxel(mm), ijk, atol=1e-12)
    xyz = g.voxel_to_world(ijk)
    np.testing.assert_allclose(xyz, ijk @ affine[:3, :3].T + affine[:3, 3])
    np.testing.assert_allclose(g.world_to_voxel(xyz), ijk, atol=1e-9)
    np.testing.assert_allclose(g.mm_to_world(mm), xyz, atol=1e-9)
    np.testing.assert_allclose(g.world_to_mm(xyz), mm, atol=1e-9)
    assert g.points_mm().shape == (12, 10, 3, 3)
    np.testing.assert_array_equal(g.points_mm(), voxel_grid_mm((12, 10, 3), g.spacing))
    np.testing.assert_allclose(g.points_mm()[2, 3, 1], np.array([2, 3, 1]) * g.spacing)


def test_oblique_grid_mm_space_is_an_isometry_of_world():
    g = Grid((12, 10, 3), oblique())
    p = np.random.default_rng(1).normal(0, 30, size=(20, 3))
    w = g.mm_to_world(p)
    d_mm = np.linalg.norm(p[:, None] - p[None], axis=-1)
    d_world = np.linalg.norm(w[:, None] - w[None], axis=-1)
    np.testing.assert_allclose(d_world, d_mm, atol=1e-9)
    assert g.ndim_space == 3 and not g.is_2d
    assert Grid((12, 10, 1), oblique()).ndim_space == 2


def test_two_grids_of_one_heart_agree_on_a_world_point():
    # A short-axis stack and an oblique long-axis slice: one world point seen from both.
    sa = Grid((64, 64, 10), oblique((1.5, 1.5, 8.0), (-40.0, 20.0, -30.0), (0.3, -0.5, 1.1)))
    la = Grid((80, 72, 1), oblique((1.2, 1.2, 6.0), (10.0, -25.0, 40.0), (-1.0, 0.7, 0.2)))
    world = np.array([[4.0, -3.5, 12.0], [-10.0, 8.0, 0.5]])
    p_sa, p_la = sa.world_to_mm(world), la.world_to_mm(world)
    np.testing.assert_allclose(sa.mm_to(la, p_sa), p_la, atol=1e-9)
    np.testing.assert_allclose(la.mm_to(sa, p_la), p_sa, atol=1e-9)
    np.testing.assert_allclose(sa.mm_to(sa, p_sa), p_sa, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(p_la[0] - p_la[1]), np.linalg.norm(world[0] - world[1]))


def test_grid_is_frozen_comparable_and_validated():
    aff = oblique()
    g = Grid((12, 10, 3), aff)
    aff[0, 3] = 99.0  # the grid holds its own read-only copy
    assert g.affine[0, 3] != 99.0 and not g.affine.flags.writeable
    assert g == Grid((12, 10, 3), oblique()) and hash(g) == hash(Grid((12, 10, 3), oblique()))
    assert g != Grid((12, 10, 4), oblique())
    with pytest.raises(AttributeError):
        g.shape = (1, 1, 1)  # type: ignore[misc]
    with pytest.raises(InputError, match="sheared"):
        Grid((4, 4, 1), np.array([[1.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    with pytest.raises(InputError, match="three positive sizes"):
        Grid((4, 4), np.eye(4))  # type: ignore[arg-type]


def test_sequence_grid():
    img = np.random.default_rng(0).normal(size=(8, 9, 1, 4)).astype(np.float32)
    seq = Sequence(img, oblique())
    assert seq.grid == Grid((8, 9, 1), oblique())
    assert seq.grid.ndim_space == seq.ndim_space == 2
    np.testing.assert_array_equal(seq.grid.spacing, seq.spacing)


@pytest.mark.parametrize("mirror", [False, True])
def test_itk_geometry_is_how_itk_reads_the_nifti(tmp_path, mirror):
    """A grid's ITK (LPS) origin, spacing and direction are what SimpleITK reads from a NIfTI file
    nibabel wrote with its affine, oblique and left-handed included; array-mm vectors rotate
    into world RAS and LPS consistently with the point maps."""
    import nibabel as nib
    import SimpleITK as sitk

    from cardioinr.geometry import lps_to_ras, ras_to_lps

    affine = oblique()
    if mirror:
        affine[:3, 2] *= -1  # a left-handed voxel order, as many scanners write
    g = Grid((6, 5, 4), affine)
    assert np.sign(np.linalg.det(g.rotation)) == (-1 if mirror else 1)
    np.testing.assert_allclose(g.rotation.T @ g.rotation, np.eye(3), atol=1e-12)
    path = tmp_path / "grid.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(g.shape, np.float32), affine), str(path))
    img = sitk.ReadImage(str(path))
    origin, spacing, direction = g.itk_geometry()
    np.testing.assert_allclose(img.GetOrigin(), origin, atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(img.GetDirection(), direction, atol=1e-5)
    ijk = np.array([3, 1, 2])
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint(ijk.tolist()), ras_to_lps(g.voxel_to_world(ijk)),
                               atol=1e-4)
    v = np.array([[0.7, -1.2, 2.5]])
    p = g.voxel_to_mm(ijk)
    np.testing.assert_allclose(g.mm_vectors_to_world(v), g.mm_to_world(p + v) - g.mm_to_world(p), atol=1e-9)
    np.testing.assert_allclose(g.world_vectors_to_mm(g.mm_vectors_to_world(v)), v, atol=1e-12)
    np.testing.assert_allclose(lps_to_ras(ras_to_lps(v)), v)
