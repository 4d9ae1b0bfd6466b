"""One persistent background thread that owns all model work (DESIGN.md "Embedding cache").

A fresh thread per request costs per-thread runtime set-up (about a second with cuDNN), so the
engine keeps one daemon thread for its whole life. Work items run in order; each receives a
``threading.Event`` that is set when the item is cancelled, and long items poll it between steps.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

CancelledByUser = type("CancelledByUser", (Exception,), {"__doc__": "Raised inside a work item that saw its cancel event."})


class PersistentWorker:
    """A single daemon worker thread with a FIFO queue, futures and cancellation."""

    def __init__(self, name: str = "musclesam-worker") -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple, Future, threading.Event] | None] = queue.Queue()
        self._pending: list[threading.Event] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The worker thread (always the same one)."""
        return self._thread

    def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Future, threading.Event]:
        """Queue ``fn(*args, cancel=event)``; returns its future and its cancel event."""
        future: Future = Future()
        cancel = threading.Event()
        with self._lock:
            if self._closed:  # a future nobody would ever complete would hang its caller
                raise RuntimeError("the MuscleSAM worker was shut down; create a new logic/engine to run more work")
            self._pending.append(cancel)
            self._queue.put((fn, args, future, cancel))
        return future, cancel

    def cancel_all(self) -> None:
        """Cancel the running item and everything queued (their futures end with CancelledByUser)."""
        with self._lock:
            for event in self._pending:
                event.set()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, future, cancel = item
            try:
                if cancel.is_set():
                    raise CancelledByUser("cancelled before it started")
                if future.set_running_or_notify_cancel():
                    future.set_result(fn(*args, cancel=cancel))
            except BaseException as exc:  # delivered to the caller through the future
                if not future.done():
                    future.set_exception(exc)
            finally:
                with self._lock:
                    if cancel in self._pending:
                        self._pending.remove(cancel)

    def shutdown(self, wait: bool = True) -> None:
        """Stop after the queued items (cancel them first with :meth:`cancel_all` to stop sooner); later submits raise."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        if wait:
            self._thread.join(timeout=30)
