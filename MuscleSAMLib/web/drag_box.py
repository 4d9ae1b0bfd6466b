"""A mouse drag on a slice view -> two world-RAS corners (and back, for tests and hints).

The page reports the drag as fractions of the view's width and height (0..1, origin top-left), so
the browser's CSS pixels and device-pixel ratio never matter, plus the size of its view element:
the server renders each view at one size (the last tab that resized it) and every tab shows that
image at its own width, top-aligned (trame-rca's ``<img style="width: 100%">``), so in a tab of
another aspect ratio the vertical fraction is rescaled (:func:`server_fraction`) and a box lands
where it was drawn in every tab. Slicer's slice node maps XY (render
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
PAST_EDGE = ("the box was dragged past the edge of the view, so it was not used: scroll or zoom so the whole "
             "muscle is visible, then draw the box inside the view")


@dataclass(frozen=True)
class Drag:
    """Start and end of a drag as view fractions (x right, y down)."""

    x0: float
    y0: float
    x1: float
    y1: float
    page_w: float = 0.0  # the drawing tab's view size in CSS pixels (0: the server view's own aspect)
    page_h: float = 0.0

    @classmethod
    def parse(cls, values: Sequence[Any]) -> "Drag":
        """From the page's ``[x0, y0, x1, y1]``; refuses anything but four finite numbers, and a drag that left
        the view (clipping it would label what the user never saw); a hair past the edge is clamped."""
        try:
            nums = [float(v) for v in values]
        except (TypeError, ValueError):
            raise InputError("the box drag did not arrive as four numbers; draw it again") from None
        if len(nums) not in (4, 6) or not all(math.isfinite(v) for v in nums) or (len(nums) == 6 and min(nums[4:]) <= 0):
            raise InputError("the box drag did not arrive as four numbers; draw it again")
        if any(v < -EDGE_SLACK or v > 1.0 + EDGE_SLACK for v in nums[:4]):
            raise InputError(PAST_EDGE)
        return cls(*(min(1.0, max(0.0, v)) for v in nums[:4]), *nums[4:])


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


def server_fraction(slice_node: Any, fy: float, page_w: float, page_h: float) -> float:
    """A vertical fraction of a tab's view element -> of the server's view (the image is shown at the
    element's width, top-aligned: see the module docstring)."""
    w, h = view_pixels(slice_node)
    if page_w <= 0 or page_h <= 0 or w < 2 or h < 2:
        return fy
    return fy * (page_h * w) / (page_w * h)


def drag_to_ras(slice_node: Any, drag: Drag) -> tuple[np.ndarray, np.ndarray]:
    """The two world-RAS corners of ``drag`` on ``slice_node``; a drag of (almost) no size is refused."""
    w, h = view_pixels(slice_node)
    if w < 2 or h < 2:
        raise InputError("the slice view has no size yet; wait for the image to appear, then draw the box")
    y0, y1 = (server_fraction(slice_node, y, drag.page_w, drag.page_h) for y in (drag.y0, drag.y1))
    if max(y0, y1) > 1.0 + EDGE_SLACK:
        raise InputError(PAST_EDGE)
    if abs(drag.x1 - drag.x0) * w < MIN_DRAG_PIXELS or abs(y1 - y0) * h < MIN_DRAG_PIXELS:
        raise InputError("that box has no size: press on one corner of the muscle, hold the button down and drag "
                         "to the opposite corner")
    return fraction_to_ras(slice_node, drag.x0, y0), fraction_to_ras(slice_node, drag.x1, y1)
