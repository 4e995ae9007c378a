"""Named groups of hearts, as clinical test sets have them: :data:`GROUPS`, :func:`group_config`,
and end-diastole/end-systole pairs of a cine (:func:`ed_es_pair`).

A group is a set of changes to the ranges of :class:`~cardioinr.phantoms.config.PhantomConfig`;
the draw (:func:`~cardioinr.phantoms.draw.draw_motion`) then keeps only plausible combinations,
so the drawn EF, wall and strain are a correlated subset of the box. The ranges follow the
groups of the ACDC challenge (Bernard et al., IEEE TMI 2018), on which clinical test sets like
the one issue 24 was measured on are modelled:

- ``normal``: the defaults (EF 50-70 %, wall 6.5-13 mm) with a healthy right ventricle (below).
- ``hypertrophic``: a small, thick-walled LV that empties almost completely: wall 12-20 mm,
  EF 70-85 %, the ES cavity down to 15-30 % of ED. The wall next to the endocardium is then
  stretched radially up to 3 times (the default draw stops at 1.9), which is what the fit
  under-estimated on real hearts.
- ``dilated``: a large, thin-walled, hypokinetic LV: ED cavity radius 27-34 mm, wall 5-10 mm,
  EF 15-35 %, weak strain.
- ``infarct``: post-infarct, one akinetic or dyskinetic segment (motion scale -0.3 to 0.2,
  60-120 degrees wide) in a mildly reduced heart (EF of the rest 40-60 %).
- ``rv``: an abnormal right ventricle, dilated (crescent 22-30 mm wide against 12-20) and
  hypokinetic (free-wall shortening 0.12-0.25, little long-axis motion of its own); LV normal.

Every other group has a healthy right ventricle: its free wall moves toward the septum by
55-65 % of the crescent's width (:class:`~cardioinr.phantoms.motion.RVShortening`, up to the
gradient bound) and, in 3D, descends along the long axis 1-1.5 times the base descent further
than its fading share of the LV's (``rv_descent_gain_range``; the tricuspid annulus moves
farther than the mitral annulus), giving an RV EF from labels of about 40-50 % on a
mid-ventricular slice and 40-60 % on 10 mm stacks. In 3D every group's RV is triangular at the
base, as basal short-axis slices show it, and a crescent from mid-ventricle down: its corner (the
acute margin) sticks out 4-10 mm beyond the crescent at the base plane (``rv_corner_mm_range``).
The :class:`PhantomConfig` defaults keep the weaker, crescent-shaped RV (EF 25-43 %) that the
built-in priors were trained on, so their recipe, the golden fit and the benchmarks recorded on
default phantoms stay reproducible.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from cardioinr.core.errors import ConfigError
from cardioinr.phantoms.config import PhantomConfig
from cardioinr.phantoms.render import Phantom

__all__ = ["GROUPS", "HEALTHY_RV", "ed_es_pair", "group_config"]

#: 3D: how far the basal RV's corner sticks out beyond the crescent (every group's RV is
#: triangular at the base, a crescent from mid-ventricle down; see the module docstring).
RV_CORNER_MM: tuple[float, float] = (4.0, 10.0)

#: A healthy right ventricle (see the module docstring); every group but ``rv`` has it.
HEALTHY_RV: dict[str, Any] = {"rv_shortening_range": (0.55, 0.65), "rv_descent_gain_range": (1.0, 1.5),
                               "rv_corner_mm_range": RV_CORNER_MM}

#: Group name -> changes to the :class:`PhantomConfig` ranges (see the module docstring).
GROUPS: dict[str, dict[str, Any]] = {
    "normal": {**HEALTHY_RV},
    "hypertrophic": {
        **HEALTHY_RV,
        "ef_range": (0.70, 0.85),
        "wall_thickness_mm_range": (12.0, 20.0),
        "endo_radius_mm_range": (14.0, 21.0),
        "circumferential_strain_range": (-0.32, -0.10),
        "max_endo_stretch": 3.0,
    },
    "dilated": {
        **HEALTHY_RV,
        "ef_range": (0.15, 0.35),
        "endo_radius_mm_range": (27.0, 34.0),
        "wall_thickness_mm_range": (5.0, 10.0),
        "circumferential_strain_range": (-0.14, -0.02),
    },
    "infarct": {
        **HEALTHY_RV,
        "ef_range": (0.40, 0.60),
        "circumferential_strain_range": (-0.25, -0.08),
        "regional_motion_range": (-0.3, 0.2),
        "regional_extent_deg_range": (60.0, 120.0),
    },
    "rv": {
        "rv_width_mm_range": (22.0, 30.0),
        "rv_shortening_range": (0.12, 0.25),
        "rv_descent_gain_range": (0.0, 0.3),
        "rv_corner_mm_range": RV_CORNER_MM,
    },
}


def group_config(group: str, dim: int = 2, **changes: Any) -> PhantomConfig:
    """The :class:`PhantomConfig` of a named group; ``changes`` override any field (shape,
    spacing, noise, ...), the group's own ranges included.

    Raises:
        ConfigError: an unknown group name.
    """
    if group not in GROUPS:
        raise ConfigError(f"unknown phantom group {group!r} (choose from {', '.join(GROUPS)})")
    return PhantomConfig(dim=dim, **{**GROUPS[group], **changes})


def ed_es_pair(phantom: Phantom) -> Phantom:
    """The end-diastole/end-systole pair of a phantom cine, as clinical pairs come: two frames
    (0: ED, the reference; 1: ES), their labels, the truth displacement of those frames.

    The analytic ``motion`` and ``params`` stay those of the cine (frame numbers in ``params``
    are the cine's; ``params["pair_frames"]`` names the two), so truth anywhere is still
    ``motion.forward(X, frame)`` with the cine's frame index.
    """
    seq = phantom.sequence
    ed, es = int(seq.ref_frame), int(phantom.motion.es_frame)
    frames = [ed, es]
    pair = replace(
        seq,
        image=np.ascontiguousarray(seq.image[..., frames]),
        labels={i: seq.labels[t] for i, t in enumerate(frames) if t in seq.labels},
        ref_frame=0,
        frame_interval_ms=float(seq.frame_interval_ms) * abs(es - ed),
        meta={**seq.meta, "ed_frame": 0, "es_frame": 1, "pair_of_frames": frames},
        label_sources={},
    )
    return replace(phantom, sequence=pair, displacement=np.ascontiguousarray(phantom.displacement[..., frames, :]),
                   params={**phantom.params, "pair_frames": frames})
