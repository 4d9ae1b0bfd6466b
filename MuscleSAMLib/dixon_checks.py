"""Plausibility of a Dixon fat/water pair: warnings, not refusals (an unusual pair may be intended).

Three mistakes give silently wrong fat fractions: the same image given twice (fat fraction 0.5
everywhere), a label map given as the fat image (0 everywhere), and fat and water swapped (muscle
reads as fat). The first two are seen in the images; a swap is seen once muscles are segmented:
muscle is the least fatty tissue of the thigh (subcutaneous fat and marrow are fattier), so a
segmented muscle with a higher mean fat fraction than the rest of the body means the pair is swapped
(scale-free: it compares the pair with itself, whatever the scanner's fat/water gains; on the shipped
sample: muscle 0.38 vs rest 0.65, swapped 0.62 vs 0.35).
"""

from __future__ import annotations

import os

import numpy as np

from .errors import warn_input
from .volumes import Volume, label_map_reason


def _same_file(a: Volume, b: Volume) -> bool:
    try:
        return os.path.samefile(a.source, b.source)
    except OSError:
        return False


def implausibility(fat: Volume, water: Volume) -> str | None:
    """Why the pair looks wrong (one sentence), or None."""
    f, w = fat.canonical_array, water.canonical_array
    if _same_file(fat, water) or np.array_equal(f, w):
        return "the fat and water images are the same image (fat fraction would be 0.5 everywhere); give the fat image"
    if label_map_reason(fat) is not None:  # the one "is this a label map" rule
        return "the fat image holds only a few whole-number values, like a label map (fat fraction would be about 0); give the fat image"
    return None


def swapped_after_segmentation(labels: np.ndarray, fat: np.ndarray, water: np.ndarray) -> str | None:
    """Why the pair looks swapped given the segmented muscles (canonical arrays), or None (module docstring)."""
    total = fat.astype(np.float64) + water
    body = total > 0.1 * np.percentile(total, 99)
    muscle = (labels > 0) & body
    rest = body & ~muscle
    if muscle.sum() < 50 or rest.sum() < 50:
        return None
    ff = np.divide(fat, total, out=np.zeros(total.shape), where=total > 0)
    ff_muscle, ff_rest = float(ff[muscle].mean()), float(ff[rest].mean())
    if ff_muscle > ff_rest:
        return (f"the segmented muscles have a higher mean fat fraction ({ff_muscle:.2f}) than the rest of the body "
                f"({ff_rest:.2f}): fat and water look swapped; check which image is which")
    return None


def warn_if_implausible(fat: Volume, water: Volume) -> None:
    """Issue an input warning naming both files when :func:`implausibility` finds something."""
    why = implausibility(fat, water)
    if why:
        warn_input(f"Dixon pair fat {fat.source} / water {water.source}: {why}")
