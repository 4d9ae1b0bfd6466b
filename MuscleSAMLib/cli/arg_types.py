"""Argument types that range-check values at the parser (a bad value never reaches the engine)."""

from __future__ import annotations

import argparse
import math


def probability_threshold(text: str) -> float:
    """A finite number strictly between 0 and 1 (0 or 1 would label every voxel or none)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a probability between 0 and 1, e.g. 0.5") from None
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1); give a probability between 0 and 1, e.g. 0.5")
    return value
