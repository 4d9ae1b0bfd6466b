"""Pending box prompts shown in the slice views as locked markups ROIs (one slice thick).

The scene bridge's ``MuscleSAMLogic.box_roi`` builds the ROI (along the volume's pixel axes); here it is made
0.9 slice thick, so it is drawn exactly where the box was dragged, on that slice only, and locked so
it cannot be dragged by accident.
"""

from __future__ import annotations

from typing import Any

from ..engine.types import BoxPrompt

SHOWN_THICKNESS = 0.9  # slices: on its own slice only


def box_roi(logic: Any, volume_node: Any, box: BoxPrompt) -> Any:
    """A locked, non-interactive ROI node covering ``box`` on its slice (built by ``logic.box_roi``)."""
    roi = logic.box_roi(volume_node, box, SHOWN_THICKNESS)
    roi.SetLocked(True)
    display = roi.GetDisplayNode()
    if display is not None:
        display.SetHandlesInteractive(False)
        display.SetFillVisibility(False)
        display.SetFillOpacity(0.0)
        display.SetOpacity(1.0)
        display.SetPropertiesLabelVisibility(False)
        display.SetPointLabelsVisibility(False)
        display.SetLineThickness(0.4)
    return roi


def remove_rois(scene: Any, rois: list[Any]) -> None:
    """Remove ROI nodes that are still in the scene."""
    for roi in rois:
        if roi is not None and roi.GetScene() is scene:
            scene.RemoveNode(roi)
