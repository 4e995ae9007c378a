"""Turning results into JSON types.

Two tools, for two ways of writing JSON:

* :func:`json_default` is the ``default=`` hook of :func:`json.dumps` used by
  :func:`cardioinr.core.files.write_json_atomic`: it is called only for objects JSON cannot
  write (NumPy scalars and arrays, paths) and leaves everything else to :mod:`json`, so
  non-finite floats are written as ``NaN``/``Infinity`` as Python does.
* :func:`json_ready` converts a whole structure up front into plain JSON types, with every
  non-finite float turned into ``None``, so that ``json.dumps(json_ready(x), allow_nan=False)``
  succeeds for the dicts and lists the package builds (metrics, strain tables).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default", "json_ready"]


def json_default(o: object) -> object:
    """``default=`` hook for :func:`json.dumps`: NumPy scalars -> Python, arrays -> lists, paths -> str.

    Raises :class:`TypeError` for anything else (what :mod:`json` expects of the hook).
    """
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_ready(obj: Any) -> Any:
    """Turn a result into plain JSON types: NaN/inf -> ``None``, NumPy -> Python, keys -> str.

    Mappings become dicts with ``str`` keys, lists and tuples become lists, arrays become
    (nested) lists, NumPy booleans, integers and floats become ``bool``, ``int`` and ``float``
    (non-finite floats ``None``), paths ``str``; anything else is returned as it is.
    ``json.dumps(json_ready(x), allow_nan=False)`` succeeds whenever ``x`` holds only these.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
