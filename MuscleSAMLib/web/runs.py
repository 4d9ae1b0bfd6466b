"""Segment, Propagate and Cancel: bridge jobs on the worker thread, finished on the event loop.

A run submits a scene-bridge job and returns at once; :func:`wait_for_job` polls it while the page
shows progress, then ``job.finish()`` writes the scene on the event loop (the thread that owns it).
A failed or cancelled run changes nothing and keeps its boxes for another try.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..engine.types import BoxPrompt
from ..errors import InputError
from ..scene_bridge import last_run_boxes, propagation_starts
from .box_rois import remove_rois
from .job_watch import wait_for_job
from .messages import muscle_name, reported, run_summary


class RunActions:
    """Mixin of :class:`~.controller.WebController`: the inference actions."""

    @reported
    def segment(self) -> None:
        """Segment every pending box (one bridge job)."""
        volume_node = self._require_volume()
        self._require_idle("segment")
        if not self.pending:
            raise InputError("no box yet: choose the Box tool, pick a muscle and drag a box around it on the axial view")
        used = list(self.pending)
        job = self.logic.start_segment(volume_node, [b for b, _ in used])
        self._start_job(job, f"segmenting {len(used)} box{'es' if len(used) > 1 else ''}", used, [b for b, _ in used])

    @reported
    def propagate(self) -> None:
        """Propagate the chosen muscle's boxes on its newest box's slice (one per leg) through the neighbouring slices."""
        volume_node = self._require_volume()
        self._require_idle("propagate")
        label = self._label()
        used, boxes = propagation_starts([b for b, _ in self.pending], self.last_box, label,
                                         standing=lambda last: self.logic.standing_boxes(volume_node, last))
        if not boxes:
            raise InputError(f"no box for {muscle_name(label)} yet: draw one around it on the axial view, then Propagate")
        job = self.logic.start_propagate(volume_node, boxes)
        kept = {id(b) for b in used}
        self._start_job(job, f"propagating {muscle_name(label)}", [(b, roi) for b, roi in self.pending if id(b) in kept],
                        boxes)

    def _start_job(self, job: Any, text: str, used: list[tuple[BoxPrompt, Any]], remember: list[BoxPrompt]) -> None:
        """Show progress and finish ``job`` from the event loop; ``used`` pending boxes go, ``remember`` stay for Propagate."""
        self.state.msam_busy, self.state.msam_busy_text = True, text
        self.say(f"{text[0].upper()}{text[1:]} ... (the page stays usable; Cancel stops it)", "info")
        self._task = asyncio.ensure_future(self._finish_job(job, text, used, remember))

    async def _finish_then(self, job: Any, text: str, then: Callable[[Any], None]) -> None:
        """Wait for ``job`` (busy text with the elapsed time), finish it on this thread, clear the busy flags
        whatever ``finish`` raises, and hand its outcome to ``then``, all in one state update."""
        def tick(elapsed: float) -> None:
            with self.state:
                self.state.msam_busy_text = f"{text} ({elapsed:.0f} s)"

        await wait_for_job(job, tick)
        with self.state:
            try:
                outcome = job.finish()
            finally:
                self.state.msam_busy, self.state.msam_busy_text = False, ""
            then(outcome)

    @reported
    async def _finish_job(self, job: Any, text: str, used: list[tuple[BoxPrompt, Any]], remember: list[BoxPrompt]) -> None:
        await self._finish_then(job, text, lambda outcome: self._after_run(outcome, used, remember))

    def _after_run(self, outcome: Any, used: list[tuple[BoxPrompt, Any]], remember: list[BoxPrompt]) -> None:
        used_ids = {id(b) for b, _ in used}
        remove_rois(self.views.scene, [roi for _, roi in used])
        self.pending = [(b, roi) for b, roi in self.pending if id(b) not in used_ids]
        self._publish_boxes()
        self.last_box.update(last_run_boxes(remember))
        seg = outcome.segmentation_node
        self.editing.attach(seg, self.volume_node, lambda labelmap, sid: self.logic.spare_locked(seg, labelmap, sid))
        self.editing.clear_history()
        self.state.msam_has_result = True
        self.state.msam_can_undo_run = True
        self._publish_segments()
        self._apply_tool()
        self._apply_heatmap()
        self._publish_review(outcome.table_node)
        self._refresh_clicks(force=True)
        self.say(run_summary(outcome), "warning" if outcome.flagged_labels or outcome.rejected else "success")

    @reported
    def cancel(self) -> None:
        """Cancel the running prediction (nothing in the scene changes)."""
        if not self.logic.busy:
            self.say("Nothing is running.", "info")
            return
        self.logic.cancel()
        self.say("Cancelling ... the scene will stay as it was.", "warning")
