"""Fetching a batch: the rows after the last batch's, cut at a day boundary, claimed (FOR
UPDATE SKIP LOCKED on PostgreSQL) in a transaction that stays open until the batch's marks
commit; ahead of time, while the previous batch is packed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._batch import Batch, OpenBatch
from ._errors import StepFailed
from ._shard_plan import plan_day_aligned_cut
from ._source_db import Cursor, FileRow, row_cursor
from ._verifier import brief

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ._orchestrator import MigrationOrchestrator

__all__ = ["fetch_rows", "open_batch"]


def open_batch(
    orch: MigrationOrchestrator, cutoff: datetime, after: Cursor | None, *, ahead: bool = False
) -> OpenBatch | None:
    """Fetch (and claim) the next batch after ``after``; its transaction stays open for
    the rest of the batch. None when no eligible row is left. ``ahead`` (a thread, while
    the previous batch is packed): the batch is also validated, in the verify worker
    process when there is one (never here: this thread would compete with the packer)."""
    db = orch.db
    try:
        conn = db.engine.connect()
    except Exception as exc:
        raise StepFailed("fetch", f"cannot connect to {db.redacted_url}: {brief(exc)}") from exc
    try:
        fetch_started = time.perf_counter()
        trans = conn.begin()
        try:
            orch.step("fetch")
            rows, last = fetch_rows(orch, conn, cutoff, after)
        except StepFailed:
            raise
        except Exception as exc:
            raise StepFailed("fetch", brief(exc)) from exc
        if not rows or last is None:
            trans.rollback()
            conn.close()
            return None
        if orch.metrics is not None:
            orch.metrics.batch_size.set(len(rows))
        batch = Batch(rows)
        batch.seconds["fetch"] += time.perf_counter() - fetch_started
        opened = OpenBatch(conn, trans, batch, last)
        if ahead:
            try:
                opened.validated = orch.validate_in_worker(batch)
            except StepFailed as exc:
                opened.failed = exc  # reported and rolled back when the batch's turn comes
        return opened
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()
        raise


def fetch_rows(
    orch: MigrationOrchestrator, conn: Connection, cutoff: datetime, after: Cursor | None
) -> tuple[list[FileRow], Cursor | None]:
    """The rows of the next batch and the keyset position of its last row.

    A full batch is cut at a UTC day boundary (``align_batches_to_days``). With claims
    the cut is found first, from the created_at of the middle and the last of the next
    ``batch_size`` rows (one scan, no locks), and only the rows before it are selected and
    claimed: rows beyond the cut are never locked, so the next batch (fetched while this
    one is packed) and other migrators can take them.
    """
    cfg = orch.config.migration
    db = orch.db
    claim = orch.use_claims()

    def select(before: datetime | None = None) -> tuple[list[FileRow], Sequence[Any]]:
        # the database rows stand in for one Cursor per row: only the batch's last is used
        return db.select_rows(
            conn,
            cutoff,
            after=after,
            before=before,
            limit=cfg.batch_size,
            include_failed=cfg.retry_failed,
            claim=claim,
        )

    if not (claim and cfg.align_batches_to_days):
        rows, raw = select()
        if cfg.align_batches_to_days and len(rows) == cfg.batch_size:
            rows = rows[: plan_day_aligned_cut(rows)]
        return rows, (row_cursor(raw[len(rows) - 1]) if rows else None)
    bounds = db.day_cut_bounds(
        conn, cutoff, after=after, limit=cfg.batch_size, include_failed=cfg.retry_failed
    )
    before: datetime | None = None
    if bounds is not None:
        middle, last = bounds
        day = last.replace(hour=0, minute=0, second=0, microsecond=0)
        if middle < day:  # the last day holds less than half the batch: leave it
            before = day
    rows, raw = select(before)
    if not rows and before is not None:  # the rows before the cut are all claimed
        rows, raw = select()
    return rows, (row_cursor(raw[-1]) if rows else None)
