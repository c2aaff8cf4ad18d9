"""Prometheus metrics of the service.

Names follow the product README (``des_retrievals_total``, ``des_retrieval_seconds``,
``des_s3_range_calls_total``) plus the index cache and the bytes served. With several uvicorn
workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by the workers (before
they start): each worker then writes its samples there and ``/metrics`` adds them up.
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar, Token
from typing import Any

from des_format import CacheStats
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


# The nowait tries of the file request being answered in this task (see
# ``ServiceMetrics.file_request``); None outside one.
_REQUEST_TRIES: ContextVar[list[bool] | None] = ContextVar("des_nowait_tries", default=None)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VARIABLE) or os.environ.get(MULTIPROC_VARIABLE.lower())


def _stat(stats: Any, name: str) -> int:
    if isinstance(stats, dict):
        return int(stats.get(name, 0))
    return int(getattr(stats, name, 0))


class _BeforeCollect(Collector):
    """Registered before the service's families: runs ``update`` whenever the registry is
    collected (a scrape, ``get_sample_value``), so what is deferred is counted by then."""

    def __init__(self, update: Any) -> None:
        self.update = update

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self.update()
        return []


class ServiceMetrics:
    """The service's metric families, registered in ``registry`` (a fresh one by default).

    The index cache's counters (:meth:`sync_cache`) and the counts of store requests
    (:meth:`observe_store_request`) are folded in when the registry is collected (through
    a collector registered first: prometheus-client's public ``Collector`` interface); in
    multiprocess mode, where another worker may answer the scrape from the shared files, at
    every request instead (``sync_each_request``).
    """

    def __init__(self, backend: str, registry: CollectorRegistry | None = None) -> None:
        self.backend = backend
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.sync_each_request = multiprocess_dir() is not None
        self._watched: Any = None
        self._warm_lock = threading.Lock()
        # 200 answers, bytes served, lookups served / fallen back: counted in plain numbers
        # and added to their counters (``inc(n)``) when the registry is collected.
        self._pending = [0, 0, 0, 0]
        self._store_pending: dict[str, list[int]] = {}
        reg.register(_BeforeCollect(self._before_collect))
        self.retrievals = Counter(
            "des_retrievals",
            "Files asked for, by backend and HTTP status of the answer.",
            ["backend", "status"],
            registry=reg,
        )
        self.retrieval_seconds = Histogram(
            "des_retrieval_seconds",
            "Time to look a file up and have its first bytes ready.",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.range_calls = Counter(
            "des_s3_range_calls",
            "Requests sent to the object store, by kind (tail, index, payload, bigfile).",
            ["backend", "type"],
            registry=reg,
        )
        self.range_bytes = Counter(
            "des_s3_range_bytes",
            "Bytes received from the object store, by kind of request.",
            ["backend", "type"],
            registry=reg,
        )
        self.bytes_served = Counter(
            "des_bytes_served",
            "File bytes sent to clients (bodies of 200 and 206 answers and batch items).",
            ["backend"],
            registry=reg,
        )
        self.cache_hits = Counter(
            "des_index_cache_hits", "Index cache hits.", ["backend"], registry=reg
        )
        self.cache_misses = Counter(
            "des_index_cache_misses", "Index cache misses.", ["backend"], registry=reg
        )
        self.cache_evictions = Counter(
            "des_index_cache_evictions", "Index cache evictions.", ["backend"], registry=reg
        )
        self.cache_bytes = Gauge(
            "des_index_cache_bytes",
            "Bytes held by the index cache (summed over live workers).",
            ["backend"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.cache_entries = Gauge(
            "des_index_cache_entries",
            "Index parts held by the index cache (summed over live workers).",
            ["backend"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.nowait_lookups = Counter(
            "des_nowait_lookups",
            "GET/HEAD /files requests tried on the event loop without waiting for I/O: "
            "answered there (result=served), or handed to the I/O threads for at least one "
            "lookup (result=fallback); one per request.",
            ["backend", "result"],
            registry=reg,
        )
        self.layout_faults = Counter(
            "des_store_layout_faults",
            "Times the store's layout record stopped agreeing with the service's settings "
            "while it ran (reason=mismatch, missing, unreadable): files are not served "
            "until it agrees again.",
            ["backend", "reason"],
            registry=reg,
        )
        self._lock = threading.Lock()
        self._seen = (0, 0, 0)
        self._gauges_seen: tuple[int, int] | None = None
        # Children looked up once: labels() costs a dict lookup and a lock per call.
        self._bytes_served = self.bytes_served.labels(backend)
        self._latency = self.retrieval_seconds.labels(backend)
        self._status_children: dict[int, Any] = {200: self.retrievals.labels(backend, "200")}
        self._cache_counters = (
            self.cache_hits.labels(backend),
            self.cache_misses.labels(backend),
            self.cache_evictions.labels(backend),
        )
        self._cache_gauges = (self.cache_bytes.labels(backend), self.cache_entries.labels(backend))
        self._kind_children: dict[str, tuple[Any, Any]] = {}
        self._nowait_children = (
            self.nowait_lookups.labels(backend, "served"),
            self.nowait_lookups.labels(backend, "fallback"),
        )

    def observe_store_request(self, kind: str, nbytes: int) -> None:
        """The retriever's observer: called once per request sent to the object store (from
        any thread); counted when the registry is collected, unless ``sync_each_request``."""
        if not self.sync_each_request:
            with self._warm_lock:
                pending = self._store_pending.get(kind)
                if pending is None:
                    self._store_pending[kind] = [1, nbytes]
                else:
                    pending[0] += 1
                    pending[1] += nbytes
            return
        self._count_store_requests(kind, 1, nbytes)

    def _count_store_requests(self, kind: str, calls: int, nbytes: int) -> None:
        children = self._kind_children.get(kind)
        if children is None:
            children = (
                self.range_calls.labels(self.backend, kind),
                self.range_bytes.labels(self.backend, kind),
            )
            self._kind_children[kind] = children
        children[0].inc(calls)
        if nbytes:
            children[1].inc(nbytes)

    def observe_retrieval(self, status: int, seconds: float | None) -> None:
        """One answer (a file, or a batch item): its status, and its latency if given. A 200
        is counted in a plain number until collection (unless ``sync_each_request``)."""
        if status == 200 and not self.sync_each_request:
            with self._warm_lock:
                self._pending[0] += 1
        else:
            child = self._status_children.get(status)
            if child is None:
                child = self.retrievals.labels(self.backend, str(status))
                self._status_children[status] = child
            child.inc()
        if seconds is not None:
            self._latency.observe(seconds)

    def observe_nowait(self, served: bool) -> None:
        """The retriever's: one lookup tried on the event loop. Inside a file request (see
        :meth:`file_request`) it is held, and the request counted once at its end."""
        tries = _REQUEST_TRIES.get()
        if tries is not None:
            tries.append(served)
            return
        self._count_nowait(served)

    def file_request(self) -> Token[list[bool] | None]:
        """Start a ``GET``/``HEAD /files`` request: its lookups (an index entry, then the
        payload, for a ranged or conditional GET) are one request to the nowait counter."""
        return _REQUEST_TRIES.set([])

    def file_request_done(self, token: Token[list[bool] | None]) -> None:
        """End it: counted ``served`` when every lookup was, ``fallback`` when one went to
        the I/O threads, not at all when none was tried."""
        tries = _REQUEST_TRIES.get()
        _REQUEST_TRIES.reset(token)
        if tries:
            self._count_nowait(all(tries))

    def _count_nowait(self, served: bool) -> None:
        if self.sync_each_request:
            self._nowait_children[0 if served else 1].inc()
            return
        with self._warm_lock:
            self._pending[2 if served else 3] += 1

    def observe_layout_fault(self, reason: str) -> None:
        self.layout_faults.labels(self.backend, reason).inc()

    def watch_cache(self, cache: Any) -> None:
        """The index cache whose ``stats()`` :meth:`sync_cache` folds in at collection."""
        self._watched = cache

    def _before_collect(self) -> None:
        with self._warm_lock:
            store, self._store_pending = self._store_pending, {}
            (answers, nbytes, served, fallback), self._pending = self._pending, [0, 0, 0, 0]
        if answers:
            self._status_children[200].inc(answers)
        if nbytes:
            self._bytes_served.inc(nbytes)
        if served:
            self._nowait_children[0].inc(served)
        if fallback:
            self._nowait_children[1].inc(fallback)
        for kind, (calls, kind_bytes) in store.items():
            self._count_store_requests(kind, calls, kind_bytes)
        if self._watched is not None:
            self.sync_cache(self._watched.stats())

    def add_bytes_served(self, nbytes: int) -> None:
        if not nbytes:
            return
        if self.sync_each_request:
            self._bytes_served.inc(nbytes)
            return
        with self._warm_lock:
            self._pending[1] += nbytes

    def sync_cache(self, stats: Any) -> None:
        """Fold the index cache's cumulative ``stats()`` into the counters and gauges."""
        if isinstance(stats, CacheStats):
            hits, misses, evictions = stats.hits, stats.misses, stats.evictions
            size, entries = stats.bytes, stats.entries
        else:
            hits, misses, evictions = (_stat(stats, n) for n in ("hits", "misses", "evictions"))
            size, entries = _stat(stats, "bytes"), _stat(stats, "entries")
        with self._lock:
            old_hits, old_misses, old_evictions = self._seen
            self._seen = (hits, misses, evictions)
            if (size, entries) != self._gauges_seen:  # unchanged on every warm read
                self._gauges_seen = (size, entries)
                bytes_g, entries_g = self._cache_gauges
                bytes_g.set(size)
                entries_g.set(entries)
        hits_c, misses_c, evictions_c = self._cache_counters
        if hits > old_hits:
            hits_c.inc(hits - old_hits)
        if misses > old_misses:
            misses_c.inc(misses - old_misses)
        if evictions > old_evictions:
            evictions_c.inc(evictions - old_evictions)

    def render(self) -> tuple[bytes, str]:
        """The exposition text for ``/metrics`` (all workers' samples in multiprocess mode)."""
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
