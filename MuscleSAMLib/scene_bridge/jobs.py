"""A prediction running on the engine's worker thread, finished (MRML writes) on the main thread.

The front end either calls :meth:`Job.wait` with a ``pump`` (desktop: ``slicer.app.processEvents``;
the wait is ``done.wait(0.03)`` between pumps, never a tight spin that would starve the worker) and
then :meth:`Job.finish`, or polls :meth:`Job.done` from its own timer (web) and then finishes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Generic, TypeVar

from ..engine.worker import CancelledByUser
from ..errors import MuscleSAMError

T = TypeVar("T")
POLL_SECONDS = 0.03


class Cancelled(MuscleSAMError):
    """The user cancelled the prediction; nothing in the scene changed."""


class Busy(MuscleSAMError):
    """A prediction is already running (one prompt at a time)."""


class Job(Generic[T]):
    """Handle of one background run: ``done()``, ``wait(pump)``, ``cancel()``, ``finish()`` (main thread)."""

    def __init__(self, future: Future, cancel_event: threading.Event, finisher: Callable[[Any], T],
                 on_close: Callable[["Job"], None] | None = None, what: str = "prediction") -> None:
        self._future = future
        self._cancel = cancel_event
        self._finisher = finisher
        self._on_close = on_close
        self.what = what
        self.started = time.perf_counter()
        self.finished = False

    def done(self) -> bool:
        """True once the worker has finished (successfully, with an error, or cancelled)."""
        return self._future.done()

    def wait(self, pump: Callable[[], Any] | None = None, timeout: float | None = None) -> bool:
        """Wait for the worker, calling ``pump()`` every ~30 ms; False if ``timeout`` passed first."""
        done = threading.Event()
        self._future.add_done_callback(lambda _f: done.set())
        end = None if timeout is None else time.perf_counter() + timeout
        while not done.wait(POLL_SECONDS):
            if pump is not None:
                pump()
            if end is not None and time.perf_counter() > end:
                return False
        return True

    def cancel(self) -> None:
        """Ask the worker to stop at its next check; :meth:`finish` then raises :class:`Cancelled`."""
        self._cancel.set()

    def finish(self) -> T:
        """On the main thread, after :meth:`done`: write the result into the scene and return it."""
        if not self._future.done():
            raise RuntimeError(f"{self.what} is still running; wait for it first")
        try:
            try:
                result = self._future.result()
            except CancelledByUser:
                raise Cancelled(f"{self.what} cancelled; the scene was not changed") from None
            return self._finisher(result)
        finally:
            self.finished = True
            if self._on_close is not None:
                self._on_close(self)
