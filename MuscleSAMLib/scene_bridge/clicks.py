"""Clicks on a segmented muscle (issue 17): which of its boxes a click refines, that muscle's boxes with one
click more or one less, how a click run keeps the user's edits and other muscles, and the suggested next click.

A click belongs to a box the latest run used for that muscle on that slice (``Session.label_probs`` keeps
each muscle's latest prediction per slice with its boxes, and run undo restores it). When the muscle has
two boxes there (two legs), the click goes to the box whose answer window holds it, else the nearest box.
The facade (:class:`~.logic.MuscleSAMLogic`) re-runs all of that muscle's boxes on that slice through the
run path a box uses; the engine answers the clicked box with its clicks (cached: one decoder call per new
click, none to take the last one back while clicks remain).

Pure numpy and engine types (no MRML): the markers live in :mod:`.click_markers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..engine.assembly import LabelProbabilities
from ..engine.clicks import MAX_CLICKS, check_clicks, suggest_click
from ..engine.session import Session
from ..engine.types import BoxPrediction, BoxPrompt
from ..errors import InputError
from ..sample_data import muscle_names
from ..uncertainty import uncertainty_maps
from .geometry import ras_to_canonical, stored_slice_index


@dataclass(frozen=True)
class ClickPlan:
    """One muscle's boxes on one canonical slice after click ``point`` (x, y, sign) was added or taken back."""

    label: int
    slice: int
    boxes: tuple[BoxPrompt, ...]
    index: int  # the box that changed
    point: tuple[int, int, int]
    added: bool


def muscle_name(label: int) -> str:
    """'vastus lateralis' for 3 (the number itself for an unknown label)."""
    return muscle_names().get(label, {}).get("name", str(label))


def _ras_text(ras: Sequence[Any]) -> str:
    try:
        return "(" + ", ".join(f"{float(v):.1f}" for v in ras) + ")"
    except (TypeError, ValueError):
        return repr(ras)


def click_pixel(volume: Any, ras: Sequence[Any], slice_k: int | None = None) -> tuple[int, int, int]:
    """(canonical slice, x = column, y = row) of the voxel under world point ``ras``.

    ``slice_k``: the slice the view shows (the node's own K); a point on another slice is refused.
    Refused with a message naming the point: not three finite numbers, outside the image.
    """
    try:
        vals = [float(v) for v in ras]
    except (TypeError, ValueError):
        raise InputError(f"click at {_ras_text(ras)}: a point is three numbers R, A, S") from None
    if len(vals) != 3:
        raise InputError(f"click at {_ras_text(ras)}: a point is three numbers R, A, S")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"click at {_ras_text(vals)}: the point has a NaN or infinite coordinate")
    col, row, k = (int(np.floor(v + 0.5)) for v in ras_to_canonical(volume, np.array([vals]))[0])
    n, rows, cols = volume.canonical_array.shape
    if not (0 <= k < n and 0 <= row < rows and 0 <= col < cols):
        raise InputError(f"click at RAS {_ras_text(vals)} lies outside the image: click on the muscle inside the image")
    if slice_k is not None and stored_slice_index(volume, k) != int(slice_k):
        raise InputError(f"click at RAS {_ras_text(vals)} lies on slice {stored_slice_index(volume, k)}, not on slice "
                         f"{int(slice_k)} that the box and the view are on")
    return k, col, row


def canonical_slice(volume: Any, slice_k: Any) -> int:
    """The engine (canonical) slice of the node's own axial index ``slice_k``; refused when there is none."""
    n = volume.canonical_array.shape[0]
    try:
        wanted = int(slice_k)
    except (TypeError, ValueError):
        raise InputError(f"slice {slice_k!r} is not a slice number") from None
    for k in range(n):
        if stored_slice_index(volume, k) == wanted:
            return k
    raise InputError(f"slice {slice_k} does not exist ({n} slices)")


def muscle_boxes(session: Session, k: int, label: int) -> list[BoxPrediction]:
    """The latest run's answers for muscle ``label`` on canonical slice ``k`` (none: never predicted there)."""
    lp: LabelProbabilities | None = session.label_probs.get((int(k), int(label)))
    return list(lp.boxes) if lp is not None else []


def _no_box(session: Session, k: int, label: int) -> InputError:
    return InputError(f"draw a box for {muscle_name(label)} on slice {stored_slice_index(session.volume, k)} first "
                      "(a click refines the box the last Segment used there)")


def nearest_box(preds: Sequence[BoxPrediction], x: int, y: int) -> int:
    """Index of the box a click at (x, y) refines: inside its box, else inside its answer window, else nearest."""
    def distance(p: BoxPrediction) -> tuple[int, float]:
        c0, r0, c1, r1 = p.box.xyxy
        w = p.window
        dx = max(c0 - x, 0, x - (c1 - 1))
        dy = max(r0 - y, 0, y - (r1 - 1))
        in_window = w.c0 <= x < w.c1 and w.r0 <= y < w.r1
        return (0 if dx == dy == 0 else 1 if in_window else 2, math.hypot(dx, dy))

    return min(range(len(preds)), key=lambda i: distance(preds[i]))


