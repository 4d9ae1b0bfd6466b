"""Volume overlap: Dice similarity coefficient (METHODS.md "Metrics").

Convention: DSC = 2|P and G| / (|P| + |G|) per volume per muscle; both empty -> NaN, exactly one
empty -> 0.0. The mean over muscles is a NaN-mean that never includes background (label 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_mask, check_same_shape


def dice(pred: ArrayLike, truth: ArrayLike) -> float:
    """Dice similarity coefficient of two masks of any (equal) shape.

    DSC = 2|P and G| / (|P| + |G|). Both empty -> NaN; exactly one empty -> 0.0.
    Masks are boolean or 0/1 arrays; other values raise ``ValueError``, as does a shape mismatch.
    """
    p = as_mask(pred, "pred")
    g = as_mask(truth, "truth")
    check_same_shape(p, g, "pred", "truth")
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    if n_p + n_g == 0:
        return math.nan
    inter = int(np.count_nonzero(p & g))
    return 2.0 * inter / (n_p + n_g)


def dice_per_label(
    pred_labels: ArrayLike, truth_labels: ArrayLike, labels: Iterable[int]
) -> dict[int, float]:
    """Dice of ``pred_labels == k`` against ``truth_labels == k`` for each ``k`` in ``labels``.

    Returns ``{k: dsc}`` in the order given (NaN where label ``k`` is absent from both maps, 0.0
    where it is absent from exactly one). Shape mismatch -> ``ValueError``.
    """
    p = np.asarray(pred_labels)
    g = np.asarray(truth_labels)
    check_same_shape(p, g, "pred_labels", "truth_labels")
    return {int(k): dice(p == k, g == k) for k in labels}


def mean_dice(per_label: Mapping[int, float]) -> float:
    """NaN-mean of per-label Dice values, never including background.

    Key 0 (background) is skipped if present; NaN entries (label absent from both) are ignored.
    No finite value (empty mapping, or all NaN) -> NaN.
    """
    values = np.array([v for k, v in per_label.items() if int(k) != 0], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan
    return float(values.mean())
