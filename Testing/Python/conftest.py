"""Fixtures and hooks for Testing/Python (plain helper functions live in musclesam_test_helpers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def ramp_array() -> np.ndarray:
    """A (k, j, i) = (6, 20, 30) int16 volume whose every voxel value is unique."""
    return (np.arange(6 * 20 * 30, dtype=np.int16).reshape(6, 20, 30) + 1)
