"""Run ``musclesam train --from-bundles`` in the background for the GUIs (desktop module, web app).

    handle = start_learning(["bundles/case1"], "thigh_litemedsam", held_out=[(img, labels)],
                            on_progress=lambda p: print(p.fraction, p.message),
                            on_done=lambda h: print(h.returncode, h.result or h.error))
    ...
    handle.cancel()          # kills the process tree; the manifest is left as it was
                             # (once the job is publishing, it is let finish: handle.state == "succeeded")

The job is a subprocess (its own process group / session) running the CLI with ``--progress-json``;
a reader thread parses its ``@@progress {json}`` and ``@@result {json}`` lines, another keeps the last
stderr lines (the one-line error of a refused input). Callbacks run on those reader threads: a Qt or
web front end must hand them to its own thread (or just poll :attr:`LearningHandle.progress`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..paths import REPO_ROOT

PROGRESS_PREFIX = "@@progress "
RESULT_PREFIX = "@@result "
COMMIT_STAGES = ("publish", "done")  # the job is adding (or has added) its entry to the manifest


@dataclass(frozen=True)
class LearningProgress:
    """One progress report: fraction 0..1, stage (check, load, embed, train, write, evaluate, publish, done)."""

    fraction: float
    stage: str
    message: str


def learning_command(bundles: Sequence[str | os.PathLike], base_ensemble: str, *,
                     manifest: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                     steps: int | None = None, held_out: Sequence[tuple[str, str]] = (),
                     images: Sequence[str | os.PathLike] = (), seed: int | None = None, threads: int | None = None,
                     name: str | None = None, python: str | None = None) -> list[str]:
    """The argv of the CLI job (``python -m MuscleSAMLib.cli train --from-bundles ... --progress-json``)."""
    cmd = [python or sys.executable, "-m", "MuscleSAMLib.cli", "train", "--from-bundles", *map(str, bundles),
           "--base-ensemble", base_ensemble, "--progress-json"]
    for flag, value in (("--manifest", manifest), ("--out", out), ("--steps", steps), ("--seed", seed),
                        ("--threads", threads), ("--name", name)):
        if value is not None:
            cmd += [flag, str(value)]
    if images:
        cmd += ["--image", *map(str, images)]
    for img, lab in held_out:
        cmd += ["--held-out", str(img), str(lab)]
    return cmd


class LearningHandle:
    """A running (or finished) learning job: progress, result, error, cancel, wait."""

    def __init__(self, argv: Sequence[str], *, on_progress: Callable[[LearningProgress], None] | None = None,
                 on_done: Callable[["LearningHandle"], None] | None = None, cwd: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.progress: LearningProgress | None = None
        self.result: dict | None = None
        self.log: deque[str] = deque(maxlen=400)
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.cancelled = False
        self._on_progress, self._on_done = on_progress, on_done
        self._done = threading.Event()
        full_env = {**os.environ, **(env or {})}
        root = str(REPO_ROOT)
        full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        kw: dict = {"start_new_session": True} if os.name == "posix" else \
            {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        bufsize=1, cwd=str(cwd or REPO_ROOT), env=full_env, **kw)
        self._err_thread = threading.Thread(target=self._read_stderr, name="learning-stderr", daemon=True)
        self._out_thread = threading.Thread(target=self._read_stdout, name="learning-stdout", daemon=True)
        self._err_thread.start()
        self._out_thread.start()

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int:
        """The job's process id (also its process-group id on POSIX)."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while running; 0 done, 2 refused input, 130 / negative: cancelled or killed."""
        return self.process.returncode if self._done.is_set() else None

    @property
    def running(self) -> bool:
        """True until the process has exited and its output is read."""
        return not self._done.is_set()

    @property
    def state(self) -> str:
        """``running``, ``cancelling``, ``succeeded`` (exit 0: the new entry is in the manifest, even when
        Cancel came too late to stop it), ``cancelled`` (stopped by Cancel) or ``failed``."""
        code = self.returncode
        if code is None:
            return "cancelling" if self.cancelled else "running"
        if code == 0 or self.result is not None:  # the result line comes after the manifest was written
            return "succeeded"
        return "cancelled" if self.cancelled else "failed"

    @property
    def committing(self) -> bool:
        """True once the job said it is adding its new entry to the manifest (too late to cancel)."""
        return self.result is not None or (self.progress is not None and self.progress.stage in COMMIT_STAGES)

    @property
    def error(self) -> str | None:
        """The job's last stderr line when it failed (the one-line reason), else None."""
        if self.returncode in (None, 0) or self.result is not None:
            return None
        if self.cancelled:
            return "cancelled"
        lines = [ln for ln in self.stderr_tail if ln.strip()]
        return lines[-1] if lines else f"exit code {self.returncode}"

    # ------------------------------------------------------------------ control

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the job (and its readers) to finish; returns the exit code (None on timeout)."""
        self._done.wait(timeout)
        return self.returncode

    def cancel(self, grace: float = 5.0) -> None:
        """Stop the job: SIGTERM to its process group (it removes partial files), SIGKILL after ``grace`` s.

        A job already adding its entry to the manifest (:attr:`committing`) is let finish (``grace`` s at
        most): a signal there would report a published ensemble as cancelled, or interrupt the publish."""
        if self._done.is_set():
            return
        if self.committing:
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass  # stuck after publishing: stop it after all
            else:
                self._done.wait(10.0)
                return
        self.cancelled = True
        if os.name == "posix":
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self._signal_group(signal.SIGKILL)  # the leader and any child left in the group
        else:  # Windows: taskkill walks the tree
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.pid)], capture_output=True, check=False)
        self.process.wait()
        self._done.wait(10.0)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # ------------------------------------------------------------------ readers

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip("\n"))

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self._handle_line(line.rstrip("\n"))
        finally:
            self.process.wait()
            self._err_thread.join(10.0)
            self._done.set()
            if self._on_done is not None:
                self._on_done(self)

    def _handle_line(self, line: str) -> None:
        try:
            if line.startswith(PROGRESS_PREFIX):
                d = json.loads(line[len(PROGRESS_PREFIX):])
                self.progress = LearningProgress(float(d.get("fraction", 0.0)), str(d.get("stage", "")),
                                                 str(d.get("message", "")))
                if self._on_progress is not None:
                    self._on_progress(self.progress)
                return
            if line.startswith(RESULT_PREFIX):
                self.result = json.loads(line[len(RESULT_PREFIX):])
                return
        except (ValueError, TypeError):
            pass  # a malformed line is kept in the log, never fatal
        self.log.append(line)


def start_learning(bundles: Sequence[str | os.PathLike], base_ensemble: str, *,
                   on_progress: Callable[[LearningProgress], None] | None = None,
                   on_done: Callable[[LearningHandle], None] | None = None, cwd: str | os.PathLike | None = None,
                   env: dict[str, str] | None = None, **options) -> LearningHandle:
    """Start learning from ``bundles`` in the background; ``options`` as :func:`learning_command`."""
    return LearningHandle(learning_command(bundles, base_ensemble, **options), on_progress=on_progress,
                          on_done=on_done, cwd=cwd, env=env)


__all__ = ["LearningHandle", "LearningProgress", "learning_command", "start_learning"]
