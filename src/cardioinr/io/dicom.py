"""DICOM cine series: a folder of single-frame files, legacy multi-frame files or an enhanced
multi-frame file, read into a :class:`~cardioinr.io.sequence.Sequence`.

DICOM geometry (see :func:`dicom_affine`)
-----------------------------------------
DICOM positions are LPS+ (x to the patient's left, y to posterior, z to head); NIfTI is RAS+,
so the x and y rows of the affine change sign. Array axis ``i`` runs along a DICOM row (the
*column* index increases, direction ``ImageOrientationPatient[0:3]``, step ``PixelSpacing[1]``),
axis ``j`` runs down the columns (row index, direction ``ImageOrientationPatient[3:6]``, step
``PixelSpacing[0]``), axis ``k`` runs along the slice normal ``row x col`` in increasing
``ImagePositionPatient . normal``. So ``image[i, j, k, t] = pixel_array[j, i]`` of slice ``k``
at trigger time ``t`` (no row flip: unlike dcm2niix we do not reverse ``j``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardioinr.core.console import first_line
from cardioinr.core.errors import InputError
from cardioinr.core.files import check_memory, files_sha256
from cardioinr.geometry import RAS_TO_LPS
from cardioinr.io._common import is_nifti_name, natural_key, no_warnings, shown
from cardioinr.io.sequence import ACDC, LabelMap, Sequence

__all__ = ["DicomSeriesInfo", "dicom_affine", "list_dicom_series", "load_dicom_folder", "load_dicom_series"]

# Images closer than this along the slice normal belong to one slice (scanners write positions
# with a few decimals; no cine has slices this thin).
_SLICE_TOL_MM = 0.05
# The 4 x 4 form of geometry's RAS <-> LPS flip (its own inverse), for whole affines.
_LPS_TO_RAS = np.eye(4)
_LPS_TO_RAS[:3, :3] = RAS_TO_LPS


@dataclass
class _DicomImage:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    file: Path
    frame: int | None  # index inside a multi-frame file, None for a single-frame file
    series_uid: str
    series_desc: str
    rows: int
    cols: int
    iop: np.ndarray  # (6,) row direction cosines, then column direction cosines (LPS)
    ipp: np.ndarray  # (3,) position of the first transmitted pixel's centre (LPS, mm)
    pixel_spacing: np.ndarray  # (2,) (between rows, between columns), mm
    slice_step: float | None  # SpacingBetweenSlices or SliceThickness, mm
    trigger_ms: float | None
    instance: int
    slope: float
    intercept: float
    nominal_interval_ms: float | None = None
    n_cardiac_images: int | None = None
    protocol: str = ""  # ProtocolName
    series_number: int | None = None  # SeriesNumber


def dicom_affine(iop: np.ndarray, ipp: np.ndarray, pixel_spacing: np.ndarray, slice_step: float) -> np.ndarray:
    """NIfTI (RAS+) affine of a DICOM slice stack.

    Args:
        iop: ``ImageOrientationPatient`` ``(6,)``: row direction (the way the column index
            increases), then column direction (the way the row index increases), LPS.
        ipp: ``ImagePositionPatient`` ``(3,)`` of the first slice (lowest along the normal), LPS mm.
        pixel_spacing: ``PixelSpacing`` ``(2,)`` = (row spacing, column spacing), mm.
        slice_step: signed distance between consecutive slices along ``normal = row x col``, mm.

    Returns:
        ``(4, 4)`` matrix mapping ``(i, j, k, 1)`` to RAS mm, where ``i`` is the DICOM column
        index, ``j`` the row index and ``k`` the slice index, i.e. ``image[i, j] = pixel_array[j, i]``.
    """
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:6], dtype=np.float64)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    lps = np.eye(4)
    lps[:3, 0] = row * float(pixel_spacing[1])
    lps[:3, 1] = col * float(pixel_spacing[0])
    lps[:3, 2] = normal * float(slice_step)
    lps[:3, 3] = np.asarray(ipp, dtype=np.float64)
    return _LPS_TO_RAS @ lps


def _float_list(value: object, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _float_or_none(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _seq_item(ds: object, keyword: str) -> object | None:
    """First item of a DICOM sequence attribute, or None."""
    seq = getattr(ds, keyword, None)
    try:
        return seq[0] if seq is not None and len(seq) > 0 else None  # type: ignore[index, arg-type]
    except (TypeError, IndexError):
        return None


def _fg(per_frame: object, shared: object, seq_kw: str, attr: str) -> object | None:
    """An attribute of an enhanced multi-frame functional group, per-frame first, then shared."""
    for group in (per_frame, shared):
        item = _seq_item(group, seq_kw) if group is not None else None
        if item is not None and attr in item:  # type: ignore[operator]
            return getattr(item, attr)
    return None


def _scan_dicom_file(f: Path, ds: object) -> list[_DicomImage]:
    """The 2D images (with geometry) a DICOM dataset holds; header only, no pixels."""
    g = lambda kw, default=None: getattr(ds, kw, default)  # noqa: E731
    rows, cols = int(g("Rows")), int(g("Columns"))
    uid = str(g("SeriesInstanceUID", "") or "")
    desc = str(g("SeriesDescription", "") or "")
    instance = int(_float_or_none(g("InstanceNumber")) or 0)
    nominal = _float_or_none(g("NominalInterval"))
    n_cardiac = int(_float_or_none(g("CardiacNumberOfImages")) or 0) or None
    n_frames = int(_float_or_none(g("NumberOfFrames")) or 1)
    per_frame = g("PerFrameFunctionalGroupsSequence")
    protocol = str(g("ProtocolName", "") or "")
    number = _float_or_none(g("SeriesNumber"))
    series_number = int(number) if number is not None else None
    out: list[_DicomImage] = []

    def need(value: np.ndarray | None, what: str, frame: int | None = None) -> np.ndarray:
        if value is None:
            where = f" (frame {frame})" if frame is not None else ""
            raise InputError(f"{f}: DICOM image lacks a valid {what}{where}, needed for its geometry")
        return value

    if per_frame is not None:  # enhanced multi-frame (e.g. Enhanced MR Image Storage)
        shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
        if len(per_frame) != n_frames:
            raise InputError(f"{f}: enhanced DICOM lists {len(per_frame)} frame groups for {n_frames} frames")
        for k, pf in enumerate(per_frame):
            spacing_between = _float_or_none(_fg(pf, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"))
            thickness = _float_or_none(_fg(pf, shared, "PixelMeasuresSequence", "SliceThickness"))
            trig = _float_or_none(_fg(pf, None, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime"))
            pos_in_time = _float_or_none(_fg(pf, None, "FrameContentSequence", "TemporalPositionIndex"))
            out.append(_DicomImage(
                file=f, frame=k, series_uid=uid, series_desc=desc, rows=rows, cols=cols,
                iop=need(_float_list(_fg(pf, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                         "ImageOrientationPatient", k),
                ipp=need(_float_list(_fg(pf, shared, "PlanePositionSequence", "ImagePositionPatient"), 3),
                         "ImagePositionPatient", k),
                pixel_spacing=need(_float_list(_fg(pf, shared, "PixelMeasuresSequence", "PixelSpacing"), 2),
                                   "PixelSpacing", k),
                slice_step=spacing_between or thickness,
                trigger_ms=trig,
                # temporal position orders frames when no trigger delay is given
                instance=int(pos_in_time) if pos_in_time is not None else k,
                slope=_float_or_none(_fg(pf, shared, "PixelValueTransformationSequence", "RescaleSlope")) or 1.0,
                intercept=_float_or_none(_fg(pf, shared, "PixelValueTransformationSequence", "RescaleIntercept")) or 0.0,
                nominal_interval_ms=nominal, n_cardiac_images=n_cardiac,
                protocol=protocol, series_number=series_number,
            ))
        return out

    iop = need(_float_list(g("ImageOrientationPatient"), 6), "ImageOrientationPatient")
    ipp = need(_float_list(g("ImagePositionPatient"), 3), "ImagePositionPatient")
    ps = need(_float_list(g("PixelSpacing"), 2), "PixelSpacing")
    step = _float_or_none(g("SpacingBetweenSlices")) or _float_or_none(g("SliceThickness"))
    trig0 = _float_or_none(g("TriggerTime"))
    slope = _float_or_none(g("RescaleSlope"))
    intercept = _float_or_none(g("RescaleIntercept"))
    slope = 1.0 if slope is None or slope == 0 else slope
    intercept = 0.0 if intercept is None else intercept
    if n_frames == 1:
        triggers: list[float | None] = [trig0]
    else:  # legacy multi-frame cine: every frame at one position, times from the frame timing
        vec = g("FrameTimeVector")
        frame_time = _float_or_none(g("FrameTime"))
        if vec is not None and len(vec) == n_frames:
            triggers = list(np.cumsum([float(v) for v in vec]) + (trig0 or 0.0))
        elif frame_time is not None:
            triggers = [(trig0 or 0.0) + k * frame_time for k in range(n_frames)]
        else:
            triggers = [None] * n_frames
    for k in range(n_frames):
        out.append(_DicomImage(
            file=f, frame=None if n_frames == 1 else k, series_uid=uid, series_desc=desc, rows=rows, cols=cols,
            iop=iop, ipp=ipp, pixel_spacing=ps, slice_step=step, trigger_ms=triggers[k],
            instance=instance, slope=slope, intercept=intercept,
            nominal_interval_ms=nominal, n_cardiac_images=n_cardiac,
            protocol=protocol, series_number=series_number,
        ))
    return out


# Storage SOP classes of images that must carry Rows/Columns: CT, MR (incl. enhanced), secondary capture.
_IMAGE_SOP_FAMILIES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.7")


def _is_image_sop_class(uid: str) -> bool:
    return any(uid == fam or uid.startswith(fam + ".") for fam in _IMAGE_SOP_FAMILIES)


# The last folder scanned: (its files' paths, sizes and modification times, the scan). A command
# often asks twice (is this folder a multi-view exam? then load it), and reading thousands of
# headers is the slow part; any change to the files makes the signature differ.
_LAST_SCAN: list = []


def _scan_dicom_folder(path: Path) -> tuple[list[_DicomImage], int]:
    """Read every DICOM header under ``path``; return the images and the number of files skipped."""
    files = sorted((p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)),
                   key=lambda p: natural_key(str(p.relative_to(path))))
    try:
        signature = (path.resolve(), tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]))
    except OSError:
        signature = None
    if signature is not None and _LAST_SCAN and _LAST_SCAN[0] == signature:
        images, skipped = _LAST_SCAN[1]
        return list(images), skipped
    images, skipped = _read_headers(files)
    _LAST_SCAN[:] = [signature, (tuple(images), skipped)] if signature is not None else []
    return images, skipped


def _read_headers(files: list[Path]) -> tuple[list[_DicomImage], int]:
    """The images of the DICOM files among ``files`` (headers only) and how many were skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    images: list[_DicomImage] = []
    skipped = 0
    for f in files:
        if is_nifti_name(f) or f.suffix.lower() in {".json", ".txt", ".md", ".csv", ".cfg", ".npz", ".png", ".jpg"}:
            skipped += 1
            continue
        try:
            with no_warnings():
                ds = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            if f.suffix.lower() in {".dcm", ".ima", ".dicom"}:
                raise InputError(f"{f}: not a valid DICOM file (no DICOM header)") from None
            skipped += 1  # not DICOM at all: a README, a thumbnail, ...
            continue
        except Exception as e:  # truncated or corrupt header
            raise InputError(f"{f}: corrupt or unreadable DICOM file ({first_line(e)})") from None
        try:
            with no_warnings():  # header values are decoded lazily, here: damaged ones raise
                found = _dicom_images_of(f, ds)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{f}: unreadable DICOM header ({first_line(e)})") from None
        if found is None:
            skipped += 1
            continue
        images.extend(found)
    return images, skipped


