"""Reading studies: a short-axis stack with long-axis cines from files, UK Biobank folders and
DICOM exams of several series; views named from file names and descriptions, reference frames
aligned by cycle phase, one clear line for every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import dicom_series

from cardioinr.core.errors import InputError
from cardioinr.io.nifti import save_nifti
from cardioinr.io.studies import (
    UKBB,
    lax_view_name,
    load_dicom_study,
    load_study,
    load_study_any,
    load_study_folder,
    looks_like_study,
)

# SAX: 16 x 16 x 4 voxels of 2 x 2 x 8 mm from the origin, a box x, y in [0, 30], z in [0, 24] mm.
SAX_AFFINE = np.diag([2.0, 2.0, 8.0, 1.0])


def lax_affine(plane: str, offset: float = 15.0) -> np.ndarray:
    """A single-slice plane through the stack: ``"y"`` (x-z plane at y = offset, columns
    (1,0,0), (0,0,1), (0,1,0)) or ``"x"`` (y-z plane at x = offset)."""
    aff = np.eye(4)
    if plane == "y":
        aff[:3, :3] = np.column_stack([(2, 0, 0), (0, 0, 2), (0, 6, 0)])
        aff[:3, 3] = (0.0, offset, -4.0)
    else:
        aff[:3, :3] = np.column_stack([(0, 2, 0), (0, 0, 2), (6, 0, 0)])
        aff[:3, 3] = (offset, 0.0, -4.0)
    return aff


def cine(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


def write_sax(path: Path, n_frames: int = 6) -> Path:
    return save_nifti(path, cine((16, 16, 4, n_frames)), SAX_AFFINE, frame_interval_ms=40.0)


def write_lax(path: Path, plane: str = "y", n_frames: int = 9, n_slices: int = 1, offset: float = 15.0) -> Path:
    return save_nifti(path, cine((16, 16, n_slices, n_frames), seed=n_frames), lax_affine(plane, offset),
                      frame_interval_ms=40.0 * 6 / n_frames)


def sax_labels(n_frames: int | None = None) -> np.ndarray:
    lab = np.zeros((16, 16, 4), np.uint8)
    lab[4:12, 4:12] = 2
    lab[6:10, 6:10] = 1
    return lab if n_frames is None else np.repeat(lab[..., None], n_frames, axis=3)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg and msg.strip() == msg, repr(msg)
    return msg


# ---------------------------------------------------------------------------------------------
# view names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("la_2ch", "2ch"), ("LA_4CH", "4ch"), ("lax_3ch_cine", "3ch"), ("4ch", "4ch"), ("cine 4ch", "4ch"),
    ("CINE_2 chamber", "2ch"), ("two_chamber", "2ch"), ("Four Chamber view", "4ch"), ("tf2d VLA", "2ch"),
    ("LVOT cine", "3ch"), ("sa", None), ("lax", None), ("check", None), ("12ch", None), ("sa_ED", None),
])
def test_lax_view_names(text, expected):
    assert lax_view_name(text) == expected


# ---------------------------------------------------------------------------------------------
# load_study: files given one by one
# ---------------------------------------------------------------------------------------------


def test_load_study_names_views_and_aligns_reference_frames(tmp_path):
    sax = write_sax(tmp_path / "case_sa.nii.gz")
    a = write_lax(tmp_path / "la_2ch.nii.gz", "y", n_frames=9)
    b = write_lax(tmp_path / "other.nii.gz", "x", n_frames=12)
    c = write_lax(tmp_path / "CINE_4CH.nii", "x", n_frames=6, offset=10.0)
    study = load_study(sax, [a, b, c], ref_frame=2, frame_interval_ms=30.0)
    assert study.view_names == ["sax", "2ch", "4ch", "lax1"]
    assert study.name == "case_sa"
    assert study.sax.ref_frame == 2 and study.sax.frame_interval_ms == 30.0
    assert study.lax["2ch"].ref_frame == 3  # round(2 / 6 * 9)
    assert study.lax["lax1"].ref_frame == 4 and study.lax["4ch"].ref_frame == 2
    # one cycle: the given SAX interval scaled to each view's frame count
    assert study.lax["2ch"].frame_interval_ms == pytest.approx(30.0 * 6 / 9)
    assert study.lax["lax1"].frame_interval_ms == pytest.approx(15.0)
    # without options: reference frames 0, intervals from the headers
    plain = load_study(sax, a)
    assert plain.lax["2ch"].ref_frame == 0 and plain.lax["2ch"].frame_interval_ms == pytest.approx(40.0 * 6 / 9)


def test_load_study_attaches_reference_and_every_frame_labels(tmp_path):
    from cardioinr.io.sequence import SUNNYBROOK

    sax = write_sax(tmp_path / "sa.nii.gz")
    lax = write_lax(tmp_path / "la_4ch.nii.gz", "x", n_frames=6)
    seg = save_nifti(tmp_path / "seg.nii.gz", sax_labels(), SAX_AFFINE)
    lab = np.zeros((16, 16, 1), np.uint8)
    lab[5:10, 5:10] = 2
    lab[6:9, 6:9] = 1
    lax_seg = save_nifti(tmp_path / "lax_seg.nii.gz", lab, lax_affine("x"))
    study = load_study(sax, [lax], seg=seg, lax_segs={"4ch": lax_seg}, label_map="sunnybrook", ref_frame=3)
    assert study.sax.label_map == SUNNYBROOK and study.lax["4ch"].label_map == SUNNYBROOK
    assert list(study.sax.labels) == [3] and list(study.lax["4ch"].labels) == [3]
    np.testing.assert_array_equal(study.lax["4ch"].ref_labels[..., 0], lab[..., 0])
    assert study.sax.label_provenance()[3]["path"] == str(seg)
    # a label file of every frame attaches them all; a list aligned with the LAX paths works too
    seg4d = save_nifti(tmp_path / "seg4d.nii.gz", sax_labels(6), SAX_AFFINE)
    study = load_study(sax, [lax], seg=seg4d, lax_segs=[None], label_map="sunnybrook")
    assert sorted(study.sax.labels) == list(range(6)) and not study.lax["4ch"].labels


def test_load_study_errors_are_one_line_and_name_the_file(tmp_path):
    sax = write_sax(tmp_path / "sa.nii.gz")
    far = write_lax(tmp_path / "la_2ch.nii.gz", "y", offset=200.0)
    with pytest.raises(InputError) as e:
        load_study(sax, [far])
    assert "la_2ch.nii.gz" in one_line(e) and "does not cross" in str(e.value)
    stack = write_lax(tmp_path / "la_3ch.nii.gz", "y", n_slices=3)
    with pytest.raises(InputError) as e:
        load_study(sax, [stack])
    assert "la_3ch.nii.gz" in one_line(e) and "single slice" in str(e.value)
    twice = [write_lax(tmp_path / "a_4ch.nii.gz", "x"), write_lax(tmp_path / "b_4ch.nii.gz", "x")]
    with pytest.raises(InputError) as e:
        load_study(sax, twice)
    assert "b_4ch.nii.gz" in one_line(e) and "used twice" in str(e.value)
    ok = write_lax(tmp_path / "la_4ch.nii.gz", "x")
    with pytest.raises(InputError) as e:
        load_study(sax, [ok], lax_segs=[None, None])
    assert "2 long-axis label files for 1" in one_line(e)
    with pytest.raises(InputError) as e:
        load_study(sax, [ok], lax_segs={"2ch": tmp_path / "x.nii.gz"})
    assert "unknown views 2ch" in one_line(e)


# ---------------------------------------------------------------------------------------------
# UK Biobank folders
# ---------------------------------------------------------------------------------------------


def ukbb_folder(folder: Path) -> Path:
    folder.mkdir()
    write_sax(folder / "sa.nii.gz")
    write_lax(folder / "la_2ch.nii.gz", "y", n_frames=6)
    write_lax(folder / "LA_4CH.nii", "x", n_frames=6)  # plain .nii, any case
    save_nifti(folder / "seg_sa.nii.gz", sax_labels(6), SAX_AFFINE)  # every frame
    four = np.zeros((16, 16, 1, 6), np.uint8)
    four[2:5, 2:5], four[5:8, 5:8], four[8:11, 8:11], four[11:14, 11:14] = 1, 2, 4, 5  # LV, MYO, LA, RA
    save_nifti(folder / "seg4_la_4ch.nii.gz", four, lax_affine("x"))
    save_nifti(folder / "seg_la_2ch.nii.gz", np.ones((16, 16, 1, 6), np.uint8), lax_affine("y"))  # atria only
    write_sax(folder / "sa_ED.nii.gz")  # other UK Biobank files are not views
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_ukbb_folder(tmp_path):
    study = load_study_folder(ukbb_folder(tmp_path / "1000001"))
    assert study.name == "1000001" and study.view_names == ["sax", "2ch", "4ch"]
    assert study.sax.label_map == UKBB and sorted(study.sax.labels) == list(range(6))
    four = study.lax["4ch"]
    assert sorted(four.labels) == list(range(6))
    assert set(np.unique(four.labels[0]).tolist()) == {0, 1, 2}  # atria (4, 5) dropped
    assert not study.lax["2ch"].labels  # UK Biobank's seg_la_2ch labels the left atrium with code 1
    notes = " | ".join(study.meta["notes"])
    assert "seg_la_2ch.nii.gz: not attached" in notes and "seg4_la_4ch.nii.gz: codes [4, 5]" in notes
    # the dispatcher reads the same folder, and adds LAX files given beside it
    extra = write_lax(tmp_path / "lvot.nii.gz", "y", n_frames=6, offset=10.0)
    both = load_study_any(tmp_path / "1000001", [extra])
    assert both.view_names == ["sax", "2ch", "3ch", "4ch"] and both.meta["notes"] == study.meta["notes"]


def test_ukbb_folder_with_a_3d_label_of_ed(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write_sax(folder / "sa.nii")
    save_nifti(folder / "label_sa.nii.gz", sax_labels(), SAX_AFFINE)
    study = load_study_folder(folder, ref_frame=1)
    assert list(study.sax.labels) == [1] and study.lax == {}


def test_ukbb_folder_errors(tmp_path):
    folder = tmp_path / "empty_case"
    folder.mkdir()
    write_lax(folder / "la_2ch.nii.gz", "y")
    (folder / "readme.txt").write_text("x")
    with pytest.raises(InputError) as e:
        load_study_folder(folder)
    msg = one_line(e)
    assert "no short-axis file sa.nii.gz" in msg and "la_2ch.nii.gz" in msg and "readme.txt" in msg
    with pytest.raises(InputError) as e:
        load_study_any(folder)  # no sa: read as one sequence, a folder of per-frame files
    one_line(e)

    bad = ukbb_folder(tmp_path / "bad")
    (bad / "la_2ch.nii.gz").write_bytes(np.random.default_rng(0).bytes(400))
    with pytest.raises(InputError) as e:
        load_study_folder(bad)
    assert str(bad / "la_2ch.nii.gz") in one_line(e)

    twice = tmp_path / "twice"
    twice.mkdir()
    write_sax(twice / "sa.nii.gz")
    write_sax(twice / "sa.nii")
    with pytest.raises(InputError) as e:
        load_study_folder(twice)
    assert "sa.nii" in one_line(e)


# ---------------------------------------------------------------------------------------------
# DICOM exams of several series
# ---------------------------------------------------------------------------------------------


def dicom_slice_series(folder: Path, *, iop, ipp, desc: str, number: int, nx=12, ny=10, nt=5) -> Path:
    """One single-slice cine series (one file per frame) of the given LPS geometry."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    rng = np.random.default_rng(number)
    for t in range(nt):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = uid, desc, number
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.Rows, ds.Columns = ny, nx
        ds.ImageOrientationPatient = [f"{float(v):g}" for v in iop]
        ds.ImagePositionPatient = [f"{float(v):g}" for v in ipp]
        ds.PixelSpacing = ["1.5", "1.5"]
        ds.SliceThickness = "6"
        ds.TriggerTime = f"{30.0 * t:g}"
        ds.InstanceNumber = t + 1
        ds.PixelData = rng.integers(0, 1000, size=(ny, nx)).astype("<i2").tobytes()
        ds.save_as(folder / f"S{number:02d}_{t:03d}.dcm", enforce_file_format=True)
    return folder


