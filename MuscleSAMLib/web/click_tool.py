"""The Click tool: a click on the axial view refines the chosen muscle's mask there (issue 17).

Left click = "this is muscle" (a green +), Shift+click or right click = "this is not" (a red -). Each click is
one scene-bridge job (``MuscleSAMLogic.start_add_click``) on the worker thread, finished on the event
loop like a Segment run; "Undo click" takes the last one back. With "Suggest next click" on, a yellow star
marks the centre of the most uncertain region of the chosen muscle on the slice the view shows, moved
after every answer, slice change and muscle change. The markers are the bridge's markups points, drawn
by Slicer in the views.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ..errors import InputError
from .drag_box import fraction_to_ras, server_fraction
from .messages import click_summary, muscle_name, reported
from .scene_views import AXIAL

LEFT, RIGHT = 0, 2  # the browser's PointerEvent.button


class ClickActions:
    """Mixin of :class:`~.controller.WebController`: the Click tool, Undo click, the suggested next click."""

    _click_view: tuple[int, int] | None = None  # (slice, label) the click read-outs were made for

    @reported
    def view_click(self, fx: Any, fy: Any, button: Any = LEFT, shift: Any = False, page_w: Any = 0, page_h: Any = 0) -> None:
        """A click on the axial view with the Click tool (view fractions of a page view of that size)."""
        volume_node = self._require_volume()
        if str(self.state.msam_tool) != "click":
            return
        self._require_idle("click")
        try:
            x, y, w, h = (float(v) for v in (fx, fy, page_w, page_h))
        except (TypeError, ValueError):
            raise InputError("the click did not arrive as view coordinates; click again") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise InputError("the click did not land on the axial view; click on the muscle in the view")
        positive = int(button) == LEFT and shift is not True
        label = self._label()
        node = self.views.slice_node(AXIAL)
        ras = fraction_to_ras(node, x, server_fraction(node, y, w, h))
        job = self.logic.start_add_click(volume_node, label, ras, positive)
        sign = "muscle" if positive else "not muscle"
        self._start_click_job(job, f"click ({sign}) on {muscle_name(label)}")

    @reported
    def undo_click(self) -> None:
        """Take back the chosen muscle's last click on the slice the axial view shows."""
        volume_node = self._require_volume()
        self._require_idle("undo the click")
        label = self._label()
        job = self.logic.start_undo_click(volume_node, label, self._axial_slice())
        self._start_click_job(job, f"taking back the last click on {muscle_name(label)}")

    def _start_click_job(self, job: Any, text: str) -> None:
        self.state.msam_busy, self.state.msam_busy_text = True, text
        self._task = asyncio.ensure_future(self._finish_click(job, text))

    @reported
    async def _finish_click(self, job: Any, text: str) -> None:
        await self._finish_then(job, text, self._show_click)  # RunActions: wait, finish, then show

    def _show_click(self, outcome: Any) -> None:
        """A finished click run on the page: segments, heatmap, review, click markers, status."""
        self.editing.clear_history()
        self.state.msam_can_undo_run = True
        self._publish_segments()
        self._apply_heatmap()
        self._publish_review(outcome.run.table_node)
        self._refresh_clicks(force=True)
        self.say(click_summary(outcome), "success" if outcome.changed_voxels else "info")

    @reported
    def suggest_changed(self, **_: Any) -> None:
        """The "Suggest next click" switch moved."""
        self._refresh_clicks(force=True)

    def _refresh_clicks(self, force: bool = False) -> None:
        """Clicks of the chosen muscle on the view's slice (for Undo click) and the suggestion marker."""
        if self.volume_node is None or self.logic.loaded is None:
            return
        view = (self._axial_slice(), int(self.state.msam_label))
        if view == self._click_view and not force:
            return
        self._click_view = view
        k, label = view
        self.state.msam_clicks = len(self.logic.clicks_on_slice(self.volume_node, k, label))
        show = bool(self.state.msam_suggest) and bool(self.state.msam_has_result)
        ras = self.logic.show_suggested_click(self.volume_node, label if show else None, k)
        self.state.msam_suggested = ras is not None
