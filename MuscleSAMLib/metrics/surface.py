"""Surface-distance metrics with physical voxel spacing: NSD and HD95 (METHODS.md "Metrics").

Convention (used by every function here; 2D or 3D arrays, ``spacing`` gives the physical size of a
voxel along each array axis, in the array's axis order, in mm):

- Surface voxels of a mask are its foreground voxels with at least one face-neighbour
  (6-connectivity in 3D, 4-connectivity in 2D) that is background or lies outside the array.
- Each surface voxel is weighted by the physical area of its faces exposed to background or to
  the outside of the array. The face crossed when stepping along axis ``a`` has area equal to the
  product of the spacings of the other axes (3D: a rectangle; 2D: an edge whose length is the
  spacing of the other axis). A voxel exposing two faces along an axis counts both.
- The distance from a surface voxel of A to surface B is the Euclidean distance, in mm, from that
  voxel's centre to the nearest surface-voxel centre of B
  (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``). A voxel lying on both
  surfaces has distance 0.

Empty masks: both empty -> NaN for NSD and HD95; exactly one empty -> NSD 0.0, HD95 inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from ._arrays import as_mask, check_same_shape

# Relative slack on the cumulative-weight test of the weighted percentile, so that a cumulative
# fraction that equals the target in exact arithmetic (e.g. 19 of 20 equal weights at 0.95) is not
# missed through floating round-off.
_PERCENTILE_RTOL = 1e-12


@dataclass(frozen=True, eq=False)
class SurfaceDistances:
    """Directed surface distances (mm) and surface-element weights (mm^2 in 3D, mm in 2D).

    ``pred_to_truth[i]`` is the distance from the i-th surface voxel of ``pred`` (C order) to the
    surface of ``truth``, and ``pred_weights[i]`` its exposed face area; likewise for ``truth``.
    A side with an empty mask has empty arrays; distances to an empty surface are ``inf``.
    """

    pred_to_truth: NDArray[np.float64]
    pred_weights: NDArray[np.float64]
    truth_to_pred: NDArray[np.float64]
    truth_weights: NDArray[np.float64]


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    if ndim not in (2, 3):
        raise ValueError(f"surface metrics need 2D or 3D masks, got {ndim} dimensions")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(f"spacing {sp} has {len(sp)} entries but the masks have {ndim} axes")
    if not all(math.isfinite(s) and s > 0.0 for s in sp):
        raise ValueError(f"spacing must be finite and positive, got {sp}")
    return sp


def surface_weights(mask: NDArray[np.bool_], spacing: tuple[float, ...]) -> NDArray[np.float64]:
    """Exposed face area of every voxel of ``mask`` (0 for non-surface and background voxels).

    A face is exposed when the face-neighbour across it is background or outside the array; the face
    crossed along axis ``a`` has area prod(spacing[j] for j != a).
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    weights = np.zeros(mask.shape, dtype=np.float64)
    ndim = mask.ndim
    for axis in range(ndim):
        area = math.prod(spacing[j] for j in range(ndim) if j != axis)
        for step in (-1, 1):
            index = [slice(1, -1)] * ndim
            index[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            exposed = mask & ~padded[tuple(index)]
            weights += area * exposed
    return weights


def _directed(
    surf_from: NDArray[np.bool_], surf_to: NDArray[np.bool_], spacing: tuple[float, ...]
) -> NDArray[np.float64]:
    n_from = int(np.count_nonzero(surf_from))
    if not surf_to.any():
        return np.full(n_from, np.inf)
    if n_from == 0:
        return np.zeros(0)
    dist = ndimage.distance_transform_edt(~surf_to, sampling=spacing)
    return np.asarray(dist[surf_from], dtype=np.float64)


def surface_distances(
    pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float]
) -> SurfaceDistances:
    """Directed surface distances and area weights between two 2D or 3D masks.

    Surface voxels = foreground voxels with at least one face-neighbour (6-connectivity in 3D, 4 in
    2D) that is background or outside the array; each is weighted by the physical area of its
    faces exposed to background (3D: face area along axis a = product of the spacings of the other
    two axes; 2D: the edge length, i.e. the spacing of the other axis). The distance from a surface
    voxel of A to surface B is the Euclidean distance (``distance_transform_edt``,
    ``sampling=spacing``) from that voxel centre to the nearest surface-voxel centre of B.
    ``spacing`` is given per array axis. Shape or spacing mismatch -> ``ValueError``.

    The work is done on the bounding box of ``pred | truth``; every voxel outside it is background
    in both masks, so the result is identical to the full-array computation (C order is kept).
    """
    p = as_mask(pred, "pred")
    g = as_mask(truth, "truth")
    check_same_shape(p, g, "pred", "truth")
    sp = _check_spacing(spacing, p.ndim)
    union = p | g
    if union.any():
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(union))
        p, g = p[box], g[box]
    w_p = surface_weights(p, sp)
    w_g = surface_weights(g, sp)
    surf_p = w_p > 0
    surf_g = w_g > 0
    return SurfaceDistances(
        pred_to_truth=_directed(surf_p, surf_g, sp),
        pred_weights=w_p[surf_p],
        truth_to_pred=_directed(surf_g, surf_p, sp),
        truth_weights=w_g[surf_g],
    )


