"""Review scores per slice per muscle and the review queue (muscle volumes: ``biomarkers``, on the label map).

Conventions (METHODS.md "Uncertainty"; all from the ensemble's member probabilities ``p_m``):

- Ensemble mask = mean probability ``>= 0.5``; member mask m = ``p_m >= 0.5``. Masks are per label,
  *before* the multi-muscle contest of :func:`assemble_slice` (a muscle's own prediction is scored).
  A label with two boxes (both legs) is combined first (max of means, see ``assembly``).
- ``mean_uncertainty``: mean total uncertainty (entropy of the mean, nats) over the union of the
  member masks dilated by ``dilate_px`` pixels (Euclidean disk), so voxels where members disagree
  and the rim around the muscle both count. NaN when every member mask is empty.
- ``mean_epistemic``: the same mean of the epistemic part (mutual information).
- ``expected_dsc``: the DSC the ensemble mask S = {p >= 0.5} is expected to reach if the truth
  follows the (calibrated) ensemble-mean probability p voxel by voxel: 2 sum_S p / (|S| + sum p), sums
  over the scored region. 1.0 when every voxel is certain; NaN when p is 0 everywhere. It reads the
  calibrated probabilities rather than member agreement, because members that share a decoder trunk
  agree closely even where they are wrong (measured in weights/MODEL_CARD.md).
- ``area_px``: ensemble-mask area; ``member_area_px``: each member mask's area.
- Review queue: most uncertain first (``mean_uncertainty`` descending), ties by lower
  ``expected_dsc``, then slice, then label (ascending). Scores with NaN uncertainty (no member found
  the muscle) go last.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..uncertainty import uncertainty_maps
from .assembly import LabelProbabilities, combine_label_predictions
from .types import BoxPrediction

#: A muscle is flagged for review when one of its scored slices has a mean total uncertainty above
#: this (nats; ln 2 = 0.693 is the maximum). Measured with the shipped recipe's cross-validated folds
#: (cross-fitted T and offset; tight boxes on every labelled slice of the held-out subject, 222 slice x
#: muscle scores; weights/MODEL_CARD.md "Review flags"). 1.4.0: at 0.45, 9 slices are flagged and 7 of
#: them have a real slice DSC below 0.8 (base rate 39 of 222); the flagged muscles are the worst ones
#: (Thigh_002: VL, VI, SM; Thigh_001: VI). 1.3.0: 25 flagged, 14 below 0.8. The former 0.5 (set on the
#: from-scratch demo ensemble) flags 1 slice of 222 with 1.4.0 and 3 with 1.3.0. The joined entry (1.5.0), measured
#: the same way: 12 flagged, 8 below 0.8 (base rate 24 of 222), so one limit serves every shipped entry.
FLAG_UNCERTAINTY_NATS = 0.45


def flagged_labels(scores: Iterable[MuscleSliceScore], threshold: float = FLAG_UNCERTAINTY_NATS) -> set[int]:
    """Labels with at least one scored slice above ``threshold`` (NaN never flags)."""
    return {s.label for s in scores if s.mean_uncertainty > threshold}


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


@dataclass(frozen=True)
class MuscleSliceScore:
    """Review scores of one muscle (label) on one axial slice (conventions in the module docstring)."""

    slice: int
    label: int
    mean_uncertainty: float
    mean_epistemic: float
    expected_dsc: float
    area_px: int
    member_area_px: tuple[int, ...]

    @property
    def n_members(self) -> int:
        return len(self.member_area_px)

    def as_dict(self) -> dict:
        """JSON-ready dict (NaN -> None)."""
        return {
            "slice": int(self.slice),
            "label": int(self.label),
            "mean_uncertainty_nats": _json_float(self.mean_uncertainty),
            "mean_epistemic_nats": _json_float(self.mean_epistemic),
            "expected_dsc": _json_float(self.expected_dsc),
            "area_px": int(self.area_px),
            "member_area_px": [int(a) for a in self.member_area_px],
        }


@dataclass(frozen=True)
class ReviewItem:
    """One entry of the review queue: go to ``slice`` and check muscle ``label``."""

    rank: int
    slice: int
    label: int
    mean_uncertainty: float
    expected_dsc: float
    area_px: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.slice, self.label)

    def as_dict(self) -> dict:
        return {
            "rank": int(self.rank),
            "slice": int(self.slice),
            "label": int(self.label),
            "mean_uncertainty_nats": _json_float(self.mean_uncertainty),
            "expected_dsc": _json_float(self.expected_dsc),
            "area_px": int(self.area_px),
        }


def _disk_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not mask.any():
        return mask.copy()
    # Euclidean dilation: every pixel within ``radius`` of a mask pixel
    return ndimage.distance_transform_edt(~mask) <= radius


def expected_dsc(mean_prob: np.ndarray) -> float:
    """2 sum_S p / (|S| + sum p) with S = {p >= 0.5} (see the module docstring); NaN when sum p == 0."""
    p = np.asarray(mean_prob, dtype=np.float64)
    total = float(p.sum())
    if total <= 0.0:
        return math.nan
    inside = p >= 0.5
    return 2.0 * float(p[inside].sum()) / (float(inside.sum()) + total)


def score_member_probs(
    member_probs: np.ndarray, *, slice_index: int, label: int, dilate_px: int = 3
) -> MuscleSliceScore:
    """Scores of one muscle from its (M, h, w) member probabilities on one slice region.

    The region is taken as given: pixels outside it are not counted (pad with zeros, i.e. the
    probability outside a prediction's window, to let the dilation reach beyond it).
    """
    mp = np.asarray(member_probs, dtype=np.float32)
    if mp.ndim != 3 or mp.shape[0] < 1:
        raise ValueError(f"member_probs must be (M, h, w) with M >= 1, got {mp.shape}")
    if dilate_px < 0:
        raise ValueError("dilate_px must be >= 0")
    members = mp >= 0.5
    ensemble = mp.mean(axis=0) >= 0.5
    union = members.any(axis=0)
    region = _disk_dilate(union, dilate_px)
    if region.any():
        unc = uncertainty_maps(mp)
        mean_unc = float(np.asarray(unc.total)[region].mean())
        mean_epi = float(np.asarray(unc.epistemic)[region].mean())
    else:
        mean_unc = mean_epi = math.nan
    expected = expected_dsc(mp.mean(axis=0))
    return MuscleSliceScore(
        slice=int(slice_index),
        label=int(label),
        mean_uncertainty=mean_unc,
        mean_epistemic=mean_epi,
        expected_dsc=expected,
        area_px=int(ensemble.sum()),
        member_area_px=tuple(int(a) for a in members.sum(axis=(1, 2))),
    )


def score_slice(
    preds: Sequence[BoxPrediction],
    shape: tuple[int, int],
    *,
    dilate_px: int = 3,
    locked: Collection[int] = frozenset(),
    combined: Mapping[int, LabelProbabilities] | None = None,
) -> list[MuscleSliceScore]:
    """Scores of every predicted muscle on one slice (sorted by label); ``locked`` labels are skipped.

    Boxes of one label are combined as in :func:`combine_label_predictions` (or ``combined``, when the
    caller has it); the combined window is padded by ``dilate_px`` (clipped to ``shape``) so the
    dilation sees the whole slice around it.
    """
    slices_seen = {int(p.box.slice) for p in preds}
    if len(slices_seen) > 1:
        raise ValueError(f"predictions from several slices {sorted(slices_seen)}")
    locked = {int(k) for k in locked}
    combined = ({lab: v for lab, v in combined.items() if lab not in locked} if combined is not None
                else combine_label_predictions([p for p in preds if int(p.box.label) not in locked]))
    out = []
    for label, lp in combined.items():
        w = lp.window
        if not (0 <= w.r0 and w.r1 <= shape[0] and 0 <= w.c0 and w.c1 <= shape[1]):
            raise ValueError(f"label {label}: window {w} outside slice {tuple(shape)}")
        pr0, pr1 = max(w.r0 - dilate_px, 0), min(w.r1 + dilate_px, int(shape[0]))
        pc0, pc1 = max(w.c0 - dilate_px, 0), min(w.c1 + dilate_px, int(shape[1]))
        padded = np.zeros((lp.members.shape[0], pr1 - pr0, pc1 - pc0), np.float32)
        padded[:, w.r0 - pr0 : w.r1 - pr0, w.c0 - pc0 : w.c1 - pc0] = lp.members
        out.append(
            score_member_probs(padded, slice_index=next(iter(slices_seen)), label=label, dilate_px=dilate_px)
        )
    return out


def _check_unique(scores: Iterable[MuscleSliceScore]) -> list[MuscleSliceScore]:
    scores = list(scores)
    seen: set[tuple[int, int]] = set()
    for s in scores:
        k = (s.slice, s.label)
        if k in seen:
            raise ValueError(f"two scores for slice {s.slice}, label {s.label}")
        seen.add(k)
    return scores


def _queue_key(s: MuscleSliceScore) -> tuple:
    unc_nan = math.isnan(s.mean_uncertainty)
    dsc = s.expected_dsc if not math.isnan(s.expected_dsc) else math.inf
    return (unc_nan, -s.mean_uncertainty if not unc_nan else 0.0, dsc, s.slice, s.label)


def review_queue(scores: Iterable[MuscleSliceScore]) -> list[ReviewItem]:
    """Scores ranked for review: most uncertain first, then lower expected DSC, slice, label.

    NaN uncertainty (all members empty) goes last; ``rank`` starts at 0.
    """
    ordered = sorted(_check_unique(scores), key=_queue_key)
    return [
        ReviewItem(i, s.slice, s.label, s.mean_uncertainty, s.expected_dsc, s.area_px)
        for i, s in enumerate(ordered)
    ]


def next_review_item(
    queue: Sequence[ReviewItem], visited: Collection[tuple[int, int]]
) -> ReviewItem | None:
    """The first item of ``queue`` whose (slice, label) is not in ``visited``; None when all are."""
    seen = {(int(s), int(k)) for s, k in visited}
    for item in queue:
        if item.key not in seen:
            return item
    return None
