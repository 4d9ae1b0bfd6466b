"""Corrections with trame-slicer's own Segment Editor effects (paint, erase), with undo.

The muscle segmentation the scene bridge wrote becomes trame-slicer's active segmentation; the
chosen muscle is the active segment; the Paint/Erase tools activate trame-slicer's effects, which
paint in the slice views directly (no MuscleSAM code between the mouse and the labelmap).
"""

from __future__ import annotations

from typing import Any

TOOLS = ("box", "paint", "erase", "navigate")


class Editing:
    """Paint/erase on the muscle segmentation through trame-slicer's SegmentationEditor."""

    def __init__(self, slicer_app: Any) -> None:
        from undo_stack import UndoStack  # noqa: PLC0415 - a trame-slicer dependency

        self.editor = slicer_app.segmentation_editor
        self.undo_stack = UndoStack(undo_limit=20)
        self.editor.set_undo_stack(self.undo_stack)

    def attach(self, segmentation_node: Any, volume_node: Any) -> None:
        """Edit ``segmentation_node`` (over ``volume_node``) from now on."""
        if self.editor.active_segmentation_node is not segmentation_node:
            self.editor.set_active_segmentation(segmentation_node, volume_node)

    @property
    def attached(self) -> bool:
        """True once a segmentation is being edited."""
        return self.editor.active_segmentation_node is not None

    def set_tool(self, tool: str, segment_id: str | None, brush_percent: float) -> None:
        """Activate paint or erase on ``segment_id`` (brush as % of the view), or no effect for other tools."""
        from trame_slicer.segmentation import (  # noqa: PLC0415
            BrushDiameterMode,
            SegmentationEffectErase,
            SegmentationEffectPaint,
        )

        if tool not in ("paint", "erase") or not self.attached or segment_id is None:
            self.editor.deactivate_effect()
            return
        self.editor.set_active_segment_id(segment_id)
        effect = self.editor.set_active_effect_type(SegmentationEffectPaint if tool == "paint" else SegmentationEffectErase)
        if effect is not None:
            effect.set_brush_diameter(float(brush_percent), BrushDiameterMode.ScreenRelative)

    def set_brush(self, brush_percent: float) -> None:
        """Change the brush of the active paint/erase effect."""
        effect = self.editor.active_effect
        if effect is not None and hasattr(effect, "set_brush_diameter"):
            effect.set_brush_diameter(float(brush_percent))

    def undo(self) -> bool:
        """Undo the last paint/erase stroke; False when there is nothing to undo."""
        if not self.undo_stack.can_undo():
            return False
        self.undo_stack.undo()
        return True

    def clear_history(self) -> None:
        """Forget undo steps (a new prediction replaced the labels they refer to)."""
        self.undo_stack.clear()