def plan_click(session: Session, label: int, k: int, x: int, y: int, positive: bool, ras: Sequence[float]) -> ClickPlan:
    """The muscle's boxes on slice ``k`` with a click at (x, y) added to the nearest one (checked)."""
    preds = muscle_boxes(session, k, label)
    if not preds:
        raise _no_box(session, k, label)
    i = nearest_box(preds, x, y)
    box = preds[i].box
    where = f"click at RAS {_ras_text(ras)} on {muscle_name(label)}, slice {stored_slice_index(session.volume, k)}"
    if len(box.points) >= MAX_CLICKS:
        raise InputError(f"{where}: that box already has {len(box.points)} clicks, the most one box takes; "
                         "paint or erase the rest, or draw a new box")
    points = check_clicks([*box.points, (x, y, 1 if positive else 0)], session.segmenter.shape[1:], where)
    boxes = [p.box for p in preds]
    boxes[i] = BoxPrompt(box.label, box.slice, box.xyxy, box.source, points)
    return ClickPlan(label, k, tuple(boxes), i, points[-1], True)


def plan_undo(session: Session, label: int, k: int) -> ClickPlan:
    """The muscle's boxes on slice ``k`` with the last click taken back (the box clicked most recently)."""
    preds = muscle_boxes(session, k, label)
    if not preds:
        raise _no_box(session, k, label)
    clicked = [i for i, p in enumerate(preds) if p.box.points]
    if not clicked:
        raise InputError(f"no click to undo for {muscle_name(label)} on slice {stored_slice_index(session.volume, k)}")
    order = click_order(session.log, stored_slice_index(session.volume, k), label)
    i = next((i for xyxy in reversed(order) for i in clicked if list(preds[i].box.xyxy) == xyxy), clicked[-1])
    box = preds[i].box
    boxes = [p.box for p in preds]
    boxes[i] = BoxPrompt(box.label, box.slice, box.xyxy, box.source, box.points[:-1])
    return ClickPlan(label, k, tuple(boxes), i, box.points[-1], False)


def click_order(log: Sequence[dict], slice_k: int, label: int) -> list[list[int]]:
    """Boxes (xyxy) of ``label`` on stored slice ``slice_k``, one entry per click still standing, oldest first
    (from the session's interaction log: each click run records its box; an undo takes one back)."""
    stack: list[list[int]] = []
    for entry in log:
        click = entry.get("click")
        if not click or click["slice"] != slice_k or click["label"] != label:
            continue
        if click["added"]:
            stack.append(list(click["xyxy"]))
        elif list(click["xyxy"]) in stack:
            del stack[len(stack) - 1 - stack[::-1].index(list(click["xyxy"]))]
    return stack


def keep_edits_and_neighbours(labels: np.ndarray, model_labels: np.ndarray, current: np.ndarray,
                              prediction: np.ndarray, label: int) -> int:
    """Hold a click run on one slice to the clicked muscle (arrays of that slice, changed in place).

    ``current``: the segmentation before the run; ``prediction``: the session's prediction layer before it.
    Voxels the user edited (segmentation != prediction) keep the user's value, and voxels of other muscles
    keep theirs (in the segmentation and the prediction layer): a click changes only its muscle, and only
    where the user did not paint or erase. Returns how many edited voxels the new answer would have changed.
    """
    edited = current != prediction
    others = (current != 0) & (current != label)
    model_says = model_labels == label
    model_labels[model_says & (prediction != 0) & (prediction != label)] = 0  # the prediction layer keeps other muscles
    new = current.copy()
    free = ~edited & ~others
    new[free & (current == label)] = 0
    new[free & (model_labels == label)] = label
    labels[...] = new
    return int((edited & (model_says != (current == label))).sum())


def muscle_uncertainty(lp: LabelProbabilities, shape: tuple[int, int]) -> np.ndarray:
    """Total uncertainty (nats) of one muscle's own ensemble on a (rows, cols) slice, 0 outside its answer windows."""
    out = np.zeros(shape, np.float32)
    covered = lp.owner >= 0
    out[lp.window.slices] = np.where(covered, uncertainty_maps(lp.members).total, 0.0)
    return out


def suggestion(session: Session, label: int, k: int) -> tuple[int, int] | None:
    """(x, y) of the suggested next click for ``label`` on canonical slice ``k`` (None: nothing uncertain, or
    the muscle was not predicted there)."""
    lp = session.label_probs.get((int(k), int(label)))
    if lp is None:
        return None
    return suggest_click(muscle_uncertainty(lp, session.segmenter.shape[1:]))
