"""Global longitudinal strain (GLS) the way clinicians measure it: length change of the midwall line.

Clinical GLS (CMR feature tracking, echo speckle tracking) is not a mean of per-voxel strains:
it is the relative change of length of the myocardial *midwall line* that runs from the base
down to the apex (and, in a long-axis view, back up the other wall to the base), in percent,
negative in systole (healthy about -17 to -22 %). Two entry points build such lines on the
reference frame and move them with the motion:

* :func:`midwall_gls` (3D short-axis stack + motion): one line per angular sector about the LV
  long axis (:class:`~cardioinr.analysis.cardiac_frame.CardiacFrame`), through the midwall
  point of every slice at that angle, ending at the apex; global GLS and per-AHA-segment values
  (:class:`MidwallGLS`).
* :func:`lax_gls` (one long-axis slice, 2/3/4-chamber): the midline of the horseshoe-shaped
  myocardium, from one basal end around the apex to the other (:class:`LaxGLS`).

Conventions are those of :mod:`cardioinr.analysis.strain`: reference points ``X = index *
spacing`` in array-aligned millimetres, displacement ``u(X, t)`` in mm along the array axes, zero
at the reference frame. A line's strain at frame ``t`` is ``L_t / L_ref - 1`` with ``L_ref`` the
length of the reference line (no displacement), so it is 0 at the reference frame whichever
frame that is. Curves are fractions; ``*_pct`` values are percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from cardioinr.analysis.aha import _wrap, region_name, segment_of_angle
from cardioinr.analysis.cardiac_frame import CardiacFrame, _check_ref_labels, _voxel_points, cardiac_frame
from cardioinr.analysis.config import StrainConfig
from cardioinr.core.errors import InputError
from cardioinr.io import ACDC, LabelMap

__all__ = ["LAX_SEGMENTS", "LaxGLS", "MidwallGLS", "MotionLike", "lax_gls", "midwall_gls"]

#: A motion: a dense ``(X, Y, Z, T, 3)`` displacement in mm, or a callable mapping reference
#: points ``(N, 3)`` mm to their displacements ``(N, T, 3)`` mm.
MotionLike = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]

# Ray marching step along a ray, as a fraction of the in-plane voxel size (sub-voxel crossings
# are then refined by linear interpolation, so this only has to resolve thin walls).
_RAY_STEP = 0.1


def _peak(curve: np.ndarray) -> tuple[float, int]:
    """Most negative value (%) of a strain curve (fraction) and its frame; ``(nan, -1)`` if none."""
    c = np.asarray(curve, dtype=np.float64)
    if not np.isfinite(c).any():
        return float("nan"), -1
    t = int(np.nanargmin(c))
    return float(100.0 * c[t]), t


def _polyline_lengths(points: np.ndarray) -> np.ndarray:
    """Lengths ``(..., n - 1)`` of the edges of polylines ``(..., n, D)``."""
    return np.linalg.norm(np.diff(points, axis=-2), axis=-1)


# ---------------------------------------------------------------------------------------------
# 3D: midwall lines of a short-axis stack
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MidwallGLS:
    """Midwall longitudinal strain of a 3D stack.

    Attributes:
        gls: ``(T,)`` global GLS, fraction: the mean over sectors of the per-sector line strains
            (every sector counts equally, as in clinical software that averages regional
            values, so that sectors whose line is shorter, e.g. where a basal slice is only
            partly myocardium, are not under-weighted).
        gls_total: ``(T,)`` alternative: total length of all lines ``/`` total reference length
            ``- 1`` (weights sectors by their length).
        sector_theta: ``(S,)`` sector angles relative to the septum, radians (``theta``
            convention of :class:`~cardioinr.analysis.cardiac_frame.CardiacFrame`).
        sector_strain: ``(S, T)`` strain of each sector's line, fraction (NaN for a sector
            without a line of at least two points).
        lines: per sector, the reference midwall line ``(n_s, 3)`` mm, base -> apex (empty
            ``(0, 3)`` where none).
        edge_segments: per sector, ``(n_s - 1,)`` AHA segment (1..17) of each edge of the line.
        segment_strain: ``{segment: (T,)}`` strain of the pieces of all lines inside an AHA
            segment (their total length change), fraction; 17 is the apical cap part.
        apex_point: ``(3,)`` mm, the myocardium centroid beyond the cavity's apical end where
            all lines end, or None (no cap: each line ends at its apical-most midwall point).
    """

    gls: np.ndarray
    gls_total: np.ndarray
    sector_theta: np.ndarray
    sector_strain: np.ndarray
    lines: list[np.ndarray]
    edge_segments: list[np.ndarray]
    segment_strain: dict[int, np.ndarray]
    apex_point: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.gls.shape[0])

    def peak(self) -> tuple[float, int]:
        """``(GLS %, frame)`` at the most negative global GLS."""
        return _peak(self.gls)

    @property
    def peak_pct(self) -> float:
        """Peak (most negative) global GLS, %."""
        return self.peak()[0]

    def segment_peaks_pct(self) -> dict[str, float]:
        """``{"aha01": peak %, ...}``: most negative strain of each segment present."""
        return {region_name(s): _peak(c)[0] for s, c in sorted(self.segment_strain.items())}


def _sample_dense(disp: np.ndarray, points_mm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a dense displacement ``(X, Y, Z, T, C)`` at points ``(N, 3)``
    mm; returns ``(N, T, C)`` mm. Outside the grid the nearest border value is used."""
    coords = (np.asarray(points_mm, dtype=np.float64) / spacing[: points_mm.shape[1]]).T
    n_t, n_c = disp.shape[-2], disp.shape[-1]
    out = np.empty((points_mm.shape[0], n_t, n_c))
    for t in range(n_t):
        for c in range(n_c):
            out[:, t, c] = ndimage.map_coordinates(np.asarray(disp[..., t, c], dtype=np.float64), coords,
                                                   order=1, mode="nearest")
    return out


