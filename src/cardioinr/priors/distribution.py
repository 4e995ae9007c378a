"""What a prior was trained on, case by case, and whether a new case lies inside it.

Every checkpoint carries a *training-distribution record*: one entry per training case with
its geometry (shape, spacing, slices, frames, frame interval, slice orientation), the size of
its heart (the LV's equivalent diameter of the heart-centred frame a prior is placed in), its
LV volumes and EF where at least two frames are labelled, the ground-truth EF and peak strains
where the case is a phantom that records them, the fitting loss the prior starts from on it
(against the loss of no motion), and how much of its images' change a mere translation
explains. :func:`applicability` compares a new case with that record at fit time: a warning
in words when the case lies outside what the prior has seen, never a refusal.

The start loss is the per-sequence objective of the kind's default adaptation settings
(:meth:`Prior.fit_config`), evaluated on fixed point draws at the finest scale, for the
prior's start at several scales of its motion; the ratio of the unscaled start's loss to
no motion's (below 1 when the prior's motion explains the images better than no motion) and
the scale the images prefer are what is compared, since the loss itself depends on image
noise and contrast. Geometry, heart size, EF and the rigid fraction come from the training
cases of the prior and of its ancestors (fine-tuned weights still carry them); the start loss
only from the last stage's cases, the only ones evaluated with these weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence as Seq

import numpy as np
import torch

from cardioinr.fit.config import FitConfig
from cardioinr.fit.fields import MotionField
from cardioinr.fit.fitter import evaluate_losses
from cardioinr.fit.preprocess import heart_frame
from cardioinr.io import Sequence

RECORD_VERSION = 1
# Ground-truth keys of a phantom's parameters worth keeping (seq.meta["params"], or passed in).
TRUTH_KEYS = ("ef", "peak_circumferential_strain", "peak_radial_strain", "peak_longitudinal_strain",
              "wall_thickness_mm", "base_descent_mm", "regional_motion_scale")
# How far outside the training range (as a factor on either side) a quantity may go before it
# is flagged. Geometry is generous (the fit works in a heart-centred frame scaled by the
# heart's size, so resolution and field of view matter little); the heart's size and the frame
# count matter more (the prior's motion is a pattern over the heart and the cycle).
TOLERANCE = {"in_plane_mm": 1.5, "slice_mm": 1.5, "slices": 1.5, "frames": 1.5, "heart_mm": 1.3}
# The start-loss ratio may exceed the worst training case by this much (absolute) before it is
# flagged; measured on held-out phantoms (docs/priors/applicability.md).
START_MARGIN = 0.10
MIN_CASES_FOR_LOSS = 3
# EF (from labels) may lie this far (absolute) outside the training cases' EF. 2D label maps give
# EF to about +-0.02 (partial volume at the endocardium); thick-slice 3D ones only to about
# +-0.05, so a wider margin would hide EF under 15 % in 2D (docs/priors/applicability.md).
EF_MARGIN = 0.02
# The rigid fraction (:func:`rigid_fraction`) may exceed the training cases' largest by this much.
RIGID_MARGIN = 0.15
# Scales of the prior's starting motion whose losses are compared (:func:`start_losses`).
MOTION_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def orientation(affine: np.ndarray) -> dict:
    """The slice normal of a voxel-to-world ``affine`` (4, 4): its unit vector in world space,
    the nearest scanner plane (``axial``, ``coronal``, ``sagittal`` for a normal along z, y, x
    of the scanner) and the angle to it in degrees, and the handedness of the voxel axes."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    n = a[:, 2] / max(float(np.linalg.norm(a[:, 2])), 1e-12)
    axis = int(np.argmax(np.abs(n)))
    return {"normal": [round(float(v), 4) for v in n], "plane": ("sagittal", "coronal", "axial")[axis],
            "oblique_deg": round(math.degrees(math.acos(min(1.0, abs(float(n[axis]))))), 1),
            "handedness": "right" if np.linalg.det(a) > 0 else "left"}


def lv_volumes(seq: Sequence) -> dict:
    """LV cavity volume (ml) in every labelled frame, and EF from the reference frame and the
    smallest volume where at least two frames are labelled (a 2D slice's volume is its area
    times the slice thickness)."""
    code = seq.label_map.lv
    if code is None or not seq.labels:
        return {}
    voxel_ml = float(np.prod(seq.spacing)) / 1000.0
    vols = {int(t): float((lab == code).sum()) * voxel_ml for t, lab in seq.labels.items()}
    out: dict = {"lv_ml": {str(t): round(v, 2) for t, v in sorted(vols.items())}}
    ed = vols.get(seq.ref_frame)
    if ed and len(vols) >= 2:
        out["ef_labels"] = round(1.0 - min(vols.values()) / ed, 4)
    return out


