"""Hostile inputs through the command line: every one ends in exactly one line on stderr,
``cardioinr: error: <file or option>: <problem>``, exit code 2, no traceback, no output folder.

Each case builds its input in a fresh folder and runs ``cardioinr.app.cli.main`` in-process. The
accepted-but-tricky inputs (an oblique affine, an empty label map) are checked separately.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from builders import dicom_series, rotation
from cardioinr.app.cli import main
from cardioinr.fit.fields import FieldConfig
from cardioinr.phantoms import PhantomConfig, make_phantom
from cardioinr.priors import random_prior, save_prior

TINY = PhantomConfig(dim=2, shape=(56, 56, 1), spacing=(2.0, 2.0, 8.0), n_frames=6)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A good tiny cine, its reference labels, a good prior checkpoint and a fitted field file."""
    d = tmp_path_factory.mktemp("hostile_base")
    ph = make_phantom(TINY, 1)
    seq = ph.sequence
    nib.save(nib.Nifti1Image(seq.image, seq.affine), d / "cine.nii.gz")
    nib.save(nib.Nifti1Image(ph.labels[..., 0], seq.affine), d / "seg.nii.gz")
    prior = _prior(2)
    save_prior(d / "prior.ckpt", prior)
    torch.save({"format": "cardioinr-field", "version": 1, "describe": prior.field.describe(),
                "state_dict": prior.field.state_dict()}, d / "field.pt")
    return {"dir": d, "image": seq.image, "affine": seq.affine, "labels": ph.labels[..., 0]}


def _prior(dim: int):
    """An untrained prior checkpoint's content: a fresh field saved as a population prior."""
    return replace(random_prior(FieldConfig(), dim), kind="population")


def nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` with ``affine`` as the sform even where nibabel cannot make a qform of it."""
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(None, code=0)
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, path)
    return path


# ---------------------------------------------------------------------------------------------
# The cases: (id, builder) where builder(base, tmp) -> (argv, [substrings the line must name], regex)
# ---------------------------------------------------------------------------------------------


def _fit(seq, *extra) -> list[str]:
    return ["fit", str(seq), "--out", "out", "--steps", "2", "--quiet", "--no-report", *extra]


def _img(b, tmp, name, data, affine=None) -> Path:
    return nifti(tmp / name, data, b["affine"] if affine is None else affine)


def _seg(b, tmp, name, data) -> list[str]:
    p = nifti(tmp / name, data, b["affine"])
    return _fit(b["dir"] / "cine.nii.gz", "--seg", str(p))


def _with(arr, idx, value, dtype=None):
    out = np.array(arr, dtype=dtype or np.asarray(arr).dtype)
    out[idx] = value
    return out


def _gz_bytes(b) -> bytes:
    return (b["dir"] / "cine.nii.gz").read_bytes()


def _write(tmp: Path, name: str, content: bytes) -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name


def _ckpt(b, tmp, name, mutate) -> list[str]:
    obj = torch.load(b["dir"] / "prior.ckpt", weights_only=True)
    mutate(obj)
    torch.save(obj, tmp / name)
    return _fit(b["dir"] / "cine.nii.gz", "--prior", str(tmp / name))


def _toml(b, tmp, text: str, name: str = "fit.toml") -> list[str]:
    (tmp / name).write_text(text)
    return _fit(b["dir"] / "cine.nii.gz", "--config", str(tmp / name))


def _header_field(b, tmp: Path, name: str, offset: int, fmt: str, value, gz: bool = True) -> Path:
    """The good cine with one NIfTI header field overwritten."""
    import struct

    raw = bytearray(gzip.decompress((b["dir"] / "cine.nii.gz").read_bytes()))
    raw[offset: offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return _write(tmp, name, gzip.compress(bytes(raw)) if gz else bytes(raw))


def _shear(b):
    a = b["affine"].copy()
    a[0, 1] = 0.5
    return a


def _singular(b):
    a = b["affine"].copy()
    a[:3, 2] = a[:3, 0]  # third axis along the first: collinear
    return a


def _huge_header(tmp: Path, name: str, gz: bool) -> Path:
    h = nib.Nifti1Header()
    h.set_data_shape((1024, 1024, 512, 100))
    h.set_data_dtype(np.float32)
    h.set_sform(np.eye(4), code=1)
    h["vox_offset"] = 352
    raw = h.binaryblock + b"\0" * 4 + b"\0" * 4096  # the header claims 200 GiB of voxels; 4 KiB follow
    return _write(tmp, name, gzip.compress(raw) if gz else raw)


def _3d_prior(b, tmp) -> list[str]:
    save_prior(tmp / "p3.ckpt", _prior(3))
    return _fit(b["dir"] / "cine.nii.gz", "--prior", str(tmp / "p3.ckpt"))


def _wrong_dicom_file(tmp):
    dicom_series(tmp / "dcm")
    return _fit(sorted((tmp / "dcm").iterdir())[0])


def _bad_vr_dicom(tmp) -> Path:
    """A series where one file's Rows element has a VR that is no VR ('U\\0' for 'US')."""
    d = dicom_series(tmp / "dcm")
    f = d / "IM0002.dcm"
    raw = bytearray(f.read_bytes())
    pos = raw.find(b"\x28\x00\x10\x00US")  # (0028,0010) Rows
    raw[pos + 5] = 0
    f.write_bytes(bytes(raw))
    return d


def _truncated_dicom(tmp):
    d = dicom_series(tmp / "dcm")
    f = sorted(d.iterdir())[2]
    f.write_bytes(f.read_bytes()[:300])
    return _fit(d)


def _mixed_series(tmp):
    dicom_series(tmp / "dcm", desc="cine")
    dicom_series(tmp / "dcm", desc="other", first_instance=100)
    return _fit(tmp / "dcm")


def _unreadable(b, tmp):
    p = tmp / "locked.nii.gz"
    p.write_bytes((b["dir"] / "cine.nii.gz").read_bytes())
    p.chmod(0)
    return _fit(p)


def _existing_state(b, tmp):
    from cardioinr.phantoms import write_cases

    write_cases(tmp / "data", n=2, config=TINY, progress=False)
    (tmp / "p.ckpt.state").write_bytes(b"junk")
    return ["train-prior", str(tmp / "data"), "--out", str(tmp / "p.ckpt"), "--steps", "2", "--quiet"]


def _corrupt_state(b, tmp):
    args = _existing_state(b, tmp)
    return [*args, "--resume"]


C = b"cardioinr"
CASES = {
    # -- image shape and content -----------------------------------------------------------------
    "2d_image": lambda b, t: (_fit(_img(b, t, "flat.nii.gz", b["image"][:, :, 0, 0])), ["flat.nii.gz"], r"expected a 4D cine.*2D"),
    "3d_image": lambda b, t: (_fit(_img(b, t, "xyt.nii.gz", b["image"][:, :, 0, :])), ["xyt.nii.gz"], r"4D cine.*3D.*\(X, Y, 1, T\)"),
    "5d_vector": lambda b, t: (_fit(_img(b, t, "vec.nii.gz", np.stack([b["image"]] * 3, -1))), ["vec.nii.gz"], r"5D.*vector field"),
    "6d_image": lambda b, t: (_fit(_img(b, t, "six.nii.gz", b["image"][..., None, None])), ["six.nii.gz"], r"expected a 4D cine.*6D"),
    "one_frame": lambda b, t: (_fit(_img(b, t, "one.nii.gz", b["image"][..., :1])), ["one.nii.gz"], r"only one frame"),
    "tiny_image": lambda b, t: (_fit(_img(b, t, "tiny.nii.gz", b["image"][:3, :3])), ["tiny.nii.gz"], r"too small"),
    "nan_voxel": lambda b, t: (_fit(_img(b, t, "nan.nii.gz", _with(b["image"], (5, 5, 0, 2), np.nan))), ["nan.nii.gz"], r"1 NaN or infinite"),
    "inf_voxel": lambda b, t: (_fit(_img(b, t, "inf.nii.gz", _with(b["image"], (5, 5, 0, 2), -np.inf))), ["inf.nii.gz"], r"NaN or infinite"),
    "constant": lambda b, t: (_fit(_img(b, t, "flat_grey.nii.gz", np.full_like(b["image"], 3.0))), ["flat_grey.nii.gz"], r"constant"),
    "complex": lambda b, t: (_fit(_img(b, t, "cplx.nii.gz", b["image"].astype(np.complex64))), ["cplx.nii.gz"], r"complex.*magnitude"),
    # -- geometry ----------------------------------------------------------------------------------
    "singular_affine": lambda b, t: (_fit(_img(b, t, "sing.nii.gz", b["image"], _singular(b))), ["sing.nii.gz"], r"not invertible"),
    "zero_voxel_size": lambda b, t: (_fit(_img(b, t, "zero.nii.gz", b["image"], np.diag([2.0, 2.0, 0.0, 1.0]))), ["zero.nii.gz"], r"not invertible"),
    "header_sform_code": lambda b, t: (_fit(_header_field(b, t, "sform.nii.gz", 254, "<h", -254)), ["sform.nii.gz"], r"invalid NIfTI header \(sform_code -254 not valid\)"),
    "header_sizeof_hdr": lambda b, t: (_fit(_header_field(b, t, "size.nii", 0, "<i", 7, gz=False)), ["size.nii"], r"invalid NIfTI header|not a readable NIfTI"),
    "header_datatype": lambda b, t: (_fit(_header_field(b, t, "dtype.nii.gz", 70, "<h", 999)), ["dtype.nii.gz"], r"invalid NIfTI header|data code 999"),
    "header_zero_pixdim": lambda b, t: (_fit(_header_field(b, t, "pixdim.nii.gz", 80, "<f", 0.0)), ["pixdim.nii.gz"], r"invalid NIfTI header \(pixdim"),
    "header_infinite_vox_offset": lambda b, t: (_fit(_header_field(b, t, "voxoff.nii.gz", 108, "<f", float("inf"))), ["voxoff.nii.gz"], r"invalid NIfTI header \(vox offset \(=inf\)|unreadable NIfTI file \(OverflowError"),
    "header_infinite_scl_inter": lambda b, t: (_fit(_header_field(b, t, "inter.nii.gz", 116, "<f", float("inf"))), ["inter.nii.gz"], r"invalid NIfTI header \(Valid slope but invalid intercept inf\)|NaN or infinite"),
    "dicom_unknown_vr": lambda b, t: (_fit(_bad_vr_dicom(t)), ["IM0002.dcm"], r"IM0002.dcm: (unreadable DICOM header|corrupt or unreadable DICOM file).*Value Representation"),
    "beyond_float32": lambda b, t: (_fit(_img(b, t, "big.nii.gz", _with(b["image"].astype(np.float64), (1, 1, 0, 1), 1e300))), ["big.nii.gz"], r"beyond the float32 range"),
    "sheared_affine": lambda b, t: (_fit(_img(b, t, "shear.nii.gz", b["image"], _shear(b))), ["shear.nii.gz"], r"sheared"),
    # -- label maps --------------------------------------------------------------------------------
    "labels_other_shape": lambda b, t: (_seg(b, t, "seg40.nii.gz", b["labels"][:40]), ["seg40.nii.gz"], r"shape \(40, 56, 1\).*\(56, 56, 1\)"),
    "labels_unknown_code": lambda b, t: (_seg(b, t, "seg7.nii.gz", _with(b["labels"], (0, 0, 0), 7)), ["seg7.nii.gz", "cine.nii.gz"], r"codes \[7\] not in the label map.*--label-map"),
    "labels_nan": lambda b, t: (_seg(b, t, "segnan.nii.gz", _with(b["labels"], (0, 0, 0), np.nan, np.float32)), ["segnan.nii.gz"], r"NaN"),
    "labels_negative": lambda b, t: (_seg(b, t, "segneg.nii.gz", _with(b["labels"], (0, 0, 0), -1, np.int16)), ["segneg.nii.gz"], r"integer codes 0\.\.255"),
    "labels_fractional": lambda b, t: (_seg(b, t, "segfrac.nii.gz", _with(b["labels"], (0, 0, 0), 1.5, np.float32)), ["segfrac.nii.gz"], r"integer codes"),
    "labels_complex": lambda b, t: (_seg(b, t, "segc.nii.gz", b["labels"].astype(np.complex64)), ["segc.nii.gz"], r"data type complex64"),
    "labels_every_frame_wrong_t": lambda b, t: (_seg(b, t, "seg4d.nii.gz", np.stack([b["labels"]] * 3, -1)), ["seg4d.nii.gz"], r"must be 3D"),
    "labels_is_a_folder": lambda b, t: ((t / "segdir").mkdir() or _fit(b["dir"] / "cine.nii.gz", "--seg", str(t / "segdir")), ["segdir"], r"is a folder, expected a file"),
    "labels_missing": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--seg", str(t / "nolabels.nii.gz")), ["nolabels.nii.gz"], r"not found"),
    # -- memory --------------------------------------------------------------------------------------
    "huge_header_nii": lambda b, t: (_fit(_huge_header(t, "huge.nii", False)), ["huge.nii"], r"about 200 GiB of memory, above the limit of 8 GiB.*CARDIOINR_MAX_GIB"),
    "huge_header_niigz": lambda b, t: (_fit(_huge_header(t, "huge.nii.gz", True)), ["huge.nii.gz"], r"about 200 GiB.*CARDIOINR_MAX_GIB"),
    "above_env_limit": lambda b, t: (_fit(b["dir"] / "cine.nii.gz"), ["cine.nii.gz"], r"above the limit of 1e-05 GiB"),
    "bad_env_limit": lambda b, t: (_fit(b["dir"] / "cine.nii.gz"), ["CARDIOINR_MAX_GIB='lots'"], r"positive number of GiB"),
    # -- DICOM ---------------------------------------------------------------------------------------
    "dicom_missing_slice": lambda b, t: (_fit(dicom_series(t / "dcm", nz=4, skip={(2, i) for i in range(4)})), ["dcm"], r"uneven slice step.*missing slice"),
    "dicom_missing_image": lambda b, t: (_fit(dicom_series(t / "dcm", skip={(1, 2)})), ["dcm"], r"has 3 images, others have 4"),
    "dicom_mixed_series": lambda b, t: (_mixed_series(t), ["dcm"], r"holds 2 DICOM series"),
    "dicom_truncated_file": lambda b, t: (_truncated_dicom(t), ["IM0003.dcm"], r"truncated or corrupt|corrupt or unreadable"),
    "dicom_single_file": lambda b, t: (_wrong_dicom_file(t), ["IM0001.dcm"], r"give the folder"),
    # -- broken files --------------------------------------------------------------------------------
    "truncated_gzip": lambda b, t: (_fit(_write(t, "cut.nii.gz", _gz_bytes(b)[: len(_gz_bytes(b)) // 2])), ["cut.nii.gz"], r"corrupt or truncated"),
    "gzip_crc": lambda b, t: (_fit(_write(t, "crc.nii.gz", _gz_bytes(b)[:-8] + bytes([_gz_bytes(b)[-8] ^ 0xFF]) + _gz_bytes(b)[-7:])), ["crc.nii.gz"], r"CRC check failed"),
    "gzip_of_text": lambda b, t: (_fit(_write(t, "text.nii.gz", gzip.compress(b"not an image\n" * 50))), ["text.nii.gz"], r"not a readable NIfTI|invalid NIfTI header|corrupt"),
    "text_as_niigz": lambda b, t: (_fit(_write(t, "notes.nii.gz", b"hello, I am a text file\n" * 20)), ["notes.nii.gz"], r"not a readable NIfTI.*not a gzip file"),
    "text_as_nii": lambda b, t: (_fit(_write(t, "notes.nii", b"hello, I am a text file\n" * 20)), ["notes.nii"], r"NIfTI"),
    "empty_niigz": lambda b, t: (_fit(_write(t, "empty.nii.gz", b"")), ["empty.nii.gz"], r"[Ee]mpty file"),
    "empty_nii": lambda b, t: (_fit(_write(t, "empty.nii", b"")), ["empty.nii"], r"[Ee]mpty file"),
    "npz_garbage": lambda b, t: (_fit(_write(t, "seq.npz", b"PK\x03\x04 not really a zip")), ["seq.npz"], r"corrupt or unreadable npz"),
    "unknown_format": lambda b, t: (_fit(_write(t, "cine.mp4", b"\0" * 64)), ["cine.mp4"], r"unknown input format"),
    "folder_as_file": lambda b, t: ((t / "dir.nii.gz").mkdir() or _fit(t / "dir.nii.gz"), ["dir.nii.gz"], r"folder is empty"),
    "missing_file": lambda b, t: (_fit(t / "absent.nii.gz"), ["absent.nii.gz"], r"not found"),
    "unreadable_file": lambda b, t: (_unreadable(b, t), ["locked.nii.gz"], r"[Pp]ermission denied"),
    "out_is_a_file": lambda b, t: (["fit", str(b["dir"] / "cine.nii.gz"), "--out", str(_write(t, "taken", b"x")), "--steps", "1", "--quiet", "--no-report"], ["taken"], r"exists and is not a folder"),
    # -- prior checkpoints via fit --prior ----------------------------------------------------------
    "ckpt_garbage": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--prior", str(_write(t, "junk.ckpt", b"garbage " * 40))), ["junk.ckpt"], r"not a readable checkpoint"),
    "ckpt_truncated": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--prior", str(_write(t, "cut.ckpt", (b["dir"] / "prior.ckpt").read_bytes()[:2000]))), ["cut.ckpt"], r"corrupt or truncated: damaged torch archive"),
    "ckpt_version": lambda b, t: (_ckpt(b, t, "v99.ckpt", lambda o: o.update(version=99)), ["v99.ckpt"], r"format version 99 is not supported"),
    "ckpt_kind": lambda b, t: (_ckpt(b, t, "kind.ckpt", lambda o: o.update(kind="telepathy")), ["kind.ckpt"], r"unknown prior kind 'telepathy'"),
    "ckpt_content": lambda b, t: (_ckpt(b, t, "bad.ckpt", lambda o: o["state_dict"].popitem()), ["bad.ckpt"], r"does not match its description"),
    "ckpt_field_file": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--prior", str(b["dir"] / "field.pt")), ["field.pt"], r"not a cardioinr prior checkpoint"),
    "ckpt_3d_for_2d": lambda b, t: (_3d_prior(b, t), ["p3.ckpt", "cine.nii.gz"], r"a 3D prior cannot start a fit of the 2D sequence"),
    "ckpt_is_a_folder": lambda b, t: ((t / "p.ckpt").mkdir() or _fit(b["dir"] / "cine.nii.gz", "--prior", str(t / "p.ckpt")), ["p.ckpt"], r"is a folder"),
    "ckpt_missing": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--prior", str(t / "none.ckpt")), ["none.ckpt"], r"not found"),
    # -- options -------------------------------------------------------------------------------------
    "label_map_unknown_preset": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--label-map", "mnms"), ["'mnms'"], r"expected a preset"),
    "label_map_not_integer": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--label-map", "lv=x,myo=2"), ["'lv=x,myo=2'"], r"not an integer"),
    "label_map_twice": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--label-map", "lv=1,lv=2"), ["'lv=1,lv=2'"], r"given twice"),
    "label_map_shared_code": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--label-map", "lv=1,myo=1"), ["'lv=1,myo=1'"], r"share one code"),
    "label_map_out_of_range": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--label-map", "lv=300"), ["'lv=300'"], r"1\.\.255"),
    "label_map_unknown_structure": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--label-map", "la=4"), ["'la=4'"], r"expected a preset"),
    "ref_frame_too_big": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--ref-frame", "6"), ["cine.nii.gz"], r"frame 6 is out of range \(the sequence has 6 frames\)"),
    "ref_frame_too_negative": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--ref-frame", "-7"), ["cine.nii.gz"], r"frame -7 is out of range"),
    "ref_frame_not_a_number": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--ref-frame", "ED"), ["--ref-frame"], r"not a valid integer|Invalid value"),
    "steps_negative": lambda b, t: (["fit", str(b["dir"] / "cine.nii.gz"), "--out", "out", "--steps", "-5"], ["--steps"], r"Invalid value.*greater than or equal to 0.*cardioinr fit --help"),
    "device_bogus": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--device", "quantum"), ["'quantum'"], r"unknown device"),
    "device_cuda_absent": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--device", "cuda"), ["cuda"], r"CUDA is not available"),
    "unknown_option": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--stepz", "3"), ["--stepz"], r"No such option"),
    # -- configuration files -----------------------------------------------------------------------
    "toml_syntax": lambda b, t: (_toml(b, t, "steps = [\n"), ["fit.toml"], r"cannot parse config"),
    "toml_unknown_key": lambda b, t: (_toml(b, t, "stepz = 3\n"), ["fit.toml"], r"unknown fit setting\(s\): stepz"),
    "toml_wrong_type": lambda b, t: (_toml(b, t, "steps = 'many'\n"), ["fit.toml"], r"'steps' must be an integer, got 'many'"),
    "toml_not_a_list": lambda b, t: (_toml(b, t, "blur_px = 3\n"), ["fit.toml"], r"'blur_px' must be a list of numbers"),
    "toml_bad_value": lambda b, t: (_toml(b, t, "lr = -1.0\n"), ["fit.toml"], r"learning rate must be positive"),
    "toml_unknown_field_key": lambda b, t: (_toml(b, t, "[field]\nwidth = 5\n"), ["fit.toml"], r"unknown field setting\(s\): width"),
    "toml_unknown_model": lambda b, t: (_toml(b, t, "[field]\nmodel = 'unet'\n"), ["fit.toml"], r"unknown field model 'unet'"),
    "toml_field_not_table": lambda b, t: (_toml(b, t, "field = 'siren'\n"), ["fit.toml"], r"'field' must be a table"),
    "toml_binary": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--config", str(_write(t, "bin.toml", b"\xff\xfe\x00\x01"))), ["bin.toml"], r"cannot parse config"),
    "json_not_a_table": lambda b, t: (_toml(b, t, "[1, 2, 3]", "fit.json"), ["fit.json"], r"must hold a table of settings"),
    "config_missing": lambda b, t: (_fit(b["dir"] / "cine.nii.gz", "--config", str(t / "none.toml")), ["none.toml"], r"config file not found"),
    # -- prior training --------------------------------------------------------------------------------
    "train_prior_missing_data": lambda b, t: (["train-prior", str(t / "nodata"), "--out", str(t / "p.ckpt")], ["nodata"], r"not found"),
    "train_prior_bad_config": lambda b, t: (["train-prior", str(t), "--out", str(t / "p.ckpt"), "--config", str(_write(t, "p.toml", b"[prior]\nbatch = 'big'\n"))], ["p.toml"], r"'batch' must be an integer"),
    "train_prior_left_state": lambda b, t: (_existing_state(b, t), ["p.ckpt.state"], r"pass --resume or delete it"),
    "train_prior_out_is_a_folder": lambda b, t: (["train-prior", str(t), "--out", str(t)], [str(t)], r"is a folder; --out names the checkpoint file"),
    "train_prior_corrupt_state": lambda b, t: (_corrupt_state(b, t), ["p.ckpt.state"], r"training state is unreadable.*delete it to restart"),
}

ENV = {"above_env_limit": "0.00001", "bad_env_limit": "lots"}


@pytest.mark.filterwarnings("error::UserWarning", "error::RuntimeWarning")  # nothing printed beside the line
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_gives_one_clear_line(case: str, base: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    if case == "unreadable_file" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    if case == "device_cuda_absent" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tmp_path)
    if case in ENV:
        monkeypatch.setenv("CARDIOINR_MAX_GIB", ENV[case])
    else:
        monkeypatch.delenv("CARDIOINR_MAX_GIB", raising=False)
    args, names, pattern = CASES[case](base, tmp_path)
    capsys.readouterr()
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    err = captured.err
    lines = err.splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("cardioinr: error: "), line
    assert "Traceback" not in err and "Traceback" not in captured.out
    for name in names:
        assert name in line, (name, line)
    assert re.search(pattern, line), (pattern, line)
    assert not (tmp_path / "out").exists(), "a refused input must not leave an output folder"


def test_at_least_seventy_hostile_inputs() -> None:
    assert len(CASES) >= 70


# ---------------------------------------------------------------------------------------------
# Inputs that are unusual but valid
# ---------------------------------------------------------------------------------------------


def test_oblique_affine_is_accepted_and_gives_the_same_motion(base: dict, tmp_path: Path) -> None:
    """Motion is computed in array-aligned millimetres, which an orthogonal (oblique) affine maps
    isometrically to the world: the same voxels with an oblique affine give the same field,
    written with the oblique affine."""
    oblique = np.eye(4)
    oblique[:3, :3] = rotation(0.4, -0.7, 1.9) @ np.diag(np.linalg.norm(base["affine"][:3, :3], axis=0))
    oblique[:3, 3] = (-52.4, 8.8, 6.9)
    obl = nifti(tmp_path / "oblique.nii.gz", base["image"], oblique)
    straight = nifti(tmp_path / "straight.nii.gz", base["image"], base["affine"])
    for name, src in (("o_obl", obl), ("o_str", straight)):
        assert main(["fit", str(src), "--out", str(tmp_path / name), "--steps", "3", "--quiet", "--no-report"]) == 0
    d_obl = nib.load(tmp_path / "o_obl" / "displacement.nii.gz")
    d_str = nib.load(tmp_path / "o_str" / "displacement.nii.gz")
    np.testing.assert_allclose(d_obl.affine, oblique, atol=1e-4)
    # Equal up to float32 rounding: the spacing read back from the rotated columns differs
    # from the axis-aligned one in the last bits (measured: 5e-7 mm at most).
    np.testing.assert_allclose(np.asarray(d_obl.dataobj), np.asarray(d_str.dataobj), rtol=0, atol=1e-5)
    m = json.loads((tmp_path / "o_obl" / "metrics.json").read_text())
    np.testing.assert_allclose(m["sequence"]["spacing_mm"], [2.0, 2.0, 8.0], atol=1e-5)


def test_empty_label_map_is_accepted_and_reported(base: dict, tmp_path: Path, capsys) -> None:
    """Decision: an all-zero reference label map does not stop the fit (the field needs no
    labels), but metrics.json says so in ``warnings`` and labels.nii.gz is all background."""
    seg = nifti(tmp_path / "empty_seg.nii.gz", np.zeros_like(base["labels"]), base["affine"])
    out = tmp_path / "out"
    rc = main(["fit", str(base["dir"] / "cine.nii.gz"), "--seg", str(seg), "--out", str(out), "--steps", "3",
               "--quiet", "--no-report"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert any("label map is empty" in w for w in m["warnings"])
    assert not np.asarray(nib.load(out / "labels.nii.gz").dataobj).any()
    assert m["inputs"]["labels"]["0"]["path"] == str(seg)


def test_error_messages_are_one_line_whatever_they_quote() -> None:
    """A DICOM value or file name holding a newline or a control character (found by fuzzing:
    a SeriesInstanceUID with a newline) never splits the error line."""
    from cardioinr.core.errors import CheckpointError, ConfigError, InputError

    for cls in (InputError, ConfigError, CheckpointError):
        e = cls("dcm: holds 2 DICOM series (1\n2.826 'a\tb\x00c' (1 images))")
        assert str(e) == "dcm: holds 2 DICOM series (1 2.826 'a b c' (1 images))"
        assert e.exit_code == 2