def _move(motion: MotionLike, points_mm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Displacements ``(N, T, 3)`` mm of reference points ``(N, 3)`` mm."""
    if callable(motion):
        u = np.asarray(motion(points_mm), dtype=np.float64)
        if u.ndim != 3 or u.shape[0] != len(points_mm) or u.shape[2] != 3:
            raise InputError(f"the motion callable must return (N, T, 3) displacements, got shape {u.shape}")
        return u
    disp = np.asarray(motion)
    if disp.ndim != 5 or disp.shape[-1] != 3:
        raise InputError(f"displacement must be (X, Y, Z, T, 3), got shape {disp.shape}")
    return _sample_dense(disp, points_mm, spacing)


def _crossings(inside_val: np.ndarray, r: np.ndarray) -> tuple[float, float] | None:
    """Radii where a sampled indicator ``(R,)`` first rises above and then falls below 0.5 along
    radii ``r`` (R,), linearly interpolated; the first run of tissue only. ``None`` if no tissue.
    A ray that starts inside the tissue has inner radius 0."""
    inside = inside_val >= 0.5
    if not inside.any():
        return None
    i0 = int(np.argmax(inside))
    if i0 == 0:
        r_in = 0.0
    else:
        a, b = inside_val[i0 - 1], inside_val[i0]
        r_in = float(r[i0 - 1] + (0.5 - a) / (b - a) * (r[i0] - r[i0 - 1]))
    after = ~inside[i0:]
    if not after.any():
        return r_in, float(r[-1])
    i1 = i0 + int(np.argmax(after))
    a, b = inside_val[i1 - 1], inside_val[i1]
    r_out = float(r[i1 - 1] + (a - 0.5) / (a - b) * (r[i1] - r[i1 - 1]))
    return r_in, r_out


def _slice_centre(frame: CardiacFrame, k: int) -> np.ndarray:
    """``(3,)`` mm: where the LV centre line meets slice ``k`` (its centroid in ``"k"`` mode)."""
    z = k * frame.spacing[2]
    if frame.use_line and abs(frame.long_axis[2]) > 1e-6:
        s = (z - frame.line_point[2]) / frame.long_axis[2]
        return frame.line_point + s * frame.long_axis
    return frame.slice_centres[k].copy()


def _ray_direction(frame: CardiacFrame, theta: float) -> np.ndarray:
    """Unit ``(2,)`` direction in the slice (i, j) plane, mm, at angle ``theta`` about the long
    axis (the ``theta`` convention); projected onto the slice plane for an oblique axis."""
    psi = frame.handedness * theta  # angle_of multiplies by the handedness; undo it
    v = math.cos(psi) * frame.basis[0] + math.sin(psi) * frame.basis[1]
    v2 = v[:2]
    return v2 / max(float(np.linalg.norm(v2)), 1e-12)


def _aha_levels(frame: CardiacFrame, myo: np.ndarray, lv: np.ndarray) -> tuple[float, float, float]:
    """``(lo, hi, s_cav)`` axial positions (mm) of the AHA level thirds, as
    :func:`~cardioinr.analysis.aha.aha_segments` with ``apex_segment=True``: thirds of
    ``[lo, hi]``, apex beyond ``s_cav`` (inf without a cavity)."""
    sp = frame.spacing
    s = frame.axial_position(_voxel_points(myo, sp))
    half = 0.5 * float(np.abs(frame.long_axis) @ sp)
    lo, hi = float(s.min()) - half, float(s.max()) + half
    s_cav = math.inf
    if lv.any():
        s_cav = float(frame.axial_position(_voxel_points(lv, sp)).max()) + half
        hi = min(hi, s_cav)
    return lo, hi, s_cav


def midwall_gls(
    ref_labels: np.ndarray,
    displacement_or_field: MotionLike,
    spacing: np.ndarray,
    label_map: LabelMap = ACDC,
    *,
    n_sectors: int = 24,
    affine: np.ndarray | None = None,
    config: StrainConfig | None = None,
    frame: CardiacFrame | None = None,
) -> MidwallGLS:
    """Midwall global longitudinal strain of a short-axis stack.

    For each of ``n_sectors`` angular sectors about the LV long axis (centred at
    ``(j + 1/2) 360 / n_sectors`` degrees from the septum, so that no sector lies on an AHA
    boundary when ``n_sectors`` is a multiple of 12), the reference midwall line runs through the
    point halfway between endo- and epicardium along the ray at that angle, in every slice that
    has myocardium there (radii from the myocardium label, bilinearly interpolated at sub-voxel
    precision; slices down to the cavity's apical end), base -> apex, and ends at the apical cap
    (centroid of the myocardium beyond the cavity's apical end) when there is one. The lines'
    points are moved with the motion; each line's strain is ``L_t / L_ref - 1``.

    Args:
        ref_labels: ``(X, Y, Z)`` reference labels (myocardium required; the LV cavity sets where
            the lines stop and the apical cap).
        displacement_or_field: a dense ``(X, Y, Z, T, 3)`` displacement (mm; interpolated
            trilinearly, ``map_coordinates`` order 1) or a callable ``f(points (N, 3) mm) ->
            (N, T, 3) mm``.
        spacing: ``(3,)`` voxel size, mm.
        label_map: codes of LV, MYO, RV.
        n_sectors: number of angular sectors (lines).
        affine, config: build the cardiac frame as in
            :func:`~cardioinr.analysis.cardiac_frame.cardiac_frame` (both unused when ``frame`` is
            given). AHA levels are those of ``StrainConfig(apex_segment=True)`` whatever the
            config: thirds of the cavity's extent, the cap part of the lines segment 17.
        frame: a precomputed cardiac frame of the same labels.

    Returns:
        A :class:`MidwallGLS`.

    Raises:
        InputError: not a 3D stack, no myocardium, or no midwall line of at least two points.
    """
    lab = _check_ref_labels(ref_labels)
    sp = np.asarray(spacing, dtype=np.float64).reshape(3)
    if lab.shape[2] < 2:
        raise InputError(f"midwall GLS needs a 3D stack of slices, got labels of shape {lab.shape}")
    if int(n_sectors) < 1:
        raise InputError(f"midwall GLS needs at least one sector, got {n_sectors}")
    fr = frame if frame is not None else cardiac_frame(lab, sp, label_map, affine, config)
    myo = lab == label_map.myo
    lv = (lab == label_map.lv) if label_map.lv is not None else np.zeros_like(myo)
    lo, hi, s_cav = _aha_levels(fr, myo, lv)

    # Slices carrying midwall points, base -> apex: myocardium present, not beyond the cavity.
    ks = [k for k in range(lab.shape[2]) if myo[:, :, k].any() and np.isfinite(fr.slice_centres[k, 0])]
    centres = {k: _slice_centre(fr, k) for k in ks}
    ks = [k for k in ks if float(fr.axial_position(centres[k][None])[0]) < s_cav]
    ks.sort(key=lambda k: float(fr.axial_position(centres[k][None])[0]))
    pm = _voxel_points(myo, sp)
    cap = fr.axial_position(pm) > s_cav
    apex = pm[cap].mean(0) if cap.any() else None

    # A single septum angle for the sectors (circular mean over slices); segment numbering below
    # uses it too, so a sector's edges share its angular segment.
    sep = float(math.atan2(np.sin(fr.septum_theta).mean(), np.cos(fr.septum_theta).mean()))
    rel = (np.arange(int(n_sectors)) + 0.5) * 2.0 * math.pi / int(n_sectors)
    rel = _wrap(rel)
    r_max = float(np.hypot(lab.shape[0] * sp[0], lab.shape[1] * sp[1]))
    r = np.arange(0.0, r_max, _RAY_STEP * float(min(sp[0], sp[1])))
    myo_f = myo.astype(np.float64)

    lines: list[np.ndarray] = []
    edge_segs: list[np.ndarray] = []
    for phi in rel:
        d = _ray_direction(fr, sep + float(phi))
        pts = []
        for k in ks:
            c = centres[k]
            ij = (c[:2, None] + r[None, :] * d[:, None]) / sp[:2, None]
            vals = ndimage.map_coordinates(myo_f[:, :, k], ij, order=1, mode="constant", cval=0.0)
            cr = _crossings(vals, r)
            if cr is None:
                continue
            rm = 0.5 * (cr[0] + cr[1])
            pts.append([c[0] + rm * d[0], c[1] + rm * d[1], k * sp[2]])
        if apex is not None and pts:
            pts.append(apex.tolist())
        line = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        lines.append(line)
        if len(line) < 2:
            edge_segs.append(np.zeros(0, dtype=int))
            continue
        mid = 0.5 * (line[1:] + line[:-1])
        s = fr.axial_position(mid)
        frac = np.clip((s - lo) / max(hi - lo, 1e-9), 0.0, 1.0 - 1e-9)
        level = np.minimum((3.0 * frac).astype(int), 2)
        seg = np.zeros(len(mid), dtype=int)
        for i, name in enumerate(("basal", "mid", "apical")):
            sel = level == i
            seg[sel] = segment_of_angle(np.full(int(sel.sum()), phi), name)
        if apex is not None:
            seg[-1] = 17  # the edge into the apical cap
        seg[s > s_cav] = 17
        edge_segs.append(seg)

    ok = [i for i, ln in enumerate(lines) if len(ln) >= 2]
    if not ok:
        raise InputError("midwall GLS: no midwall line of at least two slices (myocardium in one slice only?)")
    allpts = np.concatenate([lines[i] for i in ok])
    u = _move(displacement_or_field, allpts, sp)
    n_t = u.shape[1]
    moved = allpts[:, None, :] + u  # (N, T, 3)

    sector = np.full((int(n_sectors), n_t), np.nan)
    seg_len0: dict[int, float] = {}
    seg_len: dict[int, np.ndarray] = {}
    tot0, tot = 0.0, np.zeros(n_t)
    start = 0
    for i in ok:
        n = len(lines[i])
        e0 = _polyline_lengths(lines[i])  # (n-1,)
        et = _polyline_lengths(np.moveaxis(moved[start:start + n], 0, 1))  # (T, n-1)
        start += n
        de = et - e0  # length changes; exactly 0 without motion (L_t / L_ref - 1 need not be)
        sector[i] = de.sum(1) / e0.sum()
        tot0 += float(e0.sum())
        tot += de.sum(1)
        for s_ in np.unique(edge_segs[i]):
            sel = edge_segs[i] == s_
            seg_len0[int(s_)] = seg_len0.get(int(s_), 0.0) + float(e0[sel].sum())
            seg_len[int(s_)] = seg_len.get(int(s_), np.zeros(n_t)) + de[:, sel].sum(1)
    segment = {s_: seg_len[s_] / seg_len0[s_] for s_ in sorted(seg_len) if seg_len0[s_] > 0}
    return MidwallGLS(gls=np.nanmean(sector, axis=0), gls_total=tot / tot0, sector_theta=rel,
                      sector_strain=sector, lines=lines, edge_segments=edge_segs, segment_strain=segment,
                      apex_point=apex)


# ---------------------------------------------------------------------------------------------
# 2D: the midline of a long-axis view
# ---------------------------------------------------------------------------------------------

#: LAX segment names: the two walls ``a`` and ``b`` (``a`` the one nearer the RV when there is
#: an RV label, e.g. the septum of a 4-chamber view; else the one starting at the first end of
#: the line), each cut into basal, mid and apical thirds of its arc length.
#: ``strain.csv`` region of a single long-axis cine's GLS (the whole midline).
GLS_LAX = "gls_lax"

LAX_SEGMENTS = ("a_basal", "a_mid", "a_apical", "b_apical", "b_mid", "b_basal")


@dataclass(frozen=True)
class LaxGLS:
    """Longitudinal strain of one long-axis slice.

    Attributes:
        gls: ``(T,)`` length strain of the whole midline (basal end, apex, other basal end),
            fraction.
        line: ``(n, 2)`` reference midline, mm in the slice's (i, j) plane, from the basal end of
            wall ``a`` around the apex to the basal end of wall ``b``, resampled at ~1 mm.
        apex_index: index into ``line`` of the apex (where the line crosses the long axis drawn
            from the midpoint of the two basal ends through the line's farthest point).
        segment_strain: ``{name: (T,)}`` strain of the six thirds (:data:`LAX_SEGMENTS`).
    """

    gls: np.ndarray
    line: np.ndarray
    apex_index: int
    segment_strain: dict[str, np.ndarray] = field(default_factory=dict)

    def peak(self) -> tuple[float, int]:
        """``(GLS %, frame)`` at the most negative GLS."""
        return _peak(self.gls)

    @property
    def peak_pct(self) -> float:
        return self.peak()[0]

    def segment_peaks_pct(self) -> dict[str, float]:
        return {k: _peak(v)[0] for k, v in self.segment_strain.items()}

    def summary(self, view: str | None = None) -> dict:
        """JSON-ready summary for ``metrics.json``: the view, peak GLS (%) and its frame, the
        six segments' peaks (%), the midline's reference length (mm)."""
        peak, frame = self.peak()
        length = float(np.linalg.norm(np.diff(self.line, axis=0), axis=1).sum())
        return {"view": view, "source": "long-axis midline", "gls_pct": peak, "gls_frame": frame,
                "segment_peaks_pct": self.segment_peaks_pct(), "midline_mm": length}

    def rows(self, times_ms: np.ndarray) -> list[dict]:
        """``strain.csv`` rows (the contract's columns): per frame a :data:`GLS_LAX` row and one
        per segment (``lax_<segment>``), ``longitudinal_pct`` only (``n_voxels`` 0: a line measure)."""
        nan = float("nan")
        out = []
        for t in range(len(self.gls)):
            for region, curve in [(GLS_LAX, self.gls)] + [(f"lax_{k}", v) for k, v in self.segment_strain.items()]:
                out.append({"frame": t, "time_ms": float(times_ms[t]), "region": region, "n_voxels": 0,
                            "E_rr": nan, "E_cc": nan, "E_ll": nan, "radial_pct": nan, "circumferential_pct": nan,
                            "longitudinal_pct": float(100 * curve[t])})
        return out


def _as_slice(ref_labels: np.ndarray, displacement: np.ndarray, spacing: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``(X, Y)``, in-plane displacement ``(X, Y, T, 2)`` and spacing ``(2,)`` of one slice."""
    lab = np.asarray(ref_labels)
    if lab.ndim == 3 and lab.shape[2] == 1:
        lab = lab[:, :, 0]
    if lab.ndim != 2:
        raise InputError(f"long-axis GLS needs the labels of one slice (X, Y), got shape {lab.shape}")
    disp = np.asarray(displacement)
    if disp.ndim == 5 and disp.shape[2] == 1:
        disp = disp[:, :, 0]
    if disp.ndim != 4 or disp.shape[-1] not in (2, 3) or disp.shape[:2] != lab.shape:
        raise InputError(f"long-axis displacement must be (X, Y, 1, T, 3) or (X, Y, T, 2) on the labels' grid "
                         f"{lab.shape}, got shape {np.asarray(displacement).shape}")
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)[:2]
    return lab, disp[..., :2], sp


def _horseshoe(myo: np.ndarray) -> np.ndarray:
    """The one horseshoe of a myocardium mask ``(X, Y)``: largest 8-connected piece, small holes
    filled. Raises InputError when there are several large pieces or the band is a closed ring."""
    comp, n = ndimage.label(myo, structure=np.ones((3, 3), bool))
    sizes = np.bincount(comp.ravel())[1:]
    big = int(sizes.argmax()) + 1
    if np.sum(sizes >= 0.1 * sizes.max()) > 1:
        raise InputError(f"long-axis GLS: the myocardium is {int(np.sum(sizes >= 0.1 * sizes.max()))} separate "
                         "pieces, not one horseshoe")
    band = comp == big
    filled = ndimage.binary_fill_holes(band)
    holes, n_holes = ndimage.label(filled & ~band)
    if n_holes:
        hs = np.bincount(holes.ravel())[1:]
        if hs.max() > 0.05 * band.sum():
            raise InputError("long-axis GLS: the myocardium encloses a cavity (a closed ring, short-axis view?), "
                             "not one horseshoe")
    return filled  # specks of holes filled so that the skeleton has no loops


def _longest_path(skel: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Longest path ``(n, 2)`` mm through a skeleton ``(X, Y)`` graph (8-neighbours, edges
    weighted by their length in mm): the double sweep (farthest node from any node, then the
    farthest from that one), exact for a tree."""
    ij = np.argwhere(skel)
    if len(ij) < 2:
        raise InputError("long-axis GLS: the myocardium is too small for a midline")
    index = -np.ones(skel.shape, dtype=np.int64)
    index[tuple(ij.T)] = np.arange(len(ij))
    rows, cols, w = [], [], []
    for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
        q = ij + (di, dj)
        inb = (q[:, 0] >= 0) & (q[:, 0] < skel.shape[0]) & (q[:, 1] >= 0) & (q[:, 1] < skel.shape[1])
        a = np.nonzero(inb)[0]
        b = index[q[inb, 0], q[inb, 1]]
        keep = b >= 0
        rows.append(a[keep])
        cols.append(b[keep])
        w.append(np.full(int(keep.sum()), math.hypot(di * sp[0], dj * sp[1])))
    r_, c_, w_ = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
    g = coo_matrix((w_, (r_, c_)), shape=(len(ij), len(ij))).tocsr()
    d0 = dijkstra(g, directed=False, indices=0)
    a_ = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    d1, pred = dijkstra(g, directed=False, indices=a_, return_predecessors=True)
    b_ = int(np.argmax(np.where(np.isfinite(d1), d1, -1)))
    path = [b_]
    while path[-1] != a_:
        path.append(int(pred[path[-1]]))
    return ij[path[::-1]].astype(np.float64) * sp


def _resample(line: np.ndarray, step: float) -> np.ndarray:
    """Polyline ``(n, D)`` resampled at (about) ``step`` mm of arc length, ends kept."""
    s = np.concatenate([[0.0], np.cumsum(_polyline_lengths(line))])
    n = max(int(round(s[-1] / step)), 1) + 1
    si = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(si, s, line[:, d]) for d in range(line.shape[1])], axis=1)


def _extend_to_boundary(line: np.ndarray, mask_f: np.ndarray, sp: np.ndarray, n_tangent: int) -> np.ndarray:
    """Extend both ends of a midline ``(n, 2)`` mm along their end tangents (through the point
    ``n_tangent`` samples in) to the edge of the band ``mask_f`` ``(X, Y)`` (a skeleton stops
    about half a wall thickness short of the basal ends)."""
    step = 0.1 * float(sp.min())

    def tip(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        t = p - q
        t = t / max(float(np.linalg.norm(t)), 1e-12)
        reach = np.arange(step, 50.0, step)
        pts = p[None, :] + reach[:, None] * t[None, :]
        vals = ndimage.map_coordinates(mask_f, (pts / sp).T, order=1, mode="constant", cval=0.0)
        out = np.nonzero(vals < 0.5)[0]
        n_in = int(out[0]) if len(out) else len(reach)
        return p + (reach[n_in - 1] if n_in > 0 else 0.0) * t

    m = max(1, min(len(line) - 1, int(n_tangent)))
    head = tip(line[0], line[m])
    tail = tip(line[-1], line[-1 - m])
    return np.concatenate([head[None], line, tail[None]])


def _apex_index(line: np.ndarray) -> int:
    """Index of the apex on a midline ``(n, 2)`` mm: where the line crosses the long axis (the
    perpendicular to the chord between the two basal ends, through its midpoint, as the long
    axis is drawn from the mitral annulus), nearest the point farthest from the base. The
    farthest point alone is ill-defined on a rounded apex, where the distance is flat."""
    base_mid = 0.5 * (line[0] + line[-1])
    rel = line - base_mid
    far = int(np.argmax(np.linalg.norm(rel, axis=1)))
    chord = line[-1] - line[0]
    axis = np.array([-chord[1], chord[0]])
    if float(np.linalg.norm(axis)) < 1e-9:  # closed-up ends: fall back to the farthest point
        return far
    side = np.sign(axis[0] * rel[:, 1] - axis[1] * rel[:, 0])
    flips = np.nonzero(side[1:] != side[:-1])[0]
    if not len(flips):
        return far
    return int(flips[np.argmin(np.abs(flips - far))])


def lax_gls(
    ref_labels: np.ndarray,
    displacement: np.ndarray,
    spacing: np.ndarray,
    label_map: LabelMap = ACDC,
    *,
    step_mm: float = 1.0,
    smooth_mm: float = 2.0,
) -> LaxGLS:
    """GLS of a single long-axis cine (2/3/4-chamber view) from its horseshoe-shaped myocardium.

    The midline of the reference myocardium is its skeleton (``skimage.morphology.skeletonize``),
    reduced to the longest path through the skeleton graph, resampled at ``step_mm``, smoothed
    (Gaussian, ``smooth_mm`` standard deviation; removes the pixel staircase, which would add
    length that does not shorten) and, with its forked ends trimmed, extended along its end
    tangents to the basal ends of the band. Its points are moved with the in-plane displacement (bilinear interpolation), and
    GLS is ``L_t / L_ref - 1`` of the whole line; the six thirds of the two walls
    (:data:`LAX_SEGMENTS`) likewise.

    Args:
        ref_labels: ``(X, Y)`` or ``(X, Y, 1)`` reference labels of the slice.
        displacement: ``(X, Y, 1, T, 3)`` (output contract) or ``(X, Y, T, 2)`` mm; the in-plane
            components are used.
        spacing: ``(2,)`` or ``(3,)`` voxel size, mm.
        label_map: codes of MYO (and RV, which names the walls).
        step_mm: sampling of the midline, mm.
        smooth_mm: Gaussian smoothing of the midline, mm (0: none).

    Returns:
        A :class:`LaxGLS`.

    Raises:
        InputError: no myocardium label, or a myocardium that is not one horseshoe.
    """
    from skimage.morphology import skeletonize

    lab, disp, sp = _as_slice(ref_labels, displacement, spacing)
    if label_map.myo is None or not np.any(lab == label_map.myo):
        raise InputError("long-axis GLS needs a myocardium label in the reference frame (none found)")
    band = _horseshoe(lab == label_map.myo)
    path = _longest_path(skeletonize(band), sp)
    line = _resample(path, step_mm)
    # The skeleton forks toward the corners of each basal end; drop the last ~1.5 half wall
    # thicknesses there and let the tangent extension below find the end instead.
    half_wall = ndimage.map_coordinates(ndimage.distance_transform_edt(band, sampling=sp), (line / sp).T, order=1)
    n_trim = int(round(1.5 * float(np.median(half_wall)) / step_mm))
    if len(line) > 4 * n_trim + 4:
        line = line[n_trim:len(line) - n_trim]
    if smooth_mm > 0 and len(line) > 3:
        sig = float(smooth_mm) / float(step_mm)
        line = np.stack([ndimage.gaussian_filter1d(line[:, d], sig, mode="nearest") for d in range(2)], axis=1)
    line = _resample(_extend_to_boundary(line, band.astype(np.float64), sp, max(1, round(3.0 / step_mm))), step_mm)
    if len(line) < 4:
        raise InputError("long-axis GLS: the myocardium is too small for a midline")

    # Name the walls: "a" nearer the RV (septum in a 4-chamber view) when there is an RV label.
    if label_map.rv is not None and np.any(lab == label_map.rv):
        rv_c = _voxel_points(lab[:, :, None] == label_map.rv, np.append(sp, 1.0))[:, :2].mean(0)
        if np.linalg.norm(line[-1] - rv_c) < np.linalg.norm(line[0] - rv_c):
            line = line[::-1].copy()
    apex_i = _apex_index(line)

    u = _sample_dense(disp, line, sp)  # (n, T, 2)
    moved = np.moveaxis(line[:, None, :] + u, 0, 1)  # (T, n, 2)
    e0 = _polyline_lengths(line)
    de = _polyline_lengths(moved) - e0  # (T, n - 1) length changes; exactly 0 without motion
    gls = de.sum(1) / e0.sum()

    segs: dict[str, np.ndarray] = {}
    s = np.concatenate([[0.0], np.cumsum(e0)])
    mid = 0.5 * (s[1:] + s[:-1])  # arc-length position of each edge
    walls = (("a", 0.0, s[apex_i], False), ("b", s[apex_i], s[-1], True))
    for wall, s0, s1, from_apex in walls:
        if s1 - s0 <= 0:
            continue
        frac = (mid - s0) / (s1 - s0)
        inwall = (frac >= 0) & (frac < 1)
        third = np.minimum((3.0 * np.clip(frac, 0, 1 - 1e-12)).astype(int), 2)
        names = ("apical", "mid", "basal") if from_apex else ("basal", "mid", "apical")
        for i, nm in enumerate(names):
            sel = inwall & (third == i)
            if sel.any():
                segs[f"{wall}_{nm}"] = de[:, sel].sum(1) / e0[sel].sum()
    segs = {k: segs[k] for k in LAX_SEGMENTS if k in segs}
    return LaxGLS(gls=gls, line=line, apex_index=apex_i, segment_strain=segs)
