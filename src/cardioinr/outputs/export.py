"""A fit folder in the formats other tools apply: ITK displacement fields and VTK meshes.

``cardioinr export DIR [--format itk,vtk] [--frames ...]`` (and ``cardioinr fit --export``) call
:func:`export_folder`. The contract's ``displacement.nii.gz`` stays as it is (mm along the array
axes, every frame in one file); this module writes, beside it (names in
:mod:`cardioinr.outputs.contract`):

``itk/displacement_tNN.nii.gz`` (one per frame ``NN``)
    A 3D vector image (float64, 3 components, the NIfTI *vector* intent), on the grid of the fit,
    holding displacements in **world LPS millimetres**, as ITK, ANTs and 3D Slicer store
    displacement fields: ``SimpleITK.ReadImage`` returns a ``sitkVectorFloat64`` image that
    ``SimpleITK.DisplacementFieldTransform`` takes as it is, and ``antsApplyTransforms -t`` reads
    the same file.

    *Direction: pull-back, the one resampling needs.* ITK's resampler fills each output point
    ``y`` with the input sampled at ``T(y) = y + d(y)``. The labels of frame ``NN`` are the
    reference labels pushed forward by the motion, ``x = X + u(X, NN)``, so carrying the
    reference to frame ``NN`` needs ``d(y) = X(y) - y``, defined on frame ``NN``'s points: the
    displacement of the *inverse* map, ``v = -u o (id + u)^-1``. It is computed by the same
    Newton inversion (:func:`cardioinr.fit.warp.invert_displacement`, at most 40 steps) that
    ``labels.nii.gz`` was made with: resampling the reference labels' smoothed signed distances
    (:func:`cardioinr.fit.warp.structure_distances`) linearly through this file gives
    ``labels.nii.gz`` at frame ``NN`` back exactly, and nearest-neighbour resampling of the labels
    themselves gives it up to boundary voxels (nearest neighbour keeps the voxel staircase that
    the smoothed distances round off: Dice 0.92-0.99 on the tests' tiny fits, lowest on thin or
    small structures). Anything else defined on the reference frame (an image, a dose map) is
    carried to frame ``NN`` the same way.

``itk/inverse_tNN.nii.gz``
    The other direction: ``u(X, NN)`` itself on the reference grid, in world LPS mm. As a
    resampling transform it carries frame ``NN``'s image onto the reference frame (``T(X) = X +
    u(X)``: where the tissue at ``X`` went); as a point transform (ITK's ``TransformPoint``,
    ``antsApplyTransformsToPoints``, 3D Slicer's models and markups) it moves reference points
    to frame ``NN``. ``DisplacementFieldTransform.SetInverseDisplacementField`` takes it beside
    the first. It is exact on the grid and linearly interpolated between its nodes, so the two
    files undo each other to a small fraction of a voxel.

``itk/reference_labels.nii.gz``
    The reference frame's labels as one 3D image (when the fit had labels): the ``-i`` of
    ``antsApplyTransforms``.

``mesh/myocardium_tNN.vtp`` and ``mesh/myocardium.pvd``
    VTK XML PolyData (written with VTK, an optional dependency: ``pip install
    'cardioinr[mesh]'``) and the ParaView time series (``timestep`` in ms) listing them. The
    reference myocardial surface is extracted once from the reference labels (scikit-image
    ``marching_cubes`` at the zero level of the same smoothed signed distance that carries the
    labels, :func:`cardioinr.fit.warp.structure_distances`), in world **LPS**
    mm (3D Slicer's default for model files; a ``SPACE`` field says so), and moved to each frame
    by the *continuous* field ``field.pt`` evaluated at its vertices (not interpolated from the
    grid). Point data: ``aha_segment`` (of the nearest reference myocardial voxel, as in
    ``strain.csv``), ``radial_strain_pct``, ``circumferential_strain_pct``,
    ``longitudinal_strain_pct`` (engineering strain in % from the field's exact gradient, in the
    cardiac directions of :mod:`cardioinr.analysis.strain`; NaN for a single slice) and
    ``displacement_mm`` (world LPS). Faces are wound so that normals point out of the tissue,
    whatever the handedness of the voxel order.

Single slices (``Z == 1``): ITK reads a NIfTI vector image whose third axis has one voxel as a
*2D* image (its NIfTI reader drops that axis for vector images, though not for scalar ones), which
would lose where an oblique slice lies in the world and could not be applied to the 3D label image
(``X, Y, 1``) that ITK reads. So a single slice's fields are written as **3D images of three
identical slices**: the fit's slice and one slice thickness either side (origin moved back by
one slice), the field constant through the slice, its through-plane component zero. ITK and
ANTs resample the one-slice labels through them as through any 3D field (the fit's slice is the
middle one, on the grid). The "mesh" of a single slice is the myocardium's boundary as closed
contour lines (``find_contours``) in the slice plane, with the same point data, since a surface
needs a third dimension.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import quoteattr

import numpy as np

from cardioinr.analysis import aha_segments, cardiac_frame
from cardioinr.analysis.config import StrainConfig
from cardioinr.core.errors import ConfigError, InputError
from cardioinr.core.files import atomic_path, write_text_atomic
from cardioinr.geometry import Grid, ras_to_lps, spatial_dim
from cardioinr.geometry.kinematics import (
    deformation_gradient_field,
    engineering_strain,
    frame_list,
    green_strain,
    normal_strain,
)
from cardioinr.io import save_nifti
from cardioinr.outputs.contract import (
    EXPORT_ITK,
    EXPORT_MESH,
    FIELD,
    ITK_REFERENCE_LABELS,
    MESH_SERIES,
    clear_exports,
    itk_displacement_name,
    itk_inverse_name,
    mesh_frame_name,
)
from cardioinr.outputs.folder import FitFolder, load_fit_folder

__all__ = ["FORMATS", "ExportResult", "export_folder", "export_itk", "export_mesh", "parse_formats", "parse_frames",
           "reference_surface", "require_libraries"]

#: ``--format`` values: ``itk`` (displacement fields) and ``vtk`` (meshes).
FORMATS = ("itk", "vtk")
#: Steps (at most) of the inversion: those ``labels.nii.gz`` was carried with.
INVERSION_ITERATIONS = 40


@dataclass
class ExportResult:
    """What :func:`export_folder` wrote: ``files`` per format, and ``notes`` (choices made)."""

    folder: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``"itk,vtk"`` -> ``("itk", "vtk")`` (order of :data:`FORMATS`); None or empty: both.

    Raises:
        ConfigError: an unknown format.
    """
    if text is None or not str(text).strip():
        return FORMATS
    asked = {p.strip().lower() for p in str(text).split(",") if p.strip()}
    bad = sorted(asked - set(FORMATS))
    if bad:
        raise ConfigError(f"--format {text}: unknown format {', '.join(bad)} (choose from {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in asked)


def require_libraries(formats: tuple[str, ...]) -> None:
    """Refuse, before any work, a format whose library is missing: the meshes need VTK, an
    optional dependency (``pip install 'cardioinr[mesh]'``; the test extra has it).

    Raises:
        ConfigError: ``vtk`` asked and VTK not installed.
    """
    if "vtk" in formats:
        try:
            import vtkmodules.vtkIOXML  # noqa: F401
        except ImportError:
            raise ConfigError("the vtk export (meshes) needs VTK, an optional dependency: "
                              "pip install 'cardioinr[mesh]' (or pip install vtk), or export itk only") from None


def parse_frames(text: str | None, n_frames: int) -> list[int]:
    """``"0,5,-1"`` -> frame indices (negative count from the end; ``a:b`` a range, end
    excluded); None or empty: every frame.

    Raises:
        ConfigError: not integers.
        InputError: a frame out of range.
    """
    if text is None or not str(text).strip():
        return list(range(n_frames))
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                lo, hi = part.split(":", 1)
                out += list(range(n_frames))[slice(int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)]
            else:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"--frames {text}: expected frame numbers such as 0,5,-1 or 2:8") from None
    frames = frame_list(out, n_frames)
    return sorted(set(frames))


