"""The dry run: validate every eligible row and list the shards it would write, changing
nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._batch import Batch, ok_rows
from ._cycle_report import CycleReport, FileFailure
from ._errors import StepFailed
from ._source_db import Cursor
from ._verifier import brief

if TYPE_CHECKING:
    from ._orchestrator import MigrationOrchestrator

__all__ = ["dry_run"]


def dry_run(orch: MigrationOrchestrator) -> CycleReport:
    """Validate every eligible row and list the shards it would write; change nothing."""
    cfg = orch.config.migration
    cutoff = orch.cutoff()
    fetched = 0
    failures: list[FileFailure] = []
    shards: set[str] = set()
    after: Cursor | None = None
    nbytes = 0
    try:
        while True:
            with orch.db.engine.connect() as conn:
                rows, last = orch.db.select_page(
                    conn,
                    cutoff,
                    after=after,
                    limit=cfg.batch_size,
                    include_failed=cfg.retry_failed,
                )
            if not rows or last is None:
                break
            batch = Batch(rows)
            orch.validate(batch)
            ok = ok_rows(batch)
            fetched += len(rows)
            failures.extend(batch.failures)
            shards.update(batch.keys[r.uid] for r in ok)
            nbytes += sum(r.size_bytes for r in ok)
            after = last
    except StepFailed as exc:
        return CycleReport(status="failure", fetched=fetched, error=str(exc), dry_run=True)
    except Exception as exc:  # noqa: BLE001  (reported as a failed dry run)
        return CycleReport(
            status="failure",
            fetched=fetched,
            error=f"fetch failed: {brief(exc)}",
            dry_run=True,
        )
    status = "empty" if fetched == 0 else ("partial" if failures else "success")
    return CycleReport(
        status=status,
        fetched=fetched,
        bytes_migrated=0,
        failures=tuple(failures),
        dry_run=True,
        shards=tuple(sorted(shards)),
    )
