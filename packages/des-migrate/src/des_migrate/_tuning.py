"""Knobs of the migration cycle that change its speed, never what it does (a frozen value
passed to ``MigrationOrchestrator(tuning=...)``, not module globals)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MigrationTuning"]


@dataclass(frozen=True, slots=True)
class MigrationTuning:
    """``fetch_ahead``: on PostgreSQL, fetch (and validate) the next batch while one is
    packed. ``mark_chunk``: rows marked archived per statement while a batch is still being
    packed. ``process_verify_min_rows``: a cycle whose first batch has at least this many
    rows reads back in a worker process (its start costs about as much as reading back a few
    hundred small files); smaller ones use threads. ``read_chunk``: bytes per read when a
    source is re-read to compare it with a shard. ``validate_split_min_rows``: a batch
    validated in the migrator (the first of a cycle) with at least this many rows, local
    sources and a worker process is validated half there, half in the worker, at once."""

    fetch_ahead: bool = True
    mark_chunk: int = 2000
    process_verify_min_rows: int = 1000
    read_chunk: int = 1 << 20
    validate_split_min_rows: int = 2000
