"""The "legs" prompt geometry: one square crop per thigh, the same on every slice of a volume.

Whole-slice geometry resizes a 512-pixel bilateral slice to the model's 256: every muscle is seen at
half resolution, and each embedding token covers 8 x 8 slice pixels (6 mm). Cropping each leg on its
own (its body extent, grown by ``margin`` per side, made square) lets the same 256-pixel model see a
thigh at about full resolution, while all the boxes of one leg still share one encoder pass per slice:
the crop depends on the volume, not on the box. Training and inference take the windows from this one
rule (:func:`leg_layout`). Training takes the layout from the water image and applies it to every contrast; the engine takes it
from the volume being segmented, so a fat image (whose body extent differs by a few percent: a 268 px
square instead of 278 px on the sample) is cropped at a slightly different scale than training saw.

Array convention: canonical (slices, rows, cols) volumes on the model's 0..255 scale; windows are
(r0, r1, c0, c1) half-open slice pixels, like :func:`~MuscleSAMLib.slice_geometry.box_window`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .biomarkers import midline_column, side_of_box, side_of_column

#: Share of slices on which a pixel must be body for the body extent (ignores specks in one slice).
BODY_SHARE = 0.2
#: Crop margin per side, as a share of the leg's extent.
LEG_MARGIN = 0.05

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class LegLayout:
    """The two legs' crop windows of one volume and the midline column between them.

    ``windows[0]`` lies at lower columns than the midline, ``windows[1]`` at higher ones.
    """

    midline: float
    windows: tuple[Window, Window]
    #: A box centred exactly on the midline belongs to leg 1 (True) or leg 0 (False); the mirrored layout
    #: flips it, so that a box and its mirror image always land in mirrored windows.
    ties_high: bool = False

    def side_of(self, box_xyxy) -> int:
        """0 or 1: the leg whose side of the midline holds the box's centre column
        (:func:`~MuscleSAMLib.biomarkers.side_of_column`, this layout's tie rule)."""
        return side_of_box(box_xyxy, self.midline, self.ties_high)

    def columns_of(self, leg: int, cols: int) -> np.ndarray:
        """Boolean (cols,) mask of the columns on ``leg``'s side, by the same rule."""
        return side_of_column(np.arange(cols), self.midline, self.ties_high) == leg

    def window_of(self, box_xyxy) -> Window:
        """The crop a box is answered in: its leg's window."""
        return self.windows[self.side_of(box_xyxy)]

    def mirrored(self, cols: int) -> "LegLayout":
        """This layout on the left-right mirrored volume (column c -> cols - 1 - c), window for window. (The
        rule run on the mirrored volume may place a window one column differently where a centre falls
        between two pixels; the engine's mirrored view uses this exact mirror.)"""
        flip = tuple((r0, r1, cols - c1, cols - c0) for r0, r1, c0, c1 in reversed(self.windows))
        return LegLayout(cols - 1 - self.midline, flip, not self.ties_high)  # type: ignore[arg-type]


def leg_layout(image: np.ndarray, margin: float = LEG_MARGIN) -> LegLayout | None:
    """Each leg's crop window on ``image`` (canonical, 0..255), or None when the legs are not told apart.

    The body is every voxel above 10 % of the 99th percentile (as :func:`midline_column`) on at least
    :data:`BODY_SHARE` of the slices. Each leg's window is centred on the body's extent on its side of
    the midline; both windows are squares of one side, the longer extent of either leg grown by
    ``margin`` per side (so both legs are seen at one scale), shifted inside the slice where they would
    cross its border (clipped only when the slice is smaller than the square). None when
    :func:`midline_column` finds no gap between the thighs or a side holds no body: the caller then
    uses the whole slice.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a canonical (slices, rows, cols) volume, got shape {image.shape}")
    mid = midline_column(image, image)
    if mid is None:
        return None
    body = (image > 0.1 * np.percentile(image, 99)).mean(axis=0) >= BODY_SHARE
    rows, cols = body.shape
    col = np.arange(cols)
    extents = []
    for on_side in (col < mid, col > mid):  # the midline column itself belongs to neither leg
        ys, xs = np.nonzero(body & on_side[None, :])
        if ys.size == 0:
            return None
        extents.append((int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
    side = int(np.ceil(max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in extents) * (1.0 + 2.0 * margin)))
    windows = []
    for y0, y1, x0, x1 in extents:
        r0 = min(max((y0 + y1 - side) // 2, 0), max(rows - side, 0))
        c0 = min(max((x0 + x1 - side) // 2, 0), max(cols - side, 0))
        windows.append((r0, min(r0 + side, rows), c0, min(c0 + side, cols)))
    return LegLayout(float(mid), (windows[0], windows[1]))
