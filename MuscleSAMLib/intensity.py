"""MRI intensity normalisation to the 0..255 range SAM-family models expect (METHODS.md step 2).

Per volume: clip to the 0.5 and 99.5 percentiles of the non-zero voxels, rescale linearly to 0..255,
and keep voxels that were exactly zero at 0 (background outside the field of view stays black).
The result does not depend on display window/level, so a prediction never depends on how the
radiologist had the image windowed when drawing the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


@dataclass(frozen=True)
class IntensityWindow:
    """The clip window found on a volume (recorded in reports so a run can be reproduced)."""

    low: float
    high: float


def intensity_window(volume: np.ndarray, low_pct: float = LOW_PERCENTILE, high_pct: float = HIGH_PERCENTILE) -> IntensityWindow:
    """Percentile window over the non-zero voxels of ``volume`` (all voxels zero -> window 0..1)."""
    nonzero = volume[volume != 0]
    if nonzero.size == 0:
        return IntensityWindow(0.0, 1.0)
    low, high = np.percentile(nonzero, [low_pct, high_pct])
    if high <= low:  # nearly constant: widen so the rescale is defined
        high = low + 1.0
    return IntensityWindow(float(low), float(high))


def normalize_mri(volume: np.ndarray, window: IntensityWindow | None = None) -> np.ndarray:
    """Return a float32 copy of ``volume`` clipped to ``window`` and rescaled to 0..255, zeros kept at 0."""
    v = np.asarray(volume, dtype=np.float32)
    w = window or intensity_window(v)
    out = (np.clip(v, w.low, w.high) - w.low) * np.float32(255.0 / (w.high - w.low))
    out[v == 0] = 0.0
    return out.astype(np.float32, copy=False)
