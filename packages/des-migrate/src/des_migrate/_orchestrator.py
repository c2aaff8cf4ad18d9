"""The migration cycle: fetch -> validate -> pack -> verify -> mark -> (optional) cleanup.

Safety rules, in the order they matter:

1. A row is marked archived only after its packed copy was read back through
   ``des_format.ShardRetriever`` (index entry found, payload checksum verified, size and, when
   the table has one, the source checksum compared). Marks of one batch are one transaction.
2. A source file is deleted only after the transaction that marked its row has committed; the
   list is journaled before the commit so a crash before the deletions is finished later.
3. Any step failing for the whole batch rolls the transaction back: rows stay unmarked, sources
   stay in place, claims are released. A bad file is recorded with its reason and the rest of
   its batch goes on.
4. Rows already in their shard (a crashed earlier run packed them but did not mark them) are
   verified against the source and marked; they are never packed twice.
5. On PostgreSQL, rows are claimed ``FOR UPDATE SKIP LOCKED`` and each shard key of the batch is
   held under a transaction-scoped advisory lock (taken in sorted order) from before the
   "already packed?" check until the marks commit, so two migrators never append to one shard
   at the same time and never lose each other's files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import MigrationConfig
from ._errors import ConfigError, StepFailed
from ._journal import Journal, iter_orphan_journals, write_journal
from ._metrics import MigrationMetrics
from ._source_db import Cursor, FileRow, SourceDatabase, row_cursor
from ._verifier import WORKER_FILE, Item, Row, ShardAnswer, Verifier, brief
from ._verify_worker import duplicate_uid, source_problem

if TYPE_CHECKING:
    from des_format import ObjectStore, ShardRetriever
    from des_packer import ManifestEntry, PackOptions, PackPlan, PackReport, ProgressEvent
    from sqlalchemy.engine import Connection, RootTransaction

log = logging.getLogger("des_migrate")

PackFn = Callable[[list["ManifestEntry"], str, "PackOptions"], "PackReport"]
#: Called with the step name at the start of each step; raising fails that step (tests).
FaultHook = Callable[[str], None]

_PUBLISHED = ("written", "appended", "skipped")
STEPS = ("fetch", "validate", "pack", "verify", "mark", "cleanup")
_READ_CHUNK = 1 << 20
#: Fetch the next batch while one is packed (PostgreSQL).
FETCH_AHEAD = True
#: Rows marked archived per statement while a batch is still being packed (see _Marker).
MARK_CHUNK = 2000
#: A cycle whose first batch has at least this many rows verifies in a worker process (its
#: start costs this process about as much as reading back a few hundred small files).
PROCESS_VERIFY_MIN_ROWS = 1000


@dataclass(frozen=True, slots=True)
class FileFailure:
    """A file left unarchived, the step that refused it and why."""

    uid: str
    step: str
    reason: str


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did. ``status``: success, partial (some files failed), failure (a step
    failed for a whole batch, or the database could not be read) or empty (nothing eligible)."""

    status: str
    batches: int = 0
    fetched: int = 0
    migrated: int = 0
    bytes_migrated: int = 0
    already_packed: int = 0
    failures: tuple[FileFailure, ...] = ()
    deleted_sources: int = 0
    error: str | None = None
    dry_run: bool = False
    shards: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0
    #: wall seconds per step over the cycle's batches (verify: the wait after the pack)
    step_seconds: tuple[tuple[str, float], ...] = ()

    @property
    def exit_code(self) -> int:
        """0 success (or nothing to do), 3 partial failure, 1 failure."""
        return {"success": 0, "empty": 0, "partial": 3}.get(self.status, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "dry_run": self.dry_run,
            "batches": self.batches,
            "fetched": self.fetched,
            "migrated": self.migrated,
            "bytes_migrated": self.bytes_migrated,
            "already_packed": self.already_packed,
            "deleted_sources": self.deleted_sources,
            "failed": len(self.failures),
            "failures": [{"uid": f.uid, "step": f.step, "reason": f.reason} for f in self.failures],
            "shards": list(self.shards),
            "error": self.error,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds},
        }


@dataclass
class _Batch:
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
class _OpenBatch:
    """A fetched batch whose transaction (and row claims) is still open."""

    conn: Connection
    trans: RootTransaction
    batch: _Batch
    last: Cursor
    validated: bool = False
    failed: StepFailed | None = None  # its validation, done ahead, failed for the batch

    def discard(self) -> None:
        """Roll back (releasing the claims) and close, for a batch that will not be run."""
        with contextlib.suppress(Exception):
            self.trans.rollback()
        with contextlib.suppress(Exception):
            self.conn.close()


