"""Input/output: geometry-preserving round trips (NIfTI, npz, per-frame folders, DICOM series)
and one clear line of error for every kind of bad input."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from builders import rotation
from cardioinr.core.errors import InputError
from cardioinr.core.files import atomic_path, write_json_atomic
from cardioinr.geometry import make_affine, spacing_from_affine
from cardioinr.io.dicom import dicom_affine
from cardioinr.io.load import load_sequence
from cardioinr.io.nifti import attach_labels, load_label_file, load_label_volume, save_nifti
from cardioinr.io.npz import load_npz, save_npz
from cardioinr.io.sequence import ACDC, SUNNYBROOK, LabelMap, Sequence

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def oblique_affine(spacing=(1.4, 1.3, 8.0), origin=(-52.4, 8.8, 6.9), angles=(0.4, -0.7, 1.9)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation(*angles) * np.asarray(spacing)
    aff[:3, 3] = origin
    return aff


def cine(shape=(12, 10, 3, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg and msg, repr(msg)
    return msg


def _ds(values) -> list[str]:
    """DICOM decimal strings (at most 16 characters)."""
    return [f"{float(x):.8g}" for x in np.atleast_1d(values)]


def _new_dataset(sop_class: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop, "MR"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def write_dicom_series(folder: Path, stored: np.ndarray, *, rot: np.ndarray, ipp0, pixel_spacing, step: float,
                       triggers, series_uid: str | None = None, slope: float = 1.0, intercept: float = 0.0,
                       with_trigger: bool = True, seed: int = 0, desc: str = "cine") -> str:
    """One file per (slice, frame), stored values ``stored`` (X=columns, Y=rows, Z, T), LPS geometry:
    row direction ``rot[:, 0]``, column direction ``rot[:, 1]``; file names shuffled so that only
    the geometry and trigger times can order them."""
    from pydicom.uid import MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz, nt = stored.shape
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    names = np.random.default_rng(seed).permutation(nz * nt)
    n = 0
    for k in range(nz):
        ipp = np.asarray(ipp0, dtype=float) + k * step * normal
        for t in range(nt):
            ds = _new_dataset(MRImageStorage)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesDescription = study, series_uid, desc
            ds.Rows, ds.Columns = ny, nx
            ds.ImageOrientationPatient = _ds(np.concatenate([row, col]))
            ds.ImagePositionPatient = _ds(ipp)
            ds.PixelSpacing = _ds(pixel_spacing)
            ds.SliceThickness = _ds(step)[0]
            if with_trigger:
                ds.TriggerTime = _ds(triggers[t])[0]
            ds.InstanceNumber = int(k * nt + t + 1)
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope)[0], _ds(intercept)[0]
            # pixel_array[r, c] = stored[c, r]: the array's first axis runs along a row
            ds.PixelData = np.ascontiguousarray(stored[:, :, k, t].T).astype("<i2").tobytes()
            ds.save_as(folder / f"IM{names[n]:04d}", enforce_file_format=True)
            n += 1
    return series_uid


def expected_ras_affine(rot, ipp0, pixel_spacing, step) -> np.ndarray:
    """Written out independently of :func:`dicom_affine`: LPS columns, then x and y negated."""
    lps = np.eye(4)
    lps[:3, 0] = rot[:, 0] * pixel_spacing[1]  # i: along a row, one column per step
    lps[:3, 1] = rot[:, 1] * pixel_spacing[0]  # j: down a column, one row per step
    lps[:3, 2] = np.cross(rot[:, 0], rot[:, 1]) * step
    lps[:3, 3] = ipp0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


GEOM = dict(rot=rotation(0.3, -0.5, 1.1), ipp0=np.array([-30.2, 41.7, 12.9]), pixel_spacing=(1.25, 0.8), step=7.5)


@pytest.fixture
def stored() -> np.ndarray:
    return np.random.default_rng(3).integers(-500, 2000, size=(12, 9, 4, 5)).astype(np.int16)


@pytest.fixture
def dicom_dir(tmp_path, stored) -> Path:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, stored, **GEOM, triggers=10 + 33.3 * np.arange(5), slope=2.0, intercept=-5.0)
    return folder


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------


def test_nifti_4d_roundtrip_keeps_oblique_geometry(tmp_path):
    img, aff = cine(), oblique_affine()
    path = save_nifti(tmp_path / "c.nii.gz", img, aff, frame_interval_ms=42.5)
    seq = load_sequence(path)
    np.testing.assert_array_equal(seq.image, img)
    np.testing.assert_allclose(seq.affine, aff, atol=1e-4)
    np.testing.assert_allclose(seq.spacing, [1.4, 1.3, 8.0], atol=1e-5)
    assert seq.frame_interval_ms == pytest.approx(42.5)
    assert seq.meta["frame_interval_from"] == "header"
    assert seq.name == "c" and seq.ref_frame == 0 and seq.label_map == ACDC
    assert load_sequence(path, ref_frame=-1, frame_interval_ms=30).ref_frame == 4
    assert load_sequence(path, frame_interval_ms=30).frame_interval_ms == 30


@pytest.mark.parametrize("unit,value,expected", [("sec", 0.0375, 37.5), ("msec", 37.5, 37.5),
                                                  ("unknown", 37.5, 37.5), ("hz", 37.5, 1.0)])
def test_frame_interval_follows_the_header_time_unit(tmp_path, unit, value, expected):
    nii = nib.Nifti1Image(cine(), np.eye(4))
    nii.header.set_xyzt_units(xyz="mm", t=unit)
    nii.header.set_zooms((1.0, 1.0, 1.0, value))
    nib.save(nii, tmp_path / "c.nii")
    assert load_sequence(tmp_path / "c.nii").frame_interval_ms == pytest.approx(expected)


def test_placeholder_frame_interval_is_reported_as_unknown(tmp_path):
    nib.save(nib.Nifti1Image(cine(), np.eye(4)), tmp_path / "c.nii")  # pixdim[4] = 1, no unit
    seq = load_sequence(tmp_path / "c.nii")
    assert seq.frame_interval_ms == 1.0 and seq.meta["frame_interval_from"] == "default (unknown)"


def test_5d_with_singleton_fourth_axis_is_a_cine_but_a_vector_field_is_refused(tmp_path):
    img = cine()
    nii = nib.Nifti1Image(img[:, :, :, None, :], np.eye(4))
    nib.save(nii, tmp_path / "five.nii.gz")
    np.testing.assert_array_equal(load_sequence(tmp_path / "five.nii.gz").image, img)
    save_nifti(tmp_path / "disp.nii.gz", np.zeros((12, 10, 3, 1, 3), np.float32), np.eye(4))
    with pytest.raises(InputError) as e:
        load_sequence(tmp_path / "disp.nii.gz")
    assert "vector field" in one_line(e)


def test_save_nifti_marks_a_displacement_as_vector(tmp_path):
    disp = np.zeros((6, 5, 2, 4, 3), np.float32)
    save_nifti(tmp_path / "d.nii.gz", disp, oblique_affine(), frame_interval_ms=20.0)
    hdr = nib.load(tmp_path / "d.nii.gz").header
    assert hdr.get_intent()[0] == "vector" and hdr.get_zooms()[3] == pytest.approx(20.0)


# ---------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------


def test_npz_roundtrip_keeps_everything(tmp_path):
    lab = np.zeros((12, 10, 3), np.uint8)
    lab[3:6, 3:6] = 1
    lab[2:7, 2:3] = 2
    seq = Sequence(image=cine(), affine=oblique_affine(), frame_interval_ms=33.0, labels={3: lab}, ref_frame=3,
                   label_map=SUNNYBROOK, name="case7", meta={"x": 1})
    path = save_npz(tmp_path / "s.npz", seq)
    back = load_sequence(path)
    np.testing.assert_array_equal(back.image, seq.image)
    np.testing.assert_allclose(back.affine, seq.affine, atol=1e-12)
    assert (back.frame_interval_ms, back.ref_frame, back.label_map, back.name) == (33.0, 3, SUNNYBROOK, "case7")
    np.testing.assert_array_equal(back.labels[3], lab)
    # explicit options win over what the file holds, frame 0 included
    over = load_sequence(path, ref_frame=0, frame_interval_ms=20.0, label_map="lv=1,myo=2,rv=3")
    assert (over.ref_frame, over.frame_interval_ms, over.label_map.rv) == (0, 20.0, 3)


def test_npz_errors_are_one_line(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    os.replace(tmp_path / "a.npy", tmp_path / "a.npz")
    with pytest.raises(InputError) as e:
        load_npz(tmp_path / "a.npz")
    assert "a.npz" in one_line(e)
    np.savez(tmp_path / "b.npz", other=np.zeros(3))
    with pytest.raises(InputError, match="no 'image'"):
        load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", image=cine(), label_map=np.array('{"heart": 1}'))
    with pytest.raises(InputError) as e:
        load_npz(tmp_path / "c.npz")
    assert "heart" in one_line(e)
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(InputError) as e:
        load_npz(tmp_path / "d.npz")
    assert "d.npz" in one_line(e)


# ---------------------------------------------------------------------------------------------
# per-frame NIfTI folders
# ---------------------------------------------------------------------------------------------


def test_per_frame_folder_sorts_by_frame_number(tmp_path):
    img, aff = cine((8, 7, 2, 12)), oblique_affine()
    folder = tmp_path / "frames"
    for t in np.random.default_rng(1).permutation(12):  # written out of order, unpadded numbers
        save_nifti(folder / f"cine_frame{t + 1}.nii.gz", img[..., t], aff)
    (folder / "notes.json").write_text("{}")  # side files are ignored
    seq = load_sequence(folder, frame_interval_ms=40.0)
    np.testing.assert_array_equal(seq.image, img)  # frame10 after frame9, not after frame1
    np.testing.assert_allclose(seq.affine, aff, atol=1e-4)
    assert seq.frame_interval_ms == 40.0 and seq.name == "frames"
    assert seq.meta["frame_files"][:3] == ["cine_frame1.nii.gz", "cine_frame2.nii.gz", "cine_frame3.nii.gz"]


def test_per_frame_folder_of_2d_slices(tmp_path):
    img = cine((8, 7, 1, 3))
    for t in range(3):
        save_nifti(tmp_path / f"f{t:02d}.nii", img[:, :, 0, t], make_affine((1.5, 1.5, 6.0)))
    seq = load_sequence(tmp_path)
    assert seq.image.shape == (8, 7, 1, 3) and seq.is_2d


@pytest.mark.parametrize("problem", ["shape", "affine", "4d", "pattern"])
def test_per_frame_folder_refuses_an_odd_file(tmp_path, problem):
    img, aff = cine((8, 7, 2, 4)), oblique_affine()
    for t in range(4):
        save_nifti(tmp_path / f"frame{t:02d}.nii.gz", img[..., t], aff)
    odd = tmp_path / "frame02.nii.gz"
    if problem == "shape":
        save_nifti(odd, img[:7, :, :, 2], aff)
    elif problem == "affine":
        save_nifti(odd, img[..., 2], oblique_affine(origin=(0, 0, 0)))
    elif problem == "4d":
        save_nifti(odd, img[..., :2], aff)
    else:
        odd = tmp_path / "frame02_gt.nii.gz"
        save_nifti(odd, np.zeros((8, 7, 2), np.uint8), aff)
    with pytest.raises(InputError) as e:
        load_sequence(tmp_path)
    msg = one_line(e)
    assert (odd.name in msg) if problem != "pattern" else ("patterns" in msg)


def test_folder_with_a_single_file(tmp_path):
    save_nifti(tmp_path / "only.nii.gz", cine()[..., 0], make_affine((1, 1, 1)))
    with pytest.raises(InputError, match="single 3D"):
        load_sequence(tmp_path)
    (tmp_path / "only.nii.gz").unlink()
    save_nifti(tmp_path / "cine.nii.gz", cine(), make_affine((1, 1, 1)))
    assert load_sequence(tmp_path).n_frames == 5


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def test_dicom_series_roundtrip_geometry_and_values(dicom_dir, stored):
    (dicom_dir / "README.txt").write_text("not dicom")  # stray files are skipped
    seq = load_sequence(dicom_dir)
    assert seq.image.shape == (12, 9, 4, 5)
    np.testing.assert_array_equal(seq.image, stored * 2.0 - 5.0)  # rescale slope / intercept applied
    expected = expected_ras_affine(**GEOM)
    np.testing.assert_allclose(seq.affine, expected, atol=1e-3)
    np.testing.assert_allclose(seq.spacing, [0.8, 1.25, 7.5], atol=1e-6)
    assert seq.frame_interval_ms == pytest.approx(33.3)
    assert seq.meta["format"] == "dicom" and seq.meta["frame_interval_from"] == "trigger times"
    # world position of voxel (i, j, k): the DICOM formula P = IPP_k + row * dc * i + col * dr * j, in RAS
    i, j, k = 7, 4, 2
    rot, ipp0, (dr, dc), step = GEOM["rot"], GEOM["ipp0"], GEOM["pixel_spacing"], GEOM["step"]
    p_lps = ipp0 + k * step * np.cross(rot[:, 0], rot[:, 1]) + rot[:, 0] * dc * i + rot[:, 1] * dr * j
    np.testing.assert_allclose((seq.affine @ [i, j, k, 1])[:3], p_lps * [-1, -1, 1], atol=1e-3)


def test_dicom_geometry_agrees_with_simpleitk(tmp_path, stored):
    """SimpleITK reads one time point as a 3D volume (LPS); negating x and y must give our affine."""
    import SimpleITK as sitk

    folder = tmp_path / "t0"
    write_dicom_series(folder, stored[..., :1], **GEOM, triggers=[0.0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    im = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.array(im.GetDirection()).reshape(3, 3) * np.array(im.GetSpacing())
    lps[:3, 3] = im.GetOrigin()
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ lps, expected_ras_affine(**GEOM), atol=1e-3)
    # SimpleITK's array is (z, y, x) with x the column index: transposed, it is our (i, j, k)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(im).transpose(2, 1, 0), stored[..., 0])


def test_dicom_affine_function_matches_the_formula():
    rot, ipp0, ps, step = GEOM["rot"], GEOM["ipp0"], GEOM["pixel_spacing"], GEOM["step"]
    aff = dicom_affine(np.concatenate([rot[:, 0], rot[:, 1]]), ipp0, np.array(ps), step)
    np.testing.assert_allclose(aff, expected_ras_affine(rot, ipp0, ps, step), atol=1e-12)


def test_dicom_single_slice_without_trigger_times_uses_instance_order(tmp_path, stored):
    folder = tmp_path / "one"
    write_dicom_series(folder, stored[:, :, :1], **GEOM, triggers=None, with_trigger=False)
    seq = load_sequence(folder, frame_interval_ms=25.0)
    np.testing.assert_array_equal(seq.image, stored[:, :, :1].astype(np.float32))
    assert seq.is_2d and seq.frame_interval_ms == 25.0
    np.testing.assert_allclose(seq.affine, expected_ras_affine(**GEOM), atol=1e-3)  # step = SliceThickness


def test_dicom_enhanced_multiframe(tmp_path, stored):
    """One Enhanced MR file holding every (slice, frame) in shuffled order."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    rot, ipp0, ps, step = GEOM["rot"], GEOM["ipp0"], GEOM["pixel_spacing"], GEOM["step"]
    nx, ny, nz, nt = stored.shape
    ds = _new_dataset("1.2.840.10008.5.1.4.1.1.4.1")  # Enhanced MR Image Storage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nz * nt
    shared, pm, po, pvt = Dataset(), Dataset(), Dataset(), Dataset()
    pm.PixelSpacing, pm.SliceThickness = _ds(ps), _ds(step)[0]
    po.ImageOrientationPatient = _ds(np.concatenate([rot[:, 0], rot[:, 1]]))
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "0.5", "10", "US"
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [pm], [po]
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    order = np.random.default_rng(5).permutation(nz * nt)
    per_frame, pixels = [], []
    for n in order:
        k, t = divmod(int(n), nt)
        item, pp, cs = Dataset(), Dataset(), Dataset()
        pp.ImagePositionPatient = _ds(ipp0 + k * step * np.cross(rot[:, 0], rot[:, 1]))
        cs.NominalCardiacTriggerDelayTime = 5 + 40.0 * t  # VR FD: a float, not a string
        item.PlanePositionSequence, item.CardiacSynchronizationSequence = [pp], [cs]
        per_frame.append(item)
        pixels.append(stored[:, :, k, t].T)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).astype("<i2").tobytes()
    folder = tmp_path / "enh"
    folder.mkdir()
    ds.save_as(folder / "multiframe.dcm", enforce_file_format=True)
    seq = load_sequence(folder)
    np.testing.assert_allclose(seq.image, stored * 0.5 + 10)
    np.testing.assert_allclose(seq.affine, expected_ras_affine(**GEOM), atol=1e-3)
    assert seq.frame_interval_ms == pytest.approx(40.0) and seq.meta["enhanced_multiframe"]


