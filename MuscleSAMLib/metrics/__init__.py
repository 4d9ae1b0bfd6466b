"""Segmentation, calibration and uncertainty-quality metrics (METHODS.md "Metrics").

Pure numpy/scipy. Every function states its exact convention in its docstring:

- :mod:`.overlap`: ``dice``, ``dice_per_label``, ``mean_dice``.
- :mod:`.surface`: ``surface_distances``, ``nsd``, ``hd95`` (physical spacing, area-weighted).
- :mod:`.calibration`: ``ece``, ``reliability_curve``, ``nll``, ``brier``.
- :mod:`.uncertainty_quality`: ``auroc``, ``auroc_error``, ``error_share_in_top``.
"""

from __future__ import annotations

from .calibration import ReliabilityCurve, brier, ece, nll, reliability_curve
from .overlap import dice, dice_per_label, mean_dice
from .surface import SurfaceDistances, hd95, nsd, surface_distances, weighted_percentile
from .uncertainty_quality import auroc, auroc_error, error_share_in_top

__all__ = [
    "ReliabilityCurve",
    "SurfaceDistances",
    "auroc",
    "auroc_error",
    "brier",
    "dice",
    "dice_per_label",
    "ece",
    "error_share_in_top",
    "hd95",
    "mean_dice",
    "nll",
    "nsd",
    "reliability_curve",
    "surface_distances",
    "weighted_percentile",
]
