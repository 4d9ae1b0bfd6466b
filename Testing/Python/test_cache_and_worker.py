"""Embedding cache budget/LRU and the persistent worker's ordering, single thread and cancellation."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from MuscleSAMLib.engine.embedding_cache import EmbeddingCache
from MuscleSAMLib.engine.worker import CancelledByUser, PersistentWorker


def test_cache_evicts_least_recently_used_within_budget():
    one = torch.zeros(256)  # 1 KiB
    cache = EmbeddingCache(budget_bytes=3 * 1024)
    for k in "abc":
        cache.put(k, one.clone())
    assert cache.get("a") is not None  # a is now most recent
    cache.put("d", one.clone())
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.stats.bytes == 3 * 1024 and cache.stats.evictions == 1
    cache.put("huge", torch.zeros(10_000))
    assert "huge" not in cache


def test_get_or_compute_runs_compute_once():
    cache = EmbeddingCache()
    calls = []
    for _ in range(3):
        cache.get_or_compute(("vol", 1), lambda: calls.append(1) or torch.ones(4))
    assert len(calls) == 1 and cache.stats.hits == 2


def test_clear_one_volume():
    cache = EmbeddingCache()
    cache.put(("v1", 0), torch.ones(2))
    cache.put(("v2", 0), torch.ones(2))
    cache.clear("v1")
    assert ("v1", 0) not in cache and ("v2", 0) in cache


def test_worker_runs_everything_on_one_thread_in_order():
    worker = PersistentWorker()
    seen = []
    futures = [worker.submit(lambda i, cancel: seen.append((i, threading.current_thread().name)) or i, i)[0] for i in range(5)]
    assert [f.result(timeout=5) for f in futures] == list(range(5))
    assert [i for i, _ in seen] == list(range(5))
    assert {name for _, name in seen} == {worker.thread.name}
    worker.shutdown()


def test_cancel_stops_running_and_queued_items():
    worker = PersistentWorker()
    started = threading.Event()

    def long_job(cancel):
        started.set()
        for _ in range(500):
            if cancel.is_set():
                raise CancelledByUser("stopped")
            time.sleep(0.01)
        return "finished"

    running, _ = worker.submit(long_job)
    queued, _ = worker.submit(long_job)
    assert started.wait(5)
    worker.cancel_all()
    with pytest.raises(CancelledByUser):
        running.result(timeout=5)
    with pytest.raises(CancelledByUser):
        queued.result(timeout=5)
    after, _ = worker.submit(lambda cancel: "ok")  # the worker lives on
    assert after.result(timeout=5) == "ok"
    worker.shutdown()


def test_submit_after_shutdown_is_refused_instead_of_hanging():
    from MuscleSAMLib.engine.worker import PersistentWorker

    w = PersistentWorker("test-shutdown")
    future, _ = w.submit(lambda cancel: 7)
    w.shutdown(wait=True)
    assert future.result(timeout=5) == 7  # queued work still finishes
    with pytest.raises(RuntimeError, match="was shut down"):
        w.submit(lambda cancel: 8)
