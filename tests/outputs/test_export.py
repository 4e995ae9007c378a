"""``cardioinr export``: the ITK fields carry the reference labels to every frame when another
library applies them, and the meshes sit where the field puts them.

The checks use the readers of other libraries (SimpleITK, ANTs where installed, VTK), never our
own: the reference labels are read by SimpleITK from the NIfTI file nibabel wrote, resampled
through ``itk/displacement_tNN.nii.gz``, and compared with ``labels.nii.gz`` at frame NN, per
structure of at least 50 voxels: exactly equal with the interpolation ``labels.nii.gz`` was made
with, close with nearest neighbour (see :func:`check_labels`); with a known motion, SimpleITK's
nearest neighbour samples exactly the voxel the motion says. The grids are oblique and
left-handed (the Sunnybrook scanner geometry) so that a RAS/LPS or handedness slip cannot pass.
Fits are tiny: the export must be consistent, the motion need not be good.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cardioinr.app.cli import main
from cardioinr.fit import load_field
from cardioinr.fit.fields import FieldConfig
from cardioinr.fit.fitter import FitConfig, Fitter
from cardioinr.fit.warp import invert_displacement, propagate_labels, structure_distances
from cardioinr.io import save_nifti, save_sequence_nifti
from cardioinr.outputs import save_fit
from cardioinr.outputs.contract import (
    DISPLACEMENT,
    EXPORT_ITK,
    EXPORT_MESH,
    ITK_REFERENCE_LABELS,
    LABELS,
    MESH_SERIES,
    itk_displacement_name,
    itk_inverse_name,
    mesh_frame_name,
    write_fit_outputs,
)
from cardioinr.outputs.export import export_folder, parse_formats, parse_frames
from cardioinr.phantoms import PhantomConfig, make_phantom

torch.set_num_threads(2)

MIN_VOXELS = 50
LPS = np.diag([-1.0, -1.0, 1.0])
POINT_DATA = ("aha_segment", "radial_strain_pct", "circumferential_strain_pct", "longitudinal_strain_pct",
              "displacement_mm")


def _sunnybrook_rotation() -> np.ndarray:
    """A real oblique, left-handed scanner orientation (SCD0000101's, det = -1), fixed here so that
    the phantom tests do not need the data."""
    a = np.array([[0.143, 1.002, -6.719], [-0.474, 0.903, 6.665], [-1.275, -0.223, -3.23]])
    q, _ = np.linalg.qr(a)
    r = q * np.sign(np.sum(q * a, axis=0))  # columns closest to the affine's
    assert np.linalg.det(r) < 0
    return r


def _oblique_affine(spacing, origin=(31.0, -12.5, 47.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = _sunnybrook_rotation() * np.asarray(spacing, dtype=np.float64)
    aff[:3, 3] = origin
    return aff


# ---------------------------------------------------------------------------------------------
# Checks with other libraries
# ---------------------------------------------------------------------------------------------


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def _sitk_labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


def itk_resample(out: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """The reference labels resampled by SimpleITK (nearest neighbour) through each
    ``itk/displacement_tNN.nii.gz``, ``(X, Y, Z, T)``, and ``labels.nii.gz``. The reference labels
    are read by SimpleITK from a file nibabel wrote."""
    lab_img = nib.load(str(out / LABELS))
    labels = np.asarray(lab_img.dataobj).astype(np.uint8)
    n_t = labels.shape[3]
    ref_t = json.loads((out / "metrics.json").read_text())["sequence"]["ref_frame"]
    ref_path = tmp / "ref_labels_nibabel.nii.gz"
    nib.save(nib.Nifti1Image(labels[..., ref_t], lab_img.affine), str(ref_path))  # written by nibabel
    ref_img = sitk.ReadImage(str(ref_path))
    # the exported reference labels are the same image, on the same ITK grid
    exported = sitk.ReadImage(str(out / EXPORT_ITK / ITK_REFERENCE_LABELS))
    assert np.array_equal(sitk.GetArrayFromImage(exported), sitk.GetArrayFromImage(ref_img))
    assert np.allclose(exported.GetDirection(), ref_img.GetDirection(), atol=1e-5)
    assert np.allclose(exported.GetOrigin(), ref_img.GetOrigin(), atol=1e-4)
    got = np.zeros_like(labels)
    for t in range(n_t):
        disp = sitk.ReadImage(str(out / EXPORT_ITK / itk_displacement_name(t, n_t)))
        assert disp.GetPixelID() == sitk.sitkVectorFloat64 and disp.GetNumberOfComponentsPerPixel() == 3
        _same_grid(disp, ref_img)
        tx = sitk.DisplacementFieldTransform(disp)
        moved = sitk.Resample(ref_img, ref_img, tx, sitk.sitkNearestNeighbor, 0, ref_img.GetPixelID())
        got[..., t] = sitk.GetArrayFromImage(moved).transpose(2, 1, 0)
    return got, labels


def worst_dice(got: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Minimum Dice over frames per structure (of at least MIN_VOXELS voxels in the frame)."""
    worst: dict[int, float] = {}
    for t in range(labels.shape[3]):
        for code in (int(c) for c in np.unique(labels) if c != 0):
            if (labels[..., t] == code).sum() >= MIN_VOXELS:
                worst[code] = min(worst.get(code, 1.0), _dice(got[..., t] == code, labels[..., t] == code))
    return worst


def itk_resample_distances(out: Path, labels: np.ndarray) -> np.ndarray:
    """The reference labels carried the way ``labels.nii.gz`` was made, but by SimpleITK through the
    exported fields: each structure's smoothed signed distance resampled linearly, the largest
    wins. ``(X, Y, Z, T)``."""
    ref_t = json.loads((out / "metrics.json").read_text())["sequence"]["ref_frame"]
    ref = sitk.ReadImage(str(out / EXPORT_ITK / ITK_REFERENCE_LABELS))
    sp = np.asarray(ref.GetSpacing())
    codes = [0] + [int(c) for c in np.unique(labels) if c != 0]
    scores = structure_distances(labels[..., ref_t], codes, sp)
    n_t = labels.shape[3]
    out_labels = np.zeros_like(labels)
    for t in range(n_t):
        tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(out / EXPORT_ITK / itk_displacement_name(t, n_t))))
        vals = []
        for k in range(len(codes)):
            img = sitk.GetImageFromArray(np.ascontiguousarray(scores[k].transpose(2, 1, 0), dtype=np.float64))
            img.CopyInformation(ref)
            moved = sitk.Resample(img, ref, tx, sitk.sitkLinear, -1e6, sitk.sitkFloat64)
            vals.append(sitk.GetArrayFromImage(moved).transpose(2, 1, 0))
        out_labels[..., t] = np.asarray(codes, dtype=np.uint8)[np.argmax(np.stack(vals), axis=0)]
    return out_labels


