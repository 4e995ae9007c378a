"""Myocardial strain, LV cavity size, ejection fraction and twist from a motion field.

Everything is Lagrangian and lives on the reference frame: the material points are the
myocardial voxel centres of the reference labels, ``X = index * spacing`` in array-aligned
millimetres (see :mod:`cardioinr.io`), and the motion is the displacement ``u(X, t)`` of the
output contract (mm along the array axes, zero at the reference frame).

Strain
------
``F = I + du/dX`` is the deformation gradient and ``E = (F^T F - I) / 2`` the Green-Lagrange
strain tensor. Two routes give ``du/dX``:

* :func:`analyse_fit`: from the continuous field, *exactly* (forward-mode autodiff through
  :meth:`cardioinr.fit.fields.MotionField.displacement_and_jacobian`), all frames at once
  (:func:`~cardioinr.geometry.kinematics.deformation_gradient_field`);
* :func:`analyse_displacement`: from a dense ``(X, Y, Z, T, 3)`` array by central finite
  differences in mm (``np.gradient``; one-sided at the array border), so that any method's
  output (a peer's registration, the phantom's truth) is analysed identically
  (:func:`~cardioinr.geometry.kinematics.deformation_gradient_dense`).

For a unit direction ``e`` in the reference configuration two numbers are reported:

* the *Green* normal strain ``E_ee = e^T E e`` (columns ``E_rr``, ``E_cc``, ``E_ll``), and
* the *engineering* (Lagrangian, "clinical") strain ``sqrt(1 + 2 E_ee) - 1 = |F e| - 1``, the
  relative change of length of a fibre along ``e`` (columns ``radial_pct``,
  ``circumferential_pct``, ``longitudinal_pct``, in percent). Healthy values: radial +29..+36 %,
  circumferential -17..-21 %, longitudinal -17..-22 %.

Both are first computed per voxel and then averaged over a region (so ``radial_pct`` is the mean
of per-voxel engineering strains, not ``sqrt(1 + 2 mean E_rr) - 1``).

Directions and segments
-----------------------
The radial ``r``, circumferential ``c`` and longitudinal ``l`` directions and the angles come
from :class:`~cardioinr.analysis.cardiac_frame.CardiacFrame` (:mod:`cardioinr.analysis.cardiac_frame`),
the AHA segments and levels from :mod:`cardioinr.analysis.aha`, the cavity curve and EF from
:mod:`cardioinr.analysis.cavity`; all are set by :class:`~cardioinr.analysis.config.StrainConfig`.

Cavity, EF, rotation and twist
------------------------------
LV cavity area (2D, mm^2) or volume (3D, ml) per frame is counted from the propagated labels
``(X, Y, Z, T)``; it is also integrated from the motion, ``sum det F * voxel size`` over the
reference cavity (``cavity_jacobian``), which needs no labels beyond the reference frame. EF (%) is
``(max - min) / max``; ED and ES are the frames of the largest and smallest cavity.
The rotation of a myocardial point is the signed angle (degrees, counter-clockwise seen from the
apex) between its position relative to its slice's myocardial centroid at the reference frame and
at frame ``t`` (both perpendicular to the long axis; the centroid moves with the tissue, so bulk
translation does not count). Rotations are averaged over the whole myocardium and per level;
twist (3D) is apical minus basal rotation and torsion is twist divided by the reference distance
between the basal and apical levels (degrees per cm).

Clinical GLS
------------
In 3D the result also carries the clinical global longitudinal strain: the length change of
the myocardial midwall lines from base to apex (:func:`~cardioinr.analysis.longitudinal.midwall_gls`),
which differs from the voxel mean ``longitudinal_pct`` (a mean of local fibre strains over the
whole wall). It is :attr:`StrainResult.gls_midwall`, ``gls_midwall_pct`` (peak) in the summary
and the ``gls_midwall`` rows of ``strain.csv``.

Outputs: :class:`StrainResult` (per-frame tables, peaks, EF, JSON summary),
rows for ``strain.csv`` of the output contract (columns :data:`CSV_COLUMNS`, written by
:mod:`cardioinr.outputs.tables`) and for the per-frame cavity, rotation and twist table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cardioinr.analysis.aha import AHA_NAMES, GLOBAL, aha_segments, region_name
from cardioinr.analysis.cardiac_frame import CardiacFrame, _check_ref_labels, _voxel_points, cardiac_frame
from cardioinr.analysis.cavity import cavity_sizes, ejection_fraction
from cardioinr.analysis.config import StrainConfig
from cardioinr.analysis.longitudinal import MidwallGLS, MotionLike, midwall_gls
from cardioinr.core.errors import InputError
from cardioinr.core.serialise import json_ready
from cardioinr.geometry import spatial_dim
from cardioinr.geometry.kinematics import (
    FieldLike,
    deformation_gradient_dense,
    deformation_gradient_field,
    det_f,
    engineering_strain,
    green_strain,
    normal_strain,
)
from cardioinr.io import ACDC, LabelMap, Sequence

# AHA_NAMES, GLOBAL, StrainConfig and ejection_fraction are re-exported: cardioinr.outputs imports
# them from here.
__all__ = [
    "AHA_NAMES",
    "CSV_COLUMNS",
    "CYCLE_COLUMNS",
    "GLOBAL",
    "GLS_MIDWALL",
    "StrainConfig",
    "StrainResult",
    "analyse_displacement",
    "analyse_field",
    "analyse_fit",
    "analyse_fit_result",
    "ejection_fraction",
]

#: Columns of ``strain.csv``, in order. ``E_*`` are mean Green-Lagrange normal strains
#: (dimensionless), ``*_pct`` mean engineering strains in percent; ``E_ll`` and
#: ``longitudinal_pct`` are empty for a single slice. In 3D, rows of region :data:`GLS_MIDWALL`
#: hold the clinical midwall GLS in ``longitudinal_pct`` only (``n_voxels`` 0, the rest empty).
CSV_COLUMNS = ("frame", "time_ms", "region", "n_voxels", "E_rr", "E_cc", "E_ll",
               "radial_pct", "circumferential_pct", "longitudinal_pct")

#: Columns of the per-frame cycle table (:func:`cardioinr.outputs.tables.write_cycle_csv`).
CYCLE_COLUMNS = ("frame", "time_ms", "lv_cavity", "lv_cavity_jacobian", "cavity_unit", "rotation_deg",
                 "rotation_basal_deg", "rotation_mid_deg", "rotation_apical_deg", "twist_deg",
                 "torsion_deg_per_cm")

_COMPONENTS = ("radial", "circumferential", "longitudinal")

#: ``strain.csv`` region of the midwall GLS (length change of the midwall lines, 3D only; see
#: :mod:`cardioinr.analysis.longitudinal`).
GLS_MIDWALL = "gls_midwall"


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass
class StrainResult:
    """Strain, cavity and rotation of one sequence over the cycle.

    Attributes:
        dim: 2 or 3.
        source: ``"field"`` (exact gradients of the continuous field) or ``"displacement"``
            (finite differences of a dense array).
        ref_frame: the reference frame.
        times_ms: ``(T,)`` nominal frame times from frame 0, ms.
        regions: ``["global", "aha07", ...]`` (segments with at least one voxel, ascending).
        n_voxels: ``(R,)`` myocardial voxels per region.
        green: ``(T, R, 3)`` mean Green strain ``E_rr, E_cc, E_ll`` (``E_ll`` NaN in 2D).
        engineering: ``(T, R, 3)`` mean engineering strain (fraction, not %), same layout.
        cavity: ``(T,)`` LV cavity size from the propagated labels, or None without them.
        cavity_jacobian: ``(T,)`` LV cavity size integrated from ``det F`` over the reference
            cavity, or None without an LV label.
        cavity_unit: ``"mm^2"`` (2D) or ``"ml"`` (3D).
        rv_cavity: ``(T,)`` RV cavity size from the propagated labels (same unit), or None
            without them or without an RV label at the reference frame; ``summary()`` adds the
            RV EF (``rv_ef_pct``) and its ED/ES frames.
        rotation_deg: ``{"global": (T,), and in 3D "basal", "mid", "apical"}``, counter-clockwise
            seen from the apex.
        twist_deg, torsion_deg_per_cm: ``(T,)`` (3D with basal and apical levels) or None.
        segments: ``(X, Y, Z)`` int16 AHA segment map of the reference myocardium.
        frame: the :class:`~cardioinr.analysis.cardiac_frame.CardiacFrame` used.
        spacing: ``(3,)`` mm.
        label_map: codes used.
        config: the :class:`StrainConfig` used.
        midwall: in 3D, the clinical midwall GLS (:func:`~cardioinr.analysis.longitudinal.midwall_gls`;
            curve in :attr:`gls_midwall`), or None (2D, or no midwall line could be drawn).
    """

    dim: int
    source: str
    ref_frame: int
    times_ms: np.ndarray
    regions: list[str]
    n_voxels: np.ndarray
    green: np.ndarray
    engineering: np.ndarray
    cavity: np.ndarray | None
    cavity_jacobian: np.ndarray | None
    cavity_unit: str
    rotation_deg: dict[str, np.ndarray]
    twist_deg: np.ndarray | None
    torsion_deg_per_cm: np.ndarray | None
    segments: np.ndarray
    frame: CardiacFrame
    spacing: np.ndarray
    label_map: LabelMap = ACDC
    config: StrainConfig = field(default_factory=StrainConfig)
    midwall: MidwallGLS | None = None
    rv_cavity: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.green.shape[0])

    @property
    def gls_midwall(self) -> np.ndarray | None:
        """``(T,)`` midwall GLS, fraction (3D), or None."""
        return None if self.midwall is None else self.midwall.gls

    def region_index(self, region: str) -> int:
        try:
            return self.regions.index(region)
        except ValueError:
            raise InputError(f"no strain region {region!r} (have: {', '.join(self.regions)})") from None

    def curve(self, component: str, region: str = GLOBAL, kind: str = "engineering") -> np.ndarray:
        """``(T,)`` mean strain of a region over the cycle.

        Args:
            component: ``"radial"``, ``"circumferential"`` or ``"longitudinal"``.
            region: ``"global"`` or ``"aha01"`` ...
            kind: ``"engineering"`` (fraction) or ``"green"``.
        """
        if component not in _COMPONENTS:
            raise InputError(f"strain component {component!r}: choose from {', '.join(_COMPONENTS)}")
        arr = self.engineering if kind == "engineering" else self.green
        return arr[:, self.region_index(region), _COMPONENTS.index(component)]

    @property
    def cavity_best(self) -> np.ndarray | None:
        """The cavity curve used for EF: from labels when present, else from ``det F``."""
        return self.cavity if self.cavity is not None else self.cavity_jacobian

    def ejection(self) -> tuple[float, int, int]:
        """``(EF %, ED frame, ES frame)`` from :attr:`cavity_best` (NaN, -1, -1 without a cavity)."""
        c = self.cavity_best
        return ejection_fraction(c) if c is not None else (float("nan"), -1, -1)

    def peaks(self, region: str = GLOBAL) -> dict[str, Any]:
        """Peak engineering strains (%) of a region over the cycle and their frames: the largest
        radial (thickening), the most negative circumferential and longitudinal (shortening).
        Undefined components are NaN with frame -1."""
        out: dict[str, Any] = {}
        for comp in _COMPONENTS:
            c = self.curve(comp, region)
            if not np.isfinite(c).any():
                out[f"{comp}_pct"], out[f"{comp}_frame"] = float("nan"), -1
                continue
            t = int(np.nanargmax(c)) if comp == "radial" else int(np.nanargmin(c))
            out[f"{comp}_pct"], out[f"{comp}_frame"] = float(100.0 * c[t]), t
        return out

    def peak_frame(self) -> int:
        """The frame of peak global strain used for bull's-eye plots: of the most negative
        circumferential strain (peak systole), else of the largest radial strain."""
        p = self.peaks()
        return p["circumferential_frame"] if p["circumferential_frame"] >= 0 else p["radial_frame"]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per frame and region with the :data:`CSV_COLUMNS` keys (NaN where undefined);
        in 3D each frame ends with a :data:`GLS_MIDWALL` row (``longitudinal_pct`` only;
        ``n_voxels`` 0 because it is a line measure and the column must stay an integer)."""
        nan = float("nan")
        gls = self.gls_midwall
        out = []
        for t in range(self.n_frames):
            for r, name in enumerate(self.regions):
                g, e = self.green[t, r], self.engineering[t, r]
                out.append({
                    "frame": t, "time_ms": float(self.times_ms[t]), "region": name,
                    "n_voxels": int(self.n_voxels[r]),
                    "E_rr": float(g[0]), "E_cc": float(g[1]), "E_ll": float(g[2]),
                    "radial_pct": float(100 * e[0]), "circumferential_pct": float(100 * e[1]),
                    "longitudinal_pct": float(100 * e[2]),
                })
            if gls is not None:
                out.append({
                    "frame": t, "time_ms": float(self.times_ms[t]), "region": GLS_MIDWALL, "n_voxels": 0,
                    "E_rr": nan, "E_cc": nan, "E_ll": nan, "radial_pct": nan, "circumferential_pct": nan,
                    "longitudinal_pct": float(100 * gls[t]),
                })
        return out

    def cycle_rows(self) -> list[dict[str, Any]]:
        """One dict per frame with the :data:`CYCLE_COLUMNS` keys."""
        nan = float("nan")
        out = []
        for t in range(self.n_frames):
            rot = self.rotation_deg
            out.append({
                "frame": t, "time_ms": float(self.times_ms[t]),
                "lv_cavity": float(self.cavity[t]) if self.cavity is not None else nan,
                "lv_cavity_jacobian": float(self.cavity_jacobian[t]) if self.cavity_jacobian is not None else nan,
                "cavity_unit": self.cavity_unit,
                "rotation_deg": float(rot[GLOBAL][t]),
                "rotation_basal_deg": float(rot["basal"][t]) if "basal" in rot else nan,
                "rotation_mid_deg": float(rot["mid"][t]) if "mid" in rot else nan,
                "rotation_apical_deg": float(rot["apical"][t]) if "apical" in rot else nan,
                "twist_deg": float(self.twist_deg[t]) if self.twist_deg is not None else nan,
                "torsion_deg_per_cm": float(self.torsion_deg_per_cm[t]) if self.torsion_deg_per_cm is not None else nan,
            })
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for ``metrics.json`` (NaN -> None): EF, ED/ES frames, cavity curve,
        global peaks, per-segment peaks, peak twist/torsion, how directions were defined."""
        ef, ed, es = self.ejection()
        seg_peaks = {r: self.peaks(r) for r in self.regions if r != GLOBAL}
        out: dict[str, Any] = {
            "source": self.source,
            "dim": self.dim,
            "ef_pct": ef,
            "ed_frame": ed,
            "es_frame": es,
            "cavity_unit": self.cavity_unit,
            "cavity": None if self.cavity is None else self.cavity.tolist(),
            "cavity_jacobian": None if self.cavity_jacobian is None else self.cavity_jacobian.tolist(),
            "peak": self.peaks(),
            "segment_peaks": seg_peaks,
            "regions": list(self.regions),
            "n_voxels": {r: int(n) for r, n in zip(self.regions, self.n_voxels)},
            "peak_rotation_deg": {k: _abs_peak(v) for k, v in self.rotation_deg.items()},
            "peak_twist_deg": None if self.twist_deg is None else _abs_peak(self.twist_deg),
            "peak_torsion_deg_per_cm": None if self.torsion_deg_per_cm is None else _abs_peak(self.torsion_deg_per_cm),
            "directions": {
                "long_axis": self.frame.long_axis.tolist(), "apex_from": self.frame.apex_from,
                "septum_from": self.frame.septum_source, "handedness": self.frame.handedness,
                "long_axis_mode": self.config.long_axis, "centre": self.config.centre,
                "slice_level_2d": self.config.slice_level_2d if self.dim == 2 else None,
            },
        }
        if self.rv_cavity is not None:  # the right ventricle, scored like the LV (from the carried labels)
            rv_ef, rv_ed, rv_es = ejection_fraction(self.rv_cavity)
            out.update(rv_cavity=self.rv_cavity.tolist(), rv_ef_pct=rv_ef, rv_ed_frame=rv_ed, rv_es_frame=rv_es)
        if self.dim == 3:  # 2D summaries stay as they were (no midwall line in one slice)
            peak, frame = self.midwall.peak() if self.midwall is not None else (float("nan"), -1)
            out["gls_midwall_pct"] = peak
            out["gls_midwall_frame"] = frame
        return json_ready(out)


def _abs_peak(v: np.ndarray) -> float:
    """The value of largest magnitude (sign kept)."""
    v = np.asarray(v, dtype=np.float64)
    if not np.isfinite(v).any():
        return float("nan")
    return float(v[int(np.nanargmax(np.abs(v)))])


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


def _analyse(
    u: np.ndarray,
    F: np.ndarray,
    n_myo: int,
    myo_pts: np.ndarray,
    cav_voxel_count: int,
    ref_labels: np.ndarray,
    frame: CardiacFrame,
    segments: np.ndarray,
    *,
    labels: np.ndarray | None,
    label_map: LabelMap,
    ref_frame: int,
    times_ms: np.ndarray,
    source: str,
    config: StrainConfig,
) -> StrainResult:
    """Shared core: ``u`` ``(N, T, D)`` and ``F`` ``(N, T, D, D)`` at the myocardial points
    (first ``n_myo`` rows, ``np.argwhere`` order) followed by the reference LV cavity voxels."""
    d = frame.dim
    sp = frame.spacing
    n_t = F.shape[1]
    Fm = F[:n_myo]
    E = green_strain(Fm)  # (N, T, D, D)
    r, c, l_ = frame.directions(myo_pts)
    comps = np.full((n_myo, n_t, 3), np.nan)
    comps[..., 0] = normal_strain(E, r[:, None, :d])
    comps[..., 1] = normal_strain(E, c[:, None, :d])
    if d == 3:
        comps[..., 2] = normal_strain(E, l_[:, None, :])
    eng = engineering_strain(comps)

    seg = segments[segments > 0]  # argwhere order matches myo points
    present = sorted(int(s) for s in np.unique(seg))
    regions = [GLOBAL] + [region_name(s) for s in present]
    masks = [np.ones(n_myo, bool)] + [seg == s for s in present]
    n_vox = np.array([int(m.sum()) for m in masks])
    green = np.stack([comps[m].mean(0) for m in masks], axis=1)  # (T, R, 3)
    engm = np.stack([eng[m].mean(0) for m in masks], axis=1)

    # Rotation about each slice's moving myocardial centroid.
    um = np.zeros((n_myo, n_t, 3))
    um[..., :d] = u[:n_myo]
    k_of = frame.slice_of(myo_pts)
    rot = np.zeros((n_myo, n_t))
    for k in np.unique(k_of):
        sel = k_of == k
        p0 = myo_pts[sel]
        c0 = p0.mean(0)
        d0 = frame.in_plane(p0 - c0)  # (n, 3)
        pt = p0[:, None, :] + um[sel]  # (n, T, 3)
        dt = frame.in_plane(pt - pt.mean(0, keepdims=True))
        cross = np.cross(d0[:, None, :], dt) @ frame.long_axis
        dot = np.einsum("nc,ntc->nt", d0, dt)
        rot[sel] = frame.handedness * np.degrees(np.arctan2(cross, dot))
    rotation = {GLOBAL: rot.mean(0)}
    twist = torsion = None
    if d == 3:
        s = frame.axial_position(myo_pts)
        level_pos = {}
        for name, lo, hi in (("basal", 1, 6), ("mid", 7, 12), ("apical", 13, 17)):
            sel = (seg >= lo) & (seg <= hi)
            if sel.any():
                rotation[name] = rot[sel].mean(0)
                level_pos[name] = float(s[sel].mean())
        if "basal" in rotation and "apical" in rotation:
            twist = rotation["apical"] - rotation["basal"]
            dist_cm = abs(level_pos["apical"] - level_pos["basal"]) / 10.0
            torsion = twist / dist_cm if dist_cm > 0 else None

    voxel = float(sp[0] * sp[1]) if d == 2 else float(np.prod(sp)) / 1000.0
    unit = "mm^2" if d == 2 else "ml"
    cav_j = None
    if cav_voxel_count > 0:
        det = det_f(F[n_myo:n_myo + cav_voxel_count])  # (Nc, T)
        cav_j = det.sum(0) * voxel
    cav = rv_cav = None
    if labels is not None and label_map.lv is not None:
        cav, unit = cavity_sizes(labels, sp, label_map.lv)
    if labels is not None and label_map.rv is not None and (labels[..., ref_frame] == label_map.rv).any():
        rv_cav, _ = cavity_sizes(labels, sp, label_map.rv)

    return StrainResult(dim=d, source=source, ref_frame=int(ref_frame), times_ms=np.asarray(times_ms, dtype=np.float64),
                        regions=regions, n_voxels=n_vox, green=green, engineering=engm, cavity=cav,
                        cavity_jacobian=cav_j, cavity_unit=unit, rotation_deg=rotation, twist_deg=twist,
                        torsion_deg_per_cm=torsion, segments=segments, frame=frame, spacing=sp,
                        label_map=label_map, config=config, rv_cavity=rv_cav)


def _midwall(lab: np.ndarray, motion: MotionLike, frame: CardiacFrame, label_map: LabelMap) -> MidwallGLS | None:
    """Midwall GLS of a 3D analysis, or None in 2D or where no line can be drawn (strain stays
    defined without it, e.g. a myocardium in a single slice of the stack)."""
    if frame.dim != 3:
        return None
    try:
        return midwall_gls(lab, motion, frame.spacing, label_map, frame=frame)
    except InputError:
        return None


def _prepare(ref_labels: np.ndarray, spacing: np.ndarray, label_map: LabelMap, affine: np.ndarray | None,
             config: StrainConfig) -> tuple[np.ndarray, CardiacFrame, np.ndarray, np.ndarray, np.ndarray]:
    lab = _check_ref_labels(ref_labels)
    frame = cardiac_frame(lab, spacing, label_map, affine, config)
    segments = aha_segments(lab, frame, label_map, config)
    myo = lab == label_map.myo
    cav = (lab == label_map.lv) if label_map.lv is not None else np.zeros_like(myo)
    return lab, frame, segments, myo, cav


def _labels_4d(labels: np.ndarray | None, shape3: tuple[int, ...], n_t: int) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.ndim == 3 and spatial_dim(shape3) == 2 and lab.shape == (shape3[0], shape3[1], n_t):
        lab = lab[:, :, None, :]
    if lab.shape != tuple(shape3) + (n_t,):
        raise InputError(f"propagated labels have shape {lab.shape}, expected {tuple(shape3) + (n_t,)}")
    return lab


def analyse_displacement(
    displacement: np.ndarray,
    spacing: np.ndarray,
    ref_labels: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int | None = None,
    frame_interval_ms: float = 1.0,
    affine: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> StrainResult:
    """Strain of a dense displacement array (finite differences in mm): any method's output.

    Args:
        displacement: ``(X, Y, Z, T, 3)`` mm, output-contract convention.
        spacing: ``(3,)`` voxel size, mm.
        ref_labels: ``(X, Y, Z)`` labels of the reference frame (defines the myocardium).
        labels: ``(X, Y, Z, T)`` propagated (or true) labels for the cavity curve, optional.
        label_map: codes of LV, MYO, RV.
        ref_frame: reference frame (default: the first all-zero frame, else 0).
        frame_interval_ms: time between frames, ms.
        affine: voxel-to-world matrix (orientation conventions; see :func:`cardiac_frame`).
        config: see :class:`StrainConfig`.
    """
    cfg = config or StrainConfig()
    disp = np.asarray(displacement)
    if disp.ndim != 5 or disp.shape[-1] != 3:
        raise InputError(f"displacement must be (X, Y, Z, T, 3), got shape {disp.shape}")
    lab, frame, segments, myo, cav = _prepare(ref_labels, spacing, label_map, affine, cfg)
    if lab.shape != disp.shape[:3]:
        raise InputError(f"reference labels have shape {lab.shape}, displacement grid is {disp.shape[:3]}")
    n_t = disp.shape[3]
    if ref_frame is None:
        zero = [t for t in range(n_t) if not np.any(disp[:, :, :, t])]
        ref_frame = zero[0] if zero else 0
    u_m, F_m = deformation_gradient_dense(disp, frame.spacing, myo)
    u_c, F_c = deformation_gradient_dense(disp, frame.spacing, cav)
    u = np.concatenate([u_m, u_c])
    F = np.concatenate([F_m, F_c])
    res = _analyse(u, F, int(myo.sum()), _voxel_points(myo, frame.spacing), int(cav.sum()), lab, frame, segments,
                   labels=_labels_4d(labels, lab.shape, n_t), label_map=label_map, ref_frame=int(ref_frame),
                   times_ms=np.arange(n_t) * float(frame_interval_ms), source="displacement", config=cfg)
    res.midwall = _midwall(lab, disp, frame, label_map)
    return res


def analyse_field(
    field_: FieldLike,
    spacing: np.ndarray,
    ref_labels: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_map: LabelMap = ACDC,
    ref_frame: int = 0,
    frame_interval_ms: float = 1.0,
    affine: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> StrainResult:
    """Strain from a continuous field with exact gradients (forward-mode autodiff).

    Args:
        field_: a :class:`~cardioinr.fit.fields.MotionField` (any device) or anything with ``dim``,
            ``n_frames`` and ``displacement_and_jacobian``; its frames are the sequence's.
        spacing: ``(3,)`` voxel size, mm (the reference points are ``index * spacing``).
        ref_labels: ``(X, Y, Z)`` labels of the reference frame (defines the myocardium).
        labels, label_map, ref_frame, frame_interval_ms, affine, config: as in
            :func:`analyse_displacement`.

    Raises:
        InputError: no myocardium, or a field whose dimension does not match the labels.
    """
    cfg = config or StrainConfig()
    lab, frame, segments, myo, cav = _prepare(ref_labels, spacing, label_map, affine, cfg)
    if int(field_.dim) != frame.dim:
        raise InputError(f"the field is {field_.dim}D but the labels are {frame.dim}D {lab.shape}")
    pts_m = _voxel_points(myo, frame.spacing)
    pts_c = _voxel_points(cav, frame.spacing)
    u, F = deformation_gradient_field(field_, np.concatenate([pts_m, pts_c]), chunk=cfg.chunk)
    n_t = F.shape[1]
    res = _analyse(u, F, len(pts_m), pts_m, len(pts_c), lab, frame, segments,
                   labels=_labels_4d(labels, lab.shape, n_t), label_map=label_map, ref_frame=int(ref_frame),
                   times_ms=np.arange(n_t) * float(frame_interval_ms), source="field", config=cfg)
    # the midwall lines move with the field itself (its displacement at their points)
    res.midwall = _midwall(lab, lambda p: deformation_gradient_field(field_, p, chunk=cfg.chunk)[0], frame, label_map)
    return res


def analyse_fit(
    field_: FieldLike | None,
    seq: Sequence,
    displacement: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    ref_labels: np.ndarray | None = None,
    config: StrainConfig | None = None,
) -> StrainResult:
    """Strain of a fitted sequence: exact gradients of the continuous field.

    This is the entry point for ``cardioinr fit``: ``analyse_fit(result.field, result.sequence,
    result.displacement, result.labels)``.

    Args:
        field_: the fitted :class:`~cardioinr.fit.fields.MotionField` (any device). ``None``: fall
            back to finite differences of ``displacement``.
        seq: the sequence (geometry, frame interval, reference frame and label map; its
            ``ref_labels`` define the myocardium unless ``ref_labels`` is given).
        displacement: ``(X, Y, Z, T, 3)`` mm; used only when ``field_`` is None.
        labels: ``(X, Y, Z, T)`` propagated labels (cavity curve and EF), optional.
        ref_labels: ``(X, Y, Z)`` reference labels overriding ``seq.ref_labels`` (default:
            ``seq.ref_labels``, else ``labels[..., seq.ref_frame]``).
        config: see :class:`StrainConfig`.

    Raises:
        InputError: no reference labels with a myocardium, or a field that does not match the
            sequence (dimension or frame count).
    """
    ref = ref_labels if ref_labels is not None else seq.ref_labels
    if ref is None and labels is not None:
        ref = np.asarray(labels)[..., seq.ref_frame]
    if ref is None:
        raise InputError(f"{seq.name}: strain needs labels of the reference frame (fit with --seg)")
    common = dict(labels=labels, label_map=seq.label_map, ref_frame=seq.ref_frame,
                  frame_interval_ms=seq.frame_interval_ms, affine=seq.affine, config=config)
    if field_ is None:
        if displacement is None:
            raise InputError(f"{seq.name}: strain needs a field or a displacement array")
        return analyse_displacement(displacement, seq.spacing, ref, **common)
    if int(field_.dim) != seq.ndim_space:
        raise InputError(f"{seq.name}: the field is {field_.dim}D but the sequence is {seq.ndim_space}D")
    n_t = int(getattr(field_, "n_frames", seq.n_frames))
    if n_t != seq.n_frames:
        raise InputError(f"{seq.name}: the field has {n_t} frames, the sequence {seq.n_frames}")
    if _check_ref_labels(ref).shape != seq.shape:
        raise InputError(f"{seq.name}: reference labels have shape {np.asarray(ref).shape}, frames have {seq.shape}")
    return analyse_field(field_, seq.spacing, ref, **common)


def analyse_fit_result(result: Any, *, config: StrainConfig | None = None) -> StrainResult | None:
    """The ``cardioinr fit`` hook: strain of a :class:`~cardioinr.fit.FitResult`.

    Returns None when the sequence has no reference labels with a myocardium, which is not an
    error for a fit: strain is simply undefined then. :func:`cardioinr.outputs.save_fit` writes
    ``result.rows()`` as the contract's strain table and ``result.summary()`` into the metrics,
    and passes the result to the report to avoid recomputing it.
    """
    seq = result.sequence
    ref = seq.ref_labels
    if ref is None or seq.label_map.myo is None or not np.any(ref == seq.label_map.myo):
        return None
    return analyse_fit(result.field, seq, result.displacement, result.labels, config=config)
