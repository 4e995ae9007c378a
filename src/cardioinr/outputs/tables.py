"""Tables of a fit folder: ``strain.csv`` (the contract's strain table) and the per-frame cycle table.

Rows come from :class:`cardioinr.analysis.strain.StrainResult` (``rows()`` / ``cycle_rows()``);
this module only formats, writes (atomically) and reads them.
"""

from __future__ import annotations

import csv
import io as _stdio
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.analysis.strain import CSV_COLUMNS, CYCLE_COLUMNS, StrainResult
from cardioinr.core.errors import InputError
from cardioinr.core.files import write_text_atomic

__all__ = ["read_strain_csv", "write_cycle_csv", "write_rows_csv", "write_strain_csv"]

def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    f = float(v)
    return "" if not math.isfinite(f) else f"{f:.6g}"


def _write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...], path: str | os.PathLike) -> Path:
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_fmt(row[c]) for c in columns])
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def write_strain_csv(result: StrainResult, path: str | os.PathLike) -> Path:
    """Write ``strain.csv`` atomically: one row per frame and region, columns :data:`CSV_COLUMNS`.

    ``frame`` (0-based), ``time_ms`` (frame * interval), ``region`` (``global`` or ``aha01``..
    ``aha17``, see :data:`AHA_NAMES`), ``n_voxels`` (myocardial voxels of the reference frame in
    the region), ``E_rr``/``E_cc``/``E_ll`` (mean Green-Lagrange normal strain, dimensionless),
    ``radial_pct``/``circumferential_pct``/``longitudinal_pct`` (mean engineering strain, %).
    Undefined values (longitudinal in 2D) are empty.
    """
    return _write_csv(result.rows(), CSV_COLUMNS, path)


def write_rows_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``strain.csv`` rows made elsewhere (a long-axis cine's GLS rows) atomically, with
    the same columns :data:`CSV_COLUMNS`."""
    return _write_csv(rows, CSV_COLUMNS, path)


def write_cycle_csv(result: StrainResult, path: str | os.PathLike) -> Path:
    """Write the per-frame cavity / rotation / twist table atomically (columns :data:`CYCLE_COLUMNS`)."""
    return _write_csv(result.cycle_rows(), CYCLE_COLUMNS, path)


def read_strain_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``strain.csv``: a list of row dicts (ints for ``frame``/``n_voxels``, floats with
    NaN for empty cells, ``region`` a string).

    Raises:
        InputError: missing file or columns other than :data:`CSV_COLUMNS`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: strain table not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise InputError(f"{path}: unexpected columns {reader.fieldnames} (expected {', '.join(CSV_COLUMNS)})")
        rows = []
        for row in reader:
            out: dict[str, Any] = {}
            for k, v in row.items():
                if k == "region":
                    out[k] = v
                elif k in ("frame", "n_voxels"):
                    out[k] = int(v)
                else:
                    out[k] = float(v) if v != "" else float("nan")
            rows.append(out)
    return rows
