"""Preparing a cine for a fit (pure helpers): intensity normalisation, the heart mask, the
heart-centred normalised frame of reference and its handedness, the coarse-to-fine blur, and
where the fit samples its points."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from cardioinr.fit.config import FitConfig
from cardioinr.io import Sequence


def normalise_intensity(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """Robustly scale intensities to about [0, 1] using percentiles over the whole cine."""
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    return np.clip((image - lo) / (hi - lo), -0.5, 1.5).astype(np.float32)


def heart_mask(seq: Sequence) -> np.ndarray | None:
    """Boolean ``(X, Y, Z)`` mask of the labelled heart at the reference frame, or None."""
    lab = seq.ref_labels
    if lab is None:
        return None
    m = lab > 0
    return m if m.any() else None


def rv_free_wall(seq: Sequence, thickness_mm: float) -> np.ndarray | None:
    """Boolean ``(X, Y, Z)`` band of the RV free wall at the reference frame, or None.

    Clinical label maps (ACDC, M&Ms, UK Biobank) label the RV cavity but not its wall; the wall
    is the unlabelled tissue hugging the cavity, about 3-5 mm thick. This takes every unlabelled
    voxel within ``thickness_mm`` (in-plane, per slice) of the RV cavity label, so that the
    myocardial terms of the fit (incompressibility) act on the RV's muscle as on the LV's.
    None without reference labels, without an RV label or for ``thickness_mm <= 0``.
    """
    lab, code = seq.ref_labels, seq.label_map.rv
    if lab is None or code is None or thickness_mm <= 0:
        return None
    rv = lab == code
    if not rv.any():
        return None
    from scipy.ndimage import distance_transform_edt

    sp = seq.spacing
    band = np.zeros_like(rv)
    for k in range(rv.shape[2]):
        if rv[:, :, k].any():
            band[:, :, k] = distance_transform_edt(~rv[:, :, k], sampling=sp[:2]) <= thickness_mm
    band &= lab == 0
    return band if band.any() else None


@dataclass(frozen=True)
class HeartFrame:
    """Where the heart is, as the normalised frame of a fit sees it.

    Attributes:
        centre: ``(D,)`` mm along the array axes (index * spacing) of the frame's origin.
        scale: mm that map to one normalised unit (the LV's equivalent diameter).
        method: ``labels`` (the reference labels), ``images`` (found from how the intensities
            change over the cycle, :func:`cardioinr.fit.localise.locate_heart`) or
            ``image-centre`` (neither: the middle of the field of view).
        found: whether the heart was located (False only for ``image-centre``).
        detail: a few words on how (what metrics.json and a notice say).
    """

    centre: np.ndarray
    scale: float
    method: str
    found: bool
    detail: str

    def to_dict(self) -> dict:
        return {"method": self.method, "found": self.found, "centre_mm": [round(float(c), 2) for c in self.centre],
                "scale_mm": round(float(self.scale), 2), "detail": self.detail}


def heart_frame(seq: Sequence) -> HeartFrame:
    """The heart-centred normalised frame of ``seq`` and how the heart was located.

    With reference labels the frame is centred on the left ventricle (cavity and myocardium)
    and scaled by its size (the equivalent diameter of its largest labelled cross-section), so
    a learned prior transfers across patients, resolutions and fields of view. Only the LV
    counts where it is labelled: every cardiac dataset labels it, the RV only some (Sunnybrook
    has no RV), and a frame that moved with the label set would place a prior's motion pattern
    differently on the same heart. Without LV labels it is the whole labelled heart. Without
    labels the heart is found in the images (:func:`~cardioinr.fit.localise.locate_heart`,
    calibrated to give the same centre and size); when no beating heart is found, the frame is
    the image centre and half the in-plane extent.
    """
    d = seq.ndim_space
    sp = seq.spacing
    floor = 4 * sp[:2].max()
    mask = heart_mask(seq)
    if mask is not None:
        lv = np.isin(seq.ref_labels, [seq.label_map.lv, seq.label_map.myo])
        mask = lv if lv.any() else mask
        idx = np.argwhere(mask).astype(np.float64)
        centre = idx.mean(0) * sp
        area = max(mask[:, :, k].sum() for k in range(mask.shape[2])) * sp[0] * sp[1]
        return HeartFrame(centre[:d], float(max(2.0 * math.sqrt(area / math.pi), floor)), "labels", True,
                          "LV cavity and myocardium of the reference labels" if lv.any() else "the labelled heart")
    loc = _located(seq.image, sp)
    if loc.found:
        return HeartFrame(np.asarray(loc.centre_mm, dtype=np.float64)[:d], float(max(loc.scale_mm, floor)), "images",
                          True, f"{loc.method} (score {loc.score:.2f})")
    centre = (np.array(seq.shape) - 1) / 2.0 * sp
    scale = 0.5 * max(seq.shape[0] * sp[0], seq.shape[1] * sp[1])
    return HeartFrame(centre[:d], float(max(scale, floor)), "image-centre", False,
                      f"no labels, and {loc.method} found no beating heart (score {loc.score:.2f})")


# One fit asks for the frame of an unlabelled cine several times (choosing its start, placing the
# prior, metrics.json): the images are located once per image array (weakly held, so a cine
# that is gone takes its entry with it) and spacing. Keyed by id (arrays are not hashable); the
# entry is dropped when the array is collected, so an id reused later never finds a stale one.
_LOCATED: dict[int, dict] = {}


def _located(image: np.ndarray, spacing: np.ndarray, frame: int | None = None):
    """:func:`cardioinr.fit.localise.locate_heart` of ``image``, remembered per array; with
    ``frame``, the LV outlines of that frame drawn from it (:func:`~cardioinr.fit.localise.outline_frame`),
    remembered the same way (the objective and metrics.json both ask for them)."""
    from cardioinr.fit.localise import locate_heart, outline_frame  # scipy-heavy; labelled fits never need it

    # Spacing rounded to 0.1 um: read back from a rotated (oblique) affine it differs in the last
    # bits, which would flip the localiser's discrete choices (grid steps, radii) and move the frame.
    sp = np.round(np.asarray(spacing, dtype=np.float64), 4)
    per_image = _LOCATED.get(id(image))
    if per_image is None:
        per_image = _LOCATED[id(image)] = {}
        weakref.finalize(image, _LOCATED.pop, id(image), None)
    key = tuple(sp.tolist())
    if key not in per_image:
        per_image[key] = locate_heart(image, sp)
    if frame is None:
        return per_image[key]
    if (key, frame) not in per_image:
        loc = per_image[key]
        per_image[(key, frame)] = outline_frame(image, sp, loc, frame) if loc.found else None
    return per_image[(key, frame)]


def located_outline(seq: Sequence):
    """The LV outlines of ``seq``'s reference frame as its images show them
    (:class:`cardioinr.fit.localise.LVOutline`), or None when no beating heart or no outline
    was found. For fits without reference labels: what the labels would have given the
    label-based terms (the cavity and the wall of each slice)."""
    return _located(seq.image, seq.spacing, seq.ref_frame)


def frame_of_reference(seq: Sequence) -> tuple[np.ndarray, float]:
    """Centre (mm, ``(D,)``) and scale (mm) of the normalised coordinates (:func:`heart_frame`)."""
    f = heart_frame(seq)
    return f.centre, f.scale


def frame_reflection(seq: Sequence) -> np.ndarray:
    """Axes mirrored in the normalised frame, ``(D,)`` of +-1.

    Voxel axes are left-handed in world space on many scans (the determinant of the affine's
    3 x 3 block is negative, as on all three Sunnybrook stacks). Mirrored, the LV twist,
    which a prior learns with one sense of rotation, would turn the other way. Mirroring the
    first axis of the normalised frame on such scans gives every heart the same handedness.
    The base-to-apex direction is not touched: stacks are taken to run from base to apex
    along k, as the phantoms do.
    """
    r = np.ones(seq.ndim_space)
    if np.linalg.det(np.asarray(seq.affine, dtype=np.float64)[:3, :3]) < 0:
        r[0] = -1.0
    return r


def blur_inplane(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """``image`` ``(X, Y, Z, T)`` blurred in-plane by a Gaussian of ``sigma_px`` voxels (as is for 0)."""
    if sigma_px <= 0:
        return image
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma=(sigma_px, sigma_px, 0, 0), mode="nearest")


# A SPAMM grid concentrates the reference frame's power at its tag frequency: on phantoms the
# peak of periods 3-12 pixels stands 1100-1550x above that band's median power with tags and
# 70-120x without, on the real Sunnybrook cines 255-340x (largest slice). A hint, not a switch:
# no real tagged cine was at hand to set it on.
TAG_GRID_RATIO = 600.0


def tag_grid(frame: np.ndarray, spacing: np.ndarray) -> tuple[float, float]:
    """How strongly one 2D frame ``(X, Y)`` shows a periodic grid, and its period.

    Returns ``(ratio, period_mm)``: the largest power of the (Hann-windowed) frame's spectrum
    at periods of 3-12 pixels over the median power there, and the period of that peak in mm.
    Tagged cines score above :data:`TAG_GRID_RATIO`."""
    a = np.asarray(frame, dtype=np.float64)
    a = (a - a.mean()) * np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    power = np.abs(np.fft.fft2(a)) ** 2
    fi, fj = np.fft.fftfreq(a.shape[0])[:, None], np.fft.fftfreq(a.shape[1])[None, :]  # cycles per pixel
    cyc_px = np.hypot(fi, fj)
    band = (cyc_px > 1.0 / 12.0) & (cyc_px < 1.0 / 3.0)
    if not band.any():
        return 0.0, float("nan")
    p = np.where(band, power, 0.0)
    k = np.unravel_index(int(np.argmax(p)), p.shape)
    median = float(np.median(power[band]))
    ratio = float(p[k] / median) if median > 0 else 0.0
    return ratio, float(1.0 / max(np.hypot(fi[k[0], 0] / float(spacing[0]), fj[0, k[1]] / float(spacing[1])), 1e-9))


def sampling_weights(ref: np.ndarray, mask: np.ndarray | None, cfg: FitConfig) -> np.ndarray:
    """Per-voxel probabilities ``(X*Y*Z,)``: uniform + image edges + heart."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    sm = gaussian_filter(ref, sigma=(1, 1, 0), mode="nearest")
    gx, gy = np.gradient(sm, axis=(0, 1))
    edge = np.hypot(gx, gy).ravel()
    parts = [(1.0 - cfg.edge_fraction, np.ones_like(edge))]
    if edge.sum() > 0:
        parts.append((cfg.edge_fraction, edge))
    if mask is not None and cfg.heart_fraction > 0:
        grown = binary_dilation(mask, iterations=3, structure=np.ones((3, 3, 1), bool)) if mask.ndim == 3 else mask
        parts.append((cfg.heart_fraction, grown.ravel().astype(np.float64)))
    w = sum(frac * p / p.sum() for frac, p in parts)
    return (w / w.sum()).astype(np.float64)


__all__ = ["TAG_GRID_RATIO", "HeartFrame", "blur_inplane", "frame_of_reference", "heart_frame", "frame_reflection", "heart_mask",
           "normalise_intensity", "rv_free_wall", "sampling_weights", "tag_grid"]
