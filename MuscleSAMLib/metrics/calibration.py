"""Calibration of binary probability maps: ECE, reliability curve, NLL, Brier.

METHODS.md "Metrics".

Conventions, for a foreground probability ``p`` and a binary truth ``y`` per voxel:

- Predicted class 1[p >= 0.5]; correctness 1[(p >= 0.5) == y].
- Top-label confidence c = max(p, 1 - p), which lies in [0.5, 1].
- Bins: ``n_bins`` equal-width bins over [0, 1] (the standard definition), edges k / n_bins; bin k
  holds edges[k] <= c < edges[k + 1], and the last bin also holds c = 1.0. Because c >= 0.5, only
  the upper half of the bins is ever populated (with 15 bins: bins 7..14; c = 0.5 falls in bin 7).
- ECE = sum_b (n_b / N) |acc_b - conf_b| over non-empty bins, acc_b the mean correctness and conf_b
  the mean confidence of bin b.
- NLL = mean of -[y log p + (1 - y) log(1 - p)] with p clipped to [1e-7, 1 - 1e-7].
- Brier = mean (p - y)^2.

``region`` (optional) is a mask of the same shape selecting the voxels counted; an empty region
gives NaN. Probabilities outside [0, 1] or non-finite, non-binary truth, or any shape mismatch
raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._arrays import as_mask, as_probability, check_same_shape, select_region

NLL_EPS = 1e-7


@dataclass(frozen=True, eq=False)
class ReliabilityCurve:
    """Per-bin calibration statistics on top-label confidence.

    ``edges`` has ``n_bins + 1`` entries (k / n_bins); ``counts``, ``accuracy`` and ``confidence``
    have ``n_bins`` entries, with NaN accuracy and confidence in empty bins.
    """

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    accuracy: NDArray[np.float64]
    confidence: NDArray[np.float64]

    @property
    def n_total(self) -> int:
        """Number of voxels counted (all bins)."""
        return int(self.counts.sum())


def _prepare(
    prob: ArrayLike, truth: ArrayLike, region: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    p = as_probability(prob, "prob")
    y = as_mask(truth, "truth")
    check_same_shape(p, y, "prob", "truth")
    p_sel, y_sel = select_region(region, p.shape, p, y)
    return p_sel, y_sel


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability_curve(
    prob: ArrayLike, truth: ArrayLike, n_bins: int = 15, region: ArrayLike | None = None
) -> ReliabilityCurve:
    """Reliability curve on binary top-label confidence c = max(p, 1 - p).

    ``n_bins`` equal-width bins over [0, 1] with edges k / n_bins; bin k holds
    edges[k] <= c < edges[k + 1], the last bin also holds c = 1.0. Per bin: count, accuracy = mean
    of 1[(p >= 0.5) == y], confidence = mean c; NaN for empty bins. ``region`` selects voxels.
    """
    n = _check_bins(n_bins)
    p, y = _prepare(prob, truth, region)
    edges = np.arange(n + 1, dtype=np.float64) / n
    conf = np.maximum(p, 1.0 - p)
    correct = ((p >= 0.5) == y).astype(np.float64)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n - 1)
    counts = np.bincount(idx, minlength=n).astype(np.int64)
    sum_acc = np.bincount(idx, weights=correct, minlength=n)
    sum_conf = np.bincount(idx, weights=conf, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, sum_acc / counts, np.nan)
        confidence = np.where(counts > 0, sum_conf / counts, np.nan)
    return ReliabilityCurve(edges=edges, counts=counts, accuracy=accuracy, confidence=confidence)


def ece(
    prob: ArrayLike, truth: ArrayLike, n_bins: int = 15, region: ArrayLike | None = None
) -> float:
    """Expected calibration error, binary top-label, ``n_bins`` equal-width bins over [0, 1].

    ECE = sum_b (n_b / N) |acc_b - conf_b| over non-empty bins of :func:`reliability_curve`
    (confidence c = max(p, 1 - p), correctness 1[(p >= 0.5) == y], last bin includes 1.0).
    Empty region -> NaN.
    """
    curve = reliability_curve(prob, truth, n_bins=n_bins, region=region)
    total = curve.n_total
    if total == 0:
        return math.nan
    filled = curve.counts > 0
    gaps = np.abs(curve.accuracy[filled] - curve.confidence[filled])
    return float(np.sum(curve.counts[filled] / total * gaps))


def nll(prob: ArrayLike, truth: ArrayLike, region: ArrayLike | None = None) -> float:
    """Mean binary negative log-likelihood (nats) with p clipped to [1e-7, 1 - 1e-7].

    NLL = mean of -[y log p + (1 - y) log(1 - p)] over the region. Empty region -> NaN.
    """
    p, y = _prepare(prob, truth, region)
    if p.size == 0:
        return math.nan
    pc = np.clip(p, NLL_EPS, 1.0 - NLL_EPS)
    return float(-np.mean(np.where(y, np.log(pc), np.log1p(-pc))))


def brier(prob: ArrayLike, truth: ArrayLike, region: ArrayLike | None = None) -> float:
    """Binary Brier score: mean (p - y)^2 over the region. Empty region -> NaN."""
    p, y = _prepare(prob, truth, region)
    if p.size == 0:
        return math.nan
    return float(np.mean((p - y.astype(np.float64)) ** 2))
