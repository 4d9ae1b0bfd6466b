"""Fill-the-box baseline (METHODS.md "Measured on this project's thigh data"): the floor every model must beat.

Convention: every voxel inside a box gets the box's label; where boxes of one slice overlap, the box
with the SMALLER area (width x height in pixels) wins. Equal areas are broken by the order
``(label, xyxy)``: the box later in that order wins (so the result never depends on the order of the
input list). Voxels in no box are 0 (background). Boxes are canonical :class:`BoxPrompt` objects,
``xyxy = (col0, row0, col1, row1)`` half-open, on the (slices, rows, cols) canonical grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..engine.types import BoxPrompt
from ..errors import InputError

__all__ = ["box_area", "boxfill_labels", "check_boxes", "paint_order"]


def box_area(box: BoxPrompt) -> int:
    """Area of a half-open box in pixels: ``(col1 - col0) * (row1 - row0)``."""
    return box.width * box.height


def paint_order(boxes: Iterable[BoxPrompt]) -> list[BoxPrompt]:
    """Boxes sorted so that painting them in this order makes the smaller box win every overlap.

    Sort key ``(-area, label, xyxy, slice)``: largest first, smallest last; ties deterministic.
    """
    return sorted(boxes, key=lambda b: (-box_area(b), b.label, tuple(b.xyxy), b.slice))


def check_boxes(boxes: Sequence[BoxPrompt], shape: tuple[int, int, int]) -> None:
    """Raise :class:`InputError` naming the first box that does not fit a (slices, rows, cols) grid.

    A box must lie on an existing slice, have ``0 <= col0 < col1 <= cols`` and
    ``0 <= row0 < row1 <= rows`` and a label in 1..255 (the output is uint8, 0 is background).
    """
    if len(shape) != 3:
        raise InputError(f"shape must be (slices, rows, cols), got {tuple(shape)}")
    n_slices, rows, cols = (int(s) for s in shape)
    for n, b in enumerate(boxes):
        name = b.source or f"box #{n}"
        c0, r0, c1, r1 = (int(v) for v in b.xyxy)
        if not 0 <= int(b.slice) < n_slices:
            raise InputError(f"{name}: slice {b.slice} does not exist ({n_slices} slices)")
        if not (0 <= c0 < c1 <= cols and 0 <= r0 < r1 <= rows):
            raise InputError(f"{name}: box {tuple(b.xyxy)} is empty or outside the {cols} x {rows} slice")
        if not 1 <= int(b.label) <= 255:
            raise InputError(f"{name}: label {b.label} is not in 1..255")


def boxfill_labels(boxes: Sequence[BoxPrompt], shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 label map of ``shape`` (slices, rows, cols): each box filled with its label.

    Overlaps: the smaller box (area) wins; ties as in :func:`paint_order`. Outside all boxes: 0.
    Raises :class:`InputError` for a box that does not fit ``shape`` (see :func:`check_boxes`).
    """
    boxes = list(boxes)
    check_boxes(boxes, shape)
    out = np.zeros(tuple(int(s) for s in shape), np.uint8)
    for b in paint_order(boxes):
        c0, r0, c1, r1 = b.xyxy
        out[b.slice, r0:r1, c0:c1] = b.label
    return out
