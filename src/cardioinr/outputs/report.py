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
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io as _stdio
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cardioinr.analysis.strain import AHA_NAMES, GLOBAL, StrainConfig, StrainResult, analyse_displacement, analyse_field
from cardioinr.core.errors import CardioInrError
from cardioinr.io import LabelMap, Sequence, write_text_atomic
from cardioinr.outputs.contract import DISPLACEMENT, FIELD, METRICS, REPORT, STRAIN
from cardioinr.outputs.folder import FitFolder, first_line, load_fit_folder
from cardioinr.outputs.tables import read_strain_csv

__all__ = ["SECTIONS", "build_report"]
SECTIONS = ("input", "fit", "strain", "bullseye", "cavity", "motion", "folding", "accuracy")

_COLOURS = {"LV": "#e4572e", "MYO": "#29bf12", "RV": "#3f88c5"}
_GRID_COLOUR = "#ffd166"
_STRAIN_COLOURS = {"radial": "#d1495b", "circumferential": "#00798c", "longitudinal": "#edae49"}


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
        if f.field is not None and int(f.field.dim) == (2 if f.shape[2] == 1 else 3) \
                and int(getattr(f.field, "n_frames", f.n_frames)) == f.n_frames:
            return analyse_field(f.field, f.spacing, ref, **common), None
        return analyse_displacement(f.displacement, f.spacing, ref, **common), None
    except CardioInrError as e:
        return None, first_line(e)


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg, no pyplot state)
# ---------------------------------------------------------------------------------------------


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: int = 90) -> str:
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str, mime: str = "image/png", width: int | None = None) -> str:
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img src="data:{mime};base64,{b64}" alt="{html.escape(alt)}"{w}>'


