"""Small helpers shared by the readers of :mod:`cardioinr.io`: file names, one-line messages,
quiet library calls. Private to the package."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from cardioinr.core.errors import InputError

# The suffixes of the files a cine can be read from (NIfTI first: ".nii.gz" before ".nii").
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".npz")


def file_stem(path: Path, *, other: str = "stem") -> str:
    """The name of ``path`` without an image suffix (``.nii.gz``, ``.nii``, ``.npz``, any case).

    Any other name loses its last suffix (``other="stem"``: ``Path.stem``) or stays whole
    (``other="name"``: a folder such as ``case.v2`` keeps its full name).
    """
    name = path.name
    for ext in IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem if other == "stem" else name


def is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [(0, int(s), "") if s.isdigit() else (1, 0, s.lower()) for s in re.split(r"(\d+)", name) if s]


def visible_files(path: Path) -> list[Path]:
    """The files directly in folder ``path``, hidden ones (``.name``) left out, in natural order."""
    return sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder, expected a file")


def shown(text: str) -> str:
    """A value read from a file, fit for a one-line message (control characters escaped)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Silence library warnings while reading files (pydicom's value-representation
    complaints, numpy's on damaged headers): whatever they point at is either harmless or
    refused by the checks that follow, with one clear line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