# ---------------------------------------------------------------------------------------------
# The whole export
# ---------------------------------------------------------------------------------------------


def export_folder(folder: str | os.PathLike, formats: tuple[str, ...] | str | None = None,
                  frames: list[int] | str | None = None, *, strain_config: StrainConfig | None = None,
                  log: Callable[[str], None] | None = None) -> ExportResult:
    """Write the ``itk/`` fields and the ``mesh/`` series of a fit folder (see the module docstring).

    Args:
        folder: a fit output folder (``displacement.nii.gz``; ``labels.nii.gz`` and ``field.pt``
            for the meshes).
        formats: ``("itk", "vtk")`` or ``"itk,vtk"``; default both.
        frames: frames to write (list, or ``"0,5,-1"``); default all. The time series lists these.
        strain_config: directions and segments of the mesh's strain (default as ``fit``).
        log: called with one line per choice made (2D contours, skipped files).

    Raises:
        InputError: the folder cannot be read, or the meshes lack labels or the field.
        ConfigError: a bad format or frame list, or VTK missing for the meshes.
    """
    fmts = parse_formats(formats) if formats is None or isinstance(formats, str) else parse_formats(",".join(formats))
    require_libraries(fmts)
    f = load_fit_folder(folder)
    if frames is None or isinstance(frames, str):
        fr = parse_frames(frames, f.n_frames)
    else:
        fr = sorted(set(frame_list(frames, f.n_frames)))
    result = ExportResult(folder=f.path)
    say = log or (lambda _msg: None)
    if "itk" in fmts:
        result.files["itk"] = export_itk(f, fr)
        if f.ref_labels is None:
            result.notes.append(f"no labels in {f.path}: {ITK_REFERENCE_LABELS} not written")
    if "vtk" in fmts:
        files, notes = export_mesh(f, fr, strain_config=strain_config)
        result.files["vtk"] = files
        result.notes += notes
    for n in result.notes:
        say(n)
    return result