class _Marker:
    """Compares each shard's read-back with its rows as it arrives (in submission order) and
    marks the rows that check out archived in the batch's open transaction, ``chunk`` at a
    time, in a thread of its own: the marks' database work overlaps the packing. Nothing is
    committed here."""

    def __init__(
        self,
        orch: MigrationOrchestrator,
        conn: Connection,
        by_key: dict[str, list[FileRow]],
        earlier: set[str],
        chunk: int | None = None,
    ) -> None:
        self._orch = orch
        self._conn = conn
        self._by_key = by_key
        self._earlier = earlier
        self._chunk = MARK_CHUNK if chunk is None else chunk
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
                problems = self._orch._compare_shard(key, rows, job.result(), self._earlier)
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
            with _step_errors("mark"):
                self._orch.db.mark_archived(self._conn, self._unmarked)
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


class MigrationOrchestrator:
    """Runs migration cycles for one configuration.

    ``pack_fn`` defaults to ``des_packer.pack``; ``store`` (where shards are read back from)
    defaults to the output directory or the ``s3://`` output. ``fault`` is called with each
    step's name before the step runs (failure injection in tests).
    """

    def __init__(
        self,
        config: MigrationConfig,
        *,
        db: SourceDatabase | None = None,
        metrics: MigrationMetrics | None = None,
        pack_fn: PackFn | None = None,
        store: ObjectStore | None = None,
        fault: FaultHook | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.db = db if db is not None else SourceDatabase(config.database)
        if config.migration.claim_mode == "skip_locked" and not self.db.supports_skip_locked:
            raise ConfigError(
                "migration.claim_mode",
                f"'auto' or 'none' on {self.db.dialect} (row claims need PostgreSQL; "
                "run one migrator per database)",
                "skip_locked",
            )
        self.metrics = metrics
        self._pack_fn = pack_fn
        self._store = store
        self._fault = fault
        self._now = now or (lambda: datetime.now(UTC))
        self._stop = threading.Event()
        self._s3_client: Any = None
        self._journal_seq = 0
        self._store_given = store is not None
        self._verifier: Verifier | None = None  # the cycle's, see _cycle

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Finish the batch in progress, then stop (what SIGTERM does)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def cutoff(self) -> datetime:
        return self.config.migration.effective_cutoff(self._now())

    def state_dir(self) -> Path:
        """Where cleanup journals live: ``migration.state_dir``, or by default
        ``$XDG_STATE_HOME/des-migrate/<hash>`` (``~/.local/state``), one directory per
        (database, table, output) so migrators of other tables never read these journals."""
        if self.config.migration.state_dir is not None:
            return Path(self.config.migration.state_dir)
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        ident = "\n".join(
            [self.db.redacted_url, self.config.database.table_name, self.config.packer.output_dir]
        )
        digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:16]
        return Path(base) / "des-migrate" / digest

    def _use_claims(self) -> bool:
        mode = self.config.migration.claim_mode
        if mode == "none":
            return False
        return self.db.supports_skip_locked

    def _step(self, name: str) -> None:
        if self._fault is not None:
            with _step_errors(name):
                self._fault(name)

    # ------------------------------------------------------------------ wiring

    def _output(self) -> str:
        return self.config.packer.output_dir

    def _n_bits(self) -> int:
        return self.config.packer.n_bits

    def retriever(self) -> ShardRetriever:
        """A retriever with a fresh index cache.

        Each step that reads shards takes a new one: an index cached before a pack would not
        know the files the pack just appended.
        """
        from des_format import IndexCache, ShardRetriever

        return ShardRetriever(self._object_store(), cache=IndexCache(64 << 20))

    def _object_store(self) -> ObjectStore:
        if self._store is not None:
            return self._store
        out = self._output()
        if out.startswith("s3://"):
            from des_storage_s3 import ClientSettings, S3ObjectStore, make_client

            bucket, _, prefix = out[len("s3://") :].partition("/")
            pk = self.config.packer
            client = make_client(
                ClientSettings(
                    region_name=pk.s3_region_name or pk.s3_source.region_name,
                    endpoint_url=pk.s3_endpoint_url or pk.s3_source.endpoint_url,
                )
            )
            self._store = S3ObjectStore(client, bucket, prefix)
        else:
            from des_format import LocalObjectStore

            self._store = LocalObjectStore(out)
        return self._store

    def _pack_options(self) -> PackOptions:
        from des_packer import PackOptions

        pk = self.config.packer
        return PackOptions(
            n_bits=pk.n_bits,
            codec=pk.codec,
            level=pk.level,
            max_shard_size=pk.max_shard_size,
            workers=pk.workers,
            big_file_threshold=pk.big_file_threshold_bytes,
            on_error="skip",
            s3_endpoint_url=pk.s3_endpoint_url or pk.s3_source.endpoint_url,
            s3_region=pk.s3_region_name or pk.s3_source.region_name,
            block_size=pk.block_size,
            block_member_max=pk.block_member_max,
        )

    def _pack(
        self,
        entries: list[ManifestEntry],
        keys: dict[str, str],
        progress: Callable[[ProgressEvent], None],
    ) -> PackReport:
        options = dataclasses.replace(self._pack_options(), progress=progress)
        if self._pack_fn is not None:
            return self._pack_fn(entries, self._output(), options)
        from des_packer import pack_plan

        # the shard keys validate computed: the packer's planner would compute them again
        return pack_plan(plan_from_keys(entries, keys, self._n_bits()), self._output(), options)

    # ------------------------------------------------------------------ the cycle

    def run_migration_cycle(self, *, dry_run: bool = False) -> CycleReport:
        """Migrate every eligible row, batch by batch, and return what happened."""
        started = time.monotonic()
        with _older_objects_frozen():
            report = self._dry_run() if dry_run else self._cycle()
        elapsed = time.monotonic() - started
        report = _replace(report, elapsed_seconds=elapsed)
        if self.metrics is not None and not dry_run:
            self.metrics.cycles.labels(status=report.status).inc()
            self.metrics.duration.observe(elapsed)
            with contextlib.suppress(Exception):
                self.metrics.pending.set(self.db.count_pending(self.cutoff()))
        if dry_run:
            log.info(
                "dry run %s: %d eligible rows, %d shards, %d would fail validation",
                report.status,
                report.fetched,
                len(report.shards),
                len(report.failures),
            )
            return report
        log.info(
            "cycle %s: %d migrated (%d bytes), %d already packed, %d failed, %d sources deleted",
            report.status,
            report.migrated,
            report.bytes_migrated,
            report.already_packed,
            len(report.failures),
            report.deleted_sources,
        )
        return report

    def _cycle(self) -> CycleReport:
        cfg = self.config.migration
        cutoff = self.cutoff()
        after: Cursor | None = None
        batches = fetched = migrated = nbytes = already = 0
        failures: list[FileFailure] = []
        shards: set[str] = set()
        seconds: dict[str, float] = defaultdict(float)
        error: str | None = None
        deleted = self._recover_cleanups() if cfg.delete_source_files else 0
        limit = cfg.max_batches_per_cycle
        # On PostgreSQL the next batch is fetched (and, with a verify worker, validated there)
        # while this one is packed: its own connection and transaction, rows after this
        # batch's last row, so the two never share a row. SQLite: one transaction at a time
        # (an open reader there would hold up this batch's commit).
        ahead_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="des-migrate-fetch")
            if self.db.dialect == "postgresql" and FETCH_AHEAD
            else None
        )
        ahead: Future[_OpenBatch | None] | None = None
        try:
            while not self._stop.is_set():
                if limit is not None and batches >= limit:
                    break
                try:
                    if ahead is not None:
                        job, ahead = ahead, None
                        opened = job.result()
                    else:
                        opened = self._open_batch(cutoff, after)
                    if opened is None:
                        break
                    after = opened.last
                    if self._verifier is None:  # sized by the cycle's first batch
                        self._verifier = self._new_verifier(len(opened.batch.rows))
                    if ahead_pool is not None and (limit is None or batches + 1 < limit):
                        ahead = ahead_pool.submit(self._open_batch, cutoff, after, ahead=True)
                    batch, deleted_now = self._finish_batch(opened)
                except StepFailed as exc:
                    error = str(exc)
                    log.error("batch failed, rows left unmarked: %s", exc)
                    break
                batches += 1
                fetched += len(batch.rows)
                migrated += len(batch.verified)
                nbytes += sum(r.size_bytes for r in batch.verified)
                already += batch.already_packed
                deleted += deleted_now
                failures.extend(batch.failures)
                shards.update(batch.keys[r.uid] for r in batch.verified)
                for step, sec in batch.seconds.items():
                    seconds[step] += sec
        finally:
            if ahead is not None:  # stopped, failed or at the batch limit: release its claims
                with contextlib.suppress(Exception):
                    unused = ahead.result()
                    if unused is not None:
                        unused.discard()
            if ahead_pool is not None:
                ahead_pool.shutdown(wait=True)
            verifier, self._verifier = self._verifier, None
            if verifier is not None:
                verifier.close()
        if error is not None:
            status = "failure"
        elif failures:
            status = "partial"
        elif fetched == 0:
            status = "empty"
        else:
            status = "success"
        return CycleReport(
            status=status,
            batches=batches,
            fetched=fetched,
            migrated=migrated,
            bytes_migrated=nbytes,
            already_packed=already,
            failures=tuple(failures),
            deleted_sources=deleted,
            error=error,
            shards=tuple(sorted(shards)),
            step_seconds=tuple((k, seconds[k]) for k in STEPS if k in seconds),
        )

    def _open_batch(
        self, cutoff: datetime, after: Cursor | None, *, ahead: bool = False
    ) -> _OpenBatch | None:
        """Fetch (and claim) the next batch after ``after``; its transaction stays open for
        the rest of the batch. None when no eligible row is left. ``ahead`` (a thread, while
        the previous batch is packed): the batch is also validated, in the verify worker
        process when there is one (never here: this thread would compete with the packer)."""
        db = self.db
        try:
            conn = db.engine.connect()
        except Exception as exc:
            raise StepFailed("fetch", f"cannot connect to {db.redacted_url}: {brief(exc)}") from exc
        try:
            fetch_started = time.perf_counter()
            trans = conn.begin()
            try:
                self._step("fetch")
                rows, last = self._fetch(conn, cutoff, after)
            except StepFailed:
                raise
            except Exception as exc:
                raise StepFailed("fetch", brief(exc)) from exc
            if not rows or last is None:
                trans.rollback()
                conn.close()
                return None
            if self.metrics is not None:
                self.metrics.batch_size.set(len(rows))
            batch = _Batch(rows)
            batch.seconds["fetch"] += time.perf_counter() - fetch_started
            opened = _OpenBatch(conn, trans, batch, last)
            if ahead:
                try:
                    opened.validated = self._validate_in_worker(batch)
                except StepFailed as exc:
                    opened.failed = exc  # reported and rolled back when the batch's turn comes
            return opened
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _fetch(
        self, conn: Connection, cutoff: datetime, after: Cursor | None
    ) -> tuple[list[FileRow], Cursor | None]:
        """The rows of the next batch and the keyset position of its last row.

        A full batch is cut at a UTC day boundary (``align_batches_to_days``). With claims
        the cut is found first, from the created_at of the middle and the last of the next
        ``batch_size`` rows (one scan, no locks), and only the rows before it are selected and
        claimed: rows beyond the cut are never locked, so the next batch (fetched while this
        one is packed) and other migrators can take them.
        """
        cfg = self.config.migration
        db = self.db
        claim = self._use_claims()

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

    def _finish_batch(self, opened: _OpenBatch) -> tuple[_Batch, int]:
        """Validate (unless done ahead), lock, pack, verify and mark a fetched batch, commit,
        then clean up its sources. Returns the batch and the number of sources deleted."""
        cfg = self.config.migration
        db = self.db
        conn, trans, batch = opened.conn, opened.trans, opened.batch
        journal: Journal | None = None
        try:
            try:
                if opened.failed is not None:
                    raise opened.failed
                if not opened.validated:
                    with batch.timed("validate"):
                        self._validate(batch)
                ok = self._ok_rows(batch)
                with batch.timed("pack"), _step_errors("pack"):
                    db.lock_shards(conn, {batch.keys[r.uid] for r in ok})
                with batch.timed("pack"):
                    present, to_pack = self._split_already_packed(batch, ok)
                self._pack_and_verify(batch, to_pack, present, conn)
                self._step("mark")
                with batch.timed("mark"), _step_errors("mark"):
                    if cfg.delete_source_files and batch.verified:
                        self._journal_seq += 1
                        journal = write_journal(
                            self.state_dir(),
                            [(r.uid, r.location) for r in batch.verified],
                            self._journal_seq,
                        )
                    # the verified rows are already marked (_pack_and_verify): commit them
                    db.record_errors(
                        conn, [(f.uid, f"{f.step}: {f.reason}") for f in batch.failures]
                    )
                    trans.commit()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    trans.rollback()
                if journal is not None:  # nothing committed: nothing to delete later
                    journal.close(remove=True)
                if isinstance(exc, StepFailed):
                    self._write_report(
                        [FileFailure(r.uid, exc.step, exc.reason) for r in batch.rows]
                    )
                    raise
                if isinstance(exc, Exception):
                    raise StepFailed("batch", brief(exc)) from exc
                raise
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        self._write_report(batch.failures)
        if self.metrics is not None:
            self.metrics.files.inc(len(batch.verified))
            self.metrics.bytes.inc(sum(r.size_bytes for r in batch.verified))
            for f in batch.failures:
                self.metrics.failed_files.labels(step=f.step).inc()
        deleted = 0
        if cfg.delete_source_files:
            with batch.timed("cleanup"):
                deleted, complete = self._cleanup(batch.verified)
            if journal is not None:
                # an incomplete cleanup keeps its journal: a later cycle finishes it
                journal.close(remove=complete)
        return batch, deleted

    # ------------------------------------------------------------------ steps

    def _ok_rows(self, batch: _Batch) -> list[FileRow]:
        bad = {f.uid for f in batch.failures}
        return [r for r in batch.rows if r.uid not in bad]

    def _validate(self, batch: _Batch) -> None:
        """Each source exists and has the size the table says; the uid routes to a shard."""
        from des_routing import RoutingError, locate_shard

        self._step("validate")
        n_bits = self._n_bits()
        keys = batch.keys
        with _step_errors("validate"):
            for row in batch.rows:
                if row.uid in keys:
                    batch.fail(row, "validate", duplicate_uid(row.uid))
                    continue
                try:
                    keys[row.uid] = locate_shard(row.uid, row.created_at, n_bits).object_key
                except RoutingError as exc:
                    batch.fail(row, "validate", f"cannot route uid: {exc}")
                    continue
                if row.location.startswith("s3://") and row.size_bytes >= 0:
                    problem = self._check_s3_source(row)
                else:
                    problem = source_problem(row.location, row.size_bytes)
                if problem is not None:
                    batch.fail(row, "validate", problem)

    def _validate_in_worker(self, batch: _Batch) -> bool:
        """:meth:`_validate` in the verify worker process (local sources only); False when it
        cannot be done there (no worker, or sources on S3)."""
        verifier = self._verifier
        if verifier is None or verifier.pid is None:
            return False
        if any(r.location.startswith("s3://") for r in batch.rows):
            return False
        rows: list[Row] = [
            (r.uid, r.created_at.isoformat(), r.location, r.size_bytes) for r in batch.rows
        ]
        with batch.timed("validate"):
            self._step("validate")
            job = verifier.validate(rows, self._n_bits())
            if job is None:
                return False
            with _step_errors("validate"):
                keys, refused = job.result()
            for row, key in zip(batch.rows, keys, strict=True):
                if key is not None:
                    batch.keys[row.uid] = key
            for i, reason in refused:
                batch.fail(batch.rows[i], "validate", reason)
        return True

    def _check_s3_source(self, row: FileRow) -> str | None:
        loc = row.location
        if not self.config.packer.s3_source.enabled:
            return f"source {loc} is on S3 but packer.s3_source.enabled is false"
        try:
            size = self._s3_size(loc)
        except FileNotFoundError:
            return f"source {loc} does not exist"
        except Exception as exc:  # noqa: BLE001  (a per-file failure, reported with its reason)
            return f"cannot read source {loc}: {brief(exc)}"
        if size != row.size_bytes:
            return f"source {loc} has {size} bytes, the table says {row.size_bytes}"
        return None

    def _s3_client_for_sources(self) -> Any:
        if self._s3_client is None:
            from des_storage_s3 import ClientSettings, make_client

            s3 = self.config.packer.s3_source
            self._s3_client = make_client(
                ClientSettings(region_name=s3.region_name, endpoint_url=s3.endpoint_url)
            )
        return self._s3_client

    def _s3_size(self, uri: str) -> int:
        bucket, _, key = uri[len("s3://") :].partition("/")
        client = self._s3_client_for_sources()
        s3 = self.config.packer.s3_source
        attempt = 0
        while True:
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return int(head["ContentLength"])
            except Exception as exc:
                code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(uri) from None
                attempt += 1
                if attempt > s3.max_retries:
                    raise
                time.sleep(s3.retry_delay_seconds * attempt)

    def _split_already_packed(
        self, batch: _Batch, rows: list[FileRow]
    ) -> tuple[list[FileRow], list[FileRow]]:
        """Rows whose uid is already in its shard (an earlier run packed it) vs. rows to pack."""
        from des_format import DesFormatError, EntryDeleted, EntryNotFound, ObjectNotFound

        present: list[FileRow] = []
        to_pack: list[FileRow] = []
        retriever = self.retriever()
        with _step_errors("pack"):
            absent: set[str] = set()  # shard keys with no object yet: nothing to look up
            for row in rows:
                key = batch.keys[row.uid]
                if key in absent:
                    to_pack.append(row)
                    continue
                try:
                    retriever.stat(key, row.uid)
                except ObjectNotFound:
                    absent.add(key)
                    to_pack.append(row)
                except EntryNotFound:
                    to_pack.append(row)
                except EntryDeleted:
                    batch.fail(
                        row,
                        "pack",
                        f"shard {key} holds a deletion marker for this uid; not packing it again",
                    )
                except DesFormatError as exc:
                    if _is_store_outage(exc):
                        raise
                    batch.fail(row, "pack", f"shard {key} cannot be read: {brief(exc)}")
                else:
                    present.append(row)
        return present, to_pack

    def _pack_and_verify(
        self, batch: _Batch, to_pack: list[FileRow], present: list[FileRow], conn: Connection
    ) -> None:
        """Pack ``to_pack`` and read every file of the batch back; mark the verified rows
        archived in the batch's transaction (``conn``; committed by the caller).

        Verification is pipelined with packing: as soon as the packer reports a shard
        published (written, appended, or already complete), the verifier (a worker process,
        see ``_verifier``) reads that shard's files back while the packer goes on with the next
        shard, and a marker thread compares what came back with the rows and marks the rows
        that check out, a few thousand at a time, so the database's work overlaps the packing
        too. Shards the pack did not touch (only files an earlier run packed) are verified
        after it. Length and CRC-32 are checked by des-format's ``verify_files``; size and the
        table's checksum here, and a file an earlier run packed is also compared with its
        source. Nothing is committed here: a failure rolls every mark back.
        """
        if self._verifier is None:  # the first batch of the cycle: kept for the others
            self._verifier = self._new_verifier(len(batch.rows))
        verifier = self._verifier
        earlier = {r.uid for r in present}
        by_key: dict[str, list[FileRow]] = defaultdict(list)
        for row in [*to_pack, *present]:
            by_key[batch.keys[row.uid]].append(row)
        algorithm = self.config.database.checksum_algorithm
        futures: dict[str, Future[ShardAnswer]] = {}
        marker = _Marker(self, conn, by_key, earlier)

        def submit(key: str) -> None:
            rows = by_key.get(key)
            if rows is not None and key not in futures:
                digest = algorithm if any(r.checksum is not None for r in rows) else None
                items: list[Item] = [
                    (r.uid, r.size_bytes, r.checksum, r.uid in earlier) for r in rows
                ]
                futures[key] = verifier.submit(key, items, digest)
                marker.add(key, futures[key])

        def on_progress(event: ProgressEvent) -> None:
            if event.shard_key is not None and event.shard_status in _PUBLISHED:
                submit(event.shard_key)

        done = False
        try:
            self._step("pack")
            failed: dict[str, str] = {}
            if to_pack:
                from des_packer import ManifestEntry

                entries = [
                    ManifestEntry(r.uid, r.created_at, r.size_bytes, r.location, r.content_type)
                    for r in to_pack
                ]
                with batch.timed("pack"), _step_errors("pack"):
                    report = self._pack(entries, batch.keys, on_progress)
                failed = dict(report.failures)
            self._step("verify")
            with batch.timed("verify"), _step_errors("verify"):
                for key in sorted(by_key):
                    submit(key)
                outcomes = marker.finish()
            done = True
        finally:
            if not done:  # the batch failed: its reads still queued are not needed
                for job in futures.values():
                    job.cancel()
                marker.abort()
        if failed:
            verified = {
                row.uid
                for key, problems in outcomes.items()
                for row in by_key[key]
                if row.uid not in problems
            }
            for row in to_pack:
                if row.uid in failed and row.uid not in verified:
                    batch.fail(row, "pack", failed[row.uid])
        for key in sorted(outcomes):
            problems = outcomes[key]
            for row in by_key[key]:
                problem = problems.get(row.uid) if problems else None
                if problem is None:
                    batch.verified.append(row)
                    if row.uid in earlier:
                        batch.already_packed += 1
                elif row.uid not in failed:  # else recorded above as the packer's failure
                    batch.fail(row, "verify", problem)

    def _new_verifier(self, rows: int) -> Verifier:
        """A worker process reading from the configured output when the first batch has at
        least ``PROCESS_VERIFY_MIN_ROWS`` rows; else threads (a store given to the
        constructor is always read in threads)."""
        threads = self.config.packer.workers or os.cpu_count() or 1
        if self._store_given or rows < PROCESS_VERIFY_MIN_ROWS or not WORKER_FILE.is_file():
            return Verifier(self._object_store(), threads)
        out = self._output()
        if out.startswith("s3://"):
            bucket, _, prefix = out[len("s3://") :].partition("/")
            pk = self.config.packer
            region = pk.s3_region_name or pk.s3_source.region_name or ""
            endpoint = pk.s3_endpoint_url or pk.s3_source.endpoint_url or ""
            return Verifier(("s3", bucket, prefix, region, endpoint), threads)
        return Verifier(("local", out), threads)

    def _compare_shard(
        self, key: str, rows: list[FileRow], got: ShardAnswer, earlier: set[str]
    ) -> dict[str, str]:
        """What is wrong with each row that does not check out, by uid (the rows left out
        check out), from the verifier's answer for its shard; a file an earlier run packed is
        compared with its source here."""
        shard_error, answers = got
        if shard_error is not None:
            raise StepFailed("verify", shard_error)
        problems: dict[str, str] = {}
        if not answers:  # every file checked out, nothing more asked
            return problems
        by_uid = {a[0]: a for a in answers}
        for row in rows:
            answer = by_uid.get(row.uid)
            if answer is None:  # checked out, nothing more asked
                continue
            _uid, problem, crc = answer
            if problem is None and row.uid in earlier:
                problem = (
                    self._compare_with_source(row, crc)
                    if crc is not None
                    else "no CRC-32 read back to compare with the source"
                )
            if problem is not None:
                problems[row.uid] = problem
        return problems

    def _compare_with_source(self, row: FileRow, packed_crc: int) -> str | None:
        """A file an earlier run packed must still equal its source before it is marked."""
        if row.location.startswith("s3://"):
            data_iter: Iterable[bytes] = [self._read_s3_source(row.location)]
        else:
            data_iter = _iter_file(row.location)
        from des_format import crc32

        try:
            crc = 0
            for chunk in data_iter:
                crc = crc32(chunk, crc)
        except OSError as exc:
            return f"cannot re-read source {row.location}: {exc.strerror}"
        if crc != packed_crc:
            return (
                f"shard already holds uid with CRC-32 {packed_crc:08x} but the source has "
                f"{crc:08x}; resolve by hand"
            )
        return None

    def _read_s3_source(self, uri: str) -> bytes:
        bucket, _, key = uri[len("s3://") :].partition("/")
        body = self._s3_client_for_sources().get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())

    def _cleanup(self, rows: Sequence[FileRow]) -> tuple[int, bool]:
        """Delete the sources of rows whose archived mark has committed (logged, one by one).

        Returns (deleted, complete); incomplete when the step failed or a deletion failed.
        """
        try:
            self._step("cleanup")
        except Exception as exc:  # noqa: BLE001  (cleanup is optional; sources are kept)
            log.error("cleanup skipped, sources kept for a later cycle: %s", brief(exc))
            return 0, False
        return self._delete_sources([(r.uid, r.location) for r in rows])

    def _delete_sources(self, items: Sequence[tuple[str, str]]) -> tuple[int, bool]:
        deleted = 0
        complete = True
        for uid, location in items:
            try:
                if location.startswith("s3://"):
                    bucket, _, key = location[len("s3://") :].partition("/")
                    self._s3_client_for_sources().delete_object(Bucket=bucket, Key=key)
                else:
                    os.unlink(location)
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001  (a source left behind is only a warning)
                log.warning("could not delete source %s of %s: %s", location, uid, exc)
                complete = False
                continue
            deleted += 1
            log.info("deleted source %s (uid %s, archived and verified)", location, uid)
        return deleted, complete

    def _recover_cleanups(self) -> int:
        """Finish the deletions of migrators that died after committing their marks."""
        deleted = 0
        try:
            journals = list(iter_orphan_journals(self.state_dir()))
        except OSError as exc:
            log.error("cannot read the cleanup journals: %s", exc)
            return 0
        for journal in journals:
            try:
                archived = self.db.archived_among(u for u, _ in journal.entries)
            except Exception as exc:  # noqa: BLE001  (retried next cycle)
                log.error("cannot check journal %s: %s", journal.path, brief(exc))
                journal.close(remove=False)
                continue
            todo = [(u, s) for u, s in journal.entries if u in archived]
            log.info(
                "finishing cleanup journal %s: %d of %d rows archived",
                journal.path.name,
                len(todo),
                len(journal.entries),
            )
            n, complete = self._delete_sources(todo)
            deleted += n
            journal.close(remove=complete)
        return deleted

    def _write_report(self, failures: Sequence[FileFailure]) -> None:
        path = self.config.migration.report_file
        if not path or not failures:
            return
        stamp = self._now().isoformat()
        try:
            with Path(path).open("a", encoding="utf-8") as fh:
                for f in failures:
                    rec = {"time": stamp, "uid": f.uid, "step": f.step, "reason": f.reason}
                    fh.write(json.dumps(rec) + "\n")
        except OSError as exc:
            log.error("cannot write report file %s: %s", path, exc.strerror)

    # ------------------------------------------------------------------ dry run

    def _dry_run(self) -> CycleReport:
        """Validate every eligible row and list the shards it would write; change nothing."""
        cfg = self.config.migration
        cutoff = self.cutoff()
        fetched = 0
        failures: list[FileFailure] = []
        shards: set[str] = set()
        after: Cursor | None = None
        nbytes = 0
        try:
            while True:
                with self.db.engine.connect() as conn:
                    rows, last = self.db.select_page(
                        conn,
                        cutoff,
                        after=after,
                        limit=cfg.batch_size,
                        include_failed=cfg.retry_failed,
                    )
                if not rows or last is None:
                    break
                batch = _Batch(rows)
                self._validate(batch)
                ok = self._ok_rows(batch)
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

    # ------------------------------------------------------------------ continuous

    def run_continuous(
        self, interval: float, *, on_cycle: Callable[[CycleReport], None] | None = None
    ) -> CycleReport:
        """Run cycles every ``interval`` seconds until :meth:`request_stop`; the last report."""
        last = CycleReport(status="empty")
        while not self._stop.is_set():
            last = self.run_migration_cycle()
            if on_cycle is not None:
                on_cycle(last)
            if self._stop.wait(interval):
                break
        return last


