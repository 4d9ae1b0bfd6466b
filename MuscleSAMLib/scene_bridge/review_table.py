"""The review queue as a vtkMRMLTableNode, and where to go next (slice + RAS centre)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sample_data import muscle_names
from .geometry import canonical_to_ras, stored_slice_index
from .mrml import nodes_by_class, owned_node
from ..engine.session import Session

COLUMNS = ("rank", "slice", "muscle", "uncertainty (nats)", "expected DSC", "volume (ml)", "volume low (ml)", "volume high (ml)",
           "muscle fat fraction (%)", "muscle fat fraction low (%)", "muscle fat fraction high (%)",
           "slice volume (ml)")


@dataclass(frozen=True)
class ReviewTarget:
    """A place to review: muscle ``label`` on axial slice ``slice`` (the node's own K index)."""

    rank: int
    slice: int
    canonical_slice: int
    label: int
    muscle: str
    ras: tuple[float, float, float]
    uncertainty: float
    expected_dsc: float
    remaining: int


def _fmt(x: float, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def write_review_table(volume_node: Any, session: Session, fat: np.ndarray | None = None) -> Any:
    """Get/create the review table of ``volume_node`` and fill it from the session's queue.

    Volume columns: the muscle's predicted volume with the [min, max] over ensemble members. With a
    Dixon ``fat`` image (canonical, on the session's grid; the segmented image is the water image),
    the muscle's mean fat fraction fat / (fat + water) with the [min, max] over each member's own mask.
    """
    scene = volume_node.GetScene()
    table = owned_node(scene, "vtkMRMLTableNode", "review", volume_node, f"{volume_node.GetName()} review")
    names = muscle_names()
    rows = {b.label: b for b in session.biomarkers(fat)}  # the one computation on the label map (CLI's too)
    sk, sr, sc = session.segmenter.spacing
    voxel_ml = sk * sr * sc / 1000.0
    was = table.StartModify()
    try:
        table.RemoveAllColumns()
        for name in COLUMNS:
            table.AddColumn().SetName(name)
        for item in session.queue:
            vol = rows.get(item.label)
            lo, hi = vol.volume_ml_interval if vol is not None and vol.volume_ml_interval else (math.nan, math.nan)
            ff = vol if fat is not None else None
            ff_mean = 100 * ff.fat_fraction_mean if ff is not None and ff.fat_fraction_mean is not None else math.nan
            ff_lo, ff_hi = ((100 * ff.fat_fraction_mean_interval[0], 100 * ff.fat_fraction_mean_interval[1])
                            if ff is not None and ff.fat_fraction_mean_interval else (math.nan, math.nan))
            row = table.AddEmptyRow()
            values = (str(item.rank + 1), str(stored_slice_index(session.volume, item.slice)),
                      names.get(item.label, {}).get("name", str(item.label)), _fmt(item.mean_uncertainty),
                      _fmt(item.expected_dsc), _fmt(vol.volume_ml if vol is not None else math.nan, 1), _fmt(lo, 1), _fmt(hi, 1),
                      _fmt(ff_mean, 1), _fmt(ff_lo, 1), _fmt(ff_hi, 1),
                      _fmt(float((session.prediction[item.slice] == item.label).sum()) * voxel_ml, 2))  # the label map's slice
            for col, value in enumerate(values):
                table.SetCellText(row, col, value)
    finally:
        table.EndModify(was)
    return table


def review_target(session: Session, rank: int | None = None) -> ReviewTarget | None:
    """The next unvisited, most uncertain (slice, muscle), or the queue's row ``rank`` (1 = first), marked
    visited; None when all are visited (or there is no such row)."""
    if rank is None:
        item = session.next_item()
    else:
        queue = session.queue
        item = queue[rank - 1] if 1 <= rank <= len(queue) else None
    if item is None:
        return None
    session.visited.add(item.key)
    col, row = session.centre_of(item.slice, item.label)
    ras = canonical_to_ras(session.volume, col, row, item.slice)
    return ReviewTarget(rank=item.rank + 1, slice=stored_slice_index(session.volume, item.slice), canonical_slice=item.slice,
                        label=item.label, muscle=muscle_names().get(item.label, {}).get("name", str(item.label)),
                        ras=tuple(float(v) for v in ras), uncertainty=float(item.mean_uncertainty),
                        expected_dsc=float(item.expected_dsc), remaining=session.remaining())


def jump_slices(scene: Any, ras: tuple[float, float, float]) -> int:
    """Centre every slice view on ``ras`` (world); returns how many views moved."""
    nodes = nodes_by_class(scene, "vtkMRMLSliceNode")
    for node in nodes:
        node.JumpSliceByCentering(*ras)
    return len(nodes)


def mark_target(volume_node: Any, target: ReviewTarget) -> Any:
    """One locked point ("#rank muscle") at the review target, moved there on each jump (so the eye finds it)."""
    node = owned_node(volume_node.GetScene(), "vtkMRMLMarkupsFiducialNode", "review marker", volume_node, "review target")
    node.RemoveAllControlPoints()
    node.AddControlPoint(*target.ras, f"#{target.rank} {target.muscle}")
    node.SetLocked(True)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(1.0, 1.0, 0.2)
        display.SetColor(1.0, 1.0, 0.2)
        display.SetGlyphScale(3.0)
    return node