def check_labels(out: Path, tmp: Path, what: str) -> dict[int, float]:
    """SimpleITK (and ANTs where installed), applying the exported fields, reproduce
    ``labels.nii.gz``. Returns the nearest-neighbour Dice (minimum over frames per structure).

    ``labels.nii.gz`` was carried by interpolating each structure's smoothed signed distance,
    which places boundaries between voxels; resampled with that interpolation through the
    exported fields it comes back exactly. Nearest neighbour snaps each boundary to the voxel
    staircase instead: its Dice against ``labels.nii.gz`` is lower on thin or small structures
    (the myocardium, the phantoms' RV), and is checked more loosely."""
    got, labels = itk_resample(out, tmp)
    same = itk_resample_distances(out, labels)
    exact = worst_dice(same, labels)
    nn = worst_dice(got, labels)
    print(f"{what}: Dice per structure, min over frames: nearest neighbour {_fmt(nn)}; "
          f"distance interpolation {_fmt(exact)} ({100 * (same == labels).mean():.3f} % voxels equal)")
    assert min(exact.values()) >= 0.999 and (same == labels).mean() >= 0.9999, exact
    assert min(nn.values()) >= 0.90, nn
    try:
        import ants  # noqa: F401
    except ImportError:
        return nn
    nn_ants = ants_dice(out, tmp)
    print(f"{what}: ANTs nearest neighbour {_fmt(nn_ants)}")
    assert nn_ants == pytest.approx(nn, abs=1e-3)
    return nn


