"""Prometheus metrics of this package, on an injectable registry (default: the global one).

The collectors of one registry are created once and shared (registering a name twice on a
registry is an error in prometheus-client), so any number of readers, stores and observers
may ask for them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

RANGE_CALL_TYPES = ("tail", "index", "payload", "bigfile")


@dataclass(frozen=True, slots=True)
class S3Metrics:
    range_calls: Counter
    source_reads: Counter
    source_read_seconds: Histogram
    source_bytes: Counter


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, S3Metrics] = weakref.WeakKeyDictionary()


def metrics_for(registry: CollectorRegistry | None = None) -> S3Metrics:
    """The package's collectors on ``registry`` (created on first use)."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(reg)
        if found is not None:
            return found
        made = S3Metrics(
            range_calls=Counter(
                "des_s3_range_calls_total",
                "Object-store requests made by the shard retriever, by backend and type "
                "(tail, index, payload, bigfile).",
                ["backend", "type"],
                registry=reg,
            ),
            source_reads=Counter(
                "des_s3_source_reads_total",
                "Source files read from s3:// URIs, by final status (ok, not_found, denied, "
                "error).",
                ["status"],
                registry=reg,
            ),
            source_read_seconds=Histogram(
                "des_s3_source_read_seconds",
                "Time to read one s3:// source file, retries included, by final status.",
                ["status"],
                registry=reg,
            ),
            source_bytes=Counter(
                "des_s3_source_bytes_downloaded",
                "Bytes downloaded from s3:// source files.",
                registry=reg,
            ),
        )
        _by_registry[reg] = made
        return made


def range_call_observer(
    backend: str = "s3", registry: CollectorRegistry | None = None
) -> Callable[[str, int], None]:
    """An ``observer(kind, nbytes)`` for ``des_format.ShardRetriever`` that increments
    ``des_s3_range_calls_total{backend, type=kind}`` once per store request.
    """
    counter = metrics_for(registry).range_calls
    children = {kind: counter.labels(backend=backend, type=kind) for kind in RANGE_CALL_TYPES}

    def observe(kind: str, nbytes: int) -> None:
        child = children.get(kind)
        if child is None:
            child = counter.labels(backend=backend, type=kind)
        child.inc()

    return observe