def _dicom_images_of(f: Path, ds: object) -> list[_DicomImage] | None:
    """The images of one DICOM dataset, or None for a non-image object (DICOMDIR, report)."""
    if "Rows" not in ds or "Columns" not in ds:  # type: ignore[operator]
        # pydicom reads a truncated file without complaint, up to where it ends: an image
        # without Rows is broken, while DICOMDIRs, reports and presentation states are skipped.
        sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
                  or getattr(ds, "SOPClassUID", ""))
        if len(ds) == 0 or _is_image_sop_class(sop):  # type: ignore[arg-type]
            raise InputError(f"{f}: incomplete DICOM image header (no Rows/Columns): truncated or corrupt file")
        return None
    samples = getattr(ds, "SamplesPerPixel", 1)
    if int(samples or 1) != 1:
        raise InputError(f"{f}: colour DICOM ({samples} samples per pixel) is not an MR magnitude image")
    return _scan_dicom_file(f, ds)


def _read_dicom_pixels(f: Path) -> tuple[np.ndarray, bool]:
    """All frames of one DICOM file as ``(frames, rows, cols)`` and whether they are already rescaled.

    pydicom decodes uncompressed and most compressed syntaxes; when it cannot (no decoder
    plug-in installed), SimpleITK's GDCM reader is tried, which applies the rescale itself.
    """
    import pydicom

    try:
        with no_warnings():
            arr = np.asarray(pydicom.dcmread(f).pixel_array)
        rescaled = False
    except Exception as e_pydicom:
        try:
            import SimpleITK as sitk

            with no_warnings():
                arr = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))  # (frames, rows, cols)
            rescaled = True
        except Exception:
            raise InputError(f"{f}: cannot decode DICOM pixel data ({first_line(e_pydicom)})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{f}: DICOM pixel data of shape {arr.shape} is not a stack of 2D grey images")
    return arr, rescaled