def _fmt(d: dict[int, float]) -> str:
    return ", ".join(f"{k}: {v:.4f}" for k, v in sorted(d.items()))


def _same_grid(field, ref_img) -> None:
    """The field lies on the labels' grid; a single slice's field is three slices centred on it."""
    assert field.GetDimension() == 3 and np.allclose(field.GetDirection(), ref_img.GetDirection(), atol=1e-5)
    size = ref_img.GetSize()
    if size[2] == 1:
        assert field.GetSize() == (size[0], size[1], 3)
        assert np.allclose(field.TransformIndexToPhysicalPoint((0, 0, 1)), ref_img.GetOrigin(), atol=1e-4)
    else:
        assert field.GetSize() == size and np.allclose(field.GetOrigin(), ref_img.GetOrigin(), atol=1e-4)


def ants_dice(out: Path, tmp: Path) -> dict[int, float]:
    """As :func:`itk_dice` with ANTsPy's ``apply_transforms`` (the antsApplyTransforms of ANTs)."""
    ants = pytest.importorskip("ants")
    labels = np.asarray(nib.load(str(out / LABELS)).dataobj).astype(np.uint8)
    n_t = labels.shape[3]
    ref = ants.image_read(str(out / EXPORT_ITK / ITK_REFERENCE_LABELS))
    got = np.zeros_like(labels)
    for t in range(n_t):
        moved = ants.apply_transforms(fixed=ref, moving=ref, interpolator="nearestNeighbor",
                                      transformlist=[str(out / EXPORT_ITK / itk_displacement_name(t, n_t))])
        got[..., t] = np.rint(moved.numpy()).astype(np.uint8).reshape(labels.shape[:3])
    return worst_dice(got, labels)


def check_inverse(out: Path, frames: list[int]) -> float:
    """``itk/inverse_tNN`` holds ``u`` in world LPS (checked against displacement.nii.gz and the
    nibabel affine, by hand), and as point transforms the two files undo each other. Returns the
    largest round-trip error at the labelled voxels, in voxels (the inverse is sampled on the grid
    and interpolated linearly between its nodes by ITK, so it is not exact off the grid)."""
    img = nib.load(str(out / DISPLACEMENT))
    disp = np.asarray(img.dataobj, dtype=np.float64)
    a = img.affine
    rot_lps = LPS @ (a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0))
    labels = np.asarray(nib.load(str(out / LABELS)).dataobj)
    ref_img = sitk.ReadImage(str(out / EXPORT_ITK / ITK_REFERENCE_LABELS))
    n_t = disp.shape[3]
    worst = 0.0
    for t in frames:
        inv = sitk.ReadImage(str(out / EXPORT_ITK / itk_inverse_name(t, n_t)))
        _same_grid(inv, ref_img)
        u_lps = sitk.GetArrayFromImage(inv).transpose(2, 1, 0, 3)
        for k in range(u_lps.shape[2]):  # a single slice: each of the three copies
            np.testing.assert_allclose(u_lps[:, :, k:k + 1] if disp.shape[2] == 1 else u_lps,
                                       disp[:, :, :, t, :] @ rot_lps.T, atol=1e-5)
            if disp.shape[2] > 1:
                break
        fwd = sitk.DisplacementFieldTransform(inv)
        back = sitk.DisplacementFieldTransform(sitk.ReadImage(str(out / EXPORT_ITK / itk_displacement_name(t, n_t))))
        for ijk in np.argwhere(labels[..., t] > 0)[::7]:
            X = np.array(ref_img.TransformIndexToPhysicalPoint([int(v) for v in ijk]))
            x = np.array(fwd.TransformPoint(X.tolist()))
            # ITK's point transform is X + u(X): the tissue's position at frame t, in LPS
            np.testing.assert_allclose(x - X, rot_lps @ disp[ijk[0], ijk[1], ijk[2], t], atol=1e-4)
            worst = max(worst, float(np.linalg.norm(np.array(back.TransformPoint(x.tolist())) - X)))
    return worst / float(np.min(np.linalg.norm(a[:3, :3], axis=0)[: 2 if disp.shape[2] == 1 else 3]))


