"""Prometheus metrics of the migrator, registered on an injectable registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CYCLE_STATUSES = ("success", "partial", "failure", "empty")
_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class MigrationMetrics:
    """The des_migration_* metrics; pass a registry in tests, the default one in production."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY

        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.cycles = Counter(
            "des_migration_cycles_total",
            "Migration cycles by outcome (success, partial, failure, empty).",
            ["status"],
            registry=reg,
        )
        self.files = Counter(
            "des_migration_files_total",
            "Files packed, verified and marked archived.",
            registry=reg,
        )
        self.bytes = Counter(
            "des_migration_bytes_total",
            "Original bytes of the files marked archived.",
            registry=reg,
        )
        self.failed_files = Counter(
            "des_migration_failed_files_total",
            "Files left unarchived because of an error, by step.",
            ["step"],
            registry=reg,
        )
        self.duration = Histogram(
            "des_migration_duration_seconds",
            "Wall time of one migration cycle.",
            buckets=_DURATION_BUCKETS,
            registry=reg,
        )
        self.pending = Gauge(
            "des_migration_pending_files",
            "Eligible rows not archived yet (after the last cycle).",
            registry=reg,
        )
        self.batch_size = Gauge(
            "des_migration_batch_size",
            "Rows in the last batch fetched.",
            registry=reg,
        )
        for status in CYCLE_STATUSES:
            self.cycles.labels(status=status)