def _group_slices(images: list[_DicomImage], normal: np.ndarray) -> list[list[_DicomImage]]:
    """Cluster images by position along ``normal`` (ascending)."""
    pos = np.array([im.ipp @ normal for im in images])
    order = np.argsort(pos, kind="stable")
    groups: list[list[_DicomImage]] = []
    last = None
    for idx in order:
        if last is None or pos[idx] - last > _SLICE_TOL_MM:
            groups.append([])
        groups[-1].append(images[idx])
        last = pos[idx]
    return groups


def load_dicom_folder(
    path: str | os.PathLike,
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
    series_uid: str | None = None,
) -> Sequence:
    """Load a DICOM cine series from a folder (files may sit in subfolders).

    Images are grouped by ``SeriesInstanceUID`` (several series: pick one with ``series_uid``),
    then by slice position along the normal ``row x col`` of ``ImageOrientationPatient``, then
    ordered in time by ``TriggerTime`` (``NominalCardiacTriggerDelayTime`` for enhanced files),
    or by ``InstanceNumber`` when absent. Pixel values get ``RescaleSlope``/``RescaleIntercept``.
    The result is ``(X, Y, Z, T)`` = (columns, rows, slices, frames) with the RAS affine of
    :func:`dicom_affine`. The frame interval is the median trigger-time step (ms), else
    ``NominalInterval / CardiacNumberOfImages``, else 1; ``frame_interval_ms`` overrides both.

    Refused with a one-line :class:`InputError`: no DICOM images, several series without
    ``series_uid``, mixed orientations or image sizes, slices with unequal frame counts (a
    missing image), an uneven slice step (a missing slice), a sheared stack, two images at
    one slice and time, and unreadable or corrupt files.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    images, skipped = _scan_dicom_folder(path)
    if not images:
        raise InputError(f"{path}: no NIfTI or DICOM images found ({skipped} other files)")

    by_series: dict[str, list[_DicomImage]] = {}
    for im in images:
        by_series.setdefault(im.series_uid, []).append(im)
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(f"{path}: no DICOM series {series_uid!r} (found: {', '.join(sorted(by_series))})")
        images = by_series[series_uid]
    elif len(by_series) > 1:
        listed = "; ".join(
            f"{shown(uid) or '(no UID)'} '{shown(ims[0].series_desc)}' ({len(ims)} images)"
            for uid, ims in sorted(by_series.items())
        )
        raise InputError(f"{path}: holds {len(by_series)} DICOM series ({listed}); choose one with series_uid")
    return _sequence_of_images(path, images, label_map=label_map, ref_frame=ref_frame,
                               frame_interval_ms=frame_interval_ms)


def _sequence_of_images(
    path: Path,
    images: list[_DicomImage],
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
) -> Sequence:
    """The cine of one series' images (checked as :func:`load_dicom_folder` describes)."""
    uid = images[0].series_uid

    # One geometry for the whole series.
    first = images[0]
    for im in images[1:]:
        if (im.rows, im.cols) != (first.rows, first.cols):
            raise InputError(f"{path}: images of different sizes in one series ({first.file.name}: "
                             f"{first.rows}x{first.cols}, {im.file.name}: {im.rows}x{im.cols})")
        if np.max(np.abs(im.iop - first.iop)) > 1e-3:
            raise InputError(f"{path}: images with different orientations in one series "
                             f"({first.file.name} and {im.file.name}); not one slice stack")
        if np.max(np.abs(im.pixel_spacing - first.pixel_spacing)) > 1e-3:
            raise InputError(f"{path}: images with different pixel spacing in one series "
                             f"({first.file.name} and {im.file.name})")
    row, col = first.iop[:3], first.iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise InputError(f"{first.file}: ImageOrientationPatient {first.iop.tolist()} is not two orthogonal unit vectors")
    normal = np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))

    slices = _group_slices(images, normal)
    positions = np.array([np.mean([im.ipp @ normal for im in s]) for s in slices])
    have_trigger = all(im.trigger_ms is not None for im in images)
    for s in slices:
        s.sort(key=(lambda im: (im.trigger_ms, im.instance, im.frame or 0)) if have_trigger
               else (lambda im: (im.instance, im.frame or 0, str(im.file))))
    for s, p in zip(slices, positions):
        keys = [im.trigger_ms if have_trigger else (im.instance, im.frame) for im in s]
        for a, b, ka, kb in zip(s, s[1:], keys, keys[1:]):
            if ka == kb:
                what = f"trigger time {ka} ms" if have_trigger else f"instance number {a.instance}"
                raise InputError(f"{path}: two images at slice {p:.2f} mm with {what} ({a.file.name}, "
                                 f"{b.file.name}); repeated acquisitions or mixed image types in one series")
    counts = [len(s) for s in slices]
    n_t = max(set(counts), key=lambda c: (counts.count(c), c))  # the usual count; the odd slice is named
    for s, p, n in zip(slices, positions, counts):
        if n != n_t:
            raise InputError(f"{path}: slice at {p:.2f} mm along the normal has {n} images, others have {n_t} "
                             f"(missing or extra images; {len(slices)} slices in all)")

    # Slice step: even, and the stack not sheared (slice origins along the normal).
    n_z = len(slices)
    if n_z > 1:
        gaps = np.diff(positions)
        step = float((positions[-1] - positions[0]) / (n_z - 1))
        median_gap = float(np.median(gaps))
        bad = np.abs(gaps - median_gap) > max(0.1, 0.02 * median_gap)
        if np.any(bad):
            k = int(np.argmax(bad))
            raise InputError(f"{path}: uneven slice step: gap of {gaps[k]:.2f} mm between slices at "
                             f"{positions[k]:.2f} and {positions[k + 1]:.2f} mm, usually {median_gap:.2f} mm "
                             "(a missing slice?)")
        ipp0 = slices[0][0].ipp
        for s in slices[1:]:
            d = s[0].ipp - ipp0
            if np.linalg.norm(d - (d @ normal) * normal) > max(0.1, 0.05 * abs(step)):
                raise InputError(f"{path}: slices are not stacked along their normal ({s[0].file.name} is "
                                 "shifted in-plane: gantry tilt or a sheared stack), which is not supported")
    else:
        step = first.slice_step or 1.0

    # Pixels, read once per file, rescaled to float32 (X, Y, Z, T).
    check_memory(math.prod((first.cols, first.rows, n_z, n_t)) * 4, path)
    volume = np.empty((first.cols, first.rows, n_z, n_t), dtype=np.float32)
    multi_frame: dict[Path, tuple[np.ndarray, bool]] = {}  # multi-frame files are decoded once
    for k, s in enumerate(slices):
        for t, im in enumerate(s):
            if im.frame is None:
                frames, rescaled = _read_dicom_pixels(im.file)
            else:
                if im.file not in multi_frame:
                    multi_frame[im.file] = _read_dicom_pixels(im.file)
                frames, rescaled = multi_frame[im.file]
            idx = im.frame or 0
            if idx >= frames.shape[0] or frames.shape[1:] != (first.rows, first.cols):
                raise InputError(f"{im.file}: pixel data of shape {frames.shape} does not match its header "
                                 f"({first.rows}x{first.cols}, frame {idx})")
            pix = frames[idx].astype(np.float64)
            if not rescaled:
                pix = pix * im.slope + im.intercept
            volume[:, :, k, t] = pix.T  # image[i, j] = pixel_array[j, i]: i runs along a row

    # Frame interval (ms) from trigger times.
    if frame_interval_ms is not None:
        dt, dt_from = float(frame_interval_ms), "argument"
    else:
        dt, dt_from = 1.0, "default (unknown)"
        if have_trigger and n_t > 1:
            steps = np.concatenate([np.diff([im.trigger_ms for im in s]) for s in slices])
            med = float(np.median(steps))
            if med > 0:
                dt, dt_from = med, "trigger times"
        if dt_from.startswith("default") and first.nominal_interval_ms and n_t > 1:
            dt, dt_from = first.nominal_interval_ms / (first.n_cardiac_images or n_t), "nominal interval"

    affine = dicom_affine(first.iop, slices[0][0].ipp, first.pixel_spacing, step)
    meta = {
        "source": str(path),
        "format": "dicom",
        "series_uid": uid,
        "series_description": first.series_desc,
        "n_images": len(images),
        "slice_positions_mm": positions.round(4).tolist(),
        "frame_interval_from": dt_from,
        "enhanced_multiframe": first.frame is not None,
        "sha256": files_sha256(sorted({im.file for im in images}), path),
    }
    if have_trigger:
        meta["trigger_times_ms"] = [float(im.trigger_ms) for im in slices[0]]  # type: ignore[arg-type]
    return Sequence(image=volume, affine=affine, frame_interval_ms=dt, ref_frame=ref_frame,
                    label_map=label_map, name=path.name, meta=meta)


