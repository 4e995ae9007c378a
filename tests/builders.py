"""Synthetic test inputs shared by several test files: rotations for oblique geometry and a small
MR cine written as a DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A proper rotation matrix (3, 3) from three Euler angles (rad)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ds(values) -> list[str]:
    return [f"{float(x):.8g}" for x in np.atleast_1d(values)]


def dicom_series(folder: Path, *, nx=12, ny=10, nz=3, nt=4, step=6.0, series_uid=None, skip=(), desc="cine",
                 first_instance=1, rescale=False) -> Path:
    """A small MR cine series, one file per (slice, frame), named ``IM0001.dcm``... in slice-major
    order; ``skip`` drops (k, t) images; ``rescale`` writes an identity rescale slope/intercept."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(0)
    n = first_instance
    for k in range(nz):
        for t in range(nt):
            if (k, t) in skip:
                continue
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
            ds.SeriesInstanceUID, ds.SeriesDescription = series_uid, desc
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.Rows, ds.Columns = ny, nx
            ds.ImageOrientationPatient = _ds([1, 0, 0, 0, 1, 0])
            ds.ImagePositionPatient = _ds([0, 0, k * step])
            ds.PixelSpacing = _ds([1.5, 1.5])
            ds.SliceThickness = _ds(step)[0]
            ds.TriggerTime = _ds(40.0 * t)[0]
            ds.InstanceNumber = n
            if rescale:
                ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
            ds.PixelData = rng.integers(0, 1000, size=(ny, nx)).astype("<i2").tobytes()
            ds.save_as(folder / f"IM{n:04d}.dcm", enforce_file_format=True)
            n += 1
    return folder
