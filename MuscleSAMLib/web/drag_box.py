"""A mouse drag on a slice view -> two world-RAS corners (and back, for tests and hints).

The page reports the drag as fractions of the view's width and height (0..1, origin top-left), so
the browser's CSS pixels and device-pixel ratio never matter. Slicer's slice node maps XY (render
window pixels, origin bottom-left, z = 0 on the shown slice) to RAS with its XYToRAS matrix and its
Dimensions (the view size in pixels): those two are all this module reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

MIN_DRAG_PIXELS = 3.0  # a drag shorter than this on either side is a click, not a box
EDGE_SLACK = 0.01  # a drag may end this far (view fraction) past the view's edge (a hand's imprecision)


@dataclass(frozen=True)
class Drag:
    """Start and end of a drag as view fractions (x right, y down)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def parse(cls, values: Sequence[Any]) -> "Drag":
        """From the page's ``[x0, y0, x1, y1]``; refuses anything but four finite numbers, and a drag that left
        the view (clipping it would label what the user never saw); a hair past the edge is clamped."""
        try:
            nums = [float(v) for v in values]
        except (TypeError, ValueError):
            raise InputError("the box drag did not arrive as four numbers; draw it again") from None
        if len(nums) != 4 or not all(math.isfinite(v) for v in nums):
            raise InputError("the box drag did not arrive as four numbers; draw it again")
        if any(v < -EDGE_SLACK or v > 1.0 + EDGE_SLACK for v in nums):
            raise InputError("the box was dragged past the edge of the view, so it was not used: scroll or zoom so "
                             "the whole muscle is visible, then draw the box inside the view")
        return cls(*(min(1.0, max(0.0, v)) for v in nums))


def _matrix(vtk_matrix: Any) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def view_pixels(slice_node: Any) -> tuple[int, int]:
    """(width, height) of the slice view in render-window pixels."""
    dims = slice_node.GetDimensions()
    return int(dims[0]), int(dims[1])


def fraction_to_ras(slice_node: Any, fx: float, fy: float) -> np.ndarray:
    """World RAS (3,) of the view point at fractions (fx, fy) on the slice the view shows."""
    w, h = view_pixels(slice_node)
    xy = np.array([fx * w, (1.0 - fy) * h, 0.0, 1.0])
    return (_matrix(slice_node.GetXYToRAS()) @ xy)[:3]


def ras_to_fraction(slice_node: Any, ras: Sequence[float]) -> tuple[float, float]:
    """View fractions (fx, fy) of world point ``ras`` projected on the view (inverse of :func:`fraction_to_ras`)."""
    w, h = view_pixels(slice_node)
    xy = np.linalg.inv(_matrix(slice_node.GetXYToRAS())) @ np.array([*map(float, ras), 1.0])
    return float(xy[0] / w), float(1.0 - xy[1] / h)


def drag_to_ras(slice_node: Any, drag: Drag) -> tuple[np.ndarray, np.ndarray]:
    """The two world-RAS corners of ``drag`` on ``slice_node``; a drag of (almost) no size is refused."""
    w, h = view_pixels(slice_node)
    if w < 2 or h < 2:
        raise InputError("the slice view has no size yet; wait for the image to appear, then draw the box")
    if abs(drag.x1 - drag.x0) * w < MIN_DRAG_PIXELS or abs(drag.y1 - drag.y0) * h < MIN_DRAG_PIXELS:
        raise InputError("that box has no size: press on one corner of the muscle, hold the button down and drag "
                         "to the opposite corner")
    return fraction_to_ras(slice_node, drag.x0, drag.y0), fraction_to_ras(slice_node, drag.x1, drag.y1)
