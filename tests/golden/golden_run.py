"""Golden run: fixed-seed `synth`, `fit` (2D, 3D), `train-prior` and `evaluate` through the CLI.

Written before the package re-cut (issue 18) from that day's main; `tests/app/test_golden.py` runs the
same scenario and compares every output with `reference.json`. Run this file as a script to
(re)write the reference, which is what to do only when a change of behaviour is intended:

    OMP_NUM_THREADS=2 python tests/golden/golden_run.py --write

What is compared, and how:
- NIfTI files: the sha256 of the array bytes (dtype and shape included) and of the affine: bitwise.
- CSV files (strain.csv): the sha256 of the file bytes: bitwise.
- field.pt and prior checkpoints: the sha256 of every tensor's bytes: bitwise.
- metrics.json and evaluation JSON: every number that does not measure time, memory or a
  path, to 1e-6 relative (the JSON writer rounds; all of them are computed by the code under
  test from the arrays above, so a bitwise array match implies these match too).
The digest depends on the CPU's floating-point kernels: the reference records the machine it was
made on (torch version, CPU capability, thread count) and the test skips, saying so, elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference.json"

# Keys whose values measure the run (time, memory, host) or name files, not the result.
_VOLATILE = ("seconds", "time", "date", "version", "path", "host", "rss", "memory", "checksum", "sha256",
             "file", "inputs", "started", "finished", "python", "torch", "platform", "out", "input")


def machine() -> dict:
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def nifti_digest(path: Path) -> dict:
    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "data": _sha(np.ascontiguousarray(arr).tobytes()),
            "affine": _sha(np.asarray(img.affine, dtype=np.float64).tobytes())}


def tensors_digest(obj, prefix: str = "") -> dict:
    """sha256 of every tensor in a nested dict/list structure, keyed by its path."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "."] = _sha(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            out.update(tensors_digest(obj[k], f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors_digest(v, f"{prefix}/{i}"))
    return out


def numbers(obj, prefix: str = "") -> dict:
    """Every number in a JSON structure that is a result (not a time, size or path), by key path."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if any(w in str(k).lower() for w in _VOLATILE):
                continue
            out.update(numbers(v, f"{prefix}/{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}/{i}"))
    elif isinstance(obj, bool) or obj is None:
        pass
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)
    return out


def _cli(*args: str) -> None:
    from cardioinr.app.cli import main

    rc = main([str(a) for a in args])
    if rc not in (0, None):
        raise RuntimeError(f"cardioinr {' '.join(map(str, args))} exited {rc}")


def _ref_labels(labels4d: Path, frame: int, out: Path) -> Path:
    img = nib.load(str(labels4d))
    lab = np.asanyarray(img.dataobj)[..., frame].astype(np.uint8)
    nib.save(nib.Nifti1Image(lab, img.affine), str(out))
    return out


def fit_digest(folder: Path) -> dict:
    d = {name: nifti_digest(folder / name) for name in ("displacement.nii.gz", "labels.nii.gz")}
    d["strain.csv"] = _sha((folder / "strain.csv").read_bytes())
    d["field.pt"] = tensors_digest(torch.load(folder / "field.pt", map_location="cpu", weights_only=False))
    d["metrics.json"] = numbers(json.loads((folder / "metrics.json").read_text()))
    d["report.html"] = (folder / "report.html").stat().st_size > 0
    return d


def run(work: Path) -> dict:
    """Run the whole scenario in ``work`` and return the digest of every output."""
    torch.set_num_threads(2)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    # Inputs: phantoms from the CLI (2D) and a small 3D stack.
    _cli("synth", "--out", work / "p2", "--n", "2", "--dim", "2", "--seed", "7")
    _cli("synth", "--out", work / "p3", "--n", "1", "--dim", "3", "--seed", "11")
    for name in ("p2/case000_4d.nii.gz", "p2/case000_labels.nii.gz", "p2/case000_truth_displacement.nii.gz",
                 "p3/case000_4d.nii.gz"):
        out[f"synth:{name}"] = nifti_digest(work / name)
    seg2 = _ref_labels(work / "p2/case000_labels.nii.gz", 0, work / "seg2.nii.gz")
    seg3 = _ref_labels(work / "p3/case000_labels.nii.gz", 0, work / "seg3.nii.gz")

    _cli("fit", work / "p2/case000_4d.nii.gz", "--out", work / "f2", "--seg", seg2, "--steps", "40",
         "--seed", "3", "--quiet", "--prior", "none")
    out["fit2d"] = fit_digest(work / "f2")
    _cli("fit", work / "p3/case000_4d.nii.gz", "--out", work / "f3", "--seg", seg3, "--steps", "15",
         "--seed", "5", "--quiet", "--prior", "none")
    out["fit3d"] = fit_digest(work / "f3")

    _cli("train-prior", work / "p2", "--kind", "consensus", "--out", work / "prior.ckpt", "--steps", "20",
         "--seed", "1", "--quiet")
    ckpt = torch.load(work / "prior.ckpt", map_location="cpu", weights_only=False)
    out["train-prior"] = tensors_digest(ckpt)
    _cli("fit", work / "p2/case001_4d.nii.gz", "--out", work / "fp", "--seg", seg2, "--prior", work / "prior.ckpt",
         "--steps", "10", "--seed", "2", "--quiet", "--no-report")
    out["fit2d_prior"] = {k: v for k, v in fit_digest_no_report(work / "fp").items()}

    _cli("evaluate", work / "f2", "--truth-displacement", work / "p2/case000_truth_displacement.nii.gz",
         "--truth-labels", work / "p2/case000_labels.nii.gz", "--json", work / "eval.json")
    out["evaluate"] = numbers(json.loads((work / "eval.json").read_text()))
    return out


def fit_digest_no_report(folder: Path) -> dict:
    d = {name: nifti_digest(folder / name) for name in ("displacement.nii.gz", "labels.nii.gz")}
    d["strain.csv"] = _sha((folder / "strain.csv").read_bytes())
    d["metrics.json"] = numbers(json.loads((folder / "metrics.json").read_text()))
    return d


def differences(ref: dict, new: dict, path: str = "") -> list[str]:
    """Where ``new`` differs from ``ref``: exact for digests, 1e-6 relative for numbers."""
    diffs = []
    if isinstance(ref, dict) and isinstance(new, dict):
        for k in sorted(set(ref) | set(new)):
            if k not in new:
                diffs.append(f"{path}/{k}: missing")
            elif k not in ref:
                diffs.append(f"{path}/{k}: new (not in the reference)")
            else:
                diffs.extend(differences(ref[k], new[k], f"{path}/{k}"))
    elif isinstance(ref, float) and isinstance(new, float):
        same = (math.isnan(ref) and math.isnan(new)) or math.isclose(ref, new, rel_tol=1e-6, abs_tol=1e-9)
        if not same:
            diffs.append(f"{path}: {new!r} != {ref!r}")
    elif ref != new:
        diffs.append(f"{path}: {str(new)[:80]} != {str(ref)[:80]}")
    return diffs


if __name__ == "__main__":
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write reference.json (else compare with it)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp))
    if args.write:
        REFERENCE.write_text(json.dumps({"machine": machine(), "outputs": result}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {REFERENCE}")
    else:
        ref = json.loads(REFERENCE.read_text())
        diffs = differences(ref["outputs"], result)
        print("\n".join(diffs) or "identical")
        sys.exit(1 if diffs else 0)
