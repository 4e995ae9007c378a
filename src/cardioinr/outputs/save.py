"""``save_fit``: the whole output contract of a fit, written in one call (what ``cardioinr fit`` does)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cardioinr.analysis.strain import StrainConfig, analyse_fit_result
from cardioinr.outputs.contract import STRAIN, prepare_fit_folder, write_fit_images, write_fit_records
from cardioinr.outputs.report import build_report
from cardioinr.outputs.tables import write_rows_csv, write_strain_csv

__all__ = ["long_axis_view", "save_fit"]


def save_fit(result: Any, out_dir: str | os.PathLike, extra_metrics: dict | None = None, *,
             report: bool = True, strain_config: StrainConfig | None = None) -> Path:
    """Write the whole output contract of a fit: ``displacement.nii.gz``, ``labels.nii.gz``,
    ``field.pt``, ``strain.csv`` (when a reference myocardium exists), ``metrics.json`` and
    ``report.html``. Each file is written atomically."""
    out = Path(out_dir)
    extra = dict(extra_metrics or {})
    seq = result.sequence
    view = long_axis_view(seq)
    views = getattr(result, "views", None) or []
    for vf in views:  # a multi-view fit: each labelled view's own GLS
        if vf.labels is not None:
            gls, why = _lax_gls(vf.sequence, vf.displacement)
            result.metrics.setdefault("views", {}).setdefault("gls", {})[vf.name] = (
                gls.summary(vf.name) if gls is not None else {"view": vf.name, "not_computed": why})
    strain = gls = None
    if view is not None:  # one long-axis cine: its GLS, not the short-axis frame's strains
        gls, why = _lax_gls(seq, result.displacement)
        extra["strain"] = gls.summary(view) if gls is not None else {"view": view, "not_computed": why}
    else:
        strain = analyse_fit_result(result, config=strain_config)
        if strain is not None:
            extra["strain"] = strain.summary()
    prepare_fit_folder(out)
    # The NIfTI files are mostly gzip, which releases the GIL: written in a thread beside the
    # strain table and the report, they cost a stack's command little of their 1-2 s. A
    # multi-view report reads its views' label files, so those are written first.
    with ThreadPoolExecutor(max_workers=1) as pool:
        images = None if views else pool.submit(write_fit_images, result, out)
        if views:
            write_fit_images(result, out)
        write_fit_records(result, out, extra)
        if gls is not None:
            write_rows_csv(gls.rows(seq.frame_times_ms()), out / STRAIN)
        if strain is not None:
            write_strain_csv(strain, out / STRAIN)
        if report:
            build_report(out, seq=seq, strain=strain, strain_config=strain_config, written=result)
        if images is not None:
            images.result()  # its error, if any, is the command's
    return out


def long_axis_view(seq: Any) -> str | None:
    """The long-axis view a single-slice cine shows (``seq.meta["view"]``, set by ``fit --view``
    or from its file name), or None for a short-axis cine or stack."""
    view = seq.meta.get("view") if isinstance(seq.meta, dict) else None
    return str(view) if seq.is_2d and view and str(view) != "sax" else None


def _lax_gls(seq: Any, displacement: Any) -> tuple[Any, str | None]:
    """``(LaxGLS, None)`` of a long-axis cine's carried motion, or ``(None, reason)``."""
    from cardioinr.analysis.longitudinal import lax_gls
    from cardioinr.core.console import first_line
    from cardioinr.core.errors import CardioInrError

    if seq.ref_labels is None:
        return None, "no reference labels"
    try:
        return lax_gls(seq.ref_labels, displacement, seq.spacing, seq.label_map), None
    except CardioInrError as e:
        return None, first_line(e)
