"""``save_fit``: the whole output contract of a fit, written in one call (what ``cardioinr fit`` does)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cardioinr.analysis.strain import StrainConfig, analyse_fit_result
from cardioinr.outputs.contract import STRAIN, write_fit_outputs
from cardioinr.outputs.report import build_report
from cardioinr.outputs.tables import write_strain_csv

__all__ = ["save_fit"]


def save_fit(result: Any, out_dir: str | os.PathLike, extra_metrics: dict | None = None, *,
             report: bool = True, strain_config: StrainConfig | None = None) -> Path:
    """Write the whole output contract of a fit: ``displacement.nii.gz``, ``labels.nii.gz``,
    ``field.pt``, ``strain.csv`` (when a reference myocardium exists), ``metrics.json`` and
    ``report.html``. Each file is written atomically."""
    out = Path(out_dir)
    strain = analyse_fit_result(result, config=strain_config)
    extra = dict(extra_metrics or {})
    if strain is not None:
        extra["strain"] = strain.summary()
    write_fit_outputs(result, out, extra_metrics=extra)
    if strain is not None:
        write_strain_csv(strain, out / STRAIN)
    if report:
        build_report(out, seq=result.sequence, strain=strain, strain_config=strain_config)
    return out
