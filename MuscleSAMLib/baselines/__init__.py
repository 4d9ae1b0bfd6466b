"""Non-learned box-prompt baselines every model is judged against (METHODS.md "Measured on this project's thigh data").

- :func:`boxfill_labels`: fill every box with its label (smaller box wins an overlap); the floor.
- :func:`growcut_labels`: Slicer's GrowCut ("Grow from seeds", slicer-core's ``vtkImageGrowCutSegment``)
  seeded from each box: centre 20% = the muscle, a 2-pixel frame outside the box = background.

Both take canonical (slices, rows, cols) grids and :class:`~MuscleSAMLib.engine.types.BoxPrompt` boxes
(``xyxy = (col0, row0, col1, row1)``, half-open) and return uint8 label maps (background 0).
slicer-core is imported only when GrowCut runs (an :class:`~MuscleSAMLib.errors.InputError` says how to
install it when missing).
"""

from __future__ import annotations

from .boxfill import box_area, boxfill_labels, check_boxes, paint_order
from .growcut import MODES, centre_seed, growcut_2d, growcut_labels, seed_map, slicer_growcut_available

__all__ = [
    "MODES",
    "box_area",
    "boxfill_labels",
    "centre_seed",
    "check_boxes",
    "growcut_2d",
    "growcut_labels",
    "paint_order",
    "seed_map",
    "slicer_growcut_available",
]