def plan_day_aligned_cut(rows: Sequence[FileRow]) -> int:
    """How many rows of a full batch to keep so the batch ends at a UTC day boundary.

    Shards are per day: a batch that stops in the middle of a day leaves the rest of that day
    to the next batch, which then appends to the same shards again (a local append rewrites
    the shard). Keeping only whole days avoids that. The rows of the last day are left for the
    next batch, unless that would drop half the batch or more (a day larger than the batch
    cannot be helped).
    """
    if not rows:
        return 0
    last_day = rows[-1].created_at.date()
    cut = len(rows)
    while cut > 0 and rows[cut - 1].created_at.date() == last_day:
        cut -= 1
    return cut if cut * 2 >= len(rows) and cut > 0 else len(rows)


def plan_from_keys(entries: Sequence[ManifestEntry], keys: dict[str, str], n_bits: int) -> PackPlan:
    """The plan ``des_packer.plan_shards(entries, n_bits=n_bits, on_duplicate="skip")`` gives,
    built from shard keys already computed (``keys``: uid -> ``des_routing`` object key).

    Entries are grouped by key, shards sorted by key, entries sorted by uid (stably); a uid
    seen twice in one shard keeps its first entry and rejects the others, as the planner does.
    """
    from des_packer import PackPlan, PlannedShard

    groups: dict[str, list[ManifestEntry]] = defaultdict(list)
    for entry in entries:
        groups[keys[entry.uid]].append(entry)
    shards: list[PlannedShard] = []
    rejected: list[tuple[str, str]] = []
    for key in sorted(groups):
        items = groups[key]
        items.sort(key=lambda e: e.uid)
        date_dir, _, name = key.partition("/")
        hexa = name.partition(".")[0]
        kept: list[ManifestEntry] = []
        for entry in items:
            if kept and kept[-1].uid == entry.uid:
                rejected.append(
                    (
                        entry.uid,
                        f"duplicate uid {entry.uid!r} on {date_dir}: another row of the batch "
                        "has the same uid and day; a uid may appear only once per day",
                    )
                )
                continue
            kept.append(entry)
        shards.append(PlannedShard(key, date_dir, int(hexa, 16), hexa, tuple(kept)))
    return PackPlan(tuple(shards), n_bits, 0, tuple(rejected))


@contextlib.contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """The objects that exist before a cycle are left out of the garbage collector's
    passes during it (``gc.freeze``), and given back afterwards (``gc.unfreeze``).

    A batch keeps tens of thousands of row objects alive, so the collector runs full passes
    during a cycle; each walked the whole heap (SQLAlchemy, the packer and everything else
    loaded) while holding the GIL the packer's threads need. Nothing is collected less: what
    was frozen is collected by the next pass after the cycle. Left alone when the process
    already froze objects of its own (or has the collector off).
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _step_errors(step: str) -> Any:
    """Turn any unexpected error inside a step into StepFailed(step, ...)."""
    try:
        yield
    except StepFailed:
        raise
    except Exception as exc:
        raise StepFailed(step, brief(exc)) from exc


def _iter_file(path: str) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            yield chunk


def _is_store_outage(exc: BaseException) -> bool:
    from des_format import StorageUnavailable

    return isinstance(exc, StorageUnavailable)


def _replace(report: CycleReport, **changes: Any) -> CycleReport:
    return dataclasses.replace(report, **changes)
