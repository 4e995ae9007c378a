"""Fuzzing the loaders with hypothesis: mutated NIfTI (raw ``.nii`` and ``.nii.gz``; header
fields, voxel bytes, the compressed stream, truncations) and mutated DICOM files. Every input
must either load as a valid :class:`Sequence` or be refused with an :class:`InputError`:
never another exception, never a hang (each example runs under a 10 s alarm), never a large
allocation (the memory limit is lowered to 0.25 GiB, so a header claiming a huge image is
refused before anything is read).

Each test prints how many inputs it tried and how they ended (run with ``-s`` to see it);
docs/reliability.md records the figures.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import io
import os
import signal
import struct
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builders import dicom_series

from cardioinr.core.errors import InputError
from cardioinr.io.load import load_sequence
from cardioinr.io.nifti import load_label_volume
from cardioinr.io.sequence import Sequence

pytestmark = pytest.mark.slow  # hundreds of mutated files

# Examples per test; CARDIOINR_FUZZ_SCALE multiplies them for a longer hunt (e.g. 20 offline).
_SCALE = float(os.environ.get("CARDIOINR_FUZZ_SCALE", "1"))
MAX_EXAMPLES = {k: max(1, int(v * _SCALE)) for k, v in {"nifti": 300, "nifti_gz": 300, "gz_stream": 200, "dicom": 200}.items()}
FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


class Hang(Exception):
    """An example ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):  # noqa: ARG001
        raise Hang(f"loader still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Tally:
    """How the fuzzed inputs ended: loaded, or refused (by first words of the message)."""

    def __init__(self, name: str, loaders: int = 1) -> None:
        self.name, self.loaders = name, loaders
        self.counts: collections.Counter = collections.Counter()

    def run(self, load):
        """``load()``; its result, or None when it was refused with a one-line InputError."""
        # A warning escaping a loader would print lines beside the CLI's one error line.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with time_limit(10.0):
                    result = load()
            except InputError as e:
                result = e
        assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
        if isinstance(result, InputError):
            msg = str(result)
            assert msg and "\n" not in msg, repr(msg)
            self.counts["refused"] += 1
            return None
        if isinstance(result, Sequence):
            assert np.all(np.isfinite(result.image)) and result.image.dtype == np.float32
            assert result.n_frames >= 2
        self.counts["loaded"] += 1
        return result

    def report(self, capfd) -> None:
        total = sum(self.counts.values())
        printed = capfd.readouterr()
        # Loaders print nothing (nibabel's header "fixes" and pydicom's complaints included):
        # the command line's single error line must stay the only line.
        assert printed.err == "" and printed.out == "", printed.err[-2000:] + printed.out[-2000:]
        with capfd.disabled():
            print(f"\nfuzz {self.name}: {total // self.loaders} inputs tried ({total} loader calls): "
                  f"{self.counts['loaded']} loaded, {self.counts['refused']} refused with InputError, "
                  "0 other exceptions, warnings or hangs")
        assert total > 0


@pytest.fixture(autouse=True)
def _low_memory_limit(monkeypatch):
    monkeypatch.setenv("CARDIOINR_MAX_GIB", "0.25")


# ---------------------------------------------------------------------------------------------
# NIfTI seeds and mutations
# ---------------------------------------------------------------------------------------------


def _nifti_bytes(dtype=np.int16, shape=(8, 8, 1, 4), seed=0) -> bytes:
    data = (np.random.default_rng(seed).random(shape) * 1000).astype(dtype)
    aff = np.diag([1.5, 1.5, 8.0, 1.0])
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 35.0
    bio = io.BytesIO()
    fm = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img.to_file_map(fm)
    return bio.getvalue()


SEEDS = [_nifti_bytes(np.int16), _nifti_bytes(np.float32, seed=1), _nifti_bytes(np.uint8, (6, 5, 2, 3), seed=2)]

# Header fields worth hitting: (offset, struct format) of the NIfTI-1 header.
FIELDS = [
    (0, "<i"),  # sizeof_hdr
    *[(40 + 2 * k, "<h") for k in range(8)],  # dim[0..7]
    (68, "<h"), (70, "<h"), (72, "<h"),  # intent_code, datatype, bitpix
    *[(76 + 4 * k, "<f") for k in range(8)],  # pixdim[0..7]
    (108, "<f"), (112, "<f"), (116, "<f"),  # vox_offset, scl_slope, scl_inter
    (123, "<B"),  # xyzt_units
    (252, "<h"), (254, "<h"),  # qform_code, sform_code
    *[(256 + 4 * k, "<f") for k in range(6)],  # quatern_b..d, qoffset_x..z
    *[(280 + 4 * k, "<f") for k in range(12)],  # srow_x, srow_y, srow_z
    (344, "<i"),  # magic
]
INTS = [0, 1, -1, 2, 3, 4, 5, 7, 8, 16, 64, 255, 256, 1006, 1007, 2**15 - 1, -(2**15), 2**31 - 1, -(2**31)]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf"), 352.0, 1e9]


@st.composite
def mutation(draw, size: int):
    kind = draw(st.sampled_from(["field", "field", "field", "byte", "byte", "data", "truncate", "insert"]))
    if kind == "field":
        off, fmt = draw(st.sampled_from(FIELDS))
        if fmt == "<f":
            value = draw(st.sampled_from(FLOATS) | st.floats(width=32))
        elif fmt == "<B":
            value = draw(st.integers(0, 255))
        else:
            lo, hi = (-(2**15), 2**15 - 1) if fmt == "<h" else (-(2**31), 2**31 - 1)
            value = draw(st.sampled_from([v for v in INTS if lo <= v <= hi]) | st.integers(lo, hi))
        return ("field", off, fmt, value)
    if kind == "byte":
        return ("byte", draw(st.integers(0, 351)), draw(st.integers(0, 255)))
    if kind == "data":
        return ("byte", draw(st.integers(352, max(352, size - 1))), draw(st.integers(0, 255)))
    if kind == "truncate":
        return ("truncate", draw(st.integers(0, size)))
    return ("insert", draw(st.integers(0, size)), draw(st.binary(min_size=1, max_size=16)))


def apply(raw: bytes, ops) -> bytes:
    b = bytearray(raw)
    for op in ops:
        if op[0] == "field":
            _, off, fmt, value = op
            if off + struct.calcsize(fmt) <= len(b):
                b[off: off + struct.calcsize(fmt)] = struct.pack(fmt, value)
        elif op[0] == "byte":
            if op[1] < len(b):
                b[op[1]] = op[2]
        elif op[0] == "truncate":
            del b[op[1]:]
        else:
            b[op[1]: op[1]] = op[2]
    return bytes(b)


@st.composite
def mutated_nifti(draw) -> bytes:
    raw = draw(st.sampled_from(SEEDS))
    ops = draw(st.lists(mutation(len(raw)), min_size=1, max_size=4))
    return apply(raw, ops)


# Inputs that once escaped as another exception (kept as explicit examples): an infinite
# vox_offset (OverflowError inside nibabel), an infinite scl_slope, a huge scl_slope that made
# the scaled image infinite once cast to float32.
REGRESSIONS = [apply(SEEDS[0], [("field", 108, "<f", float("inf"))]),
               apply(SEEDS[0], [("field", 112, "<f", float("inf"))]),
               apply(SEEDS[0], [("field", 112, "<f", 3.3e38)])]


def _load_both(path: Path, tally: Tally) -> None:
    tally.run(lambda: load_sequence(path))
    tally.run(lambda: load_label_volume(path))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_fuzz_raw_nifti(fuzz_dir: Path, capfd) -> None:
    tally = Tally("raw .nii (header fields, bytes, voxel data, truncation, insertion)", loaders=2)

    @settings(FUZZ, max_examples=MAX_EXAMPLES["nifti"])
    @given(mutated_nifti())
    @example(REGRESSIONS[0])
    @example(REGRESSIONS[1])
    @example(REGRESSIONS[2])
    def check(content: bytes) -> None:
        path = fuzz_dir / "fuzz.nii"
        path.write_bytes(content)
        _load_both(path, tally)

    check()
    tally.report(capfd)


def test_fuzz_gzip_nifti_inner(fuzz_dir: Path, capfd) -> None:
    """Header and data mutations inside a valid gzip stream."""
    tally = Tally(".nii.gz (mutated content, valid gzip)", loaders=2)

    @settings(FUZZ, max_examples=MAX_EXAMPLES["nifti_gz"])
    @given(mutated_nifti())
    @example(REGRESSIONS[0])
    @example(REGRESSIONS[1])
    @example(REGRESSIONS[2])
    def check(content: bytes) -> None:
        path = fuzz_dir / "fuzz.nii.gz"
        path.write_bytes(gzip.compress(content, compresslevel=1))
        _load_both(path, tally)

    check()
    tally.report(capfd)


@st.composite
def mutated_stream(draw) -> bytes:
    gz = gzip.compress(draw(st.sampled_from(SEEDS)), compresslevel=6, mtime=0)
    kind = draw(st.sampled_from(["flip", "truncate", "trailer", "junk_after"]))
    b = bytearray(gz)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del b[draw(st.integers(0, len(b) - 1)):]
    elif kind == "trailer":  # CRC32 and size, the last 8 bytes
        b[len(b) - 8 + draw(st.integers(0, 7))] ^= draw(st.integers(1, 255))
    else:
        b += draw(st.binary(min_size=1, max_size=64))
    return bytes(b)


def test_fuzz_gzip_stream(fuzz_dir: Path, capfd) -> None:
    """Damage to the compressed stream itself: bit flips, truncation, CRC/size trailer, junk
    after the end. A damaged stream must never decode to a silently different image."""
    tally = Tally(".nii.gz (damaged compressed stream)")
    originals = {}
    for k, raw in enumerate(SEEDS):
        p = fuzz_dir / f"seed{k}.nii"
        p.write_bytes(raw)
        originals[k] = np.asarray(nib.load(p).dataobj)

    @settings(FUZZ, max_examples=MAX_EXAMPLES["gz_stream"])
    @given(mutated_stream())
    def check(content: bytes) -> None:
        path = fuzz_dir / "stream.nii.gz"
        path.write_bytes(content)
        seq = tally.run(lambda: load_sequence(path))
        if seq is None:
            return
        # What loads must be exactly what was compressed (junk after the stream aside).
        assert any(o.shape == seq.image.shape and np.array_equal(o.astype(np.float32), seq.image)
                   for o in originals.values()), "a damaged stream decoded to a different image"

    check()
    tally.report(capfd)


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def _dicom_files() -> list[bytes]:
    """The seed series (2 slices x 3 frames, 8 x 6 pixels) as file contents, in slice-major order."""
    with tempfile.TemporaryDirectory() as d:
        folder = dicom_series(Path(d), nx=8, ny=6, nz=2, nt=3, rescale=True)
        return [p.read_bytes() for p in sorted(folder.glob("IM*.dcm"))]


DICOM_SEED = _dicom_files()
# Values that matter to the reader, as they are written in the seed (tag bytes, then VR).
DICOM_TAGS = {"Rows": b"\x28\x00\x10\x00", "Columns": b"\x28\x00\x11\x00", "BitsAllocated": b"\x28\x00\x00\x01",
              "PixelRepresentation": b"\x28\x00\x03\x01", "PixelData": b"\xe0\x7f\x10\x00",
              "ImagePositionPatient": b"\x20\x00\x32\x00", "ImageOrientationPatient": b"\x20\x00\x37\x00",
              "PixelSpacing": b"\x28\x00\x30\x00", "TriggerTime": b"\x18\x00\x60\x10",
              "SamplesPerPixel": b"\x28\x00\x02\x00", "TransferSyntax": b"\x02\x00\x10\x00"}


@st.composite
def mutated_dicom(draw) -> tuple[int, bytes]:
    which = draw(st.integers(0, len(DICOM_SEED) - 1))
    b = bytearray(DICOM_SEED[which])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["tag_value", "tag_value", "byte", "truncate", "insert"]))
        if kind == "tag_value":  # overwrite bytes just after a tag's header (its length or value)
            tag = DICOM_TAGS[draw(st.sampled_from(sorted(DICOM_TAGS)))]
            pos = bytes(b).find(tag)
            if pos >= 0:
                start = pos + 4 + draw(st.integers(0, 12))
                value = draw(st.binary(min_size=1, max_size=8))
                b[start: start + len(value)] = value
        elif kind == "byte":
            if b:
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del b[draw(st.integers(0, len(b))):]
        else:
            pos = draw(st.integers(0, len(b)))
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return which, bytes(b)


def test_fuzz_dicom_folder(fuzz_dir: Path, capfd) -> None:
    tally = Tally("DICOM series folder (one of 6 files mutated: tag values, bytes, truncation, insertion)")
    folder = fuzz_dir / "dicom"
    folder.mkdir()
    for k, raw in enumerate(DICOM_SEED):
        (folder / f"IM{k:03d}.dcm").write_bytes(raw)
    assert load_sequence(folder).image.shape == (8, 6, 2, 3)

    @settings(FUZZ, max_examples=MAX_EXAMPLES["dicom"])
    @given(mutated_dicom())
    def check(case: tuple[int, bytes]) -> None:
        which, content = case
        target = folder / f"IM{which:03d}.dcm"
        target.write_bytes(content)
        try:
            tally.run(lambda: load_sequence(folder))
        finally:
            target.write_bytes(DICOM_SEED[which])

    check()
    tally.report(capfd)
