"""Learn from corrections: fine-tune the current ensemble on this session's exported bundles, in the background.

The job is ``musclesam train --from-bundles`` in a subprocess (``corrections.learning_runner``); this
mixin of :class:`~.controller.WebController` starts it, polls its progress on the event loop (the
runner's callbacks run on reader threads, so they are not used), cancels it off the loop, and on
completion reports the before/after DSC and offers to switch to the new ensemble.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError
from .messages import log, reported

POLL_SECONDS = 0.25


def dsc_summary(report: dict) -> str:
    """'Thigh_001 (corrected): DSC 0.712 -> 0.801 (+0.089)' per case, from ``learning_report.json``."""
    def f(v: Any) -> str:
        return "nan" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.3f}"

    parts = []
    for row in report.get("cases", []):
        old, new = row.get("base", {}).get("dsc"), row.get("new", {}).get("dsc")
        delta = (row.get("delta") or {}).get("dsc")
        parts.append(f"{row.get('case', '?')} ({row.get('role', '?')}): DSC {f(old)} -> {f(new)}"
                     + (f" ({delta:+.3f})" if isinstance(delta, (int, float)) and math.isfinite(delta) else ""))
    return "; ".join(parts) or "no cases evaluated"


def held_out_cases(images: Sequence[Path]) -> list[tuple[str, str]]:
    """The embedded sample (image, labels) as a held-back case, unless a bundle was made from it."""
    try:
        from ..sample_data import sample_case  # noqa: PLC0415

        case = sample_case()
    except Exception:  # noqa: BLE001 - no sample in this clone: no held-back case
        return []
    water = case.water.resolve()
    if any(Path(i).resolve() == water for i in images):
        return []
    return [(str(water), str(case.labels.resolve()))]


class LearningActions:
    """Mixin of the web controller: Learn from corrections, its Cancel, and switching to the result."""

    learn_bundles: list[tuple[Path, Path]]
    image_file: Path | None
    _learning: Any = None
    _learn_task: asyncio.Task | None = None
    start_learning: Callable[..., Any] | None = None  # the runner's start_learning (tests put a fake here)

    def bundle_exported(self, folder: Path, image_file: Path | None) -> None:
        """An export of ``image_file`` finished: it can be learned from (the bundle names the image node only)."""
        if image_file is None:
            return
        self.learn_bundles.append((Path(folder), image_file))
        self.state.msam_learn_bundles = len(self.learn_bundles)

    @reported
    def learn(self) -> None:
        """Start fine-tuning the loaded ensemble (kind decoder) on every bundle exported in this session."""
        if self._learning is not None and self._learning.running:
            raise InputError("learning from corrections is already running: wait for it or press Cancel learning")
        if not self.learn_bundles:
            raise InputError("nothing to learn from yet: correct a segmentation and press Export first")
        loaded = self.logic.loaded
        if loaded is None:
            raise InputError("the ensemble is not loaded yet: wait for it, then Learn from corrections")
        spec = loaded.ensemble.spec
        if spec.kind != "decoder":
            raise InputError(f"the current ensemble {spec.name!r} is kind {spec.kind}: learning from corrections "
                             "fine-tunes kind decoder ensembles only; restart with --ensemble naming a decoder ensemble")
        try:
            steps = int(float(self.state.msam_learn_steps))
        except (TypeError, ValueError):
            raise InputError(f"steps must be a whole number, got {self.state.msam_learn_steps!r}") from None
        if not 1 <= steps <= 10_000:
            raise InputError(f"steps must be between 1 and 10000, got {steps}")
        start = self.start_learning
        if start is None:
            from ..corrections.learning_runner import start_learning as start  # noqa: PLC0415
        out = self.export_root / f"learning-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        bundles, images = [b for b, _ in self.learn_bundles], [i for _, i in self.learn_bundles]
        self._learning = start(bundles, spec.name, manifest=loaded.manifest_path, out=out, steps=steps, images=images,
                               held_out=held_out_cases(images))
        self.state.update({"msam_learn_running": True, "msam_learn_fraction": 0, "msam_learn_result": None,
                           "msam_learn_text": f"starting: {len(bundles)} bundle(s), base {spec.name}, {steps} steps"})
        self.say(f"Learning from {len(bundles)} corrected case(s) in the background (base {spec.name}); "
                 "the page stays usable; Cancel learning stops it.", "info")
        self._learn_task = asyncio.ensure_future(self._watch_learning(self._learning))

    @reported
    async def _watch_learning(self, handle: Any) -> None:
        seen = None
        while handle.running:
            p = handle.progress
            if p is not None and p is not seen:
                seen = p
                with self.state:
                    self.state.msam_learn_fraction = round(100 * max(0.0, min(1.0, p.fraction)))
                    self.state.msam_learn_text = f"{p.stage}: {p.message}"
            await asyncio.sleep(POLL_SECONDS)
        with self.state:
            self.state.msam_learn_running = False
            self._learning_done(handle)

    def _learning_done(self, handle: Any) -> None:
        if handle.returncode == 0 and handle.result:
            res = handle.result
            try:
                summary = dsc_summary(json.loads(Path(res["report"]).read_text()))
            except (OSError, ValueError, KeyError) as exc:
                summary = f"(before/after report unreadable: {exc})"
            self.state.msam_learn_fraction = 100
            self.state.msam_learn_text = ""
            self.state.msam_learn_result = {"name": res.get("name"), "version": res.get("version"),
                                            "report": res.get("report"), "summary": summary}
            regress = int(res.get("regressions") or 0)
            self.say(f"Learning done: new ensemble {res.get('name')} ({res.get('version')}). {summary}. "
                     + (f"{regress} regression(s): see {res.get('report')}. " if regress else "")
                     + "Press 'Switch to it' to segment with it.", "warning" if regress else "success")
        elif handle.cancelled:
            self.state.msam_learn_text = ""
            self.say("Learning cancelled: no new ensemble was added (the manifest is unchanged).", "warning")
        else:
            self.state.msam_learn_text = ""
            log.warning("learning failed; last output:\n%s", "\n".join(list(handle.stderr_tail)[-10:]))
            self.say(f"Learning from corrections failed: {handle.error}", "error")

    @reported
    async def cancel_learning(self) -> None:
        """Stop the learning job (its process tree; partial files are removed, the manifest is left as it was)."""
        handle = self._learning
        if handle is None or not handle.running:
            self.say("No learning is running.", "info")
            return
        with self.state:
            self.state.msam_learn_text = "cancelling ..."
        await asyncio.get_running_loop().run_in_executor(None, handle.cancel)

    @reported
    async def use_learned(self) -> None:
        """Load the ensemble learning made and use it for the next predictions."""
        result = self.state.msam_learn_result
        if not result or not result.get("name"):
            raise InputError("no learned ensemble yet: press Learn from corrections first")
        self._require_idle("switch the ensemble")
        await self.load_ensemble(result["name"])
        if self.logic.loaded is not None and self.logic.loaded.ensemble.spec.name == result["name"]:
            with self.state:
                self.state.msam_learn_result = None
                self.state.msam_has_result = False  # the new ensemble has no maps for this image yet
                self.say(f"Now using {result['name']}: the next Segment or Propagate uses it (earlier results in "
                         "the scene stay; the heatmap shows after the next run).", "success")


def learning_defaults() -> dict[str, Any]:
    """The page keys of this panel."""
    return {"msam_learn_bundles": 0, "msam_learn_running": False, "msam_learn_fraction": 0, "msam_learn_text": "",
            "msam_learn_result": None, "msam_learn_steps": 60}
