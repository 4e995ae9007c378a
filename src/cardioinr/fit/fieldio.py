"""Saving and loading a fitted field (architecture + weights) as one torch file."""

from __future__ import annotations

from pathlib import Path

import torch

from cardioinr.core.console import first_line
from cardioinr.core.errors import InputError
from cardioinr.core.files import atomic_path
from cardioinr.fit.fields import MotionField


def save_field(path: str | Path, field_: MotionField) -> Path:
    """Save a fitted field (architecture + weights) atomically as a torch file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": "cardioinr-field", "version": 1, "describe": field_.describe(),
                    "state_dict": field_.state_dict()}, tmp)
    return path


def load_field(path: str | Path, device: str = "cpu") -> MotionField:
    """Load a field written by :func:`save_field`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: field file not found")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
        d = obj["describe"]
        f = MotionField.from_description(d)
        f.load_state_dict(obj["state_dict"])
    except InputError:
        raise
    except Exception as e:  # corrupt or foreign file
        raise InputError(f"{path}: not a readable cardioinr field file ({first_line(e, 160)})") from None
    return f


__all__ = ["load_field", "save_field"]