def rigid_fraction(seq: Sequence, max_frames: int = 8) -> float | None:
    """How much of the images' change over the cycle one in-plane translation per frame explains,
    in [0, 1]: ``1 - sum_t |I_t(x + s_t) - I_ref|^2 / sum_t |I_t - I_ref|^2`` over up to
    ``max_frames`` frames, ``s_t`` found by cross-correlation (sub-voxel, scikit-image), the
    sums over the field of view less an 8 % border (where a shift brings in no data). A beating
    heart keeps most of its change (0.0-0.35 on phantoms with 1-2 mm bulk motion, under 0.1 on
    the Sunnybrook slices); a scene that only slides explains nearly all of it. None when the
    images do not change (a still cine)."""
    from scipy.ndimage import shift as nd_shift
    from skimage.registration import phase_cross_correlation

    img = np.asarray(seq.image, dtype=np.float64)
    ref = img[..., seq.ref_frame]
    bx, by = (max(1, int(0.08 * n)) for n in ref.shape[:2])
    inner = (slice(bx, -bx), slice(by, -by))
    frames = [t for t in range(seq.n_frames) if t != seq.ref_frame]
    frames = frames[:: max(1, len(frames) // max_frames)]
    # A Hann window in-plane: the correlation is circular, and a smooth image's wrapped borders
    # would otherwise pull the peak toward no shift.
    win = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1])).reshape(ref.shape[:2] + (1,) * (ref.ndim - 2))
    moved = residual = 0.0
    for t in frames:
        f = img[..., t]
        # Plain cross-correlation (not phase): smooth images have little high-frequency content
        # to whiten, and their borders would dominate a phase correlation.
        sh = phase_cross_correlation((ref - ref.mean()) * win, (f - f.mean()) * win, upsample_factor=20,
                                     normalization=None)[0]
        sh = np.array([sh[0], sh[1]] + [0.0] * (f.ndim - 2))  # in-plane only
        before = float(((f - ref)[inner] ** 2).sum())
        after = float(((nd_shift(f, sh, order=3, mode="nearest") - ref)[inner] ** 2).sum())
        moved += before
        residual += min(after, before)
    if moved <= 1e-12 * max(float((ref ** 2).sum()), 1e-30):
        return None
    return round(1.0 - residual / moved, 4)


def case_record(seq: Sequence, truth: dict | None = None) -> dict:
    """One case of the record, without losses: geometry, heart, labelled volumes, truth.

    Args:
        seq: the case.
        truth: a phantom's drawn parameters (default ``seq.meta["params"]`` when present).
    """
    sp = seq.spacing
    frame = heart_frame(seq)
    rec = {
        "name": seq.name,
        "dim": seq.ndim_space,
        "shape": [int(s) for s in seq.shape],
        "spacing_mm": [round(float(s), 4) for s in sp],
        "in_plane_mm": round(float(np.sqrt(sp[0] * sp[1])), 4),
        "slice_mm": round(float(sp[2]), 4),
        "slices": int(seq.shape[2]),
        "frames": int(seq.n_frames),
        "frame_interval_ms": round(float(seq.frame_interval_ms), 3),
        "orientation": orientation(seq.affine),
        "heart": {"method": frame.method, "found": bool(frame.found), "diameter_mm": round(float(frame.scale), 2)},
        "rigid_fraction": rigid_fraction(seq),
    }
    rec.update(lv_volumes(seq))
    truth = truth if truth is not None else seq.meta.get("params")
    if isinstance(truth, dict):
        kept = {k: round(float(truth[k]), 4) for k in TRUTH_KEYS
                if isinstance(truth.get(k), (int, float)) and math.isfinite(float(truth[k]))}
        if kept:
            rec["truth"] = kept
    return rec


def scaled_field(f: MotionField, s: float) -> MotionField:
    """A copy of ``f`` whose displacement is ``s`` times ``f``'s everywhere (exact: the output
    layer is linear); ``s = 0`` does not move."""
    g = copy.deepcopy(f)
    with torch.no_grad():
        g.mlp.head.weight.mul_(s)
        g.mlp.head.bias.mul_(s)
    return g