def _read_vtp(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict, object]:
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    r = vtkXMLPolyDataReader()
    r.SetFileName(str(path))
    r.Update()
    poly = r.GetOutput()
    assert poly.GetNumberOfPoints() > 0, f"{path}: no points read back"
    pts = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    pd = poly.GetPointData()
    data = {pd.GetArrayName(i): vtk_to_numpy(pd.GetArray(i)) for i in range(pd.GetNumberOfArrays())}
    fd = poly.GetFieldData()
    fields = {}
    for i in range(fd.GetNumberOfArrays()):
        arr = fd.GetAbstractArray(i)
        fields[arr.GetName()] = arr.GetValue(0)
    return pts, data, fields, poly


def check_meshes(out: Path, dim: int) -> float:
    """The ParaView series lists every frame; each mesh's vertices are the reference vertices plus
    the continuous field at them (in world LPS, computed here from the nibabel affine); the point
    data are present. Returns the largest vertex error (mm)."""
    img = nib.load(str(out / DISPLACEMENT))
    a = img.affine
    sp = np.linalg.norm(a[:3, :3], axis=0)
    rot_lps = LPS @ (a[:3, :3] / sp)
    n_t = img.shape[3]
    ref_t = json.loads((out / "metrics.json").read_text())["sequence"]["ref_frame"]
    series = ET.parse(out / EXPORT_MESH / MESH_SERIES).getroot()
    entries = series.findall("./Collection/DataSet")
    assert [e.get("file") for e in entries] == [mesh_frame_name(t, n_t) for t in range(n_t)]
    times = [float(e.get("timestep")) for e in entries]
    assert times == sorted(times) and len(set(times)) == n_t
    ref_pts, ref_data, fields, poly = _read_vtp(out / EXPORT_MESH / mesh_frame_name(ref_t, n_t))
    assert fields["SPACE"] == "LPS" and int(fields["frame"]) == ref_t
    if dim == 3:
        assert poly.GetNumberOfPolys() > 0 and poly.GetNumberOfLines() == 0
    else:
        assert poly.GetNumberOfLines() >= 2 and poly.GetNumberOfPolys() == 0  # epicardium and endocardium
    # reference vertices: array mm from world LPS with the nibabel affine
    ijk = np.linalg.solve(a[:3, :3], (LPS @ ref_pts.T) - a[:3, 3:4]).T
    labels_ref = np.asarray(nib.load(str(out / LABELS)).dataobj)[..., ref_t]
    # each vertex lies on the myocardium's boundary: within a voxel of a myocardial voxel
    near = np.clip(np.rint(ijk), 0, np.array(labels_ref.shape) - 1).astype(int)
    myo_code = 2
    from scipy.ndimage import binary_dilation

    myo_grown = binary_dilation(labels_ref == myo_code, iterations=1)
    assert myo_grown[near[:, 0], near[:, 1], near[:, 2]].mean() > 0.99
    field = load_field(out / "field.pt")
    with torch.no_grad():
        u = field(torch.as_tensor(ijk * sp, dtype=torch.float32)[:, :dim]).double().numpy()  # (N, T, D)
    worst = moved = 0.0
    for t in range(n_t):
        pts, data, fields, _ = _read_vtp(out / EXPORT_MESH / mesh_frame_name(t, n_t))
        moved = max(moved, float(np.abs(pts - ref_pts).max()))
        assert set(POINT_DATA) <= set(data), f"point data missing: {set(POINT_DATA) - set(data)}"
        assert int(fields["frame"]) == t and pts.shape == ref_pts.shape
        u3 = np.zeros((len(u), 3))
        u3[:, :dim] = u[:, t]
        want = ref_pts + u3 @ rot_lps.T
        worst = max(worst, float(np.abs(pts - want).max()))
        np.testing.assert_allclose(data["displacement_mm"], u3 @ rot_lps.T, atol=1e-3)
        seg = data["aha_segment"]
        assert seg.min() >= 1 and seg.max() <= 17
        for name in ("radial_strain_pct", "circumferential_strain_pct"):
            assert np.all(np.isfinite(data[name]))
        assert np.all(np.isfinite(data["longitudinal_strain_pct"])) == (dim == 3)
        if t == ref_t:
            assert np.abs(data["radial_strain_pct"]).max() < 1e-3 and np.abs(data["displacement_mm"]).max() == 0
    assert moved > 0.1  # the meshes do move: the comparison above is not trivial
    if dim == 3:
        # a closed surface with outward normals has a positive signed volume near the myocardium's
        tri = _triangles(poly)
        v0, v1, v2 = (ref_pts[tri[:, k]] for k in range(3))
        volume = np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() / 6.0
        myo_volume = (labels_ref == myo_code).sum() * np.prod(sp)
        assert 0.6 * myo_volume < volume < 1.4 * myo_volume, (volume, myo_volume)
    return worst