def nsd(
    pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> float:
    """Normalised surface Dice at tolerance tau (mm), area-weighted.

    NSD = (sum w_a[d_a <= tau] + sum w_b[d_b <= tau]) / (sum w_a + sum w_b), where a, b are the
    surface voxels of ``pred`` and ``truth``, w their exposed face areas and d their distances to
    the other surface (see module docstring). Both empty -> NaN; exactly one empty -> 0.0.
    """
    tau = float(tolerance_mm)
    if not (math.isfinite(tau) and tau >= 0.0):
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm}")
    sd = surface_distances(pred, truth, spacing)
    total = sd.pred_weights.sum() + sd.truth_weights.sum()
    if sd.pred_weights.size == 0 and sd.truth_weights.size == 0:
        return math.nan
    if sd.pred_weights.size == 0 or sd.truth_weights.size == 0:
        return 0.0
    within = sd.pred_weights[sd.pred_to_truth <= tau].sum()
    within += sd.truth_weights[sd.truth_to_pred <= tau].sum()
    return float(within / total)


def weighted_percentile(values: ArrayLike, weights: ArrayLike, q: float = 0.95) -> float:
    """Smallest value whose cumulative weight fraction reaches ``q`` after sorting by value.

    Values are sorted ascending; the result is the first value at which (cumulative weight) /
    (total weight) >= q (up to a relative floating slack of 1e-12). Empty input -> NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    check_same_shape(v, w, "values", "weights")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q}")
    if v.size == 0:
        return math.nan
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    total = cum[-1]
    if total <= 0:
        raise ValueError("weights sum to zero")
    idx = int(np.searchsorted(cum, q * total * (1.0 - _PERCENTILE_RTOL), side="left"))
    idx = min(idx, v.size - 1)
    return float(v[order][idx])


def hd95(pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float]) -> float:
    """Area-weighted 95th-percentile Hausdorff distance (mm), symmetric.

    For each direction (pred -> truth, truth -> pred) take the area-weighted 95th percentile of the
    surface distances: the smallest distance d whose cumulative weight fraction is >= 0.95 after
    sorting by distance. HD95 is the max of the two. Both empty -> NaN; exactly one empty -> inf.
    """
    sd = surface_distances(pred, truth, spacing)
    if sd.pred_weights.size == 0 and sd.truth_weights.size == 0:
        return math.nan
    if sd.pred_weights.size == 0 or sd.truth_weights.size == 0:
        return math.inf
    return max(
        weighted_percentile(sd.pred_to_truth, sd.pred_weights, 0.95),
        weighted_percentile(sd.truth_to_pred, sd.truth_weights, 0.95),
    )