@dataclass(frozen=True, eq=False)
class DicomSeriesInfo:
    """One series of a DICOM folder, from its headers: what :func:`list_dicom_series` finds.

    Attributes:
        folder: the folder scanned.
        series_uid, description, protocol, series_number: ``SeriesInstanceUID``,
            ``SeriesDescription``, ``ProtocolName``, ``SeriesNumber`` (None when absent).
        n_images: 2D images (frames of multi-frame files counted one by one).
        n_slices: distinct slice positions along the normal (0 when orientations are mixed).
        n_frames: images at the most populated slice position (the frame count of a cine).
        normal: unit slice normal ``row x col`` in world RAS coordinates, shape ``(3,)``.
        mixed_orientation: images of several orientations (a localizer, not one slice stack).
    """

    folder: Path
    series_uid: str
    description: str
    protocol: str
    series_number: int | None
    n_images: int
    n_slices: int
    n_frames: int
    normal: np.ndarray
    mixed_orientation: bool
    images: tuple = ()  # the scanned headers (_DicomImage), for load_dicom_series

    def __repr__(self) -> str:
        return (f"DicomSeriesInfo({self.series_number}, {self.description!r}, {self.n_slices} slices x "
                f"{self.n_frames} frames, uid={self.series_uid!r})")


def _series_info(path: Path, images: list[_DicomImage]) -> DicomSeriesInfo:
    first = images[0]
    mixed = any(np.max(np.abs(im.iop - first.iop)) > 1e-3 for im in images[1:])
    row, col = first.iop[:3], first.iop[3:]
    normal = np.cross(row / max(np.linalg.norm(row), 1e-12), col / max(np.linalg.norm(col), 1e-12))
    normal = normal / max(np.linalg.norm(normal), 1e-12)
    slices = [] if mixed else _group_slices(images, normal)
    return DicomSeriesInfo(
        folder=path, series_uid=first.series_uid, description=first.series_desc, protocol=first.protocol,
        series_number=first.series_number, n_images=len(images), n_slices=len(slices),
        n_frames=max((len(s) for s in slices), default=0), normal=RAS_TO_LPS @ normal,
        mixed_orientation=mixed, images=tuple(images),
    )


