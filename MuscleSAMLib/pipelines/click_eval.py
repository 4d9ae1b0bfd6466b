"""Clicks-to-quality: the interactive segmentation field's standard protocol on a labelled case.

Every object (one tight box per muscle per leg per axial slice, the evaluation prompts) gets the box,
then ``n`` corrective clicks one after another; each click is answered by the engine exactly as the
interactive tool answers it (:mod:`MuscleSAMLib.engine.segmenter`, box + clicks so far + previous
answer). Two simulated users:

* ``"error"`` (the standard): :func:`~MuscleSAMLib.engine.clicks.corrective_click`, the point
  farthest inside the largest error region of the object's current mask (mean probability >=
  threshold, in its answer window), positive in a missed region and negative in a leak;
* ``"suggested"``: the click goes where the tool suggests without knowing the truth
  (:func:`~MuscleSAMLib.engine.clicks.suggest_click` on the object's total uncertainty), and the
  simulated user marks it positive or negative by the truth there.

Reported (mean over muscles, like ``mean.dsc``): ``dsc_after[j]`` = mean per-muscle 3D DSC of the
assembled label map after j clicks per object (j = 0 is the box alone); ``noc90`` = mean over objects
of the clicks needed for the object's own 2D DSC (in its answer window) to reach 0.90, capped at n
(an object that never reaches it counts n).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..engine.assembly import assemble_slice
from ..engine.clicks import corrective_click, suggest_click
from ..engine.segmenter import Segmenter
from ..engine.types import BoxPrediction, BoxPrompt
from ..metrics import dice
from ..uncertainty import binary_entropy

NOC_TARGET = 0.90
PLACEMENTS = ("error", "suggested")


def _next_click(pred: BoxPrediction, truth_window: np.ndarray, placement: str,
                threshold: float) -> tuple[int, int, int] | None:
    """The simulated user's next click for one object, in slice pixels, or None (nothing to fix/suggest)."""
    mean = pred.mean_prob
    if placement == "error":
        c = corrective_click(mean >= threshold, truth_window)
    else:
        s = suggest_click(binary_entropy(mean))
        c = None if s is None else (s[0], s[1], int(truth_window[s[1], s[0]]))
    return None if c is None else (c[0] + pred.window.c0, c[1] + pred.window.r0, c[2])


def click_curve(seg: Segmenter, boxes: Sequence[BoxPrompt], truth: np.ndarray, n_clicks: int,
                placement: str = "error", threshold: float = 0.5) -> dict:
    """Run the protocol (module docstring) -> {"dsc_after": [...], "noc90": float, "objects": int}."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}")
    maps = [np.zeros(truth.shape, np.uint8) for _ in range(n_clicks + 1)]
    noc: list[int] = []
    by_slice: dict[int, list[BoxPrompt]] = {}
    for b in boxes:
        by_slice.setdefault(b.slice, []).append(replace(b, points=()))
    for k, todo in sorted(by_slice.items()):
        reached: dict[int, int] = {}
        for level in range(n_clicks + 1):
            pred = seg.predict_slice(k, todo)
            maps[level][k] = assemble_slice(pred.boxes, pred.shape, threshold=threshold).labels
            nxt = []
            for i, bp in enumerate(pred.boxes):
                t = truth[k][bp.window.slices] == bp.box.label
                if i not in reached and dice(bp.mean_prob >= threshold, t) >= NOC_TARGET:
                    reached[i] = level
                c = _next_click(bp, t, placement, threshold) if level < n_clicks else None
                nxt.append(bp.box if c is None else replace(bp.box, points=bp.box.points + (c,)))
            todo = nxt
        noc += [reached.get(i, n_clicks) for i in range(len(todo))]
    labels = [int(v) for v in np.unique(truth) if v != 0]
    dsc_after = [float(np.nanmean([dice(m == lbl, truth == lbl) for lbl in labels])) for m in maps]
    return {"dsc_after": dsc_after, "noc90": float(np.mean(noc)) if noc else float("nan"), "objects": len(noc)}


def click_report(seg: Segmenter, boxes: Sequence[BoxPrompt], truth: np.ndarray, n_clicks: int,
                 threshold: float = 0.5) -> dict:
    """``report.json``'s "clicks": both simulated users (module docstring) side by side."""
    err = click_curve(seg, boxes, truth, n_clicks, "error", threshold)
    sug = click_curve(seg, boxes, truth, n_clicks, "suggested", threshold)
    return {"n": n_clicks, "update": seg.click_update, "dsc_after": err["dsc_after"], "noc90": err["noc90"],
            "dsc_after_suggested": sug["dsc_after"], "noc90_suggested": sug["noc90"], "objects": err["objects"],
            "conventions": {
                "update": "local: a click changes the answer only in the changed region that holds it (the tools' "
                          "way); global: the re-decoded answer replaces the whole previous one",
                "dsc_after": "mean over muscles of the 3D DSC of the assembled label map after j corrective clicks "
                             "per object (j = 0: box only); click at the point farthest inside the largest error "
                             "region, positive in a miss, negative in a leak",
                "noc90": f"mean over objects (box per muscle per leg per slice) of clicks to reach 2D DSC "
                         f"{NOC_TARGET} in the object's window, capped at n",
                "dsc_after_suggested": "the same with each click at the tool's suggestion (centre of the most "
                                       "uncertain region of the object), its sign from the labels"}}
