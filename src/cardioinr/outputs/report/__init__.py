"""A self-contained HTML report of one fit output folder.

:func:`build_report` reads what a ``cardioinr fit`` output folder holds (``displacement.nii.gz``,
``labels.nii.gz``, ``field.pt``, ``metrics.json``, ``strain.csv``; the input cine from
``metrics.json["sequence"]["source"]`` when it still exists, or given directly) and writes
``report.html`` beside them. The page works offline and alone: CSS is inline, every plot is a
base64 PNG ``data:`` URI, the motion animation a base64 GIF; there is no script and no external
reference, so the file can be mailed or archived as is.

Sections (element ids): ``input`` (sequence summary), ``fit`` (settings, timings, loss curve),
``strain`` (global and segmental strain curves, peak table), ``bullseye`` (AHA bull's eyes at
peak strain and the segment map), ``cavity`` (LV area/volume curve, EF, rotation/twist),
``motion`` (animated deformed grid and propagated contours), ``folding`` (negative Jacobian
determinant), ``accuracy`` (Dice/HD95/EPE when ``metrics.json`` holds ``"evaluation"``).
Missing inputs make a section say what is missing rather than fail the report.

Strain is recomputed by :mod:`cardioinr.analysis.strain` from ``field.pt`` (exact gradients) or, without
it, from ``displacement.nii.gz`` (finite differences); when ``strain.csv`` exists it is compared
with the recomputation and a mismatch is flagged on the page.

Modules: :mod:`~cardioinr.outputs.report.build` (:func:`build_report`: assemble the page, write it),
:mod:`~cardioinr.outputs.report.sections` (each section's HTML), :mod:`~cardioinr.outputs.report.figures`
(matplotlib figures), :mod:`~cardioinr.outputs.report.animation` (the motion GIF and its palette),
:mod:`~cardioinr.outputs.report.markup` (escaping, numbers, tables, notes, CSS).
"""

from cardioinr.outputs.report.build import build_report
from cardioinr.outputs.report.sections import SECTIONS

__all__ = ["SECTIONS", "build_report"]
