"""Files: atomic writes, checksums and the memory guard on inputs.

* :func:`atomic_path`, :func:`write_text_atomic`, :func:`write_json_atomic`: a file is either
  its previous content or the complete new one, never half written.
* :func:`file_sha256`, :func:`files_sha256`: checksums recorded as input provenance.
* :func:`max_input_gib`, :func:`check_memory`: refuse, from its header alone, an input too
  large to load (``$CARDIOINR_MAX_GIB``, default :data:`DEFAULT_MAX_GIB`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from cardioinr.core.errors import ConfigError, InputError
from cardioinr.core.serialise import json_default

__all__ = [
    "DEFAULT_MAX_GIB",
    "atomic_path",
    "check_memory",
    "file_sha256",
    "files_sha256",
    "max_input_gib",
    "write_json_atomic",
    "write_text_atomic",
]

# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def _final_suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``) so that writers that pick a
    format from the extension behave the same. A crash leaves the previous file untouched.
    The file gets the ordinary permissions of a new file (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _final_suffix(path)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    # Created with O_EXCL by hand rather than tempfile.mkstemp: mkstemp makes the file 0600,
    # and os.replace would carry that onto the output (unreadable to other users).
    # The name is claimed before the file exists and the creation sits inside the ``try``: a
    # signal turned into an exception (the CLI's SIGTERM handling) right after the file appears
    # must still reach the clean-up below (seen under heavy load in the kill tests).
    tmp_path: Path | None = None
    try:
        while True:
            tmp_path = path.parent / f".{base[:100]}.{secrets.token_hex(4)}.tmp{suffix}"
            try:
                fd = os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                tmp_path = None  # someone else's file: never ours to remove
                continue
            os.close(fd)
            break
        yield tmp_path
        if not tmp_path.is_file():
            raise OSError(f"{path}: the writer did not produce {tmp_path.name}")
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically; numpy scalars/arrays and paths are converted
    (by :func:`cardioinr.core.serialise.json_default`; non-finite floats stay ``NaN``)."""
    write_text_atomic(path, json.dumps(obj, indent=1, default=json_default) + "\n")


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(files: list[Path], root: Path) -> str:
    """One SHA-256 over several files: each file's path relative to ``root`` and its SHA-256."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: str(p.relative_to(root))):
        h.update(f"{f.relative_to(root).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Memory limit
# ---------------------------------------------------------------------------------------------

DEFAULT_MAX_GIB = 8.0


def max_input_gib() -> float:
    """The largest input (GiB of memory once loaded) accepted: ``$CARDIOINR_MAX_GIB``, default 8."""
    raw = os.environ.get("CARDIOINR_MAX_GIB", "").strip()
    if not raw:
        return DEFAULT_MAX_GIB
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"CARDIOINR_MAX_GIB={raw!r}: expected a positive number of GiB")
    return value


def check_memory(nbytes: float, where: str | os.PathLike, what: str = "reading it") -> None:
    """Refuse, before anything is read, an input whose loaded size (estimated from its header)
    is above :func:`max_input_gib`."""
    limit = max_input_gib()
    gib = float(nbytes) / 2**30
    if gib > limit:
        raise InputError(f"{where}: {what} needs about {gib:,.3g} GiB of memory, above the limit of {limit:g} GiB "
                         "(set CARDIOINR_MAX_GIB to raise it)")
