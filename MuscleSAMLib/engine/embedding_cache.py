"""Image-embedding cache with a memory budget (least recently used entries evicted first).

Keys are (volume id, slice index, encoder group key, crop window or None). A box drawn on a slice
whose embedding is cached runs only the mask decoders. Thread-safe: the precompute worker fills it
while the main thread reads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch


def nbytes(value: Any) -> int:
    """Bytes held by a tensor, or by the tensors inside a tuple/list/dict."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


@dataclass
class CacheStats:
    """Counters a user (and the tests) can read: hits, misses, evictions, bytes held."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0


class EmbeddingCache:
    """LRU cache of embeddings bounded by ``budget_bytes`` (an entry larger than the budget is not kept)."""

    def __init__(self, budget_bytes: int = 1 << 30) -> None:
        self.budget_bytes = int(budget_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self.stats = CacheStats()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        """The cached value (and mark it recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            self._items.move_to_end(key)
            self.stats.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value``, evicting least recently used entries to stay within the budget."""
        size = nbytes(value)
        with self._lock:
            if key in self._items:
                self.stats.bytes -= self._items.pop(key)[1]
            if size > self.budget_bytes:
                return
            while self._items and self.stats.bytes + size > self.budget_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self.stats.bytes -= old
                self.stats.evictions += 1
            self._items[key] = (value, size)
            self.stats.bytes += size

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Cached value for ``key``, computing and storing it on a miss (compute runs outside the lock)."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def clear(self, volume_id: Hashable | None = None) -> None:
        """Drop everything, or only the entries of one volume (first key element)."""
        with self._lock:
            for key in [k for k in self._items if volume_id is None or (isinstance(k, tuple) and k[0] == volume_id)]:
                self.stats.bytes -= self._items.pop(key)[1]