# ---------------------------------------------------------------------------------------------
# ITK displacement fields
# ---------------------------------------------------------------------------------------------


def _vector_image(vectors_lps: np.ndarray, grid: Grid):
    """A SimpleITK ``sitkVectorFloat64`` image of ``(X, Y, Z, 3)`` world LPS vectors on ``grid``;
    a single slice becomes three identical slices centred on it (module docstring)."""
    import SimpleITK as sitk

    if grid.is_2d:
        affine = np.array(grid.affine)
        affine[:3, 3] = grid.voxel_to_world(np.array([0.0, 0.0, -1.0]))  # one slice back
        grid = Grid((grid.shape[0], grid.shape[1], 3), affine)
        vectors_lps = np.repeat(np.asarray(vectors_lps)[:, :, :1], 3, axis=2)
    arr = np.ascontiguousarray(np.asarray(vectors_lps, dtype=np.float64).transpose(2, 1, 0, 3))  # (Z, Y, X, 3)
    img = sitk.GetImageFromArray(arr, isVector=True)
    origin, spacing, direction = grid.itk_geometry()
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def _write_image(img, path: Path) -> Path:
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)
    return path


def export_itk(f: FitFolder, frames: list[int]) -> list[Path]:
    """Write ``itk/displacement_tNN.nii.gz``, ``itk/inverse_tNN.nii.gz`` for ``frames`` and
    ``itk/reference_labels.nii.gz`` (module docstring); returns the paths written.

    The fields come from ``displacement.nii.gz`` (so a folder without ``field.pt`` exports too),
    inverted exactly as the labels were carried."""
    import torch

    from cardioinr.fit.warp import invert_displacement

    out = f.path / EXPORT_ITK
    clear_exports(f.path, (EXPORT_ITK,))
    out.mkdir(parents=True, exist_ok=True)
    grid = Grid(f.shape, f.affine)
    sp = torch.as_tensor(grid.spacing, dtype=torch.float64)
    written: list[Path] = []
    if f.ref_labels is not None:
        written.append(save_nifti(out / ITK_REFERENCE_LABELS, np.asarray(f.ref_labels, dtype=np.uint8), f.affine))
    for t in frames:
        u = np.asarray(f.displacement[:, :, :, t, :], dtype=np.float64)
        if np.any(u != 0):
            v = invert_displacement(torch.from_numpy(np.ascontiguousarray(u)), sp, INVERSION_ITERATIONS).numpy()
        else:
            v = np.zeros_like(u)
        written.append(_write_image(_vector_image(ras_to_lps(grid.mm_vectors_to_world(v)), grid),
                                    out / itk_displacement_name(t, f.n_frames)))
        written.append(_write_image(_vector_image(ras_to_lps(grid.mm_vectors_to_world(u)), grid),
                                    out / itk_inverse_name(t, f.n_frames)))
    return written


# ---------------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------------


@dataclass
class Surface:
    """The reference myocardium's boundary: ``points_mm`` ``(N, 3)`` array-aligned mm, and
    ``cells`` (triangles ``(M, 3)`` in 3D) or ``lines`` (closed contours, lists of point indices,
    in 2D)."""

    points_mm: np.ndarray
    triangles: np.ndarray | None
    lines: list[np.ndarray] | None


