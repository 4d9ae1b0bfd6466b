"""Slice propagation of one box prompt through neighbouring axial slices (METHODS.md "Slice propagation").

Walk, per direction ``d`` (+1 = increasing slice index, -1 = decreasing):

1. Predict ``start`` (shared by both directions when ``direction == 0``).
2. Mask of a predicted slice = ensemble-mean probability ``>= 0.5`` over the prediction's window,
   reduced to its **largest 8-connected component**. One box prompt is one object (one muscle on one
   leg; METHODS "one box per muscle per leg"), so a stray fragment (a blob on a neighbouring muscle
   inside the window) must not widen the next box: with the whole mask's bounding box, such a fragment
   would pull the box onto the neighbour and the error would compound slice after slice. Moderate real
   growth of the muscle is absorbed by ``margin_px``.
3. The next slice's box = bounding box of that component + ``margin_px`` on every side, clipped to the
   slice (``slice_shape``; without it only to >= 0, and ``predict`` must clip). Half-open ``xyxy``.
4. Checks on each predicted slice, in this order (the first that fails stops the direction there):
   - "mask vanished": largest-component area < ``min_area_px`` (or 0);
   - "uncertainty jump": mean total uncertainty (entropy of the ensemble mean, nats) inside the slice's
     prompt box rises by more than ``max_uncertainty_jump`` over the previous accepted slice's, or
     exceeds ``max_mean_uncertainty``. The start slice has no previous slice: only the absolute limit.
   - "low expected quality" (not on the start slice, the user's own box, which is shown and scored):
     the calibrated expected DSC of the slice's mask (:func:`~MuscleSAMLib.engine.review.expected_dsc`
     of the ensemble mean over the window) is below ``min_expected_dsc``, the members' mean predicted
     IoU (SAM's own quality score for its mask, ``BoxPrediction.iou_pred``) is below ``min_iou_pred``,
     or the mask's area changed by more than a factor ``max_area_ratio`` from the previous accepted
     slice. A SAM-family model given a box always segments something in it; where the muscle has ended
     or moved out of the derived box it outlines a neighbour or fat, often confidently (the calibrated
     probabilities stay sharp), but its IoU head scores such a mask lower. The IoU check is skipped for
     the whole walk when the start slice's predicted IoU is not a number >= 0: such a head was never
     trained to score masks (e.g. random weights), and its output says nothing about quality. (A trained
     head is not bounded above: a score a little over 1 on a clean box still counts.)
   A slice that fails is *not* accepted: its prediction is kept in :class:`DirectionStop` for display
   and the slice is the one flagged for review (``stopped_at``).
5. Before each new slice, in this order: "cancelled" (``cancel`` is set), "volume edge" (the next slice
   would fall outside ``0..n_slices-1``), "max steps" (``max_steps`` slices beyond the start already
   accepted in this direction). For these, ``stopped_at`` is the last accepted slice (the start slice
   if none). An exception from ``predict`` stops the direction with reason "error" (the message is in
   ``detail``); what was accepted so far is kept.

``predictions`` hold the accepted slices only (start included), ordered by slice index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..uncertainty import uncertainty_maps
from .review import expected_dsc
from .types import BoxPrediction, BoxPrompt

STOP_MASK_VANISHED = "mask vanished"
STOP_UNCERTAINTY_JUMP = "uncertainty jump"
STOP_LOW_QUALITY = "low expected quality"
STOP_VOLUME_EDGE = "volume edge"
STOP_MAX_STEPS = "max steps"
STOP_CANCELLED = "cancelled"
STOP_ERROR = "error"

# Default uncertainty limits (nats; the binary entropy is at most log 2 = 0.693). Heuristics: a
# well-segmented muscle box averages about 0.05-0.15 nats (an uncertain rim on a confident interior
# and background); a slice where the model has lost the muscle is diffusely uncertain. Tune them on
# validation data with the ensemble in use.
DEFAULT_MAX_UNCERTAINTY_JUMP = 0.15
DEFAULT_MAX_MEAN_UNCERTAINTY = 0.6  # nats (ln 2 = 0.693 is the maximum); the temperature-scaled demo ensemble sits near 0.5 inside its boxes

DEFAULT_MIN_EXPECTED_DSC = 0.68  # measured: see the note below
DEFAULT_MAX_AREA_RATIO = 2.5
DEFAULT_MIN_IOU_PRED = 0.75  # measured: see the note below
# The limits, measured on the held-out subjects (weights/MODEL_CARD.md, "Propagation's stop rule"):
# every muscle of both legs walked from its middle slice through the whole volume with the checks off,
# each walked slice scored against the labels. With the cross-validated ensembles (cross-fitted T and
# offset) the expected DSC and the uncertainty barely separate slices where the walk still holds the
# muscle (slice DSC >= 0.5) from slices where it has lost it: the limits above alone accept 216 good and
# 279 lost slices (1.4.0; 1.3.0: 208 / 267). The members' mean predicted IoU does: at 0.75, 127 good and
# 16 lost (1.3.0: 120 / 8); 0.72 accepts 154 / 38, 0.78 102 / 4. 0.75 gives the most good minus twice the
# lost for both versions (an accepted lost slice is a wrong mask the user may miss; a missed one costs a
# box). The expected-DSC limit (0.68, set on 1.0.0: the edge-slice box one slice inside the muscle
# 0.70-0.87, beyond 0.61-0.88) is kept as a floor. The IoU limit belongs to the ensemble it was measured
# on: the bridge passes the manifest entry's ``propagation_min_iou_pred`` (the recipe publishes this
# value with its ensembles), and -inf (the check off) for an ensemble without one.

_EIGHT = np.ones((3, 3), bool)


@dataclass
class SliceStats:
    """What propagation measured on one predicted slice (accepted or not)."""

    slice: int
    box: BoxPrompt
    area_px: int  # largest 8-connected component of mean >= 0.5
    mean_uncertainty: float  # mean total uncertainty (nats) inside the prompt box
    expected_dsc: float  # calibrated expected DSC of the ensemble mask over the window (review.expected_dsc)
    iou_pred: float  # the members' mean predicted IoU (SAM's quality score; NaN when the model gives none)
    next_xyxy: tuple[int, int, int, int] | None  # box derived for the following slice (None if empty)


@dataclass
class DirectionStop:
    """Why and where one direction stopped.

    ``stopped_at``: the slice flagged for review (the failing slice for "mask vanished" / "uncertainty
    jump" / "error"; the last accepted slice for "volume edge" / "max steps" / "cancelled").
    ``last_accepted``: the last accepted slice in this direction (None if even the start was rejected
    or never predicted). ``prediction``: the rejected prediction (None when nothing was rejected).
    """

    direction: int
    reason: str
    stopped_at: int
    last_accepted: int | None
    detail: str = ""
    prediction: BoxPrediction | None = None

    def summary(self, shown_slice: int) -> str:
        """One line for the user: the reason, the slice as the user numbers it (``shown_slice``), and for a
        slice the walk judged (or failed on) what it measured there, e.g. "low expected quality at slice 7
        (the model's predicted IoU 0.702 < 0.750)". Other details name canonical indices, so they stay out."""
        line = f"{self.reason} at slice {shown_slice}"
        if self.detail and self.reason in (STOP_MASK_VANISHED, STOP_UNCERTAINTY_JUMP, STOP_LOW_QUALITY, STOP_ERROR):
            line += f" ({self.detail})"
        return line


@dataclass
class PropagationResult:
    """Accepted predictions ordered by slice, and the stop of each direction walked."""

    start: BoxPrompt
    predictions: list[BoxPrediction] = field(default_factory=list)
    stops: dict[int, DirectionStop] = field(default_factory=dict)
    stats: dict[int, SliceStats] = field(default_factory=dict)

    @property
    def slices(self) -> list[int]:
        return [p.box.slice for p in self.predictions]

    @property
    def stop_reasons(self) -> dict[int, str]:
        return {d: s.reason for d, s in self.stops.items()}

    @property
    def stopped_at(self) -> dict[int, int]:
        return {d: s.stopped_at for d, s in self.stops.items()}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean mask (ties: lowest component index)."""
    lab, n = ndimage.label(mask, structure=_EIGHT)
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def _next_box(
    comp: np.ndarray, pred: BoxPrediction, margin_px: int, slice_shape: tuple[int, int] | None
) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(comp.any(axis=1))
    cols = np.flatnonzero(comp.any(axis=0))
    if rows.size == 0:
        return None
    w = pred.window
    r0, r1 = w.r0 + int(rows[0]) - margin_px, w.r0 + int(rows[-1]) + 1 + margin_px
    c0, c1 = w.c0 + int(cols[0]) - margin_px, w.c0 + int(cols[-1]) + 1 + margin_px
    r0, c0 = max(r0, 0), max(c0, 0)
    if slice_shape is not None:
        r1, c1 = min(r1, int(slice_shape[0])), min(c1, int(slice_shape[1]))
    return (c0, r0, c1, r1)


def _measure(pred: BoxPrediction, margin_px: int, slice_shape: tuple[int, int] | None) -> SliceStats:
    comp = largest_component(pred.mean_prob >= 0.5)
    area = int(comp.sum())
    w = pred.window
    c0, r0, c1, r1 = pred.box.xyxy
    rs = slice(max(r0 - w.r0, 0), max(min(r1, w.r1) - w.r0, 0))
    cs = slice(max(c0 - w.c0, 0), max(min(c1, w.c1) - w.c0, 0))
    members = pred.member_probs[:, rs, cs]
    if members.shape[1] == 0 or members.shape[2] == 0:
        members = pred.member_probs  # box outside its window (should not happen): use the window
    total = np.asarray(uncertainty_maps(members).total)
    mean_unc = float(total.mean()) if total.size else float("nan")
    iou = np.asarray(pred.iou_pred, dtype=np.float64)
    mean_iou = float(iou.mean()) if iou.size else float("nan")
    return SliceStats(pred.box.slice, pred.box, area, mean_unc, expected_dsc(pred.mean_prob), mean_iou,
                      _next_box(comp, pred, margin_px, slice_shape))


def propagate(
    predict: Callable[[BoxPrompt], BoxPrediction],
    start: BoxPrompt,
    n_slices: int,
    *,
    direction: int = 0,
    margin_px: int = 5,
    min_area_px: int = 20,
    max_uncertainty_jump: float = DEFAULT_MAX_UNCERTAINTY_JUMP,
    max_mean_uncertainty: float = DEFAULT_MAX_MEAN_UNCERTAINTY,
    max_steps: int | None = None,
    cancel: threading.Event | None = None,
    slice_shape: tuple[int, int] | None = None,
    min_expected_dsc: float = DEFAULT_MIN_EXPECTED_DSC,
    max_area_ratio: float = DEFAULT_MAX_AREA_RATIO,
    min_iou_pred: float = DEFAULT_MIN_IOU_PRED,
) -> PropagationResult:
    """Propagate ``start`` through slices ``0..n_slices-1`` (rules in the module docstring).

    ``direction``: +1, -1, or 0 for both (+1 first, then -1; the start is predicted once).
    ``max_steps``: most slices accepted beyond the start per direction (None = unlimited).
    ``slice_shape``: (rows, cols) of a slice, to clip derived boxes.
    ``min_iou_pred``: the default is the limit measured for the shipped recipe's ensembles; the scene bridge
    passes each ensemble's own (its manifest entry's, -inf without one). Pass ``-inf`` to ignore the model's
    quality score (an untrained IoU head's output is not bounded to [0, 1]).
    """
    if direction not in (-1, 0, 1):
        raise ValueError(f"direction must be +1, -1 or 0, not {direction!r}")
    if not 0 <= start.slice < n_slices:
        raise ValueError(f"start slice {start.slice} outside 0..{n_slices - 1}")
    if margin_px < 0:
        raise ValueError("margin_px must be >= 0")
    if max_steps is not None and max_steps < 0:
        raise ValueError("max_steps must be >= 0 or None")
    directions = [1, -1] if direction == 0 else [direction]
    result = PropagationResult(start=start)
    accepted: dict[int, BoxPrediction] = {}

    def is_cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    def run(box: BoxPrompt) -> tuple[BoxPrediction | None, SliceStats | None, str]:
        try:
            pred = predict(box)
        except Exception as exc:  # noqa: BLE001 - reported as the stop reason, accepted slices kept
            return None, None, f"{type(exc).__name__}: {exc}"
        st = _measure(pred, margin_px, slice_shape)
        result.stats[st.slice] = st
        return pred, st, ""

    def check(st: SliceStats, prev: SliceStats | None) -> tuple[str, str] | None:
        if st.area_px < max(min_area_px, 1):  # an empty mask gives no next box, whatever the limit
            return STOP_MASK_VANISHED, f"area {st.area_px} px < {max(min_area_px, 1)} px"
        if not np.isfinite(st.mean_uncertainty) or st.mean_uncertainty > max_mean_uncertainty:
            return STOP_UNCERTAINTY_JUMP, (
                f"mean uncertainty {st.mean_uncertainty:.4f} nats > {max_mean_uncertainty:.4f}"
            )
        if prev is not None and st.mean_uncertainty - prev.mean_uncertainty > max_uncertainty_jump:
            return STOP_UNCERTAINTY_JUMP, (
                f"mean uncertainty rose {prev.mean_uncertainty:.4f} -> {st.mean_uncertainty:.4f} nats "
                f"(> +{max_uncertainty_jump:.4f})"
            )
        if prev is not None and np.isfinite(st.expected_dsc) and st.expected_dsc < min_expected_dsc:
            return STOP_LOW_QUALITY, f"expected DSC {st.expected_dsc:.3f} < {min_expected_dsc:.3f}"
        if prev is not None and iou_scores and np.isfinite(st.iou_pred) and st.iou_pred < min_iou_pred:
            return STOP_LOW_QUALITY, f"the model's predicted IoU {st.iou_pred:.3f} < {min_iou_pred:.3f}"
        if prev is not None and prev.area_px > 0:
            ratio = st.area_px / prev.area_px
            if ratio > max_area_ratio or ratio < 1.0 / max_area_ratio:
                return STOP_LOW_QUALITY, (f"mask area changed {prev.area_px} -> {st.area_px} px "
                                          f"(more than x{max_area_ratio:g})")
        return None

    # the start slice
    if is_cancelled():
        for d in directions:
            result.stops[d] = DirectionStop(d, STOP_CANCELLED, start.slice, None, "cancelled before start")
        return result
    pred0, st0, err = run(start)
    if pred0 is None or st0 is None:
        for d in directions:
            result.stops[d] = DirectionStop(d, STOP_ERROR, start.slice, None, err)
        return result
    iou_scores = bool(np.isfinite(st0.iou_pred) and st0.iou_pred >= 0.0)  # a quality score, not an untrained head
    failed = check(st0, None)
    if failed is not None:
        for d in directions:
            result.stops[d] = DirectionStop(d, failed[0], start.slice, None, failed[1], pred0)
        return result
    accepted[start.slice] = pred0

    for d in directions:
        prev_st = st0
        last = start.slice
        steps = 0
        while True:
            nxt = last + d
            if is_cancelled():
                result.stops[d] = DirectionStop(d, STOP_CANCELLED, last, last, "cancelled")
                break
            if not 0 <= nxt < n_slices:
                result.stops[d] = DirectionStop(d, STOP_VOLUME_EDGE, last, last, f"slice {nxt} outside volume")
                break
            if max_steps is not None and steps >= max_steps:
                result.stops[d] = DirectionStop(d, STOP_MAX_STEPS, last, last, f"{max_steps} steps")
                break
            if prev_st.next_xyxy is None:  # cannot happen: accepted slices have area >= 1
                raise AssertionError("accepted slice without a mask")
            box = BoxPrompt(
                label=start.label,
                slice=nxt,
                xyxy=prev_st.next_xyxy,
                source=f"propagated from slice {start.slice} ({start.source})" if start.source
                else f"propagated from slice {start.slice}",
            )
            pred, st, err = run(box)
            if pred is None or st is None:
                result.stops[d] = DirectionStop(d, STOP_ERROR, nxt, last, err)
                break
            failed = check(st, prev_st)
            if failed is not None:
                result.stops[d] = DirectionStop(d, failed[0], nxt, last, failed[1], pred)
                break
            accepted[nxt] = pred
            prev_st, last, steps = st, nxt, steps + 1

    result.predictions = [accepted[s] for s in sorted(accepted)]
    return result
