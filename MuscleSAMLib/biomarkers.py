"""Per-muscle, per-side biomarkers with intervals from the ensemble members (pure numpy).

Conventions
-----------
* Arrays are canonical (slices, rows, cols): columns run patient right -> left, so the patient's
  RIGHT leg lies at the low column indices. The midline is the gap between the thighs in the MRI
  (column of least body signal in the middle half of the field of view), or the field of view's
  centre column when no image is given (see :func:`midline_column`). Without a gap between the legs
  along the patient's right-left axis, only ``both`` rows are given (never every muscle on one side).
* volume_ml = voxels * voxel volume (slice spacing x row x col spacing) / 1000.
* mean_csa_mm2 = mean cross-sectional area over the slices where the muscle is present.
* fat fraction (Dixon) = fat / (fat + water) per voxel, over voxels with fat + water > 0; mean and
  median inside the muscle.
* Intervals: each quantity recomputed on every member's own mask (member probability >= 0.5), and
  reported as [min, max] over members. A muscle mask given without members has no interval (None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

SIDES = ("right", "left")


@dataclass(frozen=True)
class Biomarkers:
    """One muscle on one side (or both)."""

    label: int
    side: str
    volume_ml: float
    volume_ml_interval: tuple[float, float] | None
    mean_csa_mm2: float
    mean_csa_mm2_interval: tuple[float, float] | None
    n_slices: int
    fat_fraction_mean: float | None = None
    fat_fraction_mean_interval: tuple[float, float] | None = None
    fat_fraction_median: float | None = None
    fat_fraction_median_interval: tuple[float, float] | None = None

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def fat_fraction_map(fat: np.ndarray, water: np.ndarray) -> np.ndarray:
    """fat / (fat + water) per voxel (NaN where fat + water <= 0)."""
    f = fat.astype(np.float64)
    total = f + water.astype(np.float64)
    out = np.full(total.shape, np.nan)
    np.divide(f, total, out=out, where=total > 0)
    return np.clip(out, 0.0, 1.0)


def midline_column(labels: np.ndarray, image: np.ndarray | None = None) -> float | None:
    """The column between the two legs (canonical arrays: columns run along the patient's right-left axis).

    With an image: the column of least body signal (voxels above 10 % of the 99th percentile) in
    the middle half of the field of view, i.e. the gap between the thighs; None when there is no such
    gap (the body profile on either side peaks under 1.5 times the gap's; 2.6 on the shipped sample,
    whose thighs touch), e.g. the legs lie one in front of the other in patient coordinates: sides are
    then not told apart rather than all called one side.
    Without an image: the centre column of the field of view (bilateral thigh scans are centred
    between the legs). Never derived from the labels alone, which would split a single leg in two.
    """
    cols = labels.shape[2]
    if image is None:
        return (cols - 1) / 2.0
    body = image > 0.1 * np.percentile(image, 99)
    profile = body.sum(axis=(0, 1)).astype(np.float64)
    lo, hi = cols // 4, (3 * cols) // 4
    middle = profile[lo:hi]
    gap = np.flatnonzero(middle == middle.min())
    at = float(lo + gap.mean())
    left_peak, right_peak = profile[: int(at) + 1].max(initial=0.0), profile[int(at):].max(initial=0.0)
    if min(left_peak, right_peak) < 1.5 * middle.min() or min(left_peak, right_peak) == 0:
        return None
    return at


def side_of_column(centre, midline: float, ties_high: bool = False) -> np.ndarray:
    """The one side-of-the-midline rule: 0 (the patient's right, canonical columns below the midline) or 1
    (left) for each column position ``centre`` (array or scalar, pixel-index coordinates: column c's centre
    is c, a box of half-open columns [x0, x1) is centred at (x0 + x1 - 1) / 2). A position exactly on the
    midline goes to side 0, or to side 1 with ``ties_high`` (the mirrored leg layout flips it). Boxes
    (their leg crop, their propagation walk's name), voxels (per-side biomarkers) and training labels
    (each leg crop's own side) all follow it."""
    c = np.asarray(centre, dtype=np.float64)
    return np.where((c > midline) | ((c == midline) & ties_high), 1, 0)


def side_of_box(box_xyxy, midline: float, ties_high: bool = False) -> int:
    """:func:`side_of_column` of a box's centre column (half-open columns [x0, x1): (x0 + x1 - 1) / 2)."""
    x0, _, x1, _ = box_xyxy
    return int(side_of_column((x0 + x1 - 1) / 2.0, midline, ties_high))


def side_mask(shape: tuple[int, int, int], side: str, midline: float) -> np.ndarray:
    """Boolean mask of one side (``right`` = side 0 of :func:`side_of_column`, canonical LPS)."""
    keep = side_of_column(np.arange(shape[2]), midline) == SIDES.index(side)
    return np.broadcast_to(keep[None, None, :], shape)


def _measures(mask: np.ndarray, spacing: tuple[float, float, float], ff: np.ndarray | None) -> tuple:
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    areas = mask.sum(axis=(1, 2))
    present = areas > 0
    volume = float(mask.sum() * voxel_ml)
    csa = float(areas[present].mean() * spacing[1] * spacing[2]) if present.any() else 0.0
    ff_mean = ff_median = None
    if ff is not None:
        vals = ff[mask]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            ff_mean, ff_median = float(vals.mean()), float(np.median(vals))
    return volume, csa, int(present.sum()), ff_mean, ff_median


def _interval(values: list[float | None], point: float | None) -> tuple[float, float] | None:
    """[min, max] over the members' values, widened to contain ``point`` (the figure of the written label
    map, whose contested voxels can differ from every member's own mask): an interval always holds its value."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    vals += [point] if point is not None else []
    return (float(min(vals)), float(max(vals)))


def muscle_biomarkers(labels: np.ndarray, spacing: tuple[float, float, float], *,
                      member_masks: Mapping[int, np.ndarray] | None = None,
                      fat: np.ndarray | None = None, water: np.ndarray | None = None,
                      by_side: bool = True, image: np.ndarray | None = None) -> list[Biomarkers]:
    """Biomarkers for every label in ``labels`` (canonical), per side (and ``both``).

    ``member_masks``: {label: (M, slices, rows, cols) bool} each member's own mask of that muscle,
    for the intervals. ``fat``/``water``: a Dixon pair on the same canonical grid, for fat fraction.
    ``image``: the MRI, to find the gap between the legs (defaults to ``water``).
    """
    ff = fat_fraction_map(fat, water) if fat is not None and water is not None else None
    midline = midline_column(labels, image if image is not None else water)
    sides = (*SIDES, "both") if by_side and midline is not None else ("both",)
    out: list[Biomarkers] = []
    for label in (int(v) for v in np.unique(labels) if v != 0):
        for side in sides:
            region = np.ones(labels.shape, bool) if side == "both" else side_mask(labels.shape, side, midline)
            mask = (labels == label) & region
            if not mask.any():
                continue
            vol, csa, n, ffm, ffmed = _measures(mask, spacing, ff)
            intervals: list[tuple[float, float] | None] = [None, None, None, None]
            if member_masks is not None and label in member_masks:
                per = [_measures(m & region, spacing, ff) for m in member_masks[label]]
                intervals = [_interval([p[0] for p in per], vol), _interval([p[1] for p in per], csa),
                             _interval([p[3] for p in per], ffm), _interval([p[4] for p in per], ffmed)]
            out.append(Biomarkers(label, side, vol, intervals[0], csa, intervals[1], n, ffm, intervals[2], ffmed, intervals[3]))
    return out
