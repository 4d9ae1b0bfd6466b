"""Messages on the page: failures of any action, and the summary of a finished run."""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from typing import Any, Callable

from ..errors import MuscleSAMError
from ..sample_data import muscle_names

log = logging.getLogger("musclesam.web")


def muscle_name(label: int) -> str:
    """'vastus lateralis' for 3."""
    return muscle_names().get(label, {}).get("name", str(label))


def reported(fn: Callable) -> Callable:
    """Turn any exception of an action into a message on the page (the server keeps running)."""

    def report(self: Any, exc: BaseException) -> None:
        from ..scene_bridge import Cancelled  # noqa: PLC0415

        if isinstance(exc, MuscleSAMError):
            self.say(f"{str(exc)[:1].upper()}{str(exc)[1:]}", "warning" if isinstance(exc, Cancelled) else "error")
        else:
            log.error("%s failed:\n%s", fn.__name__, traceback.format_exc())
            self.say(f"Internal error in {fn.__name__.strip('_')}: {exc.__class__.__name__}: {exc}. "
                     "The server keeps running; see its log.", "error")

    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure is reported on the page
                with self.state:
                    report(self, exc)
            return None
        return run_async

    @functools.wraps(fn)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            report(self, exc)
        return None
    return run


def run_summary(outcome: Any) -> str:
    """One line for the page: what a Segment/Propagate run changed, flagged, rejected, where it stopped."""
    names = muscle_names()
    changed = ", ".join(names[v]["name"] for v in outcome.changed_labels) or "nothing changed"
    parts = [f"Done in {outcome.seconds:.1f} s on slice{'s' if len(outcome.slices) != 1 else ''} "
             f"{', '.join(map(str, outcome.slices)) or '-'}: {changed}."]
    if outcome.flagged_labels:
        parts.append("Uncertain (flagged for review): " + ", ".join(names[v]["abbrev"] for v in outcome.flagged_labels) + ".")
    if outcome.rejected:
        parts.append("Boxes not used: " + "; ".join(f"{w}: {why}" for w, why in outcome.rejected) + ".")
    if outcome.stops:
        parts.append("Propagation stopped: " + "; ".join(outcome.stop_notes) + ".")
    return " ".join(parts)


def click_summary(outcome: Any) -> str:
    """One line for the page: what a click (or Undo click) changed."""
    name = muscle_name(outcome.label)
    sign = "muscle" if outcome.positive else "not muscle"
    what = (f"Click {outcome.clicks} ({sign}) on {name}" if outcome.added else
            f"Click ({sign}) on {name} taken back, {outcome.clicks} left")
    changed = (f"mask changed by {outcome.changed_voxels} voxels" if outcome.changed_voxels else "the mask did not change")
    parts = [f"{what}, slice {outcome.slice}: {changed} ({outcome.run.seconds:.2f} s)."]
    if outcome.kept_edits:
        parts.append(f"{outcome.kept_edits} voxels you painted or erased stay as you left them.")
    if outcome.run.flagged_labels:
        parts.append("Still uncertain: " + ", ".join(muscle_name(v) for v in outcome.run.flagged_labels) + ".")
    if outcome.added:
        parts.append("Undo click takes it back.")
    if getattr(outcome, "caveat", ""):
        parts.append(outcome.caveat)
    return " ".join(parts)
