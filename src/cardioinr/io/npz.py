"""NumPy ``.npz`` sequences: the image, affine, frame interval, labels, label codes and
reference frame of a :class:`~cardioinr.io.sequence.Sequence` in one archive."""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path

import numpy as np

from cardioinr.core.console import first_line
from cardioinr.core.errors import InputError
from cardioinr.core.files import atomic_path, check_memory, file_sha256
from cardioinr.io._common import file_stem, require_file
from cardioinr.io.sequence import ACDC, LabelMap, Sequence

__all__ = ["load_npz", "save_npz"]


def save_npz(path: str | os.PathLike, seq: Sequence) -> Path:
    """Write a sequence (image, affine, frame interval, labels, reference frame) to ``.npz``."""
    arrays: dict[str, np.ndarray] = {
        "image": seq.image,
        "affine": seq.affine,
        "frame_interval_ms": np.float64(seq.frame_interval_ms),
        "ref_frame": np.int64(seq.ref_frame),
        "label_map": np.array(json.dumps(seq.label_map.as_dict())),
        "name": np.array(seq.name),
    }
    for t, lab in seq.labels.items():
        arrays[f"labels_{t}"] = lab
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def load_npz(path: str | os.PathLike) -> Sequence:
    """Read a sequence written by :func:`save_npz` (``image`` is required, the rest optional)."""
    import zipfile

    path = Path(path)
    require_file(path, "npz sequence")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise InputError(f"{path}: holds a single .npy array, not an .npz archive")
            if "image" not in z.files:
                raise InputError(f"{path}: npz has no 'image' array (found {sorted(z.files)})")
            with contextlib.suppress(KeyError, AttributeError):  # uncompressed size, before reading
                check_memory(2 * z.zip.getinfo("image.npy").file_size, path)
            image = z["image"]
            affine = z["affine"] if "affine" in z.files else np.eye(4)
            dt = float(z["frame_interval_ms"]) if "frame_interval_ms" in z.files else 1.0
            ref = int(z["ref_frame"]) if "ref_frame" in z.files else 0
            lmap = LabelMap.coerce(json.loads(str(z["label_map"]))) if "label_map" in z.files else ACDC
            name = str(z["name"]) if "name" in z.files else file_stem(path)
            labels = {int(k.split("_", 1)[1]): z[k] for k in z.files if k.startswith("labels_")}
    except InputError:
        raise
    except AttributeError:  # np.load returned a plain array (a .npy file named .npz)
        raise InputError(f"{path}: holds a single .npy array, not an .npz archive") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as e:
        raise InputError(f"{path}: corrupt or unreadable npz ({first_line(e)})") from None
    return Sequence(image=image, affine=affine, frame_interval_ms=dt, labels=labels, ref_frame=ref,
                    label_map=lmap, name=name, meta={"source": str(path), "format": "npz", "sha256": file_sha256(path)})
