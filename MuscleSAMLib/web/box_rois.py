"""Pending box prompts shown in the slice views as locked markups ROIs (one slice thick).

The scene bridge's ``roi_for_box`` makes a flat, RAS-aligned ROI, which a slice view shows only when
its plane hits it exactly, and tilted on an oblique volume (the views align to the volume's axes).
This adapter orients the ROI along the volume's pixel axes and gives it the thickness of one slice,
so it is drawn exactly where the box was dragged, on that slice only; it is locked so it cannot be
dragged by accident.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.types import BoxPrompt
from ..scene_bridge.geometry import canonical_to_ras
from ..scene_bridge.mrml import numpy_to_matrix
from ..scene_bridge.prompts import new_box_roi
from ..volumes import Volume


def box_roi(scene: Any, volume: Volume, box: BoxPrompt) -> Any:
    """A locked, non-interactive ROI node covering ``box`` on its slice."""
    c0, r0, c1, r1 = box.xyxy
    k = float(box.slice)
    centre = np.array(canonical_to_ras(volume, (c0 + c1 - 1) / 2.0, (r0 + r1 - 1) / 2.0, k))
    axes = np.array([np.subtract(canonical_to_ras(volume, *step), canonical_to_ras(volume, 0.0, 0.0, 0.0))
                     for step in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))]).T  # columns: col, row, slice
    spacing = np.linalg.norm(axes, axis=0)
    rotation = axes / spacing
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] *= -1.0  # keep a right-handed frame (the box is symmetric along the slice axis)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, centre
    roi = new_box_roi(scene, box.label)
    roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(matrix))
    roi.SetSize(float((c1 - c0) * spacing[0]), float((r1 - r0) * spacing[1]), float(0.9 * spacing[2]))
    roi.SetLocked(True)
    display = roi.GetDisplayNode()
    if display is not None:
        display.SetHandlesInteractive(False)
        display.SetFillVisibility(False)
        display.SetPropertiesLabelVisibility(False)
        display.SetPointLabelsVisibility(False)
        display.SetLineThickness(0.4)
    return roi


def remove_rois(scene: Any, rois: list[Any]) -> None:
    """Remove ROI nodes that are still in the scene."""
    for roi in rois:
        if roi is not None and roi.GetScene() is scene:
            scene.RemoveNode(roi)