def _pad_outside(vol: np.ndarray) -> np.ndarray:
    """``vol`` (signed distance, positive inside) padded by one voxel on every side with
    ``-|edge value|``: a structure touching the array's edge is closed halfway into the pad."""
    p = np.pad(vol, 1, mode="edge")
    border = np.ones(p.shape, bool)
    border[tuple(slice(1, -1) for _ in p.shape)] = False
    p[border] = -np.abs(p[border])
    return p


def reference_surface(ref_labels: np.ndarray, myo_code: int, spacing: np.ndarray, affine: np.ndarray) -> Surface:
    """The myocardial boundary of the reference labels (module docstring): a closed triangle
    surface (3D, outward normals in world) or closed contour lines (a single slice).

    Raises:
        InputError: no myocardium.
    """
    from cardioinr.fit.warp import structure_distances

    lab = np.asarray(ref_labels)
    if not np.any(lab == myo_code):
        raise InputError("the mesh needs a myocardium in the reference labels (none found)")
    sp = np.asarray(spacing, dtype=np.float64)
    dist = structure_distances(lab, [int(myo_code)], sp)[0].astype(np.float64)  # (X, Y, Z), > 0 inside
    if spatial_dim(lab.shape) == 2:
        from skimage.measure import find_contours

        lines, pts, n = [], [], 0
        for c in find_contours(_pad_outside(dist[:, :, 0]), 0.0):
            c = c - 1.0  # undo the pad: (i, j) voxel indices
            if len(c) > 2 and np.allclose(c[0], c[-1]):
                c = c[:-1]
            if len(c) < 3:
                continue
            pts.append(np.column_stack([c, np.zeros(len(c))]))
            lines.append(np.arange(n, n + len(c)))
            n += len(c)
        ijk = np.concatenate(pts)
        return Surface(points_mm=ijk * sp, triangles=None, lines=lines)
    from skimage.measure import marching_cubes

    # "ascent" (the distance grows into the tissue) winds the triangles counter-clockwise seen
    # from outside, in voxel index space: normals point out of the tissue there.
    verts, faces, _, _ = marching_cubes(_pad_outside(dist), level=0.0, gradient_direction="ascent")
    ijk = verts.astype(np.float64) - 1.0
    faces = faces.astype(np.int64)
    if np.linalg.det(Grid(lab.shape, affine).rotation) < 0:
        faces = faces[:, [0, 2, 1]]  # a mirrored voxel order would turn the normals inward in world
    return Surface(points_mm=ijk * sp, triangles=faces, lines=None)


def _nearest_segment(points_mm: np.ndarray, segments: np.ndarray, myo: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """AHA segment ``(N,)`` of the reference myocardial voxel nearest to each point's voxel."""
    from scipy.ndimage import distance_transform_edt

    sp = np.asarray(spacing, dtype=np.float64)
    idx = distance_transform_edt(~myo, sampling=sp, return_distances=False, return_indices=True)
    ijk = np.rint(points_mm / sp).astype(int)
    ijk = np.clip(ijk, 0, np.array(myo.shape) - 1)
    near = idx[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]]  # (3, N)
    return segments[near[0], near[1], near[2]].astype(np.int32)