def _loss_figure(curve: list[float], steps: int | None) -> str:
    fig = _figure(6.0, 2.6)
    ax = fig.add_subplot(111)
    y = np.array([np.nan if v is None else float(v) for v in curve], dtype=np.float64)
    total = steps if steps and steps >= len(y) else len(y)
    x = np.linspace(0, max(total - 1, 0), len(y))
    ax.plot(x, y, color="#00798c", lw=1.5)
    if np.all(y[np.isfinite(y)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return _png(fig)


def _strain_figure(s: StrainResult) -> str:
    t = s.times_ms
    comps = ["radial", "circumferential"] + (["longitudinal"] if s.dim == 3 else [])
    fig = _figure(11.0, 3.4)
    ax = fig.add_subplot(121)
    for c in comps:
        ax.plot(t, 100 * s.curve(c), "-o", ms=3, color=_STRAIN_COLOURS[c], label=c)
    ef, ed, es = s.ejection()
    if es >= 0:
        ax.axvline(t[es], color="grey", ls="--", lw=1)
        ax.text(t[es], ax.get_ylim()[1], " ES", va="top", color="grey", fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("engineering strain (%)")
    ax.set_title("global (myocardial mean)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(122)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    for i, r in enumerate(s.regions[1:]):
        seg = int(r[3:])
        ax2.plot(t, 100 * s.curve("circumferential", r), color=cmap(i % 20), lw=1.2, label=f"{seg} {AHA_NAMES[seg]}")
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xlabel("time (ms)")
    ax2.set_ylabel("circumferential strain (%)")
    ax2.set_title("AHA segments", fontsize=10)
    ax2.legend(fontsize=6.5, frameon=False, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# Bull's-eye geometry: (inner radius, outer radius, first segment, number of segments, start angle
# of the first segment in degrees). Anterior at the top, septum on the left, numbering
# counter-clockwise, as in the AHA 17-segment model.
_RINGS = ((3.0, 4.0, 1, 6, 60.0), (2.0, 3.0, 7, 6, 60.0), (1.0, 2.0, 13, 4, 45.0), (0.0, 1.0, 17, 1, 0.0))


def _bullseye_figure(s: StrainResult, frame: int) -> str:
    import matplotlib
    from matplotlib.colors import TwoSlopeNorm

    comps = ["radial", "circumferential"] + (["longitudinal"] if s.dim == 3 else [])
    fig = _figure(2.9 * len(comps), 3.1)
    vals_by_seg = {c: {int(r[3:]): 100 * s.curve(c, r)[frame] for r in s.regions[1:]} for c in comps}
    for i, c in enumerate(comps):
        ax = fig.add_subplot(1, len(comps), i + 1, projection="polar")
        vals = vals_by_seg[c]
        finite = [v for v in vals.values() if np.isfinite(v)]
        lim = max([abs(v) for v in finite] + [1.0])
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
        cmap = matplotlib.colormaps["RdBu_r"]
        for r0, r1, first, n, start in _RINGS:
            width = 360.0 / n
            for j in range(n):
                seg = first + j
                centre = math.radians(start + (j + 0.5) * width)
                v = vals.get(seg, float("nan"))
                colour = cmap(norm(v)) if np.isfinite(v) else "#dddddd"
                ax.bar(centre, r1 - r0, width=math.radians(width), bottom=r0, color=colour,
                       edgecolor="white", linewidth=1.2, hatch=None if np.isfinite(v) else "///")
                label = f"{v:.0f}" if np.isfinite(v) else ""
                rr = 0.0 if seg == 17 else (r0 + r1) / 2
                ax.text(centre, rr, f"{label}", ha="center", va="center", fontsize=8,
                        color="black" if not np.isfinite(v) or abs(norm(v) - 0.5) < 0.3 else "white")
        ax.set_ylim(0, 4)
        ax.set_axis_off()
        ax.set_title(f"{c} (%)", fontsize=10, pad=4)
        sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, shrink=0.6, pad=0.02)
    fig.text(0.5, 0.0, "anterior up, septum left; rings: basal (outer), mid, apical, apex (centre)", ha="center",
             fontsize=7.5, color="#555555")
    return _png(fig, dpi=85)


def _display_slice(s: StrainResult | None, f: FitFolder) -> int:
    """The slice shown in 2D pictures of a stack: the mid-level slice with the most myocardium
    (else the one with the most labelled heart, else the middle slice)."""
    if f.shape[2] == 1:
        return 0
    if s is not None:
        mid = (s.segments >= 7) & (s.segments <= 12)
        counts = mid.reshape(-1, f.shape[2]).sum(0) if mid.any() else (s.segments > 0).reshape(-1, f.shape[2]).sum(0)
        return int(np.argmax(counts))
    ref = f.ref_labels
    if ref is not None and np.any(ref > 0):
        return int(np.argmax((ref > 0).reshape(-1, f.shape[2]).sum(0)))
    return f.shape[2] // 2


def _crop(f: FitFolder, k: int, margin_mm: float = 14.0) -> tuple[slice, slice]:
    """In-plane crop around the labelled heart over all frames (whole slice without labels)."""
    lab = f.labels[:, :, k, :].max(-1) if f.labels is not None else f.ref_labels[:, :, k] if f.ref_labels is not None else None
    X, Y = f.shape[:2]
    if lab is None or not np.any(lab > 0):
        return slice(0, X), slice(0, Y)
    ij = np.argwhere(lab > 0)
    sp = f.spacing
    mi, mj = int(math.ceil(margin_mm / sp[0])), int(math.ceil(margin_mm / sp[1]))
    lo = np.maximum(ij.min(0) - [mi, mj], 0)
    hi = np.minimum(ij.max(0) + [mi, mj] + 1, [X, Y])
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def _background(f: FitFolder, k: int, t: int) -> np.ndarray | None:
    if f.seq is None:
        return None
    return f.seq.image[:, :, k, t]


def _extent(si: slice, sj: slice, sp: np.ndarray) -> list[float]:
    return [(si.start - 0.5) * sp[0], (si.stop - 0.5) * sp[0], (sj.start - 0.5) * sp[1], (sj.stop - 0.5) * sp[1]]


def _contours(ax, lab2d: np.ndarray, si: slice, sj: slice, sp: np.ndarray, label_map: LabelMap, lw: float = 1.4) -> None:
    """Label outlines: LV cavity (endocardium), LV cavity + myocardium (epicardium), RV."""
    xs = np.arange(si.start, si.stop) * sp[0]
    ys = np.arange(sj.start, sj.stop) * sp[1]
    crop = lab2d[si, sj]
    masks = []
    if label_map.myo is not None:
        outer = (crop == label_map.myo) | ((crop == label_map.lv) if label_map.lv is not None else False)
        masks.append(("MYO", outer))
    if label_map.rv is not None:
        masks.append(("RV", crop == label_map.rv))
    if label_map.lv is not None:
        masks.append(("LV", crop == label_map.lv))
    for name, m in masks:
        m = np.asarray(m, dtype=float)
        if m.any() and m.min() == 0:
            ax.contour(xs, ys, m.T, levels=[0.5], colors=[_COLOURS[name]], linewidths=lw)


def _segment_map_figure(s: StrainResult, f: FitFolder, k: int) -> str:
    import matplotlib
    from matplotlib.colors import ListedColormap

    si, sj = _crop(f, k)
    sp = f.spacing
    fig = _figure(4.2, 4.2)
    ax = fig.add_subplot(111)
    bg = _background(f, k, f.ref_frame)
    ext = _extent(si, sj, sp)
    if bg is not None:
        ax.imshow(bg[si, sj].T, origin="lower", cmap="gray", extent=ext, interpolation="nearest")
    seg = s.segments[si, sj, k].astype(float)
    seg[seg == 0] = np.nan
    base = matplotlib.colormaps["tab20"]
    cmap = ListedColormap([base(i % 20) for i in range(17)])
    ax.imshow(seg.T, origin="lower", cmap=cmap, vmin=0.5, vmax=17.5, extent=ext, alpha=0.75, interpolation="nearest")
    for n in np.unique(s.segments[:, :, k]):
        if n == 0:
            continue
        ij = np.argwhere(s.segments[:, :, k] == n).mean(0)
        ax.text(ij[0] * sp[0], ij[1] * sp[1], str(int(n)), ha="center", va="center", fontsize=8, fontweight="bold")
    ref = f.ref_labels
    if ref is not None:
        _contours(ax, ref[:, :, k], si, sj, sp, f.label_map, lw=0.8)
    ax.set_xlabel("i (mm)")
    ax.set_ylabel("j (mm)")
    ax.set_title(f"AHA segments, reference frame {f.ref_frame}" + (f", slice {k}" if f.shape[2] > 1 else ""), fontsize=9)
    return _png(fig)


def _cavity_figure(s: StrainResult) -> str:
    fig = _figure(11.0, 3.2)
    ax = fig.add_subplot(121)
    t = s.times_ms
    unit = "area (mm²)" if s.cavity_unit == "mm^2" else "volume (ml)"
    if s.cavity is not None:
        ax.plot(t, s.cavity, "-o", ms=3, color="#e4572e", label="propagated labels")
    if s.cavity_jacobian is not None:
        ax.plot(t, s.cavity_jacobian, "--", color="#555555", lw=1.2, label="∫ det F (reference cavity)")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(f"LV cavity {unit}")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(122)
    styles = {GLOBAL: ("black", "-"), "basal": ("#3f88c5", "--"), "mid": ("#29bf12", "--"), "apical": ("#e4572e", "--")}
    for name, v in s.rotation_deg.items():
        c, ls = styles.get(name, ("grey", ":"))
        ax2.plot(t, v, ls, color=c, label=f"rotation {name}")
    if s.twist_deg is not None:
        ax2.plot(t, s.twist_deg, "-", color="#8f2d56", lw=2, label="twist (apical - basal)")
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xlabel("time (ms)")
    ax2.set_ylabel("rotation (°, CCW seen from apex)")
    ax2.legend(fontsize=7, frameon=False)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _motion_gif(f: FitFolder, k: int, grid_mm: float = 6.0, size_px: int = 360, colors: int = 64,
                interpolation: str = "nearest") -> tuple[str, int]:
    """Animated GIF (base64) of the deformed reference grid and propagated contours over the
    image at every frame of slice ``k``; returns ``(b64, n_frames)``."""
    from PIL import Image

    si, sj = _crop(f, k)
    sp = f.spacing
    ext = _extent(si, sj, sp)
    step_i = max(1, int(round(grid_mm / sp[0])))
    step_j = max(1, int(round(grid_mm / sp[1])))
    ii = np.arange(si.start, si.stop)
    jj = np.arange(sj.start, sj.stop)
    rows_j = jj[(jj - sj.start) % step_j == 0]
    cols_i = ii[(ii - si.start) % step_i == 0]
    lo = hi = None
    if f.seq is not None:
        crop = f.seq.image[si, sj, k, :]
        lo, hi = np.percentile(crop, [1.0, 99.5])
    w_mm, h_mm = ext[1] - ext[0], ext[3] - ext[2]
    scale = size_px / max(w_mm, h_mm)
    w_px, h_px = max(2, int(round(w_mm * scale / 2)) * 2), max(2, int(round(h_mm * scale / 2)) * 2)
    fig = _figure(w_px / 100, h_px / 100)
    ax = fig.add_axes([0, 0, 1, 1])
    frames = []
    for t in range(f.n_frames):
        ax.clear()
        bg = _background(f, k, t)
        if bg is not None:
            ax.imshow(bg[si, sj].T, origin="lower", cmap="gray", extent=ext, vmin=lo, vmax=hi, interpolation=interpolation)
        else:
            ax.set_facecolor("#202020")
        u = f.displacement[:, :, k, t, :2].astype(np.float64)
        for j in rows_j:  # lines of constant j, running along i
            x = ii * sp[0] + u[ii, j, 0]
            y = j * sp[1] + u[ii, j, 1]
            ax.plot(x, y, color=_GRID_COLOUR, lw=0.6, alpha=0.8)
        for i in cols_i:
            x = i * sp[0] + u[i, jj, 0]
            y = jj * sp[1] + u[i, jj, 1]
            ax.plot(x, y, color=_GRID_COLOUR, lw=0.6, alpha=0.8)
        if f.labels is not None:
            _contours(ax, f.labels[:, :, k, t], si, sj, sp, f.label_map, lw=1.6)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_axis_off()
        ax.text(0.02, 0.97, f"frame {t}/{f.n_frames - 1}  {t * f.frame_interval_ms:.0f} ms" + ("  (ref)" if t == f.ref_frame else ""),
                transform=ax.transAxes, color="white", fontsize=9, va="top",
                bbox=dict(facecolor="black", alpha=0.5, pad=2, edgecolor="none"))
        ax.set_aspect("auto")
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        frames.append(Image.fromarray(rgba[..., :3].copy()))
    palette = _gif_palette(frames, colors)
    pal_frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in frames]
    buf = _stdio.BytesIO()
    duration = int(max(40, min(200, round(f.frame_interval_ms))))
    pal_frames[0].save(buf, format="GIF", save_all=True, append_images=pal_frames[1:], duration=duration,
                       loop=0, optimize=False, disposal=1)
    return base64.b64encode(buf.getvalue()).decode("ascii"), len(frames)


def _hex_rgb(c: str) -> list[int]:
    return [int(c[i:i + 2], 16) for i in (1, 3, 5)]


def _gif_palette(frames: list, colors: int):
    """One palette for all frames (no flicker): an adaptive part from a sample of frames plus the
    exact overlay colours (contours, grid, text), which are too few pixels to survive median cut."""
    from PIL import Image

    fixed = [_hex_rgb(c) for c in (*_COLOURS.values(), _GRID_COLOUR)] + [[255, 255, 255], [0, 0, 0]]
    sample = frames[:: max(1, len(frames) // 4)]
    w, h = sample[0].size
    mosaic = Image.new("RGB", (w, h * len(sample)))
    for i, im in enumerate(sample):
        mosaic.paste(im, (0, i * h))
    n_adaptive = max(2, min(256 - len(fixed), colors) - len(fixed))
    adaptive = mosaic.quantize(colors=n_adaptive, method=Image.Quantize.MEDIANCUT).getpalette()[: 3 * n_adaptive]
    flat = adaptive + [v for c in fixed for v in c]
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat + [0] * (768 - len(flat)))
    return pal


def _folding(f: FitFolder, k: int) -> tuple[dict, str]:
    """Folding statistics of the dense field and a figure: min det(F) over frames (slice ``k``)
    and % folded per frame. ``det F`` is :func:`cardioinr.analysis.metrics.jacobian_determinant` (central
    differences), one frame at a time."""
    from matplotlib.colors import ListedColormap

    from cardioinr.analysis.metrics import jacobian_determinant

    per_pct, per_min = [], []
    folded = total = 0
    min_det = None
    for t in range(f.n_frames):
        det = jacobian_determinant(f.displacement[:, :, :, t, :], f.spacing)
        n_bad = int(np.count_nonzero(det <= 0))
        folded, total = folded + n_bad, total + det.size
        per_pct.append(100.0 * n_bad / det.size)
        per_min.append(float(det.min()))
        min_det = det[:, :, k] if min_det is None else np.minimum(min_det, det[:, :, k])
    stats = {"percent_folded": 100.0 * folded / max(total, 1), "min_det": min(per_min),
             "per_frame_percent": per_pct, "per_frame_min_det": per_min}
    fig = _figure(10.0, 3.4)
    ax = fig.add_subplot(121)
    sp = f.spacing
    X, Y = f.shape[:2]
    ext = [-0.5 * sp[0], (X - 0.5) * sp[0], -0.5 * sp[1], (Y - 0.5) * sp[1]]
    vmax = max(float(np.nanmax(min_det)), 1.5)
    im = ax.imshow(min_det.T, origin="lower", cmap="viridis", vmin=0.0, vmax=vmax, extent=ext, interpolation="nearest")
    folded = np.ma.masked_where(min_det > 0, np.ones_like(min_det))
    if (min_det <= 0).any():
        ax.imshow(folded.T, origin="lower", cmap=ListedColormap(["#ff1f1f"]), extent=ext, interpolation="nearest")
        ax.contour(np.arange(X) * sp[0], np.arange(Y) * sp[1], min_det.T, levels=[0.0], colors="white", linewidths=0.8)
    ref = f.ref_labels
    if ref is not None:
        _contours(ax, ref[:, :, k], slice(0, X), slice(0, Y), sp, f.label_map, lw=0.6)
    fig.colorbar(im, ax=ax, shrink=0.85, label="min det F over frames (red: <= 0)")
    ax.set_xlabel("i (mm)")
    ax.set_ylabel("j (mm)")
    ax2 = fig.add_subplot(122)
    times = np.arange(f.n_frames) * f.frame_interval_ms
    ax2.plot(times, stats["per_frame_percent"], "-o", ms=3, color="#8f2d56")
    ax2.set_xlabel("time (ms)")
    ax2.set_ylabel("% voxels with det F <= 0")
    ax2.set_ylim(0, max(1.0, 1.2 * max(stats["per_frame_percent"])))
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return stats, _png(fig)


# ---------------------------------------------------------------------------------------------
# HTML helpers
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2330;font-size:14px}
header{background:#1d2330;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:4px 0 0;color:#b8c0cc;font-size:12px}
nav{background:#2b3345;padding:6px 28px}
nav a{color:#dfe6f0;text-decoration:none;margin-right:16px;font-size:12px}
main{max-width:1150px;margin:0 auto;padding:8px 20px 40px}
section{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:16px 0;padding:12px 20px}
h2{font-size:16px;margin:4px 0 10px;border-bottom:1px solid #e3e6ea;padding-bottom:6px}
h3{font-size:13px;margin:12px 0 6px;color:#445}
table{border-collapse:collapse;font-size:12px;margin:4px 0 8px}
th,td{border-bottom:1px solid #e9ecef;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f7f9;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv{display:flex;flex-wrap:wrap;gap:6px 18px}
.kv div{min-width:160px}
.kv b{display:block;font-size:11px;color:#667;font-weight:500}
.big{font-size:22px;font-weight:600}
.note{background:#fff7e0;border-left:3px solid #f0b429;padding:6px 10px;margin:6px 0;font-size:12px}
.bad{background:#fde8e8;border-left-color:#d64545}
.ok{color:#1f7a3f}.warn{color:#b45309}
img{max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.muted{color:#778;font-size:12px}
footer{color:#889;font-size:11px;text-align:center;padding:10px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, digits: int = 3) -> str:
    """A number for a table cell: ints as is, floats with ``digits`` decimals (trailing zeros
    dropped) or in ``g`` format when very large or small; ``–`` for None/NaN."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 10.0 ** (-digits):
        return f"{x:.{digits}g}"
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            if i >= numeric_from and not isinstance(v, str):
                cells.append(f'<td class="num">{_num(v)}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _kv(items: list[tuple[str, Any]]) -> str:
    return '<div class="kv">' + "".join(f"<div><b>{_e(k)}</b>{v if isinstance(v, _Raw) else _e(v)}</div>" for k, v in items) + "</div>"


class _Raw(str):
    """HTML that must not be escaped again."""


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _note(text: str, bad: bool = False) -> str:
    return f'<div class="note{" bad" if bad else ""}">{_e(text)}</div>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _input_section(f: FitFolder) -> str:
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
        ("motion", "2D+t (single slice)" if f.shape[2] == 1 else "3D+t (stack)"),
        ("label map", ", ".join(f"{n} = {c}" for n, c in f.label_map.items())),
        ("source", ms.get("source") or (f.seq.meta.get("source") if f.seq else None) or "unknown"),
        ("image shown", "yes" if f.seq is not None else "no"),
        ("field", f"{FIELD} (continuous)" if f.field is not None else "dense displacement only"),
    ]
    body = _kv(items)
    if f.ref_labels is not None:
        rows = []
        vox = float(np.prod(sp[:2])) if f.shape[2] == 1 else float(np.prod(sp)) / 1000.0
        unit = "mm²" if f.shape[2] == 1 else "ml"
        for name, code in f.label_map.items():
            n = int(np.sum(f.ref_labels == code))
            rows.append([name, code, n, n * vox])
        body += "<h3>Reference labels</h3>" + _table(["structure", "code", "voxels", f"size ({unit})"], rows)
    return _section("input", "Input", body)


def _fit_section(f: FitFolder) -> str:
    m = f.metrics
    if not m:
        return _section("fit", "Fit", _note(f"{METRICS} not found: nothing to show about the fit"))
    keys = [("fit time (s)", "fit_seconds"), ("total time (s)", "total_seconds"), ("steps", "steps"),
            ("restarts", "restarts"), ("% negative det F (grid)", "percent_negative_jacobian"),
            ("% negative det F (heart)", "percent_negative_jacobian_heart"),
            ("min det F", "min_jacobian_determinant"), ("max |u| (mm)", "max_displacement_mm"),
            ("cardioinr", "cardioinr_version")]
    body = _kv([(label, _num(m[k]) if not isinstance(m[k], str) else m[k]) for label, k in keys if k in m])
    parts = [body]
    curve = m.get("loss_curve")
    row = []
    if isinstance(curve, list) and len(curve) > 1:
        row.append("<div>" + _img(_loss_figure(curve, m.get("steps")), "loss curve", width=560) + "</div>")
    fl = m.get("final_losses")
    if isinstance(fl, Mapping) and fl:
        row.append("<div><h3>Final losses</h3>" + _table(["term", "value"], [[k, v] for k, v in fl.items()]) + "</div>")
    if row:
        parts.append('<div class="row">' + "".join(row) + "</div>")
    cfg = m.get("config")
    if isinstance(cfg, Mapping) and cfg:
        flat = _flatten(cfg)
        half = (len(flat) + 2) // 3
        cols = [flat[i:i + half] for i in range(0, len(flat), half)]
        parts.append("<h3>Settings</h3>" + '<div class="row">' + "".join(
            "<div>" + _table(["setting", "value"], [[k, v if not isinstance(v, (list, tuple)) else ", ".join(map(str, v))] for k, v in c]) + "</div>"
            for c in cols) + "</div>")
    return _section("fit", "Fit", "".join(parts))


def _compare_csv(f: FitFolder, s: StrainResult) -> str:
    path = f.path / STRAIN
    if not path.is_file():
        return f'<p class="muted">No {STRAIN} in the folder; values below are computed for this report.</p>'
    try:
        rows = read_strain_csv(path)
    except CardioInrError as e:
        return _note(f"{STRAIN} unreadable ({first_line(e)})", bad=True)
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
        return _note(f"{STRAIN} differs from this report's analysis (largest difference {worst:.3g} points, "
                     f"{len(rows)} rows vs {len(ours)}); it was written by other settings or another version", bad=True)
    return f'<p class="muted ok">{STRAIN} matches this analysis (within 0.05 percentage points).</p>'


def _strain_section(f: FitFolder, s: StrainResult | None, why: str | None) -> str:
    if s is None:
        return _section("strain", "Strain", _note(f"strain not computed: {why}"))
    src = (f"exact gradients of the continuous field ({FIELD})" if s.source == "field"
           else f"finite differences of {DISPLACEMENT}")
    body = [f'<p class="muted">Lagrangian strain from {_e(src)}; engineering strain sqrt(1 + 2 e·E·e) − 1 '
            f"averaged over {int(s.n_voxels[0])} myocardial voxels of the reference frame. Directions: long axis "
            f"({', '.join(f'{v + 0.0:.3g}' for v in s.frame.long_axis)}) in array axes (base → apex, from {_e(s.frame.apex_from)}), "
            f"septum from {_e(s.frame.septum_source)}.</p>", _compare_csv(f, s)]
    body.append(_img(_strain_figure(s), "strain curves"))
    rows = []
    for r, n in zip(s.regions, s.n_voxels):
        p = s.peaks(r)
        name = "global" if r == GLOBAL else f"{int(r[3:])} {AHA_NAMES[int(r[3:])]}"
        rows.append([name, int(n), p["radial_pct"], p["circumferential_pct"], p["longitudinal_pct"]])
    body.append("<h3>Peak engineering strain (%) over the cycle</h3>"
                + _table(["region", "voxels", "radial (max)", "circumferential (min)", "longitudinal (min)"], rows))
    return _section("strain", "Strain over the cycle", "".join(body))


def _bullseye_section(f: FitFolder, s: StrainResult | None, k: int) -> str:
    if s is None or len(s.regions) < 2:
        return _section("bullseye", "AHA segments", _note("no segmental strain (needs a myocardium label)"))
    t = s.peak_frame()
    row = ('<div class="row"><div>' + _img(_bullseye_figure(s, t), "bull's eye") + "</div><div>"
           + _img(_segment_map_figure(s, f, k), "segment map", width=300) + "</div></div>")
    level = f" Single slice, numbered as the {_e(s.config.slice_level_2d)} level." if s.dim == 2 else ""
    return _section("bullseye", "AHA bull's eye at peak strain",
                    f'<p class="muted">Segment means of engineering strain (%) at frame {t} '
                    f"({s.times_ms[t]:.0f} ms, peak global circumferential shortening). Grey: no myocardium in "
                    f"that segment.{level}</p>" + row)


def _cavity_section(s: StrainResult | None, why: str | None) -> str:
    if s is None:
        return _section("cavity", "LV cavity and ejection fraction", _note(f"not computed: {why}"))
    ef, ed, es = s.ejection()
    what = "area" if s.cavity_unit == "mm^2" else "volume"
    unit = "mm²" if s.cavity_unit == "mm^2" else "ml"
    cav = s.cavity_best
    items: list[tuple[str, Any]] = [("EF (%)", _Raw(f'<span class="big">{_num(ef, 1)}</span>'))]
    if cav is not None and ed >= 0:
        items += [(f"ED {what} ({unit})", f"{cav[ed]:.4g} (frame {ed})"), (f"ES {what} ({unit})", f"{cav[es]:.4g} (frame {es})")]
    if s.cavity is not None and s.cavity_jacobian is not None:
        from cardioinr.analysis.strain import ejection_fraction

        items.append(("EF from ∫det F (%)", _num(ejection_fraction(s.cavity_jacobian)[0], 1)))
    if s.twist_deg is not None:
        items.append(("peak twist (°)", _num(s.summary()["peak_twist_deg"], 2)))
        if s.torsion_deg_per_cm is not None:
            items.append(("peak torsion (°/cm)", _num(s.summary()["peak_torsion_deg_per_cm"], 2)))
    else:
        items.append(("peak rotation (°)", _num(s.summary()["peak_rotation_deg"][GLOBAL], 2)))
    src = "propagated labels" if s.cavity is not None else "∫ det F over the reference cavity (no propagated labels)"
    body = _kv(items) + f'<p class="muted">EF = (max − min) / max of the LV cavity {what} from {_e(src)}.' \
        + (" A single slice gives an area fraction, not a volumetric EF." if s.dim == 2 else "") + "</p>"
    return _section("cavity", "LV cavity, ejection fraction and rotation", body + _img(_cavity_figure(s), "cavity curve"))


def _motion_section(f: FitFolder, k: int) -> tuple[str, int]:
    gif, n = _motion_gif(f, k)
    what = "image" if f.seq is not None else "no image (input cine not available)"
    body = (f'<p class="muted">Reference grid (6 mm) carried by the motion and propagated label contours '
            f'(<span style="color:{_COLOURS["LV"]}">LV</span>, <span style="color:{_COLOURS["MYO"]}">MYO</span>, '
            f'<span style="color:{_COLOURS["RV"]}">RV</span>) over the {what}'
            + (f", slice {k} of {f.shape[2]}" if f.shape[2] > 1 else "") + f"; {n} frames, looping.</p>"
            + _img(gif, "motion animation", mime="image/gif", width=420))
    return _section("motion", "Motion", body), n


def _folding_section(f: FitFolder, k: int) -> str:
    stats, fig = _folding(f, k)
    pct = stats["percent_folded"]
    cls = "ok" if pct == 0 else "warn"
    items = [("% voxels x frames with det F <= 0", _Raw(f'<span class="big {cls}">{_num(pct, 4)}</span>')),
             ("min det F", _num(stats["min_det"], 3))]
    heart = f.metrics.get("percent_negative_jacobian_heart")
    if heart is not None:
        items.append(("% folded near the heart (fit)", _num(heart, 4)))
    body = _kv(items) + f'<p class="muted">det F from central differences of {DISPLACEMENT} on the grid; ' \
        "negative values mean the motion folds (non-physical). Left: the smallest det F over all frames" \
        + (f" (slice {k})" if f.shape[2] > 1 else "") + ", folded voxels in red.</p>" + _img(fig, "folding map")
    return _section("folding", "Folding check", body)


def _accuracy_section(f: FitFolder) -> str:
    ev = f.metrics.get("evaluation")
    if not isinstance(ev, Mapping) or not ev:
        return _section("accuracy", "Accuracy", f'<p class="muted">No ground-truth evaluation in {METRICS} '
                        '(run <code>cardioinr evaluate</code> or fit a phantom with its truth).</p>')
    parts = []
    labels = ev.get("labels")
    if isinstance(labels, Mapping) and isinstance(labels.get("summary"), Mapping):
        rows = [[name, d.get("n_frames"), d.get("dice_mean"), d.get("dice_min"), d.get("hd95_mean"), d.get("hd95_max")]
                for name, d in labels["summary"].items() if isinstance(d, Mapping)]
        parts.append("<h3>Propagated labels</h3>" + _table(
            ["structure", "frames", "Dice mean", "Dice min", "HD95 mean (mm)", "HD95 max (mm)"], rows))
    epe = ev.get("epe")
    if isinstance(epe, Mapping):
        rows = [[region, d.get("mean"), d.get("median"), d.get("p95"), d.get("max")]
                for region, d in epe.items() if isinstance(d, Mapping)]
        parts.append("<h3>End-point error (mm)</h3>" + _table(["region", "mean", "median", "p95", "max"], rows))
    fold = ev.get("folding")
    if isinstance(fold, Mapping):
        rows = [[region, d.get("percent_folded"), d.get("min_det")] for region, d in fold.items() if isinstance(d, Mapping)]
        parts.append("<h3>Folding</h3>" + _table(["region", "% det F <= 0", "min det F"], rows))
    other = [(k, v) for k, v in _flatten({k: v for k, v in ev.items() if k not in ("labels", "epe", "folding")})
             if not isinstance(v, (list, dict))]
    if other:
        parts.append("<h3>Other</h3>" + _table(["quantity", "value"], [[k, v] for k, v in other]))
    return _section("accuracy", "Accuracy against ground truth", "".join(parts) or _note("evaluation holds no tables"))


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def build_report(
    out_dir: str | os.PathLike,
    seq: Sequence | None = None,
    *,
    strain: StrainResult | None = None,
    strain_config: StrainConfig | None = None,
    path: str | os.PathLike | None = None,
) -> Path:
    """(Re)build ``report.html`` in a fit output folder from what the folder holds.

    Args:
        out_dir: the folder written by ``cardioinr fit`` (``displacement.nii.gz`` required;
            ``labels.nii.gz``, ``field.pt``, ``metrics.json``, ``strain.csv`` used when present).
        seq: the input sequence (for the images); default: loaded from
            ``metrics.json["sequence"]["source"]`` if that file still exists.
        strain: a strain analysis already computed for this fit (skips recomputation).
        strain_config: directions and segment settings for the recomputation.
        path: where to write (default ``out_dir / "report.html"``).

    Returns:
        The path of the written report (written atomically).

    Raises:
        InputError: the folder or its displacement is missing or unreadable.
    """
    f = load_fit_folder(out_dir, seq)
    why = None
    if strain is None:
        strain, why = _analyse_folder(f, strain_config)
    k = _display_slice(strain, f)
    sections = [_input_section(f), _fit_section(f), _strain_section(f, strain, why),
                _bullseye_section(f, strain, k), _cavity_section(strain, why)]
    motion, _ = _motion_section(f, k)
    sections += [motion, _folding_section(f, k), _accuracy_section(f)]
    name = (f.metrics.get("sequence") or {}).get("name") if isinstance(f.metrics.get("sequence"), dict) else None
    name = name or (f.seq.name if f.seq is not None else f.path.name)
    from cardioinr import __version__

    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    summary = ""
    if strain is not None:
        p = strain.peaks()
        ef = strain.ejection()[0]
        summary = (f" · EF {_num(ef, 1)} % · peak circumferential {_num(p['circumferential_pct'], 1)} %"
                   f" · radial {_num(p['radial_pct'], 1)} %"
                   + (f" · longitudinal {_num(p['longitudinal_pct'], 1)} %" if strain.dim == 3 else ""))
    notes = "".join(_note(n) for n in f.notes)
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>cardioinr report: {_e(name)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>cardioinr motion report: {_e(name)}</h1>"
        f"<p>{_e(str(f.path))} · {stamp} · cardioinr {_e(__version__)}{_e(summary)}</p></header>"
        f"<nav>{nav}</nav><main>{notes}{''.join(sections)}</main>"
        "<footer>Self-contained report: no scripts, no external resources.</footer></body></html>\n"
    )
    target = Path(path) if path is not None else f.path / REPORT
    write_text_atomic(target, doc)
    return target
