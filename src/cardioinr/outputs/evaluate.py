"""Scoring a fit folder against ground truth: the folder read through the contract, the scores
computed by :func:`cardioinr.analysis.metrics.evaluate_arrays`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.analysis.metrics import evaluate_arrays
from cardioinr.core.errors import InputError
from cardioinr.core.serialise import json_ready
from cardioinr.geometry import spacing_from_affine
from cardioinr.geometry.kinematics import HEART_MARGIN_MM
from cardioinr.io import ACDC, LabelMap, load_label_volume
from cardioinr.outputs.contract import DISPLACEMENT, LABELS, read_displacement, read_labels_4d, read_ref_frame

__all__ = ["evaluate_folder"]


def evaluate_folder(
    out_dir: str | os.PathLike,
    truth_displacement: str | os.PathLike | None = None,
    truth_labels: str | os.PathLike | None = None,
    frame_labels: Mapping[int, str | os.PathLike] | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int | None = None,
    heart_margin_mm: float = HEART_MARGIN_MM,
) -> dict[str, Any]:
    """Score a ``cardioinr fit`` output folder against ground truth.

    Reads ``displacement.nii.gz`` (required) and ``labels.nii.gz`` (if present) from ``out_dir``
    (the output contract); the spacing comes from the displacement file's affine.

    Args:
        out_dir: the fit's output folder.
        truth_displacement: ``(X, Y, Z, T, 3)`` true displacement NIfTI in mm (e.g. a phantom's
            ``caseNNN_truth_displacement.nii.gz``), same grid and reference frame.
        truth_labels: ``(X, Y, Z, T)`` NIfTI of true labels for every frame (e.g. a phantom's
            ``caseNNN_labels.nii.gz``).
        frame_labels: ``{frame: path}`` label maps ``(X, Y, Z)`` for some frames only (e.g.
            Sunnybrook ED and ES); used where ``truth_labels`` is not given, and overriding it
            for the frames it names when both are.
        label_map: codes of LV, MYO, RV in both prediction and truth.
        ref_frame: the reference frame; default ``metrics.json``'s ``ref_frame`` if present, else
            the first all-zero frame of the displacement.
        heart_margin_mm: see :func:`evaluate_arrays`.

    Returns:
        :func:`evaluate_arrays`'s dict plus ``"inputs"`` (the files read).

    Raises:
        InputError: a file is missing or unreadable, or shapes / spacings do not match.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: fit output folder not found")
    disp_path = out_dir / DISPLACEMENT
    pred_disp, affine = read_displacement(disp_path, "displacement")
    shape3, n_frames = tuple(pred_disp.shape[:3]), pred_disp.shape[3]
    spacing = spacing_from_affine(affine)
    inputs: dict[str, Any] = {"displacement": str(disp_path)}

    pred_labels = None
    lab_path = out_dir / LABELS
    if lab_path.exists():
        pred_labels = read_labels_4d(lab_path, shape3 + (n_frames,), "propagated labels")
        inputs["labels"] = str(lab_path)

    truth_disp = None
    if truth_displacement is not None:
        truth_disp, t_aff = read_displacement(Path(truth_displacement), "true displacement")
        if truth_disp.shape != pred_disp.shape:
            raise InputError(
                f"{truth_displacement}: true displacement has shape {truth_disp.shape}, "
                f"the fit's displacement has {pred_disp.shape}"
            )
        t_sp = spacing_from_affine(t_aff)
        if not np.allclose(t_sp, spacing, rtol=1e-3, atol=1e-4):
            raise InputError(
                f"{truth_displacement}: voxel size {np.round(t_sp, 4).tolist()} mm differs from the fit's "
                f"{np.round(spacing, 4).tolist()} mm"
            )
        inputs["truth_displacement"] = str(truth_displacement)

    truth: dict[int, np.ndarray] | None = None
    if truth_labels is not None:
        all_frames = read_labels_4d(Path(truth_labels), shape3 + (n_frames,), "true labels")
        truth = {t: all_frames[..., t] for t in range(n_frames)}
        inputs["truth_labels"] = str(truth_labels)
    if frame_labels:
        truth = dict(truth or {})
        for t, p in frame_labels.items():
            t = int(t)
            if not -n_frames <= t < n_frames:
                raise InputError(f"{p}: labels given for frame {t}, but the fit has {n_frames} frames")
            truth[t % n_frames] = load_label_volume(p, shape3)
        inputs["frame_labels"] = {int(t): str(p) for t, p in frame_labels.items()}
    if truth is not None and pred_labels is None:
        raise InputError(f"{out_dir}: no {LABELS} to score against the true labels (fit with --seg)")

    if ref_frame is None:
        ref_frame = read_ref_frame(out_dir)
        if ref_frame is not None and not 0 <= ref_frame < n_frames:
            ref_frame = None
    result = evaluate_arrays(
        pred_disp, pred_labels, truth_disp, truth, None,
        spacing=spacing, label_map=label_map, ref_frame=ref_frame, heart_margin_mm=heart_margin_mm,
    )
    result["inputs"] = json_ready(inputs)
    return result