def test_dicom_mixed_series_refused_or_picked(dicom_dir, stored):
    other = write_dicom_series(dicom_dir / "sub", stored[:, :, :2], **GEOM, triggers=np.arange(5) * 30.0,
                               desc="other")
    with pytest.raises(InputError) as e:
        load_sequence(dicom_dir)
    msg = one_line(e)
    assert "2 DICOM series" in msg and other in msg and "series_uid" in msg
    assert load_sequence(dicom_dir, series_uid=other).image.shape == (12, 9, 2, 5)
    with pytest.raises(InputError, match="no DICOM series"):
        load_sequence(dicom_dir, series_uid="1.2.3")


def _files_at(folder: Path, slice_index: int, frame: int | None = None) -> list[Path]:
    import pydicom

    out = []
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        k, t = divmod(int(ds.InstanceNumber) - 1, 5)
        if k == slice_index and (frame is None or t == frame):
            out.append(f)
    return out


def test_dicom_missing_slice_is_an_uneven_step(dicom_dir):
    for f in _files_at(dicom_dir, 1):
        f.unlink()
    with pytest.raises(InputError) as e:
        load_sequence(dicom_dir)
    assert "uneven slice step" in one_line(e) and "15.00" in str(e.value)


def test_dicom_missing_image_in_one_slice(dicom_dir):
    (f,) = _files_at(dicom_dir, 2, frame=3)
    f.unlink()
    with pytest.raises(InputError) as e:
        load_sequence(dicom_dir)
    assert "has 4 images, others have 5" in one_line(e)


