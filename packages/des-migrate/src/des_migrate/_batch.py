"""A batch of rows being migrated: its shard keys, failures, verified rows and step times,
and, while it is fetched ahead, its open transaction (the rows' claims)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._cycle_report import FileFailure
from ._errors import StepFailed
from ._source_db import Cursor, FileRow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, RootTransaction

__all__ = ["Batch", "OpenBatch", "ok_rows"]


@dataclass
class Batch:
    rows: list[FileRow]
    keys: dict[str, str] = field(default_factory=dict)  # uid -> shard key
    failures: list[FileFailure] = field(default_factory=list)
    verified: list[FileRow] = field(default_factory=list)
    already_packed: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] += time.perf_counter() - t0

    def fail(self, row: FileRow, step: str, reason: str) -> None:
        self.failures.append(FileFailure(row.uid, step, reason))


@dataclass
class OpenBatch:
    """A fetched batch whose transaction (and row claims) is still open."""

    conn: Connection
    trans: RootTransaction
    batch: Batch
    last: Cursor
    validated: bool = False
    failed: StepFailed | None = None  # its validation, done ahead, failed for the batch

    def discard(self) -> None:
        """Roll back (releasing the claims) and close, for a batch that will not be run."""
        with contextlib.suppress(Exception):
            self.trans.rollback()
        with contextlib.suppress(Exception):
            self.conn.close()


def ok_rows(batch: Batch) -> list[FileRow]:
    """The batch's rows that have not failed."""
    bad = {f.uid for f in batch.failures}
    return [r for r in batch.rows if r.uid not in bad]
