"""The report's still figures, each drawn with matplotlib (Agg canvas, no pyplot state) and
returned as a base64 PNG: the loss curve, global and segmental strain curves, AHA bull's eyes,
the segment map, the LV cavity and rotation curves, and the folding map. Also the picture
geometry shared with :mod:`cardioinr.outputs.report.animation`: which slice is shown, the crop
around the heart, its extent in mm and the label contours.

Arrays follow the fit folder (:class:`cardioinr.outputs.folder.FitFolder`): images ``(X, Y, Z, T)``,
displacements ``(X, Y, Z, T, 3)`` in mm, spacing in mm; plots are in mm, time in ms.
"""

from __future__ import annotations

import base64
import io as _stdio
import math

import numpy as np

from cardioinr.analysis.strain import AHA_NAMES, GLOBAL, StrainResult
from cardioinr.geometry import spatial_dim
from cardioinr.io import LabelMap
from cardioinr.outputs.folder import FitFolder

__all__ = ["COLOURS", "GRID_COLOUR", "background_image", "bullseye_figure", "cavity_figure", "display_slice",
           "contour_names", "contour_segments", "draw_contours", "extent_mm", "folding_figure", "heart_crop", "loss_figure", "new_figure", "png",
           "segment_map_figure", "strain_figure"]

#: Contour colour of each structure (also the legend of the motion section and fixed GIF palette entries).
COLOURS = {"LV": "#e4572e", "MYO": "#29bf12", "RV": "#3f88c5"}
#: Colour of the deformed grid in the motion animation.
GRID_COLOUR = "#ffd166"
_STRAIN_COLOURS = {"radial": "#d1495b", "circumferential": "#00798c", "longitudinal": "#edae49"}


def new_figure(w: float, h: float):
    """A matplotlib Figure of ``w`` x ``h`` inches on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png(fig, dpi: int = 90) -> str:
    """``fig`` as a PNG, base64 text, cropped to its content."""
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")



def loss_figure(curve: list[float], steps: int | None) -> str:
    """Loss against step (PNG, base64); ``curve`` is sampled evenly over ``steps`` steps (log scale
    when every value is positive)."""
    fig = new_figure(6.0, 2.6)
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
    return png(fig)


def strain_figure(s: StrainResult) -> str:
    """Global engineering strain (%) against time (ms), ES marked, and the circumferential strain of
    every AHA segment (PNG, base64)."""
    t = s.times_ms
    comps = ["radial", "circumferential"] + (["longitudinal"] if s.dim == 3 else [])
    fig = new_figure(11.0, 3.4)
    ax = fig.add_subplot(121)
    for c in comps:
        ax.plot(t, 100 * s.curve(c), "-o", ms=3, color=_STRAIN_COLOURS[c], label=c)
    gls = getattr(s, "gls_midwall", None)
    if gls is not None:  # the clinical GLS: length change of the midwall lines, base to apex
        ax.plot(t, 100 * np.asarray(gls), "--", lw=1.6, color=_STRAIN_COLOURS["longitudinal"], label="GLS (midwall)")
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
    return png(fig)


# Bull's-eye geometry: (inner radius, outer radius, first segment, number of segments, start angle
# of the first segment in degrees). Anterior at the top, septum on the left, numbering
# counter-clockwise, as in the AHA 17-segment model.
_RINGS = ((3.0, 4.0, 1, 6, 60.0), (2.0, 3.0, 7, 6, 60.0), (1.0, 2.0, 13, 4, 45.0), (0.0, 1.0, 17, 1, 0.0))


def bullseye_figure(s: StrainResult, frame: int) -> str:
    """AHA bull's eyes of the segment means of each strain component (%) at ``frame`` (PNG, base64)."""
    import matplotlib
    from matplotlib.colors import TwoSlopeNorm

    comps = ["radial", "circumferential"] + (["longitudinal"] if s.dim == 3 else [])
    fig = new_figure(2.9 * len(comps), 3.1)
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
    return png(fig, dpi=85)


def display_slice(s: StrainResult | None, f: FitFolder) -> int:
    """The slice shown in 2D pictures of a stack: the mid-level slice with the most myocardium
    (else the one with the most labelled heart, else the middle slice)."""
    if spatial_dim(f.shape) == 2:
        return 0
    if s is not None:
        mid = (s.segments >= 7) & (s.segments <= 12)
        counts = mid.reshape(-1, f.shape[2]).sum(0) if mid.any() else (s.segments > 0).reshape(-1, f.shape[2]).sum(0)
        return int(np.argmax(counts))
    ref = f.ref_labels
    if ref is not None and np.any(ref > 0):
        return int(np.argmax((ref > 0).reshape(-1, f.shape[2]).sum(0)))
    return f.shape[2] // 2


def heart_crop(f: FitFolder, k: int, margin_mm: float = 14.0) -> tuple[slice, slice]:
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


