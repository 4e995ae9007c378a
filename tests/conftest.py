"""Shared test set-up: pinned threads (two cores oversubscribe easily) and data paths."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest
import torch

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]


def sunnybrook_dir() -> Path | None:
    """The shared Sunnybrook folder: $CARDIOINR_DATA/sunnybrook, ../shared/data/sunnybrook."""
    candidates = []
    if os.environ.get("CARDIOINR_DATA"):
        candidates.append(Path(os.environ["CARDIOINR_DATA"]) / "sunnybrook")
    candidates += [REPO.parent / "shared" / "data" / "sunnybrook", Path("/work/shared/data/sunnybrook")]
    for c in candidates:
        if c.is_dir() and any(c.glob("*_sa_cine_crop80.nii.gz")):
            return c
    return None


@pytest.fixture
def sunnybrook() -> Path:
    d = sunnybrook_dir()
    if d is None:
        pytest.skip("Sunnybrook data not found (set CARDIOINR_DATA to a folder holding sunnybrook/)")
    return d