def _triangles(poly) -> np.ndarray:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    conn = vtk_to_numpy(poly.GetPolys().GetConnectivityArray())
    return conn.reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# A known motion: no fit, large enough that any sign slip fails
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_itk_fields_carry_a_known_motion_on_an_oblique_left_handed_grid(tmp_path, dim):
    """A rotation about the grid's centre, a contraction and a translation, several mm, written as
    a fit folder (displacement and labels, no field): SimpleITK, applying the exported fields in
    world coordinates, samples the reference labels exactly where the motion says, and the inverse
    fields undo them."""
    shape = (40, 36, 1) if dim == 2 else (32, 30, 10)
    spacing = (1.5, 1.5, 8.0) if dim == 2 else (1.5, 1.5, 4.0)
    affine = _oblique_affine(spacing)
    sp = np.asarray(spacing)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    X = ijk * sp
    centre = (np.array(shape) - 1) / 2 * sp
    r = np.linalg.norm((X - centre)[..., :2], axis=-1)
    labels = np.zeros(shape, np.uint8)
    labels[r < 9] = 1
    labels[(r >= 9) & (r < 14)] = 2
    if dim == 3:
        labels[:, :, [0, shape[2] - 1]] = 0
    n_t = 4
    disp = np.zeros(shape + (n_t, 3), np.float32)
    for t in range(1, n_t):
        ang = np.radians(6.0 * t)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        d = X - centre
        moved = d[..., :2] @ rot.T * (1.0 - 0.04 * t)  # rotation and a radial contraction
        disp[..., t, :2] = moved - d[..., :2] + np.array([1.2 * t, -0.8 * t])
        if dim == 3:
            disp[..., t, 2] = 0.5 * t
    props = propagate_labels(labels, disp, sp)
    out = tmp_path / "out"
    out.mkdir()
    save_nifti(out / DISPLACEMENT, disp, affine)
    save_nifti(out / LABELS, props, affine)
    (out / "metrics.json").write_text(json.dumps({"sequence": {"ref_frame": 0, "frame_interval_ms": 40.0}}))
    result = export_folder(out, "itk")
    assert len(result.files["itk"]) == 1 + 2 * n_t
    got, carried = itk_resample(out, tmp_path)
    # SimpleITK samples exactly where the motion says: the nearest reference voxel of X = x + v(x)
    # (v the inverse displacement, computed here in voxel space, with no world coordinates)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    for t in range(n_t):
        v = invert_displacement(torch.from_numpy(disp[:, :, :, t].astype(np.float64)), torch.as_tensor(sp)).numpy()
        q = np.rint(ijk + v / sp).astype(int)
        inside = np.all((q >= 0) & (q < np.array(shape)), axis=-1)
        q = np.clip(q, 0, np.array(shape) - 1)
        nearest = np.where(inside, labels[q[..., 0], q[..., 1], q[..., 2]], 0)
        assert (got[..., t] == nearest).mean() > 0.999, t
    # and close to labels.nii.gz, whose smoothed-distance interpolation differs from nearest
    # neighbour by up to a voxel at boundaries (small structures, rotation of 18 degrees)
    worst = worst_dice(got, carried)
    assert min(worst.values()) > 0.85, worst
    assert check_inverse(out, list(range(n_t))) < 0.1