def background_image(f: FitFolder, k: int, t: int) -> np.ndarray | None:
    """The input image of slice ``k`` at frame ``t``, ``(X, Y)``; None without the cine."""
    if f.seq is None:
        return None
    return f.seq.image[:, :, k, t]


def extent_mm(si: slice, sj: slice, sp: np.ndarray) -> list[float]:
    """imshow extent ``[left, right, bottom, top]`` in mm of the crop ``(si, sj)`` (voxel centres at ``index * spacing``)."""
    return [(si.start - 0.5) * sp[0], (si.stop - 0.5) * sp[0], (sj.start - 0.5) * sp[1], (sj.stop - 0.5) * sp[1]]


def contour_names(label_map: LabelMap) -> list[str]:
    """The outlines drawn for a label map, in drawing order: epicardium (``MYO``: cavity plus
    myocardium), ``RV``, endocardium (``LV``)."""
    return [n for n, c in (("MYO", label_map.myo), ("RV", label_map.rv), ("LV", label_map.lv)) if c is not None]


def contour_segments(lab2d: np.ndarray, si: slice, sj: slice, sp: np.ndarray,
                     label_map: LabelMap) -> dict[str, list[np.ndarray]]:
    """Label outlines of the crop ``(si, sj)`` as polylines ``(n, 2)`` in mm (x along i, y along
    j), by name (:func:`contour_names`): the 0.5 level of each structure's mask (marching
    squares, as matplotlib's ``contour`` draws it)."""
    from skimage.measure import find_contours

    crop = lab2d[si, sj]
    masks = {}
    if label_map.myo is not None:
        masks["MYO"] = (crop == label_map.myo) | ((crop == label_map.lv) if label_map.lv is not None else False)
    if label_map.rv is not None:
        masks["RV"] = crop == label_map.rv
    if label_map.lv is not None:
        masks["LV"] = crop == label_map.lv
    out = {}
    for name, m in masks.items():
        m = np.asarray(m, dtype=float)
        if m.any() and m.min() == 0:
            out[name] = [np.stack([(c[:, 0] + si.start) * sp[0], (c[:, 1] + sj.start) * sp[1]], axis=1)
                         for c in find_contours(m, 0.5)]
    return out


def draw_contours(ax, lab2d: np.ndarray, si: slice, sj: slice, sp: np.ndarray, label_map: LabelMap, lw: float = 1.4) -> None:
    """Label outlines (:func:`contour_segments`) drawn on ``ax``."""
    from matplotlib.collections import LineCollection

    for name, segs in contour_segments(lab2d, si, sj, sp, label_map).items():
        ax.add_collection(LineCollection(segs, colors=COLOURS[name], linewidths=lw))


