"""Corrections with trame-slicer's own Segment Editor effects (paint, erase), with undo.

The muscle segmentation the scene bridge wrote becomes trame-slicer's active segmentation; the
chosen muscle is the active segment; the Paint/Erase tools activate trame-slicer's effects, which
paint in the slice views directly. One hook sits between a stroke and Slicer's
``ModifySegmentByLabelmap``: the bridge clears the stroke where a locked muscle lies (Slicer's editor
masks by editable area only), so painting never erases a finished muscle.
"""

from __future__ import annotations

from typing import Any, Callable

TOOLS = ("box", "click", "paint", "erase", "navigate")


class Editing:
    """Paint/erase on the muscle segmentation through trame-slicer's SegmentationEditor."""

    def __init__(self, slicer_app: Any) -> None:
        from undo_stack import UndoStack  # noqa: PLC0415 - a trame-slicer dependency

        self.editor = slicer_app.segmentation_editor
        self.undo_stack = UndoStack(undo_limit=20)
        self.editor.set_undo_stack(self.undo_stack)
        self.on_spared: Callable[[], None] = lambda: None  # told when a stroke spared a locked muscle

    def attach(self, segmentation_node: Any, volume_node: Any,
               spare: Callable[[Any, str], bool] | None = None) -> None:
        """Edit ``segmentation_node`` (over ``volume_node``) from now on; ``spare(modifier labelmap,
        segment ID)`` clears a stroke where it must not paint before Slicer applies it."""
        if self.editor.active_segmentation_node is segmentation_node:
            return
        self.editor.set_active_segmentation(segmentation_node, volume_node)
        modifier = self.editor.active_segment_modifier
        if spare is None or modifier is None:
            return
        apply = modifier.apply_labelmap

        def apply_sparing(labelmap: Any, **kwargs: Any) -> Any:
            if spare(labelmap, kwargs.get("segment_id") or modifier.active_segment_id):
                self.on_spared()
            return apply(labelmap, **kwargs)

        modifier.apply_labelmap = apply_sparing  # what every brush stroke calls (SegmentModifier.apply_glyph)

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
