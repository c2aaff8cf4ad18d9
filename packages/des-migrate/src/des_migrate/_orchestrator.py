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
import hashlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ._batch import Batch, OpenBatch, ok_rows
from ._cleanup import recover_cleanups
from ._config import MigrationConfig
from ._cycle_report import STEPS, CycleReport, FileFailure, replace_report, write_failures
from ._errors import ConfigError, StepFailed
from ._fetch import open_batch
from ._journal import Journal, write_journal
from ._marks import Marker
from ._metrics import MigrationMetrics
from ._readback import compare_shard, new_verifier, split_already_packed
from ._shard_plan import plan_from_keys
from ._source_access import SourceAccess
from ._source_db import Cursor, FileRow, SourceDatabase
from ._steps import step_errors
from ._tuning import MigrationTuning
from ._validate import validate_batch, validate_in_worker
from ._verifier import Item, ShardAnswer, Verifier, brief

if TYPE_CHECKING:
    from des_format import ObjectStore
    from des_packer import ManifestEntry, PackOptions, PackReport, ProgressEvent
    from sqlalchemy.engine import Connection

log = logging.getLogger("des_migrate")

PackFn = Callable[[list["ManifestEntry"], str, "PackOptions"], "PackReport"]
#: Called with the step name at the start of each step; raising fails that step (tests).
FaultHook = Callable[[str], None]

_PUBLISHED = ("written", "appended", "skipped")


class MigrationOrchestrator:
    """Runs migration cycles for one configuration.

    ``pack_fn`` defaults to ``des_packer.pack``; ``store`` (where shards are read back from)
    defaults to the output directory or the ``s3://`` output. ``fault`` is called with each
    step's name before the step runs (failure injection in tests). ``tuning``: batch-pipeline
    knobs (:class:`MigrationTuning`), speed only.
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
        tuning: MigrationTuning | None = None,
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
        self.tuning = tuning or MigrationTuning()
        self.sources = SourceAccess(config.packer.s3_source, read_chunk=self.tuning.read_chunk)
        self._journal_seq = 0
        self.store_given = store is not None
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

    def use_claims(self) -> bool:
        mode = self.config.migration.claim_mode
        if mode == "none":
            return False
        return self.db.supports_skip_locked

    @property
    def verifier(self) -> Verifier | None:
        """The cycle's verifier (worker process or threads), once its first batch is fetched."""
        return self._verifier

    def step(self, name: str) -> None:
        """Run the fault hook for step ``name`` (tests inject failures there)."""
        if self._fault is not None:
            with step_errors(name):
                self._fault(name)

    # ------------------------------------------------------------------ wiring

    def output(self) -> str:
        return self.config.packer.output_dir

    def _n_bits(self) -> int:
        return self.config.packer.n_bits

    def object_store(self) -> ObjectStore:
        if self._store is not None:
            return self._store
        out = self.output()
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
            processes=pk.processes,
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
            return self._pack_fn(entries, self.output(), options)
        from des_packer import pack_plan

        # the shard keys validate computed: the packer's planner would compute them again
        return pack_plan(plan_from_keys(entries, keys, self._n_bits()), self.output(), options)

    # ------------------------------------------------------------------ the cycle

    def run_migration_cycle(self, *, dry_run: bool = False) -> CycleReport:
        """Migrate every eligible row, batch by batch, and return what happened."""
        started = time.monotonic()
        if dry_run:
            from ._dry_run import dry_run as run_dry

            report = run_dry(self)
        else:
            report = self._cycle()
        elapsed = time.monotonic() - started
        report = replace_report(report, elapsed_seconds=elapsed)
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
        deleted = (
            recover_cleanups(self.db, self.state_dir(), self.sources)
            if cfg.delete_source_files
            else 0
        )
        limit = cfg.max_batches_per_cycle
        # On PostgreSQL the next batch is fetched (and, with a verify worker, validated there)
        # while this one is packed: its own connection and transaction, rows after this
        # batch's last row, so the two never share a row. SQLite: one transaction at a time
        # (an open reader there would hold up this batch's commit).
        ahead_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="des-migrate-fetch")
            if self.db.dialect == "postgresql" and self.tuning.fetch_ahead
            else None
        )
        ahead: Future[OpenBatch | None] | None = None
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
                        self._verifier = new_verifier(self, len(opened.batch.rows))
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
    ) -> OpenBatch | None:
        return open_batch(self, cutoff, after, ahead=ahead)

    def _finish_batch(self, opened: OpenBatch) -> tuple[Batch, int]:
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
                        self.validate(batch)
                ok = ok_rows(batch)
                with batch.timed("pack"), step_errors("pack"):
                    db.lock_shards(conn, {batch.keys[r.uid] for r in ok})
                with batch.timed("pack"):
                    present, to_pack = split_already_packed(self, batch, ok)
                self._pack_and_verify(batch, to_pack, present, conn)
                self.step("mark")
                with batch.timed("mark"), step_errors("mark"):
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

    def validate(self, batch: Batch) -> None:
        """Each source exists and has the size the table says; the uid routes to a shard
        (see ``_validate``)."""
        validate_batch(self, batch)

    def validate_in_worker(self, batch: Batch) -> bool:
        """:meth:`validate` in the verify worker process (local sources only); False when it
        cannot be done there (no worker, or sources on S3)."""
        return validate_in_worker(self, batch)

    def _pack_and_verify(
        self, batch: Batch, to_pack: list[FileRow], present: list[FileRow], conn: Connection
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
            self._verifier = new_verifier(self, len(batch.rows))
        verifier = self._verifier
        earlier = {r.uid for r in present}
        by_key: dict[str, list[FileRow]] = defaultdict(list)
        for row in [*to_pack, *present]:
            by_key[batch.keys[row.uid]].append(row)
        algorithm = self.config.database.checksum_algorithm
        futures: dict[str, Future[ShardAnswer]] = {}
        marker = Marker(
            partial(compare_shard, self),
            self.db,
            conn,
            by_key,
            earlier=earlier,
            chunk=self.tuning.mark_chunk,
        )

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
            self.step("pack")
            failed: dict[str, str] = {}
            if to_pack:
                from des_packer import ManifestEntry

                entries = [
                    ManifestEntry(r.uid, r.created_at, r.size_bytes, r.location, r.content_type)
                    for r in to_pack
                ]
                with batch.timed("pack"), step_errors("pack"):
                    report = self._pack(entries, batch.keys, on_progress)
                failed = dict(report.failures)
            self.step("verify")
            with batch.timed("verify"), step_errors("verify"):
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

    def _cleanup(self, rows: Sequence[FileRow]) -> tuple[int, bool]:
        """Delete the sources of rows whose archived mark has committed (logged, one by one).

        Returns (deleted, complete); incomplete when the step failed or a deletion failed.
        """
        try:
            self.step("cleanup")
        except Exception as exc:  # noqa: BLE001  (cleanup is optional; sources are kept)
            log.error("cleanup skipped, sources kept for a later cycle: %s", brief(exc))
            return 0, False
        return self.sources.delete([(r.uid, r.location) for r in rows])

    def _write_report(self, failures: Sequence[FileFailure]) -> None:
        write_failures(self.config.migration.report_file, failures, self._now().isoformat())

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
