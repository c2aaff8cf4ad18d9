"""A thread-safe LRU of shard indexes, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ._index import ShardIndex


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    max_bytes: int


class IndexCache:
    """Indexes by object key, each remembered with the ETag of the object it was read from.

    The size of an index grows as its buckets are decoded; callers report that with
    :meth:`resize` so the bound stays true. An index larger than ``max_bytes`` is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str | None, ShardIndex, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key: str) -> tuple[str | None, ShardIndex] | None:
        """(etag, index) for ``key``, or None. Counts a hit or a miss."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0], item[1]

    def peek(self, key: str) -> tuple[str | None, ShardIndex] | None:
        """(etag, index) for ``key``, or None, without counting a hit or a miss and without
        moving ``key`` in the LRU order (for a caller that may still go through :meth:`get`)."""
        item = self._items.get(key)
        return None if item is None else (item[0], item[1])

    def put(self, key: str, etag: str | None, index: ShardIndex) -> None:
        size = index.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            if size > self.max_bytes:
                return
            self._items[key] = (etag, index, size)
            self._bytes += size
            self._evict()

    def resize(self, key: str, index: ShardIndex) -> None:
        """Re-account ``index`` (same object as cached under ``key``) after it grew."""
        with self._lock:
            item = self._items.get(key)
            if item is None or item[1] is not index:
                return
            size = index.nbytes
            self._bytes += size - item[2]
            self._items[key] = (item[0], index, size)
            if size > self.max_bytes:
                del self._items[key]
                self._bytes -= size
                self._evictions += 1
                return
            self._evict()

    def discard(self, key: str, index: ShardIndex | None = None) -> None:
        """Drop ``key`` (only if it still holds ``index``, when given)."""
        with self._lock:
            item = self._items.get(key)
            if item is None or (index is not None and item[1] is not index):
                return
            del self._items[key]
            self._bytes -= item[2]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._items:
            _key, (_etag, _idx, size) = self._items.popitem(last=False)
            self._bytes -= size
            self._evictions += 1

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                bytes=self._bytes,
                entries=len(self._items),
                max_bytes=self.max_bytes,
            )