# ---------------------------------------------------------------------------------------------
# Tiny fits: phantoms (2D and 3D) on the Sunnybrook orientation, and a Sunnybrook case
# ---------------------------------------------------------------------------------------------


def _phantom_fit(root: Path, dim: int) -> Path:
    if dim == 2:
        pc = PhantomConfig(dim=2, shape=(64, 64, 1), n_frames=8, spacing=(2.0, 2.0, 8.0), supersample=1)
    else:
        pc = PhantomConfig(dim=3, shape=(52, 52, 8), n_frames=6, spacing=(2.0, 2.0, 8.0), supersample=1,
                           z_supersample=1)
    ph = make_phantom(pc, seed=0, name=f"tiny{dim}d")
    seq = ph.sequence
    cine = root / "cine.nii.gz"
    seq = replace(seq, affine=_oblique_affine(pc.spacing), labels={seq.ref_frame: seq.ref_labels},
                  meta={**seq.meta, "source": str(cine)})
    save_sequence_nifti(cine, seq)
    res = Fitter(FitConfig(steps=30, points=512, reg_points=128, field=FieldConfig(hidden=32, layers=2))).fit(seq)
    assert np.abs(res.displacement).max() > 0.3  # the field moved: the check below is not trivial
    out = root / "out"
    save_fit(res, out, report=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dim", [2, 3])
def test_export_of_a_phantom_fit(tmp_path, dim):
    out = _phantom_fit(tmp_path, dim)
    lines: list[str] = []
    result = export_folder(out, log=lines.append)
    n_t = nib.load(str(out / DISPLACEMENT)).shape[3]
    assert len(result.files["itk"]) == 1 + 2 * n_t and len(result.files["vtk"]) == n_t + 1
    assert any("contour lines" in line for line in lines) == (dim == 2)
    assert set(check_labels(out, tmp_path, f"phantom {dim}D")) == {1, 2, 3}
    assert check_inverse(out, [1, n_t // 2]) < 0.1
    err = check_meshes(out, dim)
    print(f"phantom {dim}D: largest vertex error {err:.2e} mm")
    assert err < 0.01


@pytest.mark.slow
def test_fit_export_on_sunnybrook(sunnybrook, tmp_path, capsys):
    """A real oblique, left-handed stack through the command line (``fit --export itk,vtk``; ED is
    the last frame), then ``export --frames`` rewriting a subset."""
    cine = sorted(sunnybrook.glob("*_sa_cine_crop80.nii.gz"))[0]
    seg = sorted(sunnybrook.glob(cine.name.split("_")[0] + "_lab_ED_frame*_crop80.nii.gz"))[0]
    assert np.linalg.det(nib.load(str(cine)).affine[:3, :3]) < 0  # the case this test is about
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("points = 1024\nreg_points = 256\n[field]\nhidden = 32\nlayers = 2\n")
    out = tmp_path / "out"
    rc = main(["fit", str(cine), "--seg", str(seg), "--out", str(out), "--label-map", "sunnybrook",
               "--ref-frame", "-1", "--steps", "20", "--config", str(cfg), "--no-report", "--quiet",
               "--threads", "2", "--export", "itk,vtk"])
    assert rc == 0
    said = capsys.readouterr().out
    assert "exported itk" in said and "exported vtk" in said
    n_t = nib.load(str(out / DISPLACEMENT)).shape[3]
    assert np.abs(np.asarray(nib.load(str(out / DISPLACEMENT)).dataobj)).max() > 0.1
    assert set(check_labels(out, tmp_path, f"Sunnybrook {cine.name}")) == {1, 2}
    assert check_inverse(out, [0, 7]) < 0.1
    err = check_meshes(out, 3)
    print(f"Sunnybrook: largest vertex error {err:.2e} mm")
    assert err < 0.01
    # a subset of frames: old files removed, the series lists the new ones only
    assert main(["export", str(out), "--format", "vtk", "--frames", "0,-1"]) == 0
    files = sorted(p.name for p in (out / EXPORT_MESH).iterdir())
    assert files == sorted([mesh_frame_name(0, n_t), mesh_frame_name(n_t - 1, n_t), MESH_SERIES])
    assert (out / EXPORT_ITK / itk_displacement_name(5, n_t)).is_file()  # the other format untouched


# ---------------------------------------------------------------------------------------------
# Options and refusals
# ---------------------------------------------------------------------------------------------


def test_options_parse_and_refuse():
    assert parse_formats(None) == ("itk", "vtk") and parse_formats("vtk, ITK") == ("itk", "vtk")
    assert parse_frames(None, 4) == [0, 1, 2, 3] and parse_frames("0,-1,1:3", 20) == [0, 1, 2, 19]
    for bad in ("stl", "itk,obj"):
        with pytest.raises(Exception, match="unknown format"):
            parse_formats(bad)
    with pytest.raises(Exception, match="out of range"):
        parse_frames("25", 20)
    with pytest.raises(Exception, match="frame numbers"):
        parse_frames("a", 20)


def test_export_refuses_clearly(tmp_path, capsys):
    # no folder
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    # a folder without labels: fields yes, meshes no (one line saying why)
    out = tmp_path / "out"
    out.mkdir()
    save_nifti(out / DISPLACEMENT, np.zeros((8, 8, 1, 3, 3), np.float32), _oblique_affine((2.0, 2.0, 8.0)))
    assert main(["export", str(out), "--format", "itk"]) == 0
    assert (out / EXPORT_ITK / itk_displacement_name(2, 3)).is_file()
    assert not (out / EXPORT_ITK / ITK_REFERENCE_LABELS).exists()
    assert main(["export", str(out), "--format", "vtk"]) == 2
    assert "reference labels with a myocardium" in capsys.readouterr().err
    assert main(["export", str(out), "--format", "png"]) == 2
    # fit --export vtk without labels stops before fitting
    cine = tmp_path / "cine.nii.gz"
    ph = make_phantom(PhantomConfig(dim=2, shape=(40, 40, 1), spacing=(2.6, 2.6, 8.0), n_frames=4, supersample=1), seed=0)
    save_sequence_nifti(cine, ph.sequence)
    assert main(["fit", str(cine), "--out", str(tmp_path / "f"), "--export", "vtk", "--steps", "1"]) == 2
    assert "--seg" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_a_new_fit_removes_old_exports(tmp_path):
    """Exports describe one motion: writing a fit into the folder removes those of an earlier one."""
    ph = make_phantom(PhantomConfig(dim=2, shape=(40, 40, 1), spacing=(2.6, 2.6, 8.0), n_frames=4, supersample=1), seed=0)
    seq = replace(ph.sequence, labels={ph.sequence.ref_frame: ph.sequence.ref_labels})
    res = Fitter(FitConfig(steps=2, points=256, reg_points=64, field=FieldConfig(hidden=16, layers=1))).fit(seq)
    out = tmp_path / "out"
    write_fit_outputs(res, out)
    export_folder(out)
    assert (out / EXPORT_ITK).is_dir() and (out / EXPORT_MESH / MESH_SERIES).is_file()
    (out / EXPORT_MESH / "notes.txt").write_text("mine")  # not ours: kept
    write_fit_outputs(res, out)
    assert not (out / EXPORT_ITK).exists()
    assert sorted(p.name for p in (out / EXPORT_MESH).iterdir()) == ["notes.txt"]
