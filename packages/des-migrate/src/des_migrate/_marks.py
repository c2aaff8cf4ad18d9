"""Marking rows archived while the batch is still being packed (``MigrationTuning.mark_chunk``
rows per statement), from the read-back of each shard as it arrives."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ._source_db import FileRow, SourceDatabase
from ._steps import step_errors
from ._verifier import ShardAnswer

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["Compare", "Marker"]

#: (shard key, its rows, the verifier's answer, uids an earlier run packed) -> problems by uid
Compare = Callable[[str, list[FileRow], ShardAnswer, set[str]], dict[str, str]]


class Marker:
    """Compares each shard's read-back with its rows as it arrives (in submission order) and
    marks the rows that check out archived in the batch's open transaction, ``chunk`` at a
    time, in a thread of its own: the marks' database work overlaps the packing. Nothing is
    committed here."""

    def __init__(
        self,
        compare: Compare,
        db: SourceDatabase,
        conn: Connection,
        by_key: dict[str, list[FileRow]],
        *,
        earlier: set[str],
        chunk: int,
    ) -> None:
        self._compare = compare
        self._db = db
        self._conn = conn
        self._by_key = by_key
        self._earlier = earlier
        self._chunk = chunk
        self._inbox: queue.SimpleQueue[tuple[str, Future[ShardAnswer]] | None]
        self._inbox = queue.SimpleQueue()
        self._outcomes: dict[str, dict[str, str]] = {}
        self._unmarked: list[str] = []
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="des-migrate-mark", daemon=True)
        self._thread.start()

    def add(self, key: str, job: Future[ShardAnswer]) -> None:
        self._inbox.put((key, job))

    def _run(self) -> None:
        while (item := self._inbox.get()) is not None:
            if self._error is not None or self._aborted.is_set():
                continue  # drain: nothing more is compared or marked
            key, job = item
            try:
                rows = self._by_key[key]
                problems = self._compare(key, rows, job.result(), self._earlier)
                self._outcomes[key] = problems
                if problems:
                    self._unmarked.extend([r.uid for r in rows if r.uid not in problems])
                else:
                    self._unmarked.extend([r.uid for r in rows])
                if len(self._unmarked) >= self._chunk:
                    self._flush()
            except BaseException as exc:  # noqa: BLE001  (handed to the batch's thread)
                self._error = exc
        if self._error is None and not self._aborted.is_set():
            try:
                self._flush()
            except BaseException as exc:  # noqa: BLE001  (handed to the batch's thread)
                self._error = exc

    def _flush(self) -> None:
        if self._unmarked and not self._aborted.is_set():
            with step_errors("mark"):
                self._db.mark_archived(self._conn, self._unmarked)
            self._unmarked = []

    def finish(self) -> dict[str, dict[str, str]]:
        """Wait until every shard added is compared and its rows marked; per shard key, what
        is wrong with each of its rows that did not check out (by uid). Raises what stopped
        the marker (a shard that could not be read back, a database error)."""
        self._inbox.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._outcomes

    def abort(self) -> None:
        """Stop (the batch failed): no more marks; returns once the connection is free."""
        self._aborted.set()
        self._inbox.put(None)
        self._thread.join()
