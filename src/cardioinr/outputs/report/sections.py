"""The report's sections, one function each, in page order (:data:`SECTIONS`, the element ids):
``input`` (sequence summary), ``fit`` (settings, timings, loss curve), ``strain`` (global and
segmental strain curves, peak table, agreement with ``strain.csv``), ``bullseye`` (AHA bull's
eyes at peak strain and the segment map), ``cavity`` (LV area/volume curve, EF, rotation/twist),
``motion`` (animated deformed grid and propagated contours), ``folding`` (negative Jacobian
determinant), ``accuracy`` (Dice/HD95/EPE when ``metrics.json`` holds ``"evaluation"``).

Each returns the section's HTML; a missing input makes the section say what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.analysis.strain import AHA_NAMES, GLOBAL, StrainResult
from cardioinr.core.console import first_line
from cardioinr.core.errors import CardioInrError
from cardioinr.geometry import spacing_from_affine, spatial_dim
from cardioinr.outputs.contract import DISPLACEMENT, FIELD, METRICS, STRAIN
from cardioinr.outputs.folder import FitFolder
from cardioinr.outputs.report.animation import motion_gif
from cardioinr.outputs.report.figures import (
    COLOURS,
    bullseye_figure,
    cavity_figure,
    folding_figure,
    loss_figure,
    segment_map_figure,
    strain_figure,
)
from cardioinr.outputs.report.markup import Raw, esc, flatten, img, kv, note, num, section, table
from cardioinr.outputs.tables import read_strain_csv

__all__ = ["SECTIONS", "accuracy_section", "bullseye_section", "cavity_section", "fit_section", "folding_section",
           "input_section", "long_axis_caveat", "long_axis_step_mm", "motion_section", "rv_ef_caveat",
           "single_slice_caveat", "strain_section"]
# Sections every report has, in order (a multi-view fit adds "views" after "fit").
SECTIONS = ("input", "fit", "strain", "bullseye", "cavity", "motion", "folding", "accuracy")


def input_section(f: FitFolder) -> str:
    ms = f.metrics.get("sequence", {}) if isinstance(f.metrics.get("sequence"), dict) else {}
    sp = f.spacing
    items = [
        ("name", ms.get("name") or (f.seq.name if f.seq else f.path.name)),
        ("grid (X, Y, Z)", " x ".join(str(s) for s in f.shape)),
        ("frames", f.n_frames),
        ("voxel size (mm)", " x ".join(f"{s:.3g}" for s in sp)),
        ("frame interval (ms)", f"{f.frame_interval_ms:.4g}"),
        ("reference frame", f.ref_frame),
        ("cycle (ms)", f"{f.n_frames * f.frame_interval_ms:.0f}"),
        ("motion", "2D+t (single slice)" if spatial_dim(f.shape) == 2 else "3D+t (stack)"),
        ("label map", ", ".join(f"{n} = {c}" for n, c in f.label_map.items())),
        ("source", ms.get("source") or (f.seq.meta.get("source") if f.seq else None) or "unknown"),
        ("image shown", "yes" if f.seq is not None else "no"),
        ("field", f"{FIELD} (continuous)" if f.field is not None else "dense displacement only"),
    ]
    body = kv(items)
    if f.ref_labels is not None:
        rows = []
        vox = float(np.prod(sp[:2])) if spatial_dim(f.shape) == 2 else float(np.prod(sp)) / 1000.0
        unit = "mm²" if spatial_dim(f.shape) == 2 else "ml"
        for name, code in f.label_map.items():
            n = int(np.sum(f.ref_labels == code))
            rows.append([name, code, n, n * vox])
        body += "<h3>Reference labels</h3>" + table(["structure", "code", "voxels", f"size ({unit})"], rows)
    return section("input", "Input", body)


def describe_start(prior: Any) -> str:
    """What the fit started from, in words, from metrics.json's ``prior`` entry (absent in
    folders written before built-in priors: those fits started from a prior only when the
    entry names one)."""
    if not isinstance(prior, Mapping):
        return "random weights (a fit from scratch)"
    src = prior.get("source")
    if src == "builtin":
        return f"built-in prior {prior.get('name')} (version {prior.get('version')}, {prior.get('kind')})"
    if src == "none" or (src is None and not prior.get("path")):
        why = prior.get("reason")
        return "random weights (a fit from scratch)" + (f": {why}" if why else "")
    text = f"prior {prior.get('path')} ({prior.get('kind')})"
    parent = prior.get("fine_tuned_from")
    if isinstance(parent, Mapping) and parent.get("name"):
        text += f", fine-tuned from {parent.get('name')}" + (f" {parent['version']}" if parent.get("version") else "")
    return text


def describe_applicability(prior: Any) -> tuple[str, bool] | None:
    """Whether the case lies inside the prior's training distribution, in words (the check's own
    summary, :func:`cardioinr.priors.distribution.applicability`), and whether that is a warning
    (metrics.json's ``prior.applicability``); None when not checked."""
    app = prior.get("applicability") if isinstance(prior, Mapping) else None
    if not isinstance(app, Mapping) or not isinstance(app.get("summary"), str):
        return None
    return app["summary"], app.get("in_distribution") is False


def fit_section(f: FitFolder) -> str:
    m = f.metrics
    if not m:
        return section("fit", "Fit", note(f"{METRICS} not found: nothing to show about the fit"))
    keys = [("fit time (s)", "fit_seconds"), ("total time (s)", "total_seconds"), ("steps", "steps"),
            ("restarts", "restarts"), ("% negative det F (grid)", "percent_negative_jacobian"),
            ("% negative det F (heart)", "percent_negative_jacobian_heart"),
            ("min det F", "min_jacobian_determinant"), ("max |u| (mm)", "max_displacement_mm"),
            ("cardioinr", "cardioinr_version")]
    items = [(label, num(m[k]) if not isinstance(m[k], str) else m[k]) for label, k in keys if k in m]
    items.insert(0, ("started from", describe_start(m.get("prior"))))
    loc = m.get("heart_location")
    if isinstance(loc, Mapping) and loc.get("method"):
        used = loc.get("outlines_used_by")
        extra = f"; its LV outlines stood in for labels ({', '.join(map(str, used))})" if used else ""
        items.insert(1, ("heart located by", f"{loc['method']}: {loc.get('detail', '')}{extra}"))
    mended = m.get("mended_folds")
    if isinstance(mended, Mapping) and "folded_voxels_before" in mended:
        items.append(("folds mended", f"{mended['folded_voxels_before']} folded voxels (summed over frames) when the "
                      f"fit ended, {mended.get('folded_voxels_after', '?')} after {mended.get('steps', '?')} mending steps"))
    applic = describe_applicability(m.get("prior"))
    if applic is not None:
        items.insert(1, ("prior applicability", applic[0]))
    parts = [kv(items)]
    if applic is not None and applic[1]:
        parts.insert(0, note("Warning: this case lies " + applic[0] + ". The fit may need more steps than the "
                             "prior's default budget, or a prior fine-tuned on similar cases "
                             "(cardioinr train-prior --from).", bad=True))
    curve = m.get("loss_curve")
    row = []
    if isinstance(curve, list) and len(curve) > 1:
        row.append("<div>" + img(loss_figure(curve, m.get("steps")), "loss curve", width=560) + "</div>")
    fl = m.get("final_losses")
    if isinstance(fl, Mapping) and fl:
        row.append("<div><h3>Final losses</h3>" + table(["term", "value"], [[k, v] for k, v in fl.items()]) + "</div>")
    if row:
        parts.append('<div class="row">' + "".join(row) + "</div>")
    cfg = m.get("config")
    if isinstance(cfg, Mapping) and cfg:
        flat = flatten(cfg)
        half = (len(flat) + 2) // 3
        cols = [flat[i:i + half] for i in range(0, len(flat), half)]
        parts.append("<h3>Settings</h3>" + '<div class="row">' + "".join(
            "<div>" + table(["setting", "value"], [[k, v if not isinstance(v, (list, tuple)) else ", ".join(map(str, v))] for k, v in c]) + "</div>"
            for c in cols) + "</div>")
    return section("fit", "Fit", "".join(parts))


def _compare_csv(f: FitFolder, s: StrainResult) -> str:
    path = f.path / STRAIN
    if not path.is_file():
        return f'<p class="muted">No {STRAIN} in the folder; values below are computed for this report.</p>'
    try:
        rows = read_strain_csv(path)
    except CardioInrError as e:
        return note(f"{STRAIN} unreadable ({first_line(e)})", bad=True)
    ours = {(r["frame"], r["region"]): r for r in s.rows()}
    worst = 0.0
    missing = 0
    for r in rows:
        o = ours.get((r["frame"], r["region"]))
        if o is None:
            missing += 1
            continue
        for c in ("radial_pct", "circumferential_pct", "longitudinal_pct"):
            a, b = r[c], o[c]
            if np.isfinite(a) and np.isfinite(b):
                worst = max(worst, abs(a - b))
            elif np.isfinite(a) != np.isfinite(b):
                worst = math.inf
    if missing or len(rows) != len(ours) or worst > 0.05:
        return note(f"{STRAIN} differs from this report's analysis (largest difference {worst:.3g} points, "
                     f"{len(rows)} rows vs {len(ours)}); it was written by other settings or another version", bad=True)
    return f'<p class="muted ok">{STRAIN} matches this analysis (within 0.05 percentage points).</p>'


# A short-axis stack with slices at least this far apart along the long axis (mm) barely sees
# long-axis motion: its longitudinal strain gets a caveat unless long-axis views were fitted too.
THICK_SLICE_MM = 5.0


def long_axis_step_mm(s: StrainResult) -> float:
    """The grid's step along the analysis' long axis, mm: a short-axis stack's slice spacing (the
    long axis's direction cosines weight the three voxel sizes)."""
    la = np.abs(np.asarray(s.frame.long_axis, dtype=np.float64))
    return float(la @ np.asarray(s.spacing, dtype=np.float64) / max(float(la.sum()), 1e-9))


def long_axis_caveat(s: StrainResult, metrics: Mapping[str, Any]) -> str | None:
    """The caveat on longitudinal strain from a short-axis stack alone (None: 2D, thin slices, or
    a multi-view fit). Measured (docs/multiview.md, eighth session): on four phantom stacks with
    10 mm slices the midwall GLS of the stack alone came out 0.5-5.3 points less negative than the
    truth's, with long-axis views within -0.3..+1.8."""
    if s.dim != 3 or metrics.get("views"):
        return None
    step = long_axis_step_mm(s)
    if step < THICK_SLICE_MM:
        return None
    return (f"Longitudinal strain (and GLS) here come from short-axis slices {step:.3g} mm apart alone, which "
            "barely see motion along the long axis: on phantom stacks with 10 mm slices the stack alone "
            "under-estimated peak midwall GLS by 0.5-5.3 points (with long-axis views within 2). "
            "Fit with the long-axis cines (--lax) for GLS.")


def single_slice_caveat(s: StrainResult) -> str | None:
    """The caveat on the strain of one short-axis slice (None for stacks). Measured
    (benchmarks/slice2d.py, docs/multiview.md, ninth session): the mid-ventricular slices of eight
    3D phantom hearts (10 mm, their material moving 3.9-7.1 mm through the slice by end-systole),
    fitted as 2D cines, came out -2.5..+8.7 points off on the radial peak and -0.1..+3.8 on the
    circumferential one, both within 2 on one of eight, where 2D phantoms, which have no
    through-plane motion, are within 1.4."""
    if s.dim != 2:
        return None
    return ("One slice cannot follow tissue that moves through it, and the heart's tissue moves several "
            "millimetres through a short-axis slice as it shortens (most near the base): on mid-ventricular "
            "slices of phantom hearts (material moving 4-7 mm through them) the peaks here were off by up to "
            "9 points (radial) and 4 (circumferential). Fit a short-axis stack, with the long-axis cines "
            "(--lax), for strain to compare.")


def rv_ef_caveat(s: StrainResult) -> str | None:
    """The caveat on the RV EF of labels carried through a short-axis stack of thick slices (None:
    2D, thin slices, or no RV label). Long-axis views do not lift it: it is the labels', not the
    motion's. Measured (docs/groups.md, ninth session): on ten phantom stacks with 10 mm slices the
    ED labels carried by the phantoms' exact motion gave an RV EF 1.2-13.6 points above the truth's
    on every one, and 14.5 on a default 8 mm stack (the RV's apical tip enters the apical slice
    and its base leaves the basal one as the heart shortens, and ED labels that far apart hold no
    anatomy between slices), where the LV's EF from the fits was within 1.4."""
    if s.dim != 3 or getattr(s, "rv_cavity", None) is None:
        return None
    step = long_axis_step_mm(s)
    if step < THICK_SLICE_MM:
        return None
    return (f"The RV EF comes from labels carried on short-axis slices {step:.3g} mm apart, which do not hold "
            "the RV's shape between slices: as the heart shortens, its apical tip enters slices that held "
            "none of it at end-diastole. On phantom stacks with 8-10 mm slices, labels carried by the exact "
            "motion gave an RV EF 1-15 points above the truth's, never below: read it as likely "
            "over-estimated.")


def strain_section(f: FitFolder, s: StrainResult | None, why: str | None) -> str:
    if s is None:
        return section("strain", "Strain", note(f"strain not computed: {why}"))
    src = (f"exact gradients of the continuous field ({FIELD})" if s.source == "field"
           else f"finite differences of {DISPLACEMENT}")
    body = [f'<p class="muted">Lagrangian strain from {esc(src)}; engineering strain sqrt(1 + 2 e·E·e) − 1 '
            f"averaged over {int(s.n_voxels[0])} myocardial voxels of the reference frame. Directions: long axis "
            f"({', '.join(f'{v + 0.0:.3g}' for v in s.frame.long_axis)}) in array axes (base → apex, from {esc(s.frame.apex_from)}), "
            f"septum from {esc(s.frame.septum_source)}.</p>", _compare_csv(f, s)]
    for caveat in (long_axis_caveat(s, f.metrics), single_slice_caveat(s)):
        if caveat:
            body.append(note(caveat))
    body.append(img(strain_figure(s), "strain curves"))
    rows = []
    for r, n in zip(s.regions, s.n_voxels):
        p = s.peaks(r)
        name = "global" if r == GLOBAL else f"{int(r[3:])} {AHA_NAMES[int(r[3:])]}"
        rows.append([name, int(n), p["radial_pct"], p["circumferential_pct"], p["longitudinal_pct"]])
    body.append("<h3>Peak engineering strain (%) over the cycle</h3>"
                + table(["region", "voxels", "radial (max)", "circumferential (min)", "longitudinal (min)"], rows))
    return section("strain", "Strain over the cycle", "".join(body))


def bullseye_section(f: FitFolder, s: StrainResult | None, k: int) -> str:
    if s is None or len(s.regions) < 2:
        return section("bullseye", "AHA segments", note("no segmental strain (needs a myocardium label)"))
    t = s.peak_frame()
    row = ('<div class="row"><div>' + img(bullseye_figure(s, t), "bull's eye") + "</div><div>"
           + img(segment_map_figure(s, f, k), "segment map", width=300) + "</div></div>")
    level = f" Single slice, numbered as the {esc(s.config.slice_level_2d)} level." if s.dim == 2 else ""
    return section("bullseye", "AHA bull's eye at peak strain",
                    f'<p class="muted">Segment means of engineering strain (%) at frame {t} '
                    f"({s.times_ms[t]:.0f} ms, peak global circumferential shortening). Grey: no myocardium in "
                    f"that segment.{level}</p>" + row)


def cavity_section(s: StrainResult | None, why: str | None) -> str:
    if s is None:
        return section("cavity", "LV cavity and ejection fraction", note(f"not computed: {why}"))
    ef, ed, es = s.ejection()
    what = "area" if s.cavity_unit == "mm^2" else "volume"
    unit = "mm²" if s.cavity_unit == "mm^2" else "ml"
    cav = s.cavity_best
    items: list[tuple[str, Any]] = [("EF (%)", Raw(f'<span class="big">{num(ef, 1)}</span>'))]
    if cav is not None and ed >= 0:
        items += [(f"ED {what} ({unit})", f"{cav[ed]:.4g} (frame {ed})"), (f"ES {what} ({unit})", f"{cav[es]:.4g} (frame {es})")]
    if s.cavity is not None and s.cavity_jacobian is not None:
        from cardioinr.analysis.strain import ejection_fraction

        items.append(("EF from ∫det F (%)", num(ejection_fraction(s.cavity_jacobian)[0], 1)))
    if getattr(s, "rv_cavity", None) is not None:
        from cardioinr.analysis.strain import ejection_fraction

        rv_ef, rv_ed, rv_es = ejection_fraction(s.rv_cavity)
        items.append(("RV EF (%)", num(rv_ef, 1)))
        if rv_ed >= 0:
            items.append((f"RV ED / ES {what} ({unit})", f"{s.rv_cavity[rv_ed]:.4g} / {s.rv_cavity[rv_es]:.4g}"))
    if s.twist_deg is not None:
        items.append(("peak twist (°)", num(s.summary()["peak_twist_deg"], 2)))
        if s.torsion_deg_per_cm is not None:
            items.append(("peak torsion (°/cm)", num(s.summary()["peak_torsion_deg_per_cm"], 2)))
    else:
        items.append(("peak rotation (°)", num(s.summary()["peak_rotation_deg"][GLOBAL], 2)))
    src = "propagated labels" if s.cavity is not None else "∫ det F over the reference cavity (no propagated labels)"
    body = kv(items) + f'<p class="muted">EF = (max − min) / max of the LV cavity {what} from {esc(src)}.' \
        + (" A single slice gives an area fraction, not a volumetric EF." if s.dim == 2 else "") + "</p>"
    caveat = rv_ef_caveat(s)
    if caveat:
        body += note(caveat)
    return section("cavity", "LV cavity, ejection fraction and rotation", body + img(cavity_figure(s), "cavity curve"))


def motion_section(f: FitFolder, k: int) -> tuple[str, int]:
    gif, n = motion_gif(f, k)
    what = "image" if f.seq is not None else "no image (input cine not available)"
    body = (f'<p class="muted">Reference grid (6 mm) carried by the motion and propagated label contours '
            f'(<span style="color:{COLOURS["LV"]}">LV</span>, <span style="color:{COLOURS["MYO"]}">MYO</span>, '
            f'<span style="color:{COLOURS["RV"]}">RV</span>) over the {what}'
            + (f", slice {k} of {f.shape[2]}" if spatial_dim(f.shape) == 3 else "") + f"; {n} frames, looping.</p>"
            + img(gif, "motion animation", mime="image/gif", width=420))
    return section("motion", "Motion", body), n


def folding_section(f: FitFolder, k: int) -> str:
    stats, fig = folding_figure(f, k)
    pct = stats["percent_folded"]
    cls = "ok" if pct == 0 else "warn"
    items = [("% voxels x frames with det F <= 0", Raw(f'<span class="big {cls}">{num(pct, 4)}</span>')),
             ("min det F", num(stats["min_det"], 3))]
    heart = f.metrics.get("percent_negative_jacobian_heart")
    if heart is not None:
        items.append(("% folded near the heart (fit)", num(heart, 4)))
    body = kv(items) + f'<p class="muted">det F from central differences of {DISPLACEMENT} on the grid; ' \
        "negative values mean the motion folds (non-physical). Left: the smallest det F over all frames" \
        + (f" (slice {k})" if spatial_dim(f.shape) == 3 else "") + ", folded voxels in red.</p>" + img(fig, "folding map")
    return section("folding", "Folding check", body)


def accuracy_section(f: FitFolder) -> str:
    ev = f.metrics.get("evaluation")
    if not isinstance(ev, Mapping) or not ev:
        return section("accuracy", "Accuracy", f'<p class="muted">No ground-truth evaluation in {METRICS} '
                        '(run <code>cardioinr evaluate</code> or fit a phantom with its truth).</p>')
    parts = []
    labels = ev.get("labels")
    if isinstance(labels, Mapping) and isinstance(labels.get("summary"), Mapping):
        rows = [[name, d.get("n_frames"), d.get("dice_mean"), d.get("dice_min"), d.get("hd95_mean"), d.get("hd95_max")]
                for name, d in labels["summary"].items() if isinstance(d, Mapping)]
        parts.append("<h3>Propagated labels</h3>" + table(
            ["structure", "frames", "Dice mean", "Dice min", "HD95 mean (mm)", "HD95 max (mm)"], rows))
    epe = ev.get("epe")
    if isinstance(epe, Mapping):
        rows = [[region, d.get("mean"), d.get("median"), d.get("p95"), d.get("max")]
                for region, d in epe.items() if isinstance(d, Mapping)]
        parts.append("<h3>End-point error (mm)</h3>" + table(["region", "mean", "median", "p95", "max"], rows))
    fold = ev.get("folding")
    if isinstance(fold, Mapping):
        rows = [[region, d.get("percent_folded"), d.get("min_det")] for region, d in fold.items() if isinstance(d, Mapping)]
        parts.append("<h3>Folding</h3>" + table(["region", "% det F <= 0", "min det F"], rows))
    other = [(k, v) for k, v in flatten({k: v for k, v in ev.items() if k not in ("labels", "epe", "folding")})
             if not isinstance(v, (list, dict))]
    if other:
        parts.append("<h3>Other</h3>" + table(["quantity", "value"], [[k, v] for k, v in other]))
    return section("accuracy", "Accuracy against ground truth", "".join(parts) or note("evaluation holds no tables"))


def views_section(f: FitFolder, s: StrainResult | None) -> str:
    """A multi-view fit's long-axis views: the offsets learned and, per view, end-diastole and
    end-systole with the carried contours (empty for a single-cine fit)."""
    info = f.metrics.get("views")
    if not isinstance(info, dict) or len(info.get("names") or []) < 2:
        return ""
    from cardioinr.io import load_sequence, read_nifti
    from cardioinr.outputs.contract import view_labels_name
    from cardioinr.outputs.report.figures import view_figure

    body = [f'<p class="muted">One field fitted to the short-axis stack and the long-axis views '
            f'{esc(", ".join(info["names"][1:]))}; every view below shows its own reference labels carried by '
            "that field.</p>"]
    shifts = info.get("shifts_mm")
    if shifts:
        rows = [[f"SAX slice {k}", *v] for k, v in enumerate(shifts.get("sax", []))]
        rows += [[n, *v] for n, v in shifts.items() if n != "sax"]
        body.append("<h3>Breath-hold offsets learned (mm, along each slice's first two axes)</h3>"
                    + table(["slice or view", "offset i", "offset j"], rows))
    sources = info.get("sources") or {}
    es_sax = s.ejection()[2] if s is not None else -1
    n_sax = len(s.times_ms) if s is not None else 0
    for name in info["names"][1:]:
        path = f.path / view_labels_name(name)
        if not path.is_file():
            body.append(note(f"{name}: no labels for this view (give --lax-seg to see its contours)"))
            continue
        try:
            lab, aff, _ = read_nifti(path)
            image = None
            src = sources.get(name)
            if src and Path(src).exists():
                image = load_sequence(src).image[:, :, 0, :]
        except CardioInrError as e:  # the report shows what it can
            body.append(note(f"{name}: {first_line(str(e))}"))
            continue
        lab = np.asarray(lab)[:, :, 0, :]
        t_v = lab.shape[2]
        lv = f.label_map.lv
        if es_sax >= 0 and n_sax:
            es_v = int(round(es_sax / n_sax * t_v)) % t_v
        elif lv is not None:
            es_v = int(np.argmin((lab == lv).sum((0, 1))))
        else:
            es_v = t_v // 3
        frames = sorted({int(f.ref_frame * t_v / max(n_sax, 1)) % t_v if n_sax else 0, es_v})
        body.append(img(view_figure(image, lab, spacing_from_affine(aff), f.label_map, frames, name), f"{name} view"))
    return section("views", "Long-axis views", "".join(body))


def long_axis_section(f: FitFolder, view: str) -> str:
    """A single long-axis cine: GLS of its myocardial midline over the cycle and per segment."""
    from cardioinr.analysis.longitudinal import lax_gls
    from cardioinr.outputs.report.figures import lax_gls_figure

    ref = f.ref_labels
    if ref is None:
        return section("strain", f"Longitudinal strain ({view})", note("not computed: no reference labels"))
    try:
        g = lax_gls(ref, f.displacement, f.spacing, f.label_map)
    except CardioInrError as e:
        return section("strain", f"Longitudinal strain ({view})", note(f"not computed: {first_line(e)}"))
    peak, frame = g.peak()
    items: list[tuple[str, Any]] = [("GLS (%)", Raw(f'<span class="big">{num(peak, 1)}</span>')),
                                    ("at frame", frame)]
    rows = [[k, v] for k, v in g.segment_peaks_pct().items()]
    body = (f'<p class="muted">A {esc(view)} long-axis cine: GLS is the length change of the myocardial midline '
            "(basal end, around the apex, other basal end), moved by the fitted motion; the short-axis radial, "
            "circumferential and AHA analyses do not apply to one long-axis slice.</p>" + kv(items)
            + img(lax_gls_figure(g, f), "long-axis GLS")
            + "<h3>Peak segment strain (%)</h3>" + table(["segment", "peak (%)"], rows))
    return section("strain", f"Longitudinal strain ({view})", body)