def segment_map_figure(s: StrainResult, f: FitFolder, k: int) -> str:
    """The AHA segments of slice ``k`` over the reference image, numbered, with the reference contours (PNG, base64)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    si, sj = heart_crop(f, k)
    sp = f.spacing
    fig = new_figure(4.2, 4.2)
    ax = fig.add_subplot(111)
    bg = background_image(f, k, f.ref_frame)
    ext = extent_mm(si, sj, sp)
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
        draw_contours(ax, ref[:, :, k], si, sj, sp, f.label_map, lw=0.8)
    ax.set_xlabel("i (mm)")
    ax.set_ylabel("j (mm)")
    ax.set_title(f"AHA segments, reference frame {f.ref_frame}" + (f", slice {k}" if spatial_dim(f.shape) == 3 else ""), fontsize=9)
    return png(fig)


def cavity_figure(s: StrainResult) -> str:
    """LV cavity area (mm²) or volume (ml) and rotation/twist (°) against time (ms) (PNG, base64)."""
    fig = new_figure(11.0, 3.2)
    ax = fig.add_subplot(121)
    t = s.times_ms
    unit = "area (mm²)" if s.cavity_unit == "mm^2" else "volume (ml)"
    if s.cavity is not None:
        ax.plot(t, s.cavity, "-o", ms=3, color="#e4572e", label="propagated labels")
    if s.cavity_jacobian is not None:
        ax.plot(t, s.cavity_jacobian, "--", color="#555555", lw=1.2, label="∫ det F (reference cavity)")
    if getattr(s, "rv_cavity", None) is not None:
        ax.plot(t, s.rv_cavity, "-s", ms=3, color="#3f88c5", label="RV, propagated labels")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(f"cavity {unit}")
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
    return png(fig)


def folding_figure(f: FitFolder, k: int) -> tuple[dict, str]:
    """Folding statistics of the dense field and a figure: min det(F) over frames (slice ``k``)
    and % folded per frame. ``det F`` is :func:`cardioinr.geometry.kinematics.jacobian_determinant_grid` (central
    differences), one frame at a time; the whole grid's figures come from ``metrics.json`` when the
    fit recorded them (:func:`_recorded_folding`), else from here."""
    from matplotlib.colors import ListedColormap

    from cardioinr.geometry.kinematics import jacobian_determinant_grid

    stats = _recorded_folding(f)
    # With the whole grid's figures recorded by the fit, only slice k and its neighbours are
    # differentiated: central differences at k use k - 1 and k + 1 (one-sided at the ends, as
    # on the whole grid), so the map is the same.
    Z = f.shape[2]
    lo, hi = (0, Z) if stats is None or Z == 1 else (max(k - 1, 0), min(k + 2, Z))
    per_pct, per_min = [], []
    folded = total = 0
    min_det = None
    for t in range(f.n_frames):
        det = jacobian_determinant_grid(f.displacement[:, :, lo:hi, t, :], f.spacing)
        min_det = det[:, :, k - lo] if min_det is None else np.minimum(min_det, det[:, :, k - lo])
        if stats is None:
            n_bad = int(np.count_nonzero(det <= 0))
            folded, total = folded + n_bad, total + det.size
            per_pct.append(100.0 * n_bad / det.size)
            per_min.append(float(det.min()))
    if stats is None:
        stats = {"percent_folded": 100.0 * folded / max(total, 1), "min_det": min(per_min),
                 "per_frame_percent": per_pct}
    fig = new_figure(10.0, 3.4)
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
        draw_contours(ax, ref[:, :, k], slice(0, X), slice(0, Y), sp, f.label_map, lw=0.6)
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
    return stats, png(fig)


def _recorded_folding(f: FitFolder) -> dict | None:
    """The whole grid's folding as the fit recorded it in ``metrics.json`` (same displacement,
    same differences), or None when the folder lacks it (older fits, other tools)."""
    m = f.metrics
    per = m.get("per_frame_percent_negative_jacobian")
    pct, low = m.get("percent_negative_jacobian"), m.get("min_jacobian_determinant")
    if not (isinstance(per, list) and len(per) == f.n_frames and all(isinstance(v, (int, float)) for v in per)
            and isinstance(pct, (int, float)) and isinstance(low, (int, float))):
        return None
    return {"percent_folded": float(pct), "min_det": float(low), "per_frame_percent": [float(v) for v in per]}


def view_figure(image: np.ndarray | None, labels: np.ndarray, spacing: np.ndarray, label_map: LabelMap,
                frames: list[int], title: str) -> str:
    """A long-axis view at ``frames`` (``image`` ``(X, Y, T)`` or None, ``labels`` ``(X, Y, T)``
    carried labels) with the carried contours, one panel per frame (PNG, base64)."""
    sp = np.asarray(spacing, dtype=float)
    nx, ny = labels.shape[:2]
    heart = np.argwhere(labels.any(axis=2))
    m = 14.0
    lo = np.maximum(heart.min(0) - (m / sp[:2]).astype(int), 0) if heart.size else np.zeros(2, int)
    hi = np.minimum(heart.max(0) + (m / sp[:2]).astype(int) + 1, [nx, ny]) if heart.size else np.array([nx, ny])
    si, sj = slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))
    fig = new_figure(3.2 * len(frames), 3.6)
    for n, t in enumerate(frames):
        ax = fig.add_subplot(1, len(frames), n + 1)
        ext = extent_mm(si, sj, sp)
        if image is not None:
            ax.imshow(image[si, sj, t].T, origin="lower", cmap="gray", extent=ext, interpolation="nearest")
        draw_contours(ax, labels[:, :, t], si, sj, sp, label_map, lw=1.0)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_title(f"{title}, frame {t}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return png(fig)


def lax_gls_figure(g, f: FitFolder) -> str:
    """A long-axis cine's midline over its reference image, and the GLS curves (whole line and
    segments) against frame (PNG, base64)."""
    fig = new_figure(9.0, 3.4)
    ax = fig.add_subplot(121)
    bg = background_image(f, 0, f.ref_frame)
    sp = f.spacing
    if bg is not None:
        nx, ny = bg.shape
        ax.imshow(bg.T, origin="lower", cmap="gray", extent=[-0.5 * sp[0], (nx - 0.5) * sp[0], -0.5 * sp[1],
                                                             (ny - 0.5) * sp[1]])
    ax.plot(g.line[:, 0], g.line[:, 1], "-", color="#e4572e", lw=1.5)
    ax.plot(*g.line[g.apex_index], "o", color="#e4572e", ms=4)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("reference midline", fontsize=9)
    ax2 = fig.add_subplot(122)
    t = np.arange(len(g.gls))
    ax2.plot(t, 100 * g.gls, "-o", ms=3, color="black", lw=2, label="GLS (whole line)")
    for name, v in g.segment_strain.items():
        ax2.plot(t, 100 * v, lw=1, label=name)
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xlabel("frame")
    ax2.set_ylabel("longitudinal strain (%)")
    ax2.legend(fontsize=6.5, frameon=False)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)
