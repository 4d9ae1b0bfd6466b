"""A prediction running on the engine's worker thread, finished (MRML writes) on the main thread.

The front end either calls :meth:`Job.wait` with a ``pump`` (desktop: ``slicer.app.processEvents``;
the wait is ``done.wait(0.03)`` between pumps, never a tight spin that would starve the worker) and
then :meth:`Job.finish`, or polls :meth:`Job.done` from its own timer (web) and then finishes.

Cancel is final: once :meth:`Job.cancel` was called (or the worker's ``cancel_all``), :meth:`Job.finish`
raises :class:`Cancelled` and writes nothing, even when the worker had already finished (the user was
told "the scene will stay as it was"). Cancelling a job whose worker is done also closes it at once,
so a job that a front end lost (never finished) cannot keep the bridge busy.
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

    @property
    def cancel_requested(self) -> bool:
        """True once Cancel was pressed for this job (its result, if any, will be discarded)."""
        return self._cancel.is_set()

    @property
    def state(self) -> str:
        """``running``, ``cancelling`` (Cancel pressed, worker not stopped yet), ``cancelled``, ``failed``
        or ``succeeded`` (the worker's result is ready, or was written by :meth:`finish`)."""
        if not self._future.done():
            return "cancelling" if self._cancel.is_set() else "running"
        if self._cancel.is_set() or self._future.cancelled():
            return "cancelled"
        error = self._future.exception()
        if isinstance(error, CancelledByUser):
            return "cancelled"
        return "failed" if error is not None else "succeeded"

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
        """Ask the worker to stop at its next check; :meth:`finish` then raises :class:`Cancelled`.

        When the worker is already done, the job is closed now (its result is never written)."""
        self._cancel.set()
        if self._future.done() and not self.finished:
            self._close()

    def finish(self) -> T:
        """On the main thread, after :meth:`done`: write the result into the scene and return it."""
        if not self._future.done():
            raise RuntimeError(f"{self.what} is still running; wait for it first")
        try:
            if self._cancel.is_set() or self._future.cancelled():
                raise Cancelled(f"{self.what} cancelled; the scene was not changed") from self._future_error()
            try:
                result = self._future.result()
            except CancelledByUser:
                raise Cancelled(f"{self.what} cancelled; the scene was not changed") from None
            return self._finisher(result)
        finally:
            self._close()

    def _future_error(self) -> BaseException | None:
        """The worker's own error behind a cancelled job (kept as the cause for logs), if any."""
        if self._future.cancelled():
            return None
        error = self._future.exception()
        return None if isinstance(error, CancelledByUser) else error

    def _close(self) -> None:
        if not self.finished:
            self.finished = True
            if self._on_close is not None:
                self._on_close(self)
