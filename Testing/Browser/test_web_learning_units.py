"""Learn from corrections in the web app without a browser: the mixin with a fake learning handle.

(A real-browser run of export -> learn -> cancel -> learn -> switch took ~75 s on the CPU, over the
browser suite's 60 s budget for one test, so the wiring is checked here with a fake job.)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from MuscleSAMLib.corrections.learning_runner import LearningProgress
from MuscleSAMLib.web import learning
from MuscleSAMLib.web.learning import LearningActions, dsc_summary, held_out_cases, learning_defaults


class State(dict):
    """Just what the controller uses of trame's state: attributes, update, ``with state:``."""

    __getattr__ = dict.__getitem__

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __enter__(self) -> "State":
        return self

    def __exit__(self, *_: Any) -> None:
        return None


class FakeHandle:
    def __init__(self, steps: int, result: dict | None = None, error: str | None = None) -> None:
        self.steps, self._result, self._error, self.cancelled, self.progress = steps, result, error, False, None
        self.running, self.result, self.stderr_tail = True, None, []

    def advance(self) -> None:
        self.steps -= 1
        self.progress = LearningProgress(0.5, "train", "step 1/2")
        if self.steps <= 0:
            self.running, self.result = False, self._result

    @property
    def returncode(self) -> int | None:
        return None if self.running else (0 if self._result else (130 if self.cancelled else 2))

    @property
    def error(self) -> str | None:
        return None if self.returncode in (None, 0) else ("cancelled" if self.cancelled else self._error)

    def cancel(self) -> None:
        self.cancelled, self.running = True, False


class Ctrl(LearningActions):
    def __init__(self, tmp: Path, kind: str = "decoder") -> None:
        self.state = State(learning_defaults(), msam_busy=False, msam_busy_text="")
        self.messages: list[tuple[str, str]] = []
        self.learn_bundles, self.image_file, self.export_root = [], tmp / "img.nii.gz", tmp
        spec = SimpleNamespace(name="base", kind=kind)
        self.logic = SimpleNamespace(loaded=SimpleNamespace(ensemble=SimpleNamespace(spec=spec), manifest_path=tmp / "m.json"),
                                     busy=False)
        self.calls: list[tuple] = []
        self.seen: list[tuple] = []

    def say(self, text: str, kind: str = "info") -> None:
        self.messages.append((kind, text))


def _run(ctrl: Ctrl, handle: FakeHandle, monkeypatch) -> None:
    monkeypatch.setattr(learning, "POLL_SECONDS", 0.001)

    def start(bundles, base, **kw):
        ctrl.calls.append((bundles, base, kw))
        return handle

    async def go() -> None:
        ctrl.start_learning = start
        ctrl.learn()
        while handle.running:
            handle.advance()
            await asyncio.sleep(0.02)
            if handle.running:  # the watcher showed the progress on the page state
                ctrl.seen.append((ctrl.state.msam_learn_fraction, ctrl.state.msam_learn_text))
        await ctrl._learn_task

    asyncio.run(go())


def test_summary_and_held_out(tmp_path: Path) -> None:
    rep = {"cases": [{"case": "a", "role": "corrected", "base": {"dsc": 0.5}, "new": {"dsc": 0.75}, "delta": {"dsc": 0.25}},
                     {"case": "s", "role": "held_out", "base": {"dsc": None}, "new": {"dsc": 0.1}, "delta": {"dsc": None}}]}
    assert dsc_summary(rep) == "a (corrected): DSC 0.500 -> 0.750 (+0.250); s (held_out): DSC nan -> 0.100"
    from MuscleSAMLib.sample_data import sample_case

    assert held_out_cases([sample_case().water]) == []
    assert held_out_cases([tmp_path / "x.nii.gz"]) == [(str(sample_case().water.resolve()), str(sample_case().labels.resolve()))]


def test_refusals(tmp_path: Path) -> None:
    ctrl = Ctrl(tmp_path)
    ctrl.learn()
    assert "nothing to learn from yet" in ctrl.messages[-1][1].lower() and ctrl.messages[-1][0] == "error"
    ctrl.bundle_exported(tmp_path / "b1", ctrl.image_file)
    assert ctrl.state.msam_learn_bundles == 1
    ctrl.logic.loaded.ensemble.spec.kind = "lora"
    ctrl.learn()
    assert "kind lora" in ctrl.messages[-1][1] and "decoder" in ctrl.messages[-1][1]
    ctrl.logic.loaded.ensemble.spec.kind = "decoder"
    ctrl.state.msam_learn_steps = "abc"
    ctrl.learn()
    assert "whole number" in ctrl.messages[-1][1]
    assert not ctrl.state.msam_learn_running


def test_progress_then_result(tmp_path: Path, monkeypatch) -> None:
    report = tmp_path / "learning_report.json"
    report.write_text(json.dumps({"cases": [{"case": "c", "role": "corrected", "base": {"dsc": 0.6}, "new": {"dsc": 0.7},
                                             "delta": {"dsc": 0.1}}]}))
    ctrl = Ctrl(tmp_path)
    ctrl.bundle_exported(tmp_path / "b1", ctrl.image_file)
    ctrl.state.msam_learn_steps = "3"
    handle = FakeHandle(2, {"name": "base-corrected-1", "version": "0.0.1", "report": str(report), "regressions": 0})
    _run(ctrl, handle, monkeypatch)
    bundles, base, kw = ctrl.calls[0]
    assert bundles == [tmp_path / "b1"] and base == "base" and kw["steps"] == 3 and kw["images"] == [tmp_path / "img.nii.gz"]
    assert kw["manifest"] == tmp_path / "m.json" and kw["held_out"]  # the sample is the held-back case
    assert ctrl.seen == [(50, "train: step 1/2")]
    assert not ctrl.state.msam_learn_running and ctrl.state.msam_learn_fraction == 100
    kind, text = ctrl.messages[-1]
    assert kind == "success" and "base-corrected-1" in text and "DSC 0.600 -> 0.700" in text
    assert ctrl.state.msam_learn_result["name"] == "base-corrected-1"


def test_failure_and_cancel(tmp_path: Path, monkeypatch) -> None:
    ctrl = Ctrl(tmp_path)
    ctrl.bundle_exported(tmp_path / "b1", ctrl.image_file)
    _run(ctrl, FakeHandle(1, None, "musclesam train: error: bundle b1: corrupted edit map"), monkeypatch)
    assert ctrl.messages[-1] == ("error", "Learning from corrections failed: musclesam train: error: bundle b1: corrupted edit map")
    assert not ctrl.state.msam_learn_running and ctrl.state.msam_learn_result is None

    handle = FakeHandle(10**6)

    async def go() -> None:
        ctrl.start_learning = lambda *a, **k: handle
        ctrl.learn()
        assert ctrl.state.msam_learn_running
        await ctrl.cancel_learning()
        await ctrl._learn_task

    monkeypatch.setattr(learning, "POLL_SECONDS", 0.001)
    asyncio.run(go())
    assert handle.cancelled and ctrl.messages[-1][0] == "warning" and "cancelled" in ctrl.messages[-1][1]
    assert not ctrl.state.msam_learn_running