def list_dicom_series(path: str | os.PathLike) -> list[DicomSeriesInfo]:
    """Every series of a DICOM folder (files may sit in subfolders) with its geometry, read from
    the headers only, in ``SeriesNumber`` order (then UID). Corrupt files raise as in
    :func:`load_dicom_folder`; a folder without DICOM images gives an empty list."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    images, _ = _scan_dicom_folder(path)
    by_series: dict[str, list[_DicomImage]] = {}
    for im in images:
        by_series.setdefault(im.series_uid, []).append(im)
    infos = [_series_info(path, ims) for ims in by_series.values()]
    return sorted(infos, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))


def load_dicom_series(
    series: DicomSeriesInfo | list[DicomSeriesInfo],
    *,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float | None = None,
    name: str | None = None,
) -> Sequence:
    """The cine of a series listed by :func:`list_dicom_series`, without reading the headers
    again; a list of series sharing one orientation (a short-axis stack stored one series per
    slice) is read as one stack. Checks and geometry as in :func:`load_dicom_folder`."""
    group = [series] if isinstance(series, DicomSeriesInfo) else list(series)
    if not group:
        raise InputError("load_dicom_series: no series given")
    images = [im for s in group for im in s.images]
    if not images:
        raise InputError(f"{group[0].folder}: series {group[0].series_uid!r} has no images")
    seq = _sequence_of_images(group[0].folder, images, label_map=label_map, ref_frame=ref_frame,
                              frame_interval_ms=frame_interval_ms)
    if len(group) > 1:
        seq.meta["series_uids"] = [s.series_uid for s in group]
    if name is not None:
        seq.name = " ".join(str(name).split()) or seq.name
    return seq