def start_losses(start: MotionField, seq: Sequence, config: FitConfig) -> dict:
    """How well a prior's start (``start``, bound to ``seq``) explains ``seq``'s images.

    The fitting loss of the start scaled by each of :data:`MOTION_SCALES` on the same point
    draws (:func:`~cardioinr.fit.fitter.evaluate_losses`): ``start_loss`` (scale 1),
    ``still_loss`` (scale 0, no motion), their ratio, and ``motion_scale``, the scale the images
    prefer (the lowest loss; ties go to the scale nearest 1). A heart that moves as the prior's
    training hearts did prefers about 1; one that barely contracts prefers less, a cine with
    no heart 0."""
    losses = evaluate_losses([scaled_field(start, s) for s in MOTION_SCALES], seq, config, repeats=2)
    by_scale = dict(zip(MOTION_SCALES, losses))
    start_loss, still_loss = by_scale[1.0], by_scale[0.0]
    ratio = start_loss / still_loss if still_loss > 0 else float("nan")
    best = min(MOTION_SCALES, key=lambda s: (by_scale[s], abs(s - 1.0)))
    return {"start_loss": round(start_loss, 6), "still_loss": round(still_loss, 6), "start_ratio": round(ratio, 4),
            "motion_scale": best, "scale_losses": [round(v, 6) for v in losses]}


def training_record(cases: Seq[dict], fit_config: dict | None = None,
                    declared: dict[str, Seq[float]] | None = None) -> dict:
    """The checkpoint's ``distribution`` entry from its cases (:func:`case_record` plus losses).

    ``declared``: ranges the training population was drawn from (e.g. ``{"ef": (0.15, 0.78)}``
    for phantoms drawn from EF ranges), which a small sample need not reach; the check accepts
    the union of these and the cases' own ranges."""
    rec = {"version": RECORD_VERSION, "cases": list(cases), "loss_settings": fit_config or {}}
    if declared:
        rec["declared"] = {k: [float(v[0]), float(v[1])] for k, v in declared.items()}
    return rec


def _ranges(cases: Seq[dict]) -> dict[str, tuple[float, float]]:
    """Min and max of each compared quantity over ``cases`` (those that have it)."""
    values: dict[str, list[float]] = {}
    for c in cases:
        for key, v in (("in_plane_mm", c.get("in_plane_mm")), ("slice_mm", c.get("slice_mm")),
                       ("slices", c.get("slices") if c.get("dim") == 3 else None), ("frames", c.get("frames")),
                       ("heart_mm", (c.get("heart") or {}).get("diameter_mm") if (c.get("heart") or {}).get("found") else None),
                       ("start_ratio", c.get("start_ratio"))):
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                values.setdefault(key, []).append(float(v))
        ef = (c.get("truth") or {}).get("ef", c.get("ef_labels"))
        for key, v in (("ef", ef), ("motion_scale", c.get("motion_scale")), ("rigid_fraction", c.get("rigid_fraction"))):
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                values.setdefault(key, []).append(float(v))
    return {k: (min(v), max(v)) for k, v in values.items()}


def distribution_cases(record: dict | None, lineage: Seq[dict] = ()) -> tuple[list[dict], list[dict]]:
    """(cases for geometry and heart size: this stage's and its ancestors'; cases for the start
    loss: this stage's only)."""
    own = list((record or {}).get("cases", []))
    inherited = [c for stage in lineage for c in ((stage.get("distribution") or {}).get("cases", []))]
    return own + inherited, own


_WORDS = {
    "in_plane_mm": ("in-plane resolution", "mm"),
    "slice_mm": ("slice thickness", "mm"),
    "slices": ("slice count", ""),
    "frames": ("frame count", ""),
    "heart_mm": ("heart size (LV diameter)", "mm"),
}


