"""The phantom's analytic motion: one module per stage, composed by :class:`PhantomMotion`.

- :mod:`.lv`: stage 1, LV in-plane radial contraction and twist (:class:`LVInPlane`);
- :mod:`.descent`: stage 2, base descent, 3D only (:class:`BaseDescent`);
- :mod:`.rv`: stage 3, RV free wall shortening (:class:`RVShortening`);
- :mod:`.translation`: stage 4, global in-plane translation (:class:`GlobalTranslation`);
- :mod:`.compose`: :class:`PhantomMotion`, the drawn parameters, the cycle timing and the whole
  map (forward, inverse, displacement, deformation gradient, Jacobian determinant).
"""

from cardioinr.phantoms.motion.compose import PhantomMotion
from cardioinr.phantoms.motion.descent import BaseDescent
from cardioinr.phantoms.motion.lv import LVInPlane
from cardioinr.phantoms.motion.rv import RVShortening
from cardioinr.phantoms.motion.translation import GlobalTranslation

__all__ = ["BaseDescent", "GlobalTranslation", "LVInPlane", "PhantomMotion", "RVShortening"]
