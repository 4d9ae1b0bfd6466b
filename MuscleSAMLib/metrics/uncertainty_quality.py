"""Usefulness of an uncertainty map for finding wrong voxels (METHODS.md "Metrics").

- AUROC of the uncertainty for predicting wrong voxels (rank-based Mann-Whitney, ties count half).
- Share of the wrong voxels that lie inside the most uncertain ``fraction`` (5% / 10%) of the
  region's voxels.

``region`` (optional) is a mask of the same shape selecting the voxels counted (C order is kept).
Shape mismatches raise ``ValueError`` naming both shapes.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from ._arrays import as_mask, as_scores, check_same_shape, select_region

# fraction * N within this of an integer counts as that integer (0.07 * 100 evaluates to
# 7.000000000000001 and must give 7, not 8).
_COUNT_ATOL = 1e-9


def auroc(scores: ArrayLike, positives: ArrayLike, region: ArrayLike | None = None) -> float:
    """Area under the ROC curve of ``scores`` for the ``positives`` mask (Mann-Whitney U).

    AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos the sum of the positives'
    average ranks (``scipy.stats.rankdata``, method "average"), so tied scores count half: the
    probability that a random positive scores higher than a random negative, plus half the
    probability of a tie. No positives or no negatives in the region -> NaN.
    """
    s = as_scores(scores, "scores")
    pos = as_mask(positives, "positives")
    check_same_shape(s, pos, "scores", "positives")
    s_sel, pos_sel = select_region(region, s.shape, s, pos)
    n_pos = int(np.count_nonzero(pos_sel))
    n_neg = int(pos_sel.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s_sel, method="average")
    rank_sum = float(ranks[pos_sel].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auroc_error(
    uncertainty: ArrayLike,
    prediction: ArrayLike,
    truth: ArrayLike,
    region: ArrayLike | None = None,
) -> float:
    """AUROC of ``uncertainty`` for detecting wrong voxels, wrong = (prediction != truth).

    ``prediction`` and ``truth`` are masks or label maps of the same shape (compared elementwise).
    NaN if the region has no wrong or no right voxels. See :func:`auroc`.
    """
    pred = np.asarray(prediction)
    gt = np.asarray(truth)
    check_same_shape(pred, gt, "prediction", "truth")
    return auroc(uncertainty, pred != gt, region=region)


def error_share_in_top(
    uncertainty: ArrayLike,
    errors: ArrayLike,
    fraction: float = 0.05,
    region: ArrayLike | None = None,
) -> float:
    """Share of error voxels lying within the most uncertain ``fraction`` of the region's voxels.

    With N voxels in the region, the top k = ceil(fraction * N) voxels by uncertainty are taken
    (fraction * N within 1e-9 of an integer counts as that integer). Ties are broken
    deterministically by a stable sort on decreasing uncertainty: among equal uncertainties the
    voxel earlier in C (row-major) order ranks higher. Returns (errors among the top k) / (all
    errors in the region); NaN if the region holds no errors (or no voxels).
    """
    frac = float(fraction)
    if not (0.0 < frac <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    u = as_scores(uncertainty, "uncertainty")
    err = as_mask(errors, "errors")
    check_same_shape(u, err, "uncertainty", "errors")
    u_sel, err_sel = select_region(region, u.shape, u, err)
    n_err = int(np.count_nonzero(err_sel))
    if n_err == 0:
        return math.nan
    x = frac * u_sel.size
    nearest = round(x)
    k = int(nearest) if abs(x - nearest) <= _COUNT_ATOL else math.ceil(x)
    order = np.argsort(-u_sel, kind="stable")
    return int(np.count_nonzero(err_sel[order[:k]])) / n_err