def test_dicom_duplicate_image_refused(dicom_dir):
    (f,) = _files_at(dicom_dir, 0, frame=0)
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(f)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(dicom_dir / "copy.dcm")
    with pytest.raises(InputError) as e:
        load_sequence(dicom_dir)
    assert "two images at slice" in one_line(e)


@pytest.mark.parametrize("damage", ["header", "pixels", "junk"])
def test_corrupt_dicom_names_the_file(dicom_dir, damage):
    victim = sorted(dicom_dir.iterdir())[3]
    data = victim.read_bytes()
    if damage == "header":
        victim.write_bytes(data[:300])
    elif damage == "pixels":
        victim.write_bytes(data[: len(data) - 50])
    else:
        victim = dicom_dir / "broken.dcm"
        victim.write_bytes(b"\x00" * 10 + b"garbage" * 30)
    with pytest.raises(InputError) as e:
        load_sequence(dicom_dir)
    assert victim.name in one_line(e)


def test_single_dicom_file_given_asks_for_the_folder(dicom_dir):
    f = next(dicom_dir.iterdir())
    renamed = f.with_suffix(".dcm")
    f.rename(renamed)
    with pytest.raises(InputError, match="folder"):
        load_sequence(renamed)


# ---------------------------------------------------------------------------------------------
# bad input: one line, naming the file and the problem
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_sequence(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in one_line(e) and "not found" in str(e.value)


def test_3d_file_where_4d_is_needed(tmp_path):
    save_nifti(tmp_path / "vol.nii.gz", cine()[..., 0], np.eye(4))
    with pytest.raises(InputError) as e:
        load_sequence(tmp_path / "vol.nii.gz")
    assert "vol.nii.gz" in one_line(e) and "4D" in str(e.value)


@pytest.mark.parametrize("problem,expected", [("nan", "NaN"), ("constant", "constant"), ("single", "one frame"),
                                              ("tiny", "too small")])
def test_bad_image_content(tmp_path, problem, expected):
    img = cine()
    if problem == "nan":
        img[1, 2, 0, 3] = np.nan
    elif problem == "constant":
        img[:] = 7.0
    elif problem == "single":
        img = img[..., :1]
    else:
        img = img[:2]
    save_nifti(tmp_path / "bad.nii.gz", img, np.eye(4))
    with pytest.raises(InputError) as e:
        load_sequence(tmp_path / "bad.nii.gz")
    assert expected in one_line(e) and "bad" in str(e.value)


def test_label_problems(tmp_path):
    seq = load_sequence(save_nifti(tmp_path / "c.nii.gz", cine(), oblique_affine()), label_map="sunnybrook")
    save_nifti(tmp_path / "wrong_shape.nii.gz", np.zeros((12, 9, 3), np.uint8), np.eye(4))
    with pytest.raises(InputError) as e:
        attach_labels(seq, {0: tmp_path / "wrong_shape.nii.gz"})
    assert "wrong_shape.nii.gz" in one_line(e) and "(12, 9, 3)" in str(e.value)
    lab = np.zeros((12, 10, 3), np.uint8)
    lab[2, 2, 1] = 3  # RV code, but the Sunnybrook map has no RV
    save_nifti(tmp_path / "codes.nii.gz", lab, np.eye(4))
    with pytest.raises(InputError) as e:
        attach_labels(seq, {0: tmp_path / "codes.nii.gz"})
    assert "[3]" in one_line(e) and "label-map" in str(e.value)
    save_nifti(tmp_path / "frac.nii.gz", np.full((12, 10, 3), 0.5, np.float32), np.eye(4))
    with pytest.raises(InputError, match="integer codes"):
        load_label_volume(tmp_path / "frac.nii.gz")
    with pytest.raises(InputError, match="out of range"):
        attach_labels(seq, {9: tmp_path / "codes.nii.gz"})


def test_label_provenance_is_explicit(tmp_path):
    """A label file leaves its path and SHA-256 on the sequence only when passed with its source,
    and the record goes as soon as those labels are replaced."""
    import hashlib

    from cardioinr.io.nifti import label_source

    seq = load_sequence(save_nifti(tmp_path / "c.nii.gz", cine(), oblique_affine()))
    lab = np.zeros((12, 10, 3), np.uint8)
    lab[3:6, 3:6, 1] = 3
    seg = save_nifti(tmp_path / "seg.nii.gz", lab, np.eye(4))
    sha = hashlib.sha256(seg.read_bytes()).hexdigest()
    with_file = attach_labels(seq, {-5: seg})  # frame -5 is frame 0
    assert with_file.label_provenance() == {0: {"path": str(seg), "sha256": sha}}
    assert with_file.with_ref_frame(2).label_provenance() == with_file.label_provenance()  # kept by replace
    assert with_file.with_labels(0, lab.copy()).label_provenance() == with_file.label_provenance()  # same codes
    assert with_file.with_labels(0, lab // 3 * 2).label_provenance() == {}  # other codes: the file no longer applies
    arr = load_label_volume(seg, seq.shape)
    assert seq.with_labels(0, arr).label_provenance() == {}  # an array alone carries nothing
    assert seq.with_labels(0, arr, source=label_source(seg)).label_provenance() == with_file.label_provenance()
    bad = lab.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(InputError) as e:  # a label file names itself first
        seq.with_labels(0, bad, source=label_source(seg))
    assert one_line(e).startswith(f"{seg}: label map (frame 0 of {tmp_path / 'c.nii.gz'}) has codes [7]")
    with pytest.raises(InputError) as e:
        seq.with_labels(0, bad)
    assert one_line(e).startswith(f"{tmp_path / 'c.nii.gz'}: label map for frame 0 has codes [7]")
    assert label_source(tmp_path / "gone.nii.gz") is None


def test_label_file_for_every_frame(tmp_path):
    labs = np.random.default_rng(0).integers(0, 3, size=(12, 10, 3, 5)).astype(np.uint8)
    save_nifti(tmp_path / "all.nii.gz", labs, np.eye(4))
    got = load_label_file(tmp_path / "all.nii.gz", (12, 10, 3), 5, frame=0)
    assert sorted(got) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(got[4], labs[..., 4])
    with pytest.raises(InputError) as e:
        load_label_file(tmp_path / "all.nii.gz", (12, 10, 3), 6, frame=0)
    assert "all.nii.gz" in one_line(e)


def _real_nifti(tmp_path: Path) -> Path:
    """A real cine file: Sunnybrook when present, else one written here."""
    from cardioinr.io.datasets import shared_data_dir

    data = shared_data_dir()
    if data is not None:
        return sorted(data.glob("*_sa_cine*.nii.gz"))[0]
    return save_nifti(tmp_path / "real.nii.gz", cine((40, 40, 4, 10)), oblique_affine())


@pytest.mark.parametrize("cut", [0.0, 0.001, 0.3, 0.999])
def test_truncated_nii_gz(tmp_path, cut):
    data = _real_nifti(tmp_path).read_bytes()
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError) as e:
        load_sequence(bad)
    assert "trunc.nii.gz" in one_line(e)


def test_corrupted_gzip_stream_is_caught(tmp_path):
    """Bytes changed in the middle of the stream: nibabel alone would not notice (no CRC check)."""
    data = bytearray(_real_nifti(tmp_path).read_bytes())
    mid = len(data) // 2
    data[mid: mid + 64] = bytes(64)
    bad = tmp_path / "flipped.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        load_sequence(bad)
    assert "flipped.nii.gz" in one_line(e) and "corrupt" in str(e.value)


@pytest.mark.parametrize("content", [b"hello, not an image" * 40, gzip.compress(b"plain text" * 100)])
def test_non_nifti_bytes_with_nifti_name(tmp_path, content):
    bad = tmp_path / "fake.nii.gz"
    bad.write_bytes(content)
    with pytest.raises(InputError) as e:
        load_sequence(bad)
    assert "fake.nii.gz" in one_line(e) and "NIfTI" in str(e.value)


def test_empty_and_useless_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as e:
        load_sequence(empty)
    assert "empty" in one_line(e)
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as e:
        load_sequence(empty)
    assert "no NIfTI or DICOM" in one_line(e)


def test_unknown_format(tmp_path):
    (tmp_path / "x.mha").write_text("x")
    with pytest.raises(InputError) as e:
        load_sequence(tmp_path / "x.mha")
    assert "unknown input format" in one_line(e)


@pytest.mark.parametrize("text", ["lv=1,myo=1", "heart=1", "lv=x", "lv=0", "lv=300", "lv=1,lv=2", "lv", ",", "acdcx"])
def test_bad_label_map_strings(text):
    with pytest.raises(InputError) as e:
        LabelMap.parse(text)
    assert repr(text) in one_line(e)


def test_label_map_presets_and_mappings():
    assert LabelMap.parse(" Sunnybrook ") == SUNNYBROOK and LabelMap.parse(None) == ACDC
    assert LabelMap.parse("lv=4,myo=5") == LabelMap(lv=4, myo=5, rv=None)
    assert LabelMap.coerce({"lv": 1, "myo": 2, "rv": None}) == SUNNYBROOK
    with pytest.raises(InputError):
        LabelMap.coerce({"lv": 1.5})


@pytest.mark.parametrize("kwargs", [
    dict(image=np.zeros((5, 5, 2))),
    dict(image=np.zeros((5, 5, 2, 1))),
    dict(image=np.zeros((5, 5, 2, 3))),
    dict(image=np.full((5, 5, 2, 3), np.inf)),
    dict(image=np.ones((5, 5, 2, 3), complex)),
    dict(image=cine(), affine=np.zeros((4, 4))),
    dict(image=cine(), affine=np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])),
    dict(image=cine(), frame_interval_ms=-3),
    dict(image=cine(), frame_interval_ms="fast"),
    dict(image=cine(), ref_frame=5),
    dict(image=cine(), ref_frame="ed"),
    dict(image=cine(), labels={0: np.zeros((3, 3, 3))}),
    dict(image=cine(), labels={0: np.full((12, 10, 3), 9)}),
    dict(image=cine(), labels={0: np.full((12, 10, 3), 0.5)}),
    dict(image=cine(), labels={0: np.full((12, 10, 3), -1)}),
    dict(image=cine(), name="two\nlines", ref_frame=99),
])
def test_sequence_validation_messages_are_one_line(kwargs):
    kwargs = {"affine": np.eye(4), **kwargs}
    with pytest.raises(InputError) as e:
        Sequence(**kwargs)
    one_line(e)


def test_sequence_basics():
    seq = Sequence(image=cine((12, 10, 1, 6)), affine=make_affine((1.5, 1.5, 8.0)), frame_interval_ms=30.0,
                   labels={-1: np.zeros((12, 10), np.uint8)})
    assert seq.is_2d and seq.ndim_space == 2 and seq.n_frames == 6 and list(seq.labels) == [5]
    np.testing.assert_allclose(seq.frame_times_ms(), np.arange(6) * 30.0)
    assert seq.with_ref_frame(-1).ref_frame == 5 and seq.with_ref_frame(5).ref_labels is not None
    np.testing.assert_allclose(spacing_from_affine(oblique_affine()), [1.4, 1.3, 8.0])


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_path_permissions_failure_and_suffix(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_json_atomic(target, {"a": np.float32(1.5), "b": np.arange(2), "p": tmp_path})
    assert target.read_text().startswith("{")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert '"a": 1.5' in target.read_text()  # the old file is intact
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.nii.gz"]  # no temp files left
    assert os.listdir(tmp_path / "out") == ["metrics.json"]
