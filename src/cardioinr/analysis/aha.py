"""AHA segments of the reference myocardium (17-segment model) and their names.

Angles ``theta`` and the septum direction are those of :mod:`cardioinr.analysis.cardiac_frame`
(counter-clockwise as seen from the apex, which is how the AHA bull's eye is drawn: anterior up,
septum left, segments numbered counter-clockwise). Relative to the septum, the six segments of a
basal or mid slice are 60 degrees wide and centred at -90 (anterior), -30 (anteroseptal), +30
(inferoseptal), +90 (inferior), +150 (inferolateral) and -150 degrees (anterolateral); the four
apical segments are 90 degrees wide and centred at -90 (anterior), 0 (septal), +90 (inferior) and
180 (lateral).

Levels: in a 3D stack, the myocardium's extent along the long axis (voxel edges included) is cut
into thirds: basal (segments 1-6), mid (7-12) and apical (13-16); with
``StrainConfig(apex_segment=True)`` myocardium beyond the apical end of the LV cavity is the
apex (17) and the thirds cover the cavity's extent. A single slice is one level, ``mid``
(segments 7-12) by default because 2D cines are usually mid-ventricular
(``StrainConfig(slice_level_2d="basal" | "apical")`` otherwise).

Regions are named ``aha01`` .. ``aha17`` (:func:`region_name`), ``global`` for the whole
myocardium (:data:`GLOBAL`).
"""

from __future__ import annotations

import numpy as np

from cardioinr.analysis.cardiac_frame import CardiacFrame, _check_ref_labels, _voxel_points
from cardioinr.analysis.config import StrainConfig
from cardioinr.io import ACDC, LabelMap

__all__ = ["AHA_NAMES", "GLOBAL", "aha_segments", "region_name", "segment_of_angle"]

AHA_NAMES: dict[int, str] = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral",
    7: "mid anterior", 8: "mid anteroseptal", 9: "mid inferoseptal", 10: "mid inferior",
    11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral",
    17: "apex",
}

GLOBAL = "global"
_LEVEL_FIRST = {"basal": 1, "mid": 7, "apical": 13}


def region_name(segment: int) -> str:
    """CSV region name of an AHA segment: ``aha01`` .. ``aha17`` (``global`` is the whole myocardium)."""
    return f"aha{int(segment):02d}"


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to ``[-pi, pi)``."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def segment_of_angle(rel_theta: np.ndarray, level: str) -> np.ndarray:
    """AHA segment numbers ``(N,)`` from angles relative to the septum (radians, ``theta``
    convention) at one level (``"basal"``, ``"mid"``: 6 segments; ``"apical"``: 4)."""
    deg = np.degrees(_wrap(np.asarray(rel_theta, dtype=np.float64)))
    if level == "apical":
        k4 = np.floor((deg + 45.0) / 90.0).astype(int) % 4  # 0 septal, 1 inferior, 2 lateral, 3 anterior
        return 13 + (k4 + 1) % 4
    k6 = np.floor((deg + 60.0) / 60.0).astype(int) % 6  # 0 anteroseptal ... 5 anterior
    return _LEVEL_FIRST[level] + (k6 + 1) % 6


def aha_segments(
    ref_labels: np.ndarray,
    frame: CardiacFrame,
    label_map: LabelMap = ACDC,
    config: StrainConfig | None = None,
) -> np.ndarray:
    """AHA segment of every myocardial voxel of the reference frame.

    Args:
        ref_labels: ``(X, Y, Z)`` reference labels.
        frame: from :func:`cardiac_frame` on the same labels.
        label_map: codes of LV, MYO, RV.
        config: see :class:`StrainConfig` (2D level, apex segment).

    Returns:
        ``(X, Y, Z)`` int16: 1..16 (17 with ``apex_segment``) on the myocardium, 0 elsewhere.
    """
    cfg = config or StrainConfig()
    lab = _check_ref_labels(ref_labels)
    myo = lab == label_map.myo
    out = np.zeros(lab.shape, dtype=np.int16)
    if not myo.any():
        return out
    pts = _voxel_points(myo, frame.spacing)
    rel = frame.theta(pts) - frame.septum_theta[frame.slice_of(pts)]
    if frame.dim == 2:
        seg = segment_of_angle(rel, cfg.slice_level_2d)
    else:
        s = frame.axial_position(pts)
        half = 0.5 * float(np.abs(frame.long_axis) @ frame.spacing)
        lo, hi = s.min() - half, s.max() + half
        apex = np.zeros(len(pts), bool)
        if cfg.apex_segment and label_map.lv is not None and np.any(lab == label_map.lv):
            s_cav = frame.axial_position(_voxel_points(lab == label_map.lv, frame.spacing)).max() + half
            apex = s > s_cav
            hi = min(hi, s_cav)
        frac = np.clip((s - lo) / max(hi - lo, 1e-9), 0.0, 1.0 - 1e-9)
        level = np.minimum((3.0 * frac).astype(int), 2)
        seg = np.zeros(len(pts), dtype=int)
        for i, name in enumerate(("basal", "mid", "apical")):
            sel = level == i
            seg[sel] = segment_of_angle(rel[sel], name)
        seg[apex] = 17
    out[myo] = seg
    return out
