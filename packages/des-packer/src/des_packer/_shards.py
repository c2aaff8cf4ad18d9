"""The writer side of packing: one shard at a time, opened, filled, closed and published.

:class:`ShardSink` holds the state machine of the shards of one packing process: for each
planned shard, the existing shard is looked up (an append, or a skip when every file is
already there), a dictionary trained if asked, a transaction and a ``ShardWriter`` opened,
prepared items added in uid order, the index written, and the transaction handed to a
committer thread (fsync or upload overlap the next shard's work; at most one shard waits to
be published). Failed entries stop the run (``on_error="fail"``, after publishing the shards
finished before) or are listed (``"skip"``). Running totals make the :class:`PackReport`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from des_format import (
    DEFAULT_TAIL_SIZE,
    MAX_DICTIONARY_SIZE,
    MIN_DICT_SAMPLES,
    DesFormatError,
    PreparedBlock,
    PreparedPayload,
    ShardWriter,
    bigfile_key,
    train_dictionary,
)

from ._blocks import Block, WorkItem, plan_work, source_name
from ._dest import Destination, ExistingShard, Transaction
from ._errors import EntryFailed, PackAborted, PackerError
from ._manifest import ManifestEntry
from ._options import DICT_SAMPLE_BYTES, PackOptions, ProgressEvent
from ._plan import PlannedShard
from ._prepare import BlockResult, StagedBigFile
from ._report import PackReport, ShardResult
from ._sources import SourceReader

__all__ = ["ShardSink", "ShardState", "Totals", "default_workers"]

# Prepared small files wait in their shard's state until this many (or this many stored
# bytes) are there, then go to the writer in one call (ShardWriter.add_prepared_many).
_READY_FILES = 64
_READY_BYTES = 1 << 20


def default_workers() -> int:
    """One thread per CPU (pass more for s3:// sources, whose reads wait on the network)."""
    import os

    return os.cpu_count() or 1


@dataclass(slots=True)
class ShardState:
    shard: PlannedShard
    existing: ExistingShard | None
    todo: list[ManifestEntry]
    duplicates: list[str]
    remaining: int = 0
    txn: Transaction | None = None
    writer: Any = None
    files: int = 0
    bytes_in: int = 0
    dictionary: bytes | None = None
    blocks: int = 0
    block_files: int = 0
    ready: list[PreparedPayload] = field(default_factory=list)  # not yet given to the writer
    ready_bytes: int = 0


@dataclass(slots=True)
class Totals:
    files: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    written: int = 0
    appended: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    shards: list[ShardResult] = field(default_factory=list)
    blocks: int = 0
    block_files: int = 0
    files_seen: int = 0
    bytes_seen: int = 0

    def report(self, started: float) -> PackReport:
        return PackReport(
            files=self.files,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            shards_written=self.written,
            shards_appended=self.appended,
            shards_skipped=self.skipped,
            failures=tuple(self.failures),
            duplicates=tuple(self.duplicates),
            elapsed_seconds=time.monotonic() - started,
            shards=tuple(self.shards),
            blocks=self.blocks,
            block_files=self.block_files,
        )


def _estimate_index(state: ShardState) -> int:
    """Bytes the shard's index, directory and footer will take (an over-estimate, with the
    writer's own bucket-size rule), for the entries already there and those to pack."""
    est = 0
    for e in state.todo:
        meta = dict(e.meta) if e.meta else {}
        name = source_name(e.source)
        if name:
            meta["name"] = name
        if e.content_type is not None:
            meta["content_type"] = e.content_type
        est += len(e.uid.encode("utf-8")) + 20
        if meta:
            blob = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            est += 4 + len(blob.encode("utf-8"))
    if state.existing is not None:
        est += state.existing.index.index_length
    buckets = 1
    while buckets * 4096 < est and buckets < 4096:
        buckets <<= 1
    return est + 8 * buckets + 48


def _dict_size(state: ShardState, sample_bytes: int) -> int:
    """The dictionary size to train: 1/32 of the samples within 1..16 KiB, and, when the
    shard's index fits in the default 64 KiB tail read, no more than the room left there (so
    a cold read of the shard stays at 2 requests), unless that leaves under 1 KiB."""
    size = max(1024, min(MAX_DICTIONARY_SIZE, sample_bytes // 32))
    index = _estimate_index(state)
    room = DEFAULT_TAIL_SIZE - index - 4
    if index <= DEFAULT_TAIL_SIZE and room >= 1024:
        size = min(size, room)
    return size


def _commit(txn: Transaction) -> int:
    try:
        return txn.commit()
    except BaseException:
        txn.abort()
        raise


class ShardSink:
    """The shards of one packing process, in the order they are given (see the module)."""

    def __init__(
        self,
        dest: Destination,
        options: PackOptions,
        sources: SourceReader,
        *,
        files_total: int,
        bytes_total: int,
        progress: Callable[[ProgressEvent], None] | None,
        started: float,
    ) -> None:
        self.dest = dest
        self.opts = options
        self.sources = sources
        self.totals = Totals()
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.progress = progress
        self.started = started
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="des-commit")
        self._commits: deque[tuple[Future[int], ShardState, int]] = deque()

    # ---- work items, lazily: a shard's existing index is read when the pipeline reaches it

    def items(self, shards: Iterable[PlannedShard]) -> Iterator[tuple[ShardState, WorkItem | None]]:
        """Each shard's work items in order (``None``: a shard with nothing to pack)."""
        for shard in shards:
            self.dest.cleanup(shard.key)
            existing = self._existing(shard)
            todo = list(shard.entries)
            duplicates: list[str] = []
            if existing is not None:
                todo = []
                for e in shard.entries:
                    if existing.index.lookup(e.uid) is None:
                        todo.append(e)
                    else:
                        duplicates.append(e.uid)
            state = ShardState(shard, existing, todo, duplicates, remaining=len(todo))
            if todo and self.opts.dictionary:
                state.dictionary = self._dictionary_for(state)
            if not todo:
                yield state, None
                continue
            for item in plan_work(
                todo,
                block_size=self.opts.block_size,
                member_max=self.opts.block_member_max,
                big_file_threshold=self.opts.big_file_threshold,
            ):
                yield state, item

    def _existing(self, shard: PlannedShard) -> ExistingShard | None:
        try:
            return self.dest.existing(shard.key)
        except DesFormatError as exc:
            raise PackerError(
                f"existing shard {self.dest.describe(shard.key)} cannot be read ({exc}); "
                "check it with `des verify` and move it away before packing into it again"
            ) from None

    def _dictionary_for(self, state: ShardState) -> bytes | None:
        """The shard's dictionary: the existing shard's, or one trained on the small files to
        pack (in uid order, the first ``DICT_SAMPLE_BYTES``), or None (too few samples)."""
        if state.existing is not None:
            kept: bytes | None = state.existing.index.dictionary
            if kept is not None:
                return kept
        limit = self.opts.dict_max_file_size
        small = [e for e in state.todo if 0 < e.size_bytes <= limit]
        if len(small) < MIN_DICT_SAMPLES:
            return None
        chosen: list[ManifestEntry] = []
        planned = 0
        for e in small:  # the sample set is fixed by the manifest's sizes (deterministic)
            chosen.append(e)
            planned += e.size_bytes
            if planned >= DICT_SAMPLE_BYTES:
                break

        def read(e: ManifestEntry) -> bytes:
            try:
                return self.sources.read(e)
            except EntryFailed:  # reported when the entry itself is packed
                return b""

        workers = self.opts.workers or default_workers()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="des-dict") as pool:
            samples = [d for d in pool.map(read, chosen) if 0 < len(d) <= limit]
        total = sum(len(d) for d in samples)
        return train_dictionary(samples, _dict_size(state, total))

    # ---- adding what the workers prepared

    def open_shard(self, state: ShardState) -> None:
        txn = self.dest.begin(state.shard.key, state.existing)
        state.txn = txn
        kwargs: dict[str, Any] = {
            "codec": self.opts.codec,
            "level": self.opts.level,
            "big_file_threshold": self.opts.big_file_threshold,
            "max_size": self.opts.max_shard_size,
            "open_part": txn.open_part,
            "dict_max_file_size": self.opts.dict_max_file_size,
        }
        if state.dictionary is not None:
            kwargs["dictionary"] = state.dictionary
        if state.existing is not None:
            kwargs["base_offset"] = state.existing.size
            kwargs["existing"] = state.existing.index
        try:
            state.writer = ShardWriter(txn.out, **kwargs)
        except ValueError as exc:  # e.g. a legacy DES2 shard cannot be appended to
            txn.abort()
            state.txn = None
            raise PackerError(
                f"cannot add files to {self.dest.describe(state.shard.key)}: {exc}"
            ) from None

    def add(self, state: ShardState, item: WorkItem, result: Any) -> None:
        """Add one prepared item (a file, a block, or a failure) and close the shard after
        its last one. Small files are handed to the writer a few at a time, in order."""
        if type(result) is PreparedPayload:  # the common case: one small file
            ready = state.ready
            ready.append(result)
            state.ready_bytes += len(result.stored)
            if len(ready) >= _READY_FILES or state.ready_bytes >= _READY_BYTES:
                self._flush_ready(state)
            size = result.size
            state.files += 1
            state.bytes_in += size
            if self.progress is not None:
                self._progress(1, size)
            else:
                t = self.totals
                t.files_seen += 1
                t.bytes_seen += size
            state.remaining -= 1
            if state.remaining == 0:
                self._close_shard(state)
            return
        self._flush_ready(state)
        if isinstance(item, Block):
            self._add_block(state, result)
            state.remaining -= len(item.entries)
        else:
            if isinstance(result, EntryFailed):
                self.entry_failed(state, item, result)
            else:
                self._add_file(state, item, result)
            state.remaining -= 1
        if state.remaining == 0:
            self._close_shard(state)

    def _flush_ready(self, state: ShardState) -> None:
        if state.ready:
            ready = state.ready
            state.ready = []
            state.ready_bytes = 0
            state.writer.add_prepared_many(ready)

    def _add_file(self, state: ShardState, entry: ManifestEntry, result: Any) -> None:
        assert state.txn is not None
        if isinstance(result, StagedBigFile):
            key = bigfile_key(state.shard.key, result.sha256, self.opts.bigfiles_prefix)
            state.txn.add_bigfile(result.path, key)
            state.writer.add_bigfile(
                entry.uid,
                sha256=result.sha256,
                size=result.size,
                meta=dict(entry.meta) if entry.meta else None,
                checksum=result.checksum,
                name=source_name(entry.source),
                content_type=entry.content_type,
            )
        else:
            state.writer.add_prepared(result)
        state.files += 1
        state.bytes_in += entry.size_bytes
        self._progress(1, entry.size_bytes)

    def _add_block(self, state: ShardState, result: BlockResult) -> None:
        """Write what a worker made of a block: its members that failed are reported (and
        stop the run with ``on_error="fail"``), the solid block and the files left alone
        are added."""
        for entry, exc in result.failed:
            self.entry_failed(state, entry, exc)
        files = 0
        nbytes = 0
        writer = state.writer
        for prepared in result.prepared:
            if isinstance(prepared, PreparedBlock):
                writer.add_block(prepared)
                state.blocks += 1
                state.block_files += len(prepared.members)
                files += len(prepared.members)
                nbytes += prepared.size
            else:
                writer.add_prepared(prepared)
                files += 1
                nbytes += prepared.size
        state.files += files
        state.bytes_in += nbytes
        self._progress(files, nbytes)

    def _progress(
        self, files: int, nbytes: int, key: str | None = None, status: str | None = None
    ) -> None:
        t = self.totals
        t.files_seen += files
        t.bytes_seen += nbytes
        if self.progress is not None and (files or key is not None):
            self.progress(
                ProgressEvent(
                    t.files_seen, t.bytes_seen, self.files_total, self.bytes_total, key, status
                )
            )

    def entry_failed(self, state: ShardState, entry: ManifestEntry, exc: EntryFailed) -> None:
        if self.opts.on_error == "skip":
            self.totals.failures.append((entry.uid, exc.reason))
            self._progress(1, entry.size_bytes)
            return
        self.abort_shard(state)
        self.drain(0)  # shards finished before this one are published and reported
        self.totals.failures.append((entry.uid, exc.reason))
        self.totals.shards.append(
            ShardResult(state.shard.key, "failed", 0, 0, 0, duplicates=len(state.duplicates))
        )
        raise PackAborted(str(exc), self.totals.report(self.started))

    def abort_shard(self, state: ShardState) -> None:
        """Drop the shard being written (nothing of it becomes visible)."""
        state.ready = []
        state.ready_bytes = 0
        if state.txn is not None:
            state.txn.abort()
            state.txn = None

    def skip_shard(self, state: ShardState) -> None:
        if state.existing is not None:
            state.existing.release()
        t = self.totals
        t.skipped += 1
        t.duplicates.extend(state.duplicates)
        t.shards.append(
            ShardResult(state.shard.key, "skipped", 0, 0, 0, duplicates=len(state.duplicates))
        )
        self._progress(len(state.shard.entries), state.shard.bytes, state.shard.key, "skipped")

    # ---- finishing

    def _close_shard(self, state: ShardState) -> None:
        try:
            self._finish_shard(state)
        finally:
            if state.existing is not None:
                state.existing.release()

    def _finish_shard(self, state: ShardState) -> None:
        """Write the index; publish in the committer thread (fsync/upload overlap the next
        shard's compression). At most one shard waits to be published."""
        t = self.totals
        txn = state.txn
        assert txn is not None
        t.duplicates.extend(state.duplicates)
        state.txn = None
        if state.files == 0:
            txn.abort()
            t.shards.append(
                ShardResult(state.shard.key, "failed", 0, 0, 0, duplicates=len(state.duplicates))
            )
            self._progress(0, 0, state.shard.key, "failed")
            return
        try:
            self._flush_ready(state)
            summary = state.writer.close()  # the index: a full disk can fail it
        except BaseException:
            txn.abort()
            raise
        state.writer = None
        job = self._committer.submit(_commit, txn)
        self._commits.append((job, state, len(summary.parts)))
        self.drain(1)

    def drain(self, keep: int) -> None:
        """Wait for published shards until at most ``keep`` are pending; record them."""
        t = self.totals
        while len(self._commits) > keep:
            job, state, parts = self._commits.popleft()
            stored = job.result()
            status = "appended" if state.existing is not None else "written"
            if state.existing is not None:
                t.appended += 1
            else:
                t.written += 1
            t.files += state.files
            t.bytes_in += state.bytes_in
            t.blocks += state.blocks
            t.block_files += state.block_files
            t.bytes_out += stored
            t.shards.append(
                ShardResult(
                    state.shard.key,
                    status,
                    state.files,
                    state.bytes_in,
                    stored,
                    parts=parts,
                    duplicates=len(state.duplicates),
                    blocks=state.blocks,
                    block_files=state.block_files,
                )
            )
            self._progress(0, 0, state.shard.key, status)

    def cancel_commits(self) -> None:
        """After a failure while publishing: forget the shards still waiting."""
        for commit, _state, _parts in self._commits:
            commit.cancel()
        self._commits.clear()

    def shutdown(self) -> None:
        self._committer.shutdown(wait=True)