def applicability(case: dict, record: dict | None, lineage: Seq[dict] = ()) -> dict:
    """Whether ``case`` (:func:`case_record` plus :func:`start_losses`) lies inside what a
    prior was trained on (its ``record`` and ``lineage``).

    Returns:
        ``{"in_distribution": bool | None, "reasons": [words], "flags": [failed checks],
        "summary": one line in words (what the CLI, report and cohort say), "checks": {quantity: {"value",
        "training_range", "allowed", "ok"}}, "n_training_cases": n}``; ``in_distribution`` is
        None when the prior records no training distribution (checkpoints made before it
        existed). A quantity is flagged when it lies outside the training range widened by
        :data:`TOLERANCE` (a factor each side); the start-loss ratio when it exceeds the worst
        training case by :data:`START_MARGIN` (the prior's motion explains this case's images
        markedly worse than any training case's); the motion scale the images prefer
        (:func:`start_losses`) when below the training cases' or more than one step of
        :data:`MOTION_SCALES` above; EF from the labels (when at
        least two frames are labelled) when more than :data:`EF_MARGIN` outside the training
        cases' EF (truth or labels); images that mostly slide (:func:`rigid_fraction` more
        than :data:`RIGID_MARGIN` above the training cases'); a heart not found in the images.
    """
    geo_cases, loss_cases = distribution_cases(record, lineage)
    if not geo_cases:  # (declared ranges alone are no record of what was seen)
        return {"in_distribution": None, "reasons": ["the prior records no training distribution"], "flags": [],
                "checks": {}, "n_training_cases": 0,
                "summary": "unknown: the prior records no training distribution"}
    ranges = _ranges(geo_cases)
    for rec in [record or {}, *[stage.get("distribution") or {} for stage in lineage]]:
        for key, (lo, hi) in (rec.get("declared") or {}).items():
            old_lo, old_hi = ranges.get(key, (lo, hi))
            ranges[key] = (min(lo, old_lo), max(hi, old_hi))
    checks: dict[str, dict] = {}
    reasons: list[str] = []
    value_of = {"in_plane_mm": case.get("in_plane_mm"), "slice_mm": case.get("slice_mm"),
                "slices": case.get("slices") if case.get("dim") == 3 else None, "frames": case.get("frames"),
                "heart_mm": (case.get("heart") or {}).get("diameter_mm") if (case.get("heart") or {}).get("found") else None}
    for key, v in value_of.items():
        if v is None or key not in ranges:
            continue
        lo, hi = ranges[key]
        tol = TOLERANCE[key]
        allowed = (lo / tol, hi * tol)
        ok = allowed[0] <= float(v) <= allowed[1]
        checks[key] = {"value": v, "training_range": [lo, hi], "allowed": [round(allowed[0], 3), round(allowed[1], 3)],
                       "ok": ok}
        if not ok:
            name, unit = _WORDS[key]
            unit = f" {unit}" if unit else ""
            reasons.append(f"{name} {float(v):g}{unit} is outside the training cases' {lo:g}-{hi:g}{unit}")
    ef = case.get("ef_labels")
    if isinstance(ef, (int, float)) and "ef" in ranges:
        # EF needs a second labelled frame (a dataset's ES labels): the images alone do not give it.
        lo, hi = ranges["ef"]
        ok = lo - EF_MARGIN <= ef <= hi + EF_MARGIN
        checks["ef"] = {"value": ef, "training_range": [lo, hi], "allowed": [round(lo - EF_MARGIN, 4), round(hi + EF_MARGIN, 4)],
                        "ok": ok}
        if not ok:
            reasons.append(f"EF {ef * 100:.0f} % (from the labels) is outside the training cases' "
                           f"{lo * 100:.0f}-{hi * 100:.0f} %")
    rigid = case.get("rigid_fraction")
    if isinstance(rigid, (int, float)) and "rigid_fraction" in ranges and len(geo_cases) >= MIN_CASES_FOR_LOSS:
        hi = ranges["rigid_fraction"][1]
        ok = rigid <= hi + RIGID_MARGIN
        checks["rigid_fraction"] = {"value": rigid, "training_range": list(ranges["rigid_fraction"]),
                                    "allowed": [0.0, round(hi + RIGID_MARGIN, 4)], "ok": ok}
        if not ok:
            reasons.append(f"the images mostly slide rather than beat ({rigid * 100:.0f} % of their change is one "
                           f"translation per frame; training cases up to {hi * 100:.0f} %)")
    heart = case.get("heart") or {}
    if heart and not heart.get("found", True):
        checks["heart_found"] = {"value": False, "ok": False}
        reasons.append("no beating heart was located in the images")
    loss_ranges = _ranges(loss_cases)
    ratio = case.get("start_ratio")
    if isinstance(ratio, (int, float)) and math.isfinite(ratio) and "start_ratio" in loss_ranges \
            and len(loss_cases) >= MIN_CASES_FOR_LOSS:
        lo, hi = loss_ranges["start_ratio"]
        ok = ratio <= hi + START_MARGIN
        checks["start_ratio"] = {"value": ratio, "training_range": [lo, hi], "allowed": [None, round(hi + START_MARGIN, 4)],
                                 "ok": ok}
        if not ok:
            reasons.append(f"the prior's starting motion fits this case's images poorly (loss {ratio:.2f} x that of no "
                           f"motion; training cases {lo:.2f}-{hi:.2f}): its motion may differ from any it has seen")
    scale = case.get("motion_scale")
    if isinstance(scale, (int, float)) and "motion_scale" in loss_ranges and len(loss_cases) >= MIN_CASES_FOR_LOSS:
        lo, hi = loss_ranges["motion_scale"]
        # The grid is coarse above 1 (steps of a third to a half): one step beyond the largest
        # training scale is still "as much motion" (held-out phantoms of the built-in population
        # reach it); below, the smallest training scale is the limit (0 means no motion at all).
        top = min([s for s in MOTION_SCALES if s > hi], default=hi)
        ok = lo <= scale <= top
        checks["motion_scale"] = {"value": scale, "training_range": [lo, hi], "allowed": [lo, top], "ok": ok}
        if not ok:
            reasons.append(f"the images call for {scale:g} x the prior's motion (training cases {lo:g}-{hi:g} x): "
                           + ("the heart barely moves, or there is none" if scale < lo else "far more motion than it has seen"))
    summary = (f"within what the prior was trained on ({len(geo_cases)} cases)" if not reasons
               else "outside what the prior was trained on: " + "; ".join(reasons))
    return {"in_distribution": not reasons, "reasons": reasons, "flags": [k for k, c in checks.items() if not c["ok"]],
            "checks": checks, "n_training_cases": len(geo_cases), "summary": summary}


