"""The report's entry point: :func:`build_report` loads a fit folder, analyses its strain unless
given, assembles the sections into one page and writes it atomically."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.analysis.strain import StrainConfig, StrainResult, analyse_displacement, analyse_field
from cardioinr.core.console import first_line
from cardioinr.core.errors import CardioInrError
from cardioinr.core.files import write_text_atomic
from cardioinr.geometry import spatial_dim
from cardioinr.io import Sequence
from cardioinr.outputs.contract import REPORT
from cardioinr.outputs.folder import FitFolder, load_fit_folder
from cardioinr.outputs.report.figures import display_slice
from cardioinr.outputs.report.markup import CSS, esc, note, num
from cardioinr.outputs.report.sections import (
    SECTIONS,
    accuracy_section,
    bullseye_section,
    cavity_section,
    fit_section,
    folding_section,
    long_axis_section,
    input_section,
    motion_section,
    strain_section,
    views_section,
)

__all__ = ["build_report"]


def _analyse_folder(f: FitFolder, config: StrainConfig | None) -> tuple[StrainResult | None, str | None]:
    """Strain of the folder, or ``(None, reason)``."""
    ref = f.ref_labels
    if ref is None:
        return None, "no reference labels"
    if f.label_map.myo is None or not np.any(ref == f.label_map.myo):
        return None, "no myocardium in the reference labels"
    common = dict(labels=f.labels, label_map=f.label_map, ref_frame=f.ref_frame,
                  frame_interval_ms=f.frame_interval_ms, affine=f.affine, config=config)
    try:
        if f.field is not None and int(f.field.dim) == spatial_dim(f.shape) \
                and int(getattr(f.field, "n_frames", f.n_frames)) == f.n_frames:
            return analyse_field(f.field, f.spacing, ref, **common), None
        return analyse_displacement(f.displacement, f.spacing, ref, **common), None
    except CardioInrError as e:
        return None, first_line(e)


def build_report(
    out_dir: str | os.PathLike,
    seq: Sequence | None = None,
    *,
    strain: StrainResult | None = None,
    strain_config: StrainConfig | None = None,
    path: str | os.PathLike | None = None,
    written: Any = None,
) -> Path:
    """(Re)build ``report.html`` in a fit output folder from what the folder holds.

    Args:
        out_dir: the folder written by ``cardioinr fit`` (``displacement.nii.gz`` required;
            ``labels.nii.gz``, ``field.pt``, ``metrics.json``, ``strain.csv`` used when present).
        seq: the input sequence (for the images); default: loaded from
            ``metrics.json["sequence"]["source"]`` if that file still exists.
        strain: a strain analysis already computed for this fit (skips recomputation).
        strain_config: directions and segment settings for the recomputation.
        path: where to write (default: the contract's report file in ``out_dir``).
        written: the fit result just written to ``out_dir`` with ``seq`` (its arrays are not
            read back; :func:`~cardioinr.outputs.folder.load_fit_folder`).

    Returns:
        The path of the written report (written atomically).

    Raises:
        InputError: the folder or its displacement is missing or unreadable.
    """
    f = load_fit_folder(out_dir, seq, written=written)
    why = None
    lax_view = (f.metrics.get("strain") or {}).get("view") if isinstance(f.metrics.get("strain"), dict) else None
    if lax_view:
        # one long-axis cine: its GLS; the short-axis frame's radial/circumferential/AHA do not apply
        strain = None
        k = 0
        sections = [input_section(f), fit_section(f), long_axis_section(f, str(lax_view))]
    else:
        if strain is None:
            strain, why = _analyse_folder(f, strain_config)
        k = display_slice(strain, f)
        sections = [input_section(f), fit_section(f), views_section(f, strain), strain_section(f, strain, why),
                    bullseye_section(f, strain, k), cavity_section(strain, why)]
    motion, _ = motion_section(f, k)
    sections += [motion, folding_section(f, k), accuracy_section(f)]
    name = (f.metrics.get("sequence") or {}).get("name") if isinstance(f.metrics.get("sequence"), dict) else None
    name = name or (f.seq.name if f.seq is not None else f.path.name)
    from cardioinr import __version__

    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    summary = ""
    if strain is not None:
        p = strain.peaks()
        ef = strain.ejection()[0]
        summary = (f" · EF {num(ef, 1)} % · peak circumferential {num(p['circumferential_pct'], 1)} %"
                   f" · radial {num(p['radial_pct'], 1)} %"
                   + (f" · longitudinal {num(p['longitudinal_pct'], 1)} %" if strain.dim == 3 else ""))
    notes = "".join(note(n) for n in f.notes)
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>cardioinr report: {esc(name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>cardioinr motion report: {esc(name)}</h1>"
        f"<p>{esc(str(f.path))} · {stamp} · cardioinr {esc(__version__)}{esc(summary)}</p></header>"
        f"<nav>{nav}</nav><main>{notes}{''.join(sections)}</main>"
        "<footer>Self-contained report: no scripts, no external resources.</footer></body></html>\n"
    )
    target = Path(path) if path is not None else f.path / REPORT
    write_text_atomic(target, doc)
    return target