def dicom_exam(folder: Path) -> Path:
    # SAX: 3 axial slices of 12 x 10 px at 1.5 mm, 6 mm apart (LPS box x 0..16.5, y 0..13.5, z 0..12)
    dicom_series(folder / "sax", nz=3, nt=4, desc="cine sax")
    dicom_slice_series(folder / "lax", iop=(1, 0, 0, 0, 0, -1), ipp=(0, 6.75, 10.5), desc="cine 4ch", number=7)
    dicom_slice_series(folder / "lax_b", iop=(0, 1, 0, 0, 0, -1), ipp=(8, 0, 10.5), desc="cine", number=9)
    dicom_slice_series(folder / "par", iop=(1, 0, 0, 0, 1, 0), ipp=(0, 0, 3), desc="extra sax slice", number=8)
    return folder


def test_dicom_exam_classified_by_geometry(tmp_path):
    exam = dicom_exam(tmp_path / "exam")
    study = load_dicom_study(exam)
    assert study.view_names == ["sax", "4ch", "lax1"]
    assert study.sax.shape == (12, 10, 3) and study.sax.n_frames == 4
    assert study.lax["4ch"].shape == (12, 10, 1) and study.lax["4ch"].n_frames == 5
    assert study.lax["4ch"].meta["series_description"] == "cine 4ch"
    assert any("series 8 'extra sax slice'" in n and "parallel to the short axis" in n for n in study.meta["notes"])
    # the dispatcher recognises the exam
    assert load_study_any(exam, ref_frame=2).lax["4ch"].ref_frame == round(2 / 4 * 5)