def _polydata(points_lps: np.ndarray, surface: Surface, point_data: dict[str, np.ndarray], field_data: dict):
    """A ``vtkPolyData`` of the surface's cells at ``points_lps`` with point and field data."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkPoints, vtkStringArray
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    poly = vtkPolyData()
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(points_lps, dtype=np.float64), deep=True))
    poly.SetPoints(pts)
    cells = vtkCellArray()
    if surface.triangles is not None:
        tri = surface.triangles
        offsets = np.arange(0, 3 * len(tri) + 1, 3, dtype=np.int64)
        cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                      numpy_to_vtkIdTypeArray(np.ascontiguousarray(tri.ravel()), deep=True))
        poly.SetPolys(cells)
    else:
        # closed polylines: each contour's first point repeated at its end
        conn = np.concatenate([np.append(line, line[0]) for line in surface.lines]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum([len(line) + 1 for line in surface.lines])]).astype(np.int64)
        cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True), numpy_to_vtkIdTypeArray(conn, deep=True))
        poly.SetLines(cells)
    pd = poly.GetPointData()
    for name, values in point_data.items():
        arr = numpy_to_vtk(np.ascontiguousarray(values), deep=True)
        arr.SetName(name)
        pd.AddArray(arr)
    fd = poly.GetFieldData()
    for name, value in field_data.items():
        if isinstance(value, str):
            s = vtkStringArray()
            s.SetName(name)
            s.InsertNextValue(value)
            fd.AddArray(s)
        else:
            a = vtkDoubleArray()
            a.SetName(name)
            a.InsertNextValue(float(value))
            fd.AddArray(a)
    return poly


def _write_vtp(poly, path: Path) -> Path:
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    with atomic_path(path) as tmp:
        w = vtkXMLPolyDataWriter()
        w.SetFileName(str(tmp))
        w.SetInputData(poly)
        w.SetDataModeToAppended()
        w.SetCompressorTypeToZLib()
        if w.Write() != 1:
            raise OSError(f"{path}: VTK could not write the mesh")
    return path


def _pvd(entries: list[tuple[float, str]]) -> str:
    rows = "\n".join(f'    <DataSet timestep="{t:.6g}" group="" part="0" file={quoteattr(name)}/>'
                     for t, name in entries)
    return ('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">\n'
            f"  <Collection>\n{rows}\n  </Collection>\n</VTKFile>\n")


def export_mesh(f: FitFolder, frames: list[int], *, strain_config: StrainConfig | None = None
                ) -> tuple[list[Path], list[str]]:
    """Write ``mesh/myocardium_tNN.vtp`` for ``frames`` and ``mesh/myocardium.pvd`` (module
    docstring); returns the paths written and notes.

    Raises:
        InputError: no reference labels with a myocardium, no usable ``field.pt``.
    """
    notes: list[str] = []
    ref = f.ref_labels
    lm = f.label_map
    if ref is None or lm.myo is None or not np.any(ref == lm.myo):
        raise InputError(f"{f.path}: the mesh needs reference labels with a myocardium (fit with --seg)")
    if f.field is None:
        raise InputError(f"{f.path}: the mesh is moved by the continuous field, and {FIELD} is missing or unreadable")
    dim = spatial_dim(f.shape)
    if int(f.field.dim) != dim or int(getattr(f.field, "n_frames", f.n_frames)) != f.n_frames:
        raise InputError(f"{f.path}: {FIELD} ({f.field.dim}D, {f.field.n_frames} frames) does not match "
                         f"the displacement ({dim}D, {f.n_frames} frames)")
    cfg = strain_config or StrainConfig()
    grid = Grid(f.shape, f.affine)
    sp = grid.spacing
    surf = reference_surface(ref, lm.myo, sp, f.affine)
    if dim == 2:
        notes.append(f"{f.path.name}: a single slice: the mesh is the myocardium's boundary as contour lines "
                     f"({len(surf.lines)} closed contours, {len(surf.points_mm)} points), not a surface")
    X = surf.points_mm
    ref_lps = ras_to_lps(grid.mm_to_world(X))

    u, F = deformation_gradient_field(f.field, X, chunk=cfg.chunk)  # (N, T, D), (N, T, D, D)
    frame = cardiac_frame(ref, sp, lm, f.affine, cfg)
    r, c, l_ = frame.directions(X)
    E = green_strain(F)
    strain = {"radial_strain_pct": normal_strain(E, r[:, None, :dim]),
              "circumferential_strain_pct": normal_strain(E, c[:, None, :dim]),
              "longitudinal_strain_pct": (normal_strain(E, l_[:, None, :]) if dim == 3
                                          else np.full(u.shape[:2], np.nan))}
    strain = {k: 100.0 * engineering_strain(v) for k, v in strain.items()}  # (N, T) each
    segments = aha_segments(ref, frame, lm, cfg)
    seg = _nearest_segment(X, segments, ref == lm.myo, sp)

    out = f.path / EXPORT_MESH
    clear_exports(f.path, (EXPORT_MESH,))
    out.mkdir(parents=True, exist_ok=True)
    written, series = [], []
    for t in frames:
        u_mm = np.zeros((len(X), 3))
        u_mm[:, :dim] = u[:, t]
        d_lps = ras_to_lps(grid.mm_vectors_to_world(u_mm))
        data = {"aha_segment": seg, "displacement_mm": d_lps, **{k: v[:, t] for k, v in strain.items()}}
        time_ms = t * f.frame_interval_ms
        poly = _polydata(ref_lps + d_lps, surf, data,
                         {"SPACE": "LPS", "frame": t, "time_ms": time_ms, "reference_frame": f.ref_frame})
        name = mesh_frame_name(t, f.n_frames)
        written.append(_write_vtp(poly, out / name))
        series.append((time_ms, name))
    write_text_atomic(out / MESH_SERIES, _pvd(series))
    written.append(out / MESH_SERIES)
    return written, notes
