"""cardioinr: cardiac motion from cine MRI with implicit neural representations and learned priors."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cardioinr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from cardioinr.core.errors import CardioInrError, InputError
from cardioinr.io import ACDC, SUNNYBROOK, LabelMap, Sequence, load_sequence

__all__ = ["ACDC", "SUNNYBROOK", "CardioInrError", "InputError", "LabelMap", "Sequence", "__version__", "load_sequence"]
