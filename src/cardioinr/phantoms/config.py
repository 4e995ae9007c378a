"""What to generate: :class:`PhantomConfig` (sizes, cycle layout, imaging options and the ranges
of the randomly drawn physiology) and the seed type of :func:`cardioinr.phantoms.make_phantom`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Union

import numpy as np

from cardioinr.core.errors import ConfigError

__all__ = ["PhantomConfig", "Range", "SeedLike"]

SeedLike = Union[int, tuple[int, ...], list[int], np.random.SeedSequence]

Range = tuple[float, float]


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. Fields left ``None`` get dimension-dependent defaults.

    Attributes:
        dim: 2 (one mid-ventricular slice, 2D+t) or 3 (a short-axis stack, 3D+t).
        shape: ``(X, Y, Z)`` voxels; default ``(112, 112, 1)`` in 2D, ``(96, 96, 8)`` in 3D.
        n_frames: frames per cycle; default 20 in 2D, 16 in 3D.
        spacing: voxel size ``(di, dj, dk)`` mm. In 2D the slice thickness only sets the header;
            nothing varies or moves through the plane.
        ed_frame: reference frame (end-diastole) of the ground truth; any frame, negative counts
            from the end (e.g. -1, the last frame, as in some real data).
        es_fraction: systole duration as a fraction of the cycle (ES frame =
            ``ed_frame + round(es_fraction * n_frames)`` modulo ``n_frames``); ``None`` draws it
            from ``es_fraction_range``.
        tagged: multiply the image by a SPAMM grid (in material coordinates, so it deforms).
        tag_spacing_mm: grid period, mm. tag_angle_deg: grid orientation in-plane.
        tag_depth: tag contrast at ED (0..1; 1 = lines go to zero).
        tag_fade: fraction of the tag contrast lost over one cycle (T1 relaxation).
        blood_tag_washout: ``None`` (default): the blood keeps its tags like the tissue. A
            fraction ``w`` of the cycle: the blood's tag contrast fades linearly from the tags'
            frame (ED) to 0 at cycle phase ``w``, as flowing blood replaces the tagged blood of a
            real SPAMM cine within ~100 ms (``0``: the blood is never tagged).
        noise_sigma: Rician noise sigma, relative to LV blood intensity 1.0 (0 = no noise).
        supersample: in-plane sub-samples per axis per voxel (anti-aliasing).
        z_supersample: through-plane sub-samples per slice in 3D (thick-slice partial volume).
        *_range: ranges of the randomly drawn physiological parameters (uniform draws, then
            rejection so that the combination is anatomically plausible; see ``draw_motion``).
        long_axis_mm_range: 3D base-to-apex length of the LV, mm (capped by the stack); ``None``
            stretches the LV over the whole stack (apex near the last slice).
        regional_motion_range: a regional wall-motion abnormality (post-infarct): the motion
            scale ``s`` of one segment of the LV wall, drawn from this range within [-1, 1]
            (1 normal, 0 akinetic, < 0 dyskinetic: the segment bulges out in systole); the
            segment's cavity shrink is ``s`` times the normal one. ``None`` (the default): no
            abnormality, and every phantom is bit for bit what it was without these settings.
            ``s`` may be raised toward 1 for a strongly contracting heart (see ``draw_motion``).
        regional_extent_deg_range: the segment's angular width (full width at half maximum,
            degrees, in (0, 240]): full abnormality over the central half, none beyond 1.5 times
            the width; the segment takes ``extent / 360`` of the circumference (an AHA segment
            is 60 degrees). In 3D it spans the whole long axis.
        regional_centre_deg_range: the segment's centre, degrees counter-clockwise in the (i, j)
            plane from the RV direction (0: mid-septum, 180: the free wall opposite).
        The three regional values are drawn after everything else, so a seed's other
        parameters do not change when the abnormality is switched on.
        rv_descent_gain_range: 3D: extra long-axis descent of the RV region, as a multiple of the
            base descent (its free wall then descends up to ``1 + gain`` times as far as the LV
            base: the tricuspid annulus's larger excursion); drawn after everything else, and
            only when set, so ``None`` (the default) leaves every phantom bit for bit as it was.
        rv_corner_mm_range: 3D: a triangular basal RV (real basal short-axis slices show one):
            how far its corner (the acute margin) sticks out beyond the crescent's rim at the
            base plane, mm, fading to none at mid-ventricle; the corner's direction is drawn
            within +-30 degrees of the RV direction. Drawn after everything else, and only when
            set, so ``None`` (the default: a crescent at every level) leaves every phantom bit for
            bit as it was.
        max_endo_stretch: the largest radial stretch of the wall next to the endocardium at ES
            (``R_en / (lambda r_en)``; 1 / sqrt of the fraction of cavity cross-section kept);
            draws beyond it are rejected. 1.9 (the default) keeps the normal hearts the first
            benchmarks were recorded on; a hypertrophic heart whose cavity keeps 15-25 % needs
            up to 3 (see :mod:`cardioinr.phantoms.groups`).
    """

    dim: int = 2
    shape: tuple[int, int, int] | None = None
    n_frames: int | None = None
    spacing: tuple[float, float, float] = (1.6, 1.6, 8.0)
    ed_frame: int = 0
    es_fraction: float | None = None
    tagged: bool = False
    tag_spacing_mm: float = 7.0
    tag_angle_deg: float = 0.0
    tag_depth: float = 0.7
    tag_fade: float = 0.3
    blood_tag_washout: float | None = None
    noise_sigma: float = 0.03
    supersample: int = 2
    z_supersample: int = 4
    es_fraction_range: Range = (0.35, 0.40)
    frame_interval_ms_range: Range = (30.0, 45.0)
    ef_range: Range = (0.50, 0.70)
    circumferential_strain_range: Range = (-0.25, -0.15)
    endo_radius_mm_range: Range = (18.0, 25.0)
    wall_thickness_mm_range: Range = (6.5, 13.0)
    twist_deg_range: Range = (2.0, 5.0)  # 2D: |peak twist| of the slice, random sign
    base_twist_deg_range: Range = (-7.0, -3.0)  # 3D
    apex_twist_deg_range: Range = (7.0, 13.0)  # 3D
    base_descent_mm_range: Range = (8.0, 12.0)  # 3D
    long_axis_mm_range: Range | None = None  # 3D; None: the LV fills the stack (apex near the last slice)
    rv_width_mm_range: Range = (12.0, 20.0)
    rv_shortening_range: Range = (0.35, 0.46)
    rv_descent_gain_range: Range | None = None  # 3D; None: the RV descends with the LV's fading term only
    rv_corner_mm_range: Range | None = None  # 3D; None: the RV is a crescent at every level
    translation_mm_range: Range = (1.0, 2.0)
    regional_motion_range: Range | None = None  # None: no regional wall-motion abnormality
    regional_extent_deg_range: Range = (60.0, 120.0)
    regional_centre_deg_range: Range = (0.0, 360.0)
    max_endo_stretch: float = 1.9

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ConfigError(f"phantom dim must be 2 or 3, got {self.dim!r}")
        shape = self.shape or ((112, 112, 1) if self.dim == 2 else (96, 96, 8))
        n_frames = self.n_frames or (20 if self.dim == 2 else 16)
        try:
            shape = tuple(int(s) for s in shape)
            spacing = tuple(float(s) for s in self.spacing)
        except (TypeError, ValueError):
            raise ConfigError(f"phantom shape {self.shape!r} / spacing {self.spacing!r} must be 3 numbers") from None
        if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
            raise ConfigError(f"phantom shape {shape} and spacing {spacing} must be 3 positive numbers")
        if self.dim == 2 and shape[2] != 1:
            raise ConfigError(f"a 2D phantom has one slice (shape[2] == 1), got shape {shape}")
        if self.dim == 3 and shape[2] < 2:
            raise ConfigError(f"a 3D phantom needs at least 2 slices, got shape {shape}")
        if min(shape[0] * spacing[0], shape[1] * spacing[1]) < 100.0:
            raise ConfigError(
                f"in-plane field of view {shape[0] * spacing[0]:.0f} x {shape[1] * spacing[1]:.0f} mm is too small "
                "for a heart with its surroundings (need >= 100 mm)"
            )
        if self.dim == 3 and shape[2] * spacing[2] < 40.0:
            raise ConfigError(
                f"a 3D phantom needs a z extent >= 40 mm (shape[2] * spacing[2]), got {shape[2] * spacing[2]:.0f} mm"
            )
        if self.long_axis_mm_range is not None and self.long_axis_mm_range[0] < 30.0:
            raise ConfigError(f"long_axis_mm_range must start at >= 30 mm, got {self.long_axis_mm_range}")
        if int(n_frames) < 4:
            raise ConfigError(f"a cycle needs at least 4 frames, got n_frames={n_frames}")
        n_frames = int(n_frames)
        if not -n_frames <= int(self.ed_frame) < n_frames:
            raise ConfigError(f"ed_frame {self.ed_frame} is out of range for {n_frames} frames")
        if self.es_fraction is not None and not 0.1 <= self.es_fraction <= 0.6:
            raise ConfigError(f"es_fraction must be in [0.1, 0.6], got {self.es_fraction}")
        if self.noise_sigma < 0 or not math.isfinite(self.noise_sigma):
            raise ConfigError(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        if int(self.supersample) < 1 or int(self.z_supersample) < 1:
            raise ConfigError("supersample and z_supersample must be >= 1")
        if not (0.0 <= self.tag_depth <= 1.0 and 0.0 <= self.tag_fade < 1.0 and self.tag_spacing_mm > 0):
            raise ConfigError("tag_depth must be in [0, 1], tag_fade in [0, 1), tag_spacing_mm > 0")
        if self.blood_tag_washout is not None and not 0.0 <= self.blood_tag_washout <= 1.0:
            raise ConfigError(f"blood_tag_washout must be None or in [0, 1], got {self.blood_tag_washout}")
        for f in fields(self):
            if f.name.endswith("_range") and getattr(self, f.name) is not None:
                lo, hi = getattr(self, f.name)
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                    raise ConfigError(f"{f.name} must be (low, high) with low <= high, got {(lo, hi)}")
                object.__setattr__(self, f.name, (float(lo), float(hi)))
        if self.regional_motion_range is not None and not (
            -1.0 <= self.regional_motion_range[0] and self.regional_motion_range[1] <= 1.0
        ):
            raise ConfigError(f"regional_motion_range must lie within [-1, 1], got {self.regional_motion_range}")
        if not (0.0 < self.regional_extent_deg_range[0] and self.regional_extent_deg_range[1] <= 240.0):
            raise ConfigError(f"regional_extent_deg_range must lie within (0, 240] degrees, got {self.regional_extent_deg_range}")
        if self.rv_descent_gain_range is not None and not (0.0 <= self.rv_descent_gain_range[0] and self.rv_descent_gain_range[1] <= 2.0):
            raise ConfigError(f"rv_descent_gain_range must lie within [0, 2], got {self.rv_descent_gain_range}")
        if self.rv_corner_mm_range is not None and not (0.0 <= self.rv_corner_mm_range[0] and self.rv_corner_mm_range[1] <= 20.0):
            raise ConfigError(f"rv_corner_mm_range must lie within [0, 20] mm, got {self.rv_corner_mm_range}")
        if not 1.2 <= float(self.max_endo_stretch) <= 4.0:
            raise ConfigError(f"max_endo_stretch must lie within [1.2, 4], got {self.max_endo_stretch}")
        object.__setattr__(self, "max_endo_stretch", float(self.max_endo_stretch))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "n_frames", n_frames)
        object.__setattr__(self, "ed_frame", int(self.ed_frame) % n_frames)
        object.__setattr__(self, "supersample", int(self.supersample))
        object.__setattr__(self, "z_supersample", int(self.z_supersample))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists). The regional-abnormality settings are left out
        while it is off, and ``max_endo_stretch`` while it is the default, so that manifests
        written without them stay what they were."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.regional_motion_range is None:
            for k in ("regional_motion_range", "regional_extent_deg_range", "regional_centre_deg_range"):
                del d[k]
        if self.rv_descent_gain_range is None:
            del d["rv_descent_gain_range"]
        if self.rv_corner_mm_range is None:
            del d["rv_corner_mm_range"]
        if self.max_endo_stretch == 1.9:
            del d["max_endo_stretch"]
        return d