def test_dicom_headers_are_read_once_per_command_until_a_file_changes(tmp_path, monkeypatch):
    import pydicom

    exam = dicom_exam(tmp_path / "exam")
    reads = []
    real = pydicom.dcmread
    # header reads (the pixel data of the series used are read once, when loaded)
    monkeypatch.setattr(pydicom, "dcmread",
                        lambda *a, **k: (k.get("stop_before_pixels") and reads.append(a[0])) or real(*a, **k))
    assert looks_like_study(exam)  # what `cardioinr fit` asks first
    n = len(reads)
    assert n == sum(1 for _ in exam.rglob("*.dcm"))
    study = load_study_any(exam)  # then it loads: the headers are not read again
    assert study.view_names == ["sax", "4ch", "lax1"] and len(reads) == n
    # a file replaced (another exam in the same folder): read afresh
    dicom_slice_series(exam / "lax", iop=(1, 0, 0, 0, 0, -1), ipp=(0, 6.75, 10.5), desc="cine 2ch", number=7)
    assert load_study_any(exam).view_names == ["sax", "2ch", "lax1"] and len(reads) > n


def test_dicom_short_axis_stored_one_series_per_slice(tmp_path):
    exam = tmp_path / "exam"
    for k in range(3):
        dicom_slice_series(exam / f"sa{k}", iop=(1, 0, 0, 0, 1, 0), ipp=(0, 0, 6.0 * k), desc=f"sax b{k}", number=k + 1)
    dicom_slice_series(exam / "lax", iop=(1, 0, 0, 0, 0, -1), ipp=(0, 6.75, 10.5), desc="2CH cine", number=10)
    study = load_study_any(exam)
    assert study.view_names == ["sax", "2ch"] and study.sax.shape == (12, 10, 3)
    assert len(study.sax.meta["series_uids"]) == 3


def test_dicom_exam_without_a_stack(tmp_path):
    exam = tmp_path / "exam"
    dicom_slice_series(exam / "a", iop=(1, 0, 0, 0, 0, -1), ipp=(0, 6.75, 10.5), desc="cine 4ch", number=1)
    dicom_slice_series(exam / "b", iop=(0, 1, 0, 0, 0, -1), ipp=(8, 0, 10.5), desc="cine 2ch", number=2)
    with pytest.raises(InputError) as e:
        load_dicom_study(exam)
    assert "no short-axis stack" in one_line(e) and "'cine 4ch'" in str(e.value)