def summarise_record(record: dict | None) -> list[str]:
    """A few lines on a training-distribution record: the ranges of what was seen."""
    cases = list((record or {}).get("cases", []))
    if not cases:
        return ["no training-distribution record (made before cardioinr recorded one)"]
    r = _ranges(cases)

    def rng(key: str, fmt: str = "{:g}") -> str:
        return f"{fmt.format(r[key][0])}-{fmt.format(r[key][1])}" if key in r else "n/a"

    efs = [c.get("truth", {}).get("ef", c.get("ef_labels")) for c in cases]
    efs = [e for e in efs if isinstance(e, (int, float))]
    planes = sorted({c.get("orientation", {}).get("plane", "?") for c in cases})
    oblique = [c.get("orientation", {}).get("oblique_deg", 0.0) for c in cases]
    lines = [
        f"{len(cases)} cases, {sum(1 for c in cases if c.get('truth'))} with ground truth, "
        f"{sum(1 for c in cases if 'ef_labels' in c)} with EF from labels",
        f"in-plane {rng('in_plane_mm', '{:.2f}')} mm, slices {rng('slice_mm', '{:.1f}')} mm thick"
        + (f", {rng('slices')} slices" if "slices" in r else "") + f", {rng('frames')} frames",
        f"heart (LV diameter) {rng('heart_mm', '{:.0f}')} mm; orientation {', '.join(planes)} "
        f"(up to {max(oblique):.0f} deg oblique)",
    ]
    if efs:
        drawn = (record or {}).get("declared", {}).get("ef")
        lines.append(f"EF {min(efs) * 100:.0f}-{max(efs) * 100:.0f} % ({len(efs)} cases"
                     + (f"; drawn from {drawn[0] * 100:.0f}-{drawn[1] * 100:.0f} %)" if drawn else ")"))
    if "start_ratio" in r:
        lines.append(f"start loss / no-motion loss {rng('start_ratio', '{:.2f}')}; preferred motion scale "
                     f"{rng('motion_scale')}; change explained by a translation {rng('rigid_fraction', '{:.2f}')}")
    return lines


__all__ = ["EF_MARGIN", "MIN_CASES_FOR_LOSS", "RIGID_MARGIN", "rigid_fraction", "RECORD_VERSION", "START_MARGIN", "TOLERANCE", "TRUTH_KEYS", "applicability",
           "case_record", "distribution_cases", "lv_volumes", "orientation", "start_losses", "scaled_field", "MOTION_SCALES",
           "summarise_record", "training_record"]
