"""Analysis of a motion: kinematics, the cardiac frame, AHA segments, strain and evaluation metrics.

Modules, each building on the ones before it:

* :mod:`~cardioinr.geometry.kinematics`: deformation gradient ``F``, ``det F`` and Green strain,
  from a continuous field (autodiff) or a displacement grid (finite differences);
* :mod:`~cardioinr.analysis.config`: :class:`StrainConfig`;
* :mod:`~cardioinr.analysis.cardiac_frame`: LV long axis, centres, septum and angles;
* :mod:`~cardioinr.analysis.aha`: AHA segments and region names;
* :mod:`~cardioinr.analysis.cavity`: LV cavity size and ejection fraction;
* :mod:`~cardioinr.analysis.metrics`: overlap, surface distance, end-point error, folding and
  scoring against ground truth;
* :mod:`~cardioinr.analysis.longitudinal`: clinical GLS, the length change of the midwall
  line (3D stack: :func:`midwall_gls`; one long-axis slice: :func:`lax_gls`);
* :mod:`~cardioinr.analysis.strain`: the strain entry points (``analyse_*``) and
  :class:`StrainResult`.
"""

from cardioinr.analysis.aha import AHA_NAMES, GLOBAL, aha_segments, region_name, segment_of_angle
from cardioinr.analysis.cardiac_frame import CardiacFrame, cardiac_frame
from cardioinr.analysis.cavity import cavity_sizes, ejection_fraction
from cardioinr.analysis.config import StrainConfig
from cardioinr.analysis.longitudinal import LAX_SEGMENTS, LaxGLS, MidwallGLS, lax_gls, midwall_gls
from cardioinr.analysis.metrics import (
    dice,
    dice_per_label,
    endpoint_error,
    epe_by_region,
    evaluate_arrays,
    find_reference_frame,
    folding_stats,
    hd95,
    heart_mask,
    label_scores,
)
from cardioinr.analysis.strain import (
    CSV_COLUMNS,
    CYCLE_COLUMNS,
    GLS_MIDWALL,
    StrainResult,
    analyse_displacement,
    analyse_field,
    analyse_fit,
    analyse_fit_result,
)
from cardioinr.geometry.kinematics import (
    deformation_gradient_dense,
    deformation_gradient_field,
    det_f,
    displacement_gradient_grid,
    engineering_strain,
    green_strain,
    jacobian_determinant_grid,
    normal_strain,
)

__all__ = [
    "AHA_NAMES",
    "CSV_COLUMNS",
    "CYCLE_COLUMNS",
    "GLOBAL",
    "GLS_MIDWALL",
    "LAX_SEGMENTS",
    "CardiacFrame",
    "LaxGLS",
    "MidwallGLS",
    "StrainConfig",
    "StrainResult",
    "aha_segments",
    "analyse_displacement",
    "analyse_field",
    "analyse_fit",
    "analyse_fit_result",
    "cardiac_frame",
    "cavity_sizes",
    "deformation_gradient_dense",
    "deformation_gradient_field",
    "det_f",
    "dice",
    "dice_per_label",
    "displacement_gradient_grid",
    "ejection_fraction",
    "endpoint_error",
    "engineering_strain",
    "epe_by_region",
    "evaluate_arrays",
    "find_reference_frame",
    "folding_stats",
    "green_strain",
    "hd95",
    "heart_mask",
    "jacobian_determinant_grid",
    "label_scores",
    "lax_gls",
    "midwall_gls",
    "normal_strain",
    "region_name",
    "segment_of_angle",
]
