"""The packer: runs a plan against a destination.

Reading, checksumming and compressing run in a thread pool (zstd, lz4 and the CRC-32 release the
GIL), one task per batch of consecutive files (up to 64 files or about 1 MiB), so the per-file
cost of futures and thread hand-overs is paid once per batch; the bytes read but not yet written
are bounded by ``max_inflight_bytes``. Writing stays sequential,
shard after shard, entries in uid order, so the output is byte-identical whatever the number of
workers. Memory holds the plan (the manifest's metadata), never more than the in-flight bytes of
file contents, and big files are streamed to a staging file, never held whole.

With ``block_size`` (``--block-size``), :func:`des_packer._blocks.plan_work` turns each shard's
files into work items, single files and solid blocks, from the manifest alone; a block is one
item, read and compressed (``prepare_block``) by one worker and charged to the in-flight
budget with all its members' bytes, so a block adds at most ``block_size`` to the bound.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
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
    build_meta,
    prepare_block,
    prepare_payload,
    train_dictionary,
)

from ._blocks import Block, WorkItem, plan_work, source_name
from ._dest import Destination, ExistingShard, LocalDestination, Transaction
from ._errors import (
    EntryFailed,
    OutputFailed,
    PackAborted,
    PackConfigError,
    PackerError,
    describe_os_error,
)
from ._manifest import ManifestEntry
from ._options import DICT_SAMPLE_BYTES, PackOptions, ProgressEvent
from ._plan import PackPlan, PlannedShard, plan_shards
from ._report import PackReport, ShardResult
from ._sources import SourceReader

__all__ = ["open_destination", "pack", "pack_plan"]

_BIGFILE_COST = 1 << 20  # in-flight budget charged for a big file (streamed in 1 MiB chunks)
# One worker task reads, checksums and compresses consecutive files up to these bounds (one
# future and one thread hand-over per batch, not per file).
_BATCH_FILES = 64
_BATCH_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class _StagedBigFile:
    path: Path
    sha256: str
    checksum: int
    size: int


def _discard_staged(results: Iterable[Any]) -> None:
    """Remove the staging files of big files that will not be published."""
    for res in results:
        if isinstance(res, _StagedBigFile):
            res.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _BlockResult:
    """What a worker made of a block: the results of ``prepare_block`` (the solid block
    first, if any, then the members prepared alone) and the members that failed."""

    prepared: list[PreparedPayload | PreparedBlock]
    failed: list[tuple[ManifestEntry, EntryFailed]]


@dataclass(slots=True)
class _ShardState:
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


@dataclass(frozen=True, slots=True)
class _Pending:
    """A batch of work items and the worker task preparing its files (None: nothing to
    prepare, e.g. shards to skip)."""

    batch: list[tuple[_ShardState, WorkItem | None]]
    job: Future[list[Any]] | None
    cost: int


@dataclass(slots=True)
class _Totals:
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


def _estimate_index(state: _ShardState) -> int:
    """Bytes the shard's index, directory and footer will take (an over-estimate, with the
    writer's own bucket-size rule), for the entries already there and those to pack."""
    import json

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


def _dict_size(state: _ShardState, sample_bytes: int) -> int:
    """The dictionary size to train: 1/32 of the samples within 1..16 KiB, and, when the
    shard's index fits in the default 64 KiB tail read, no more than the room left there (so
    a cold read of the shard stays at 2 requests), unless that leaves under 1 KiB."""
    size = max(1024, min(MAX_DICTIONARY_SIZE, sample_bytes // 32))
    index = _estimate_index(state)
    room = DEFAULT_TAIL_SIZE - index - 4
    if index <= DEFAULT_TAIL_SIZE and room >= 1024:
        size = min(size, room)
    return size


def default_workers() -> int:
    """One thread per CPU (pass more for s3:// sources, whose reads wait on the network)."""
    return os.cpu_count() or 1


def _commit(txn: Transaction) -> int:
    try:
        return txn.commit()
    except BaseException:
        txn.abort()
        raise


def open_destination(output: str, options: PackOptions) -> Destination:
    """A destination for ``output``: a directory, ``s3://bucket/prefix`` or zones."""
    from ._store_check import check_destination_layout

    check_destination_layout(output, options)  # the store's layout record, once per pack
    if options.zones_config or output.startswith("s3://"):
        from ._s3dest import open_s3_destination

        dest: Destination = open_s3_destination(output, options)
        return dest
    if "://" in output:
        raise PackConfigError(
            f"--output-dir {output!r}: unsupported scheme; give a directory or s3://bucket/prefix"
        )
    if not output:
        raise PackConfigError("--output-dir is empty; give a directory or s3://bucket/prefix")
    return LocalDestination(output, fsync=options.fsync)


def pack(
    entries: Iterable[ManifestEntry], output: str, options: PackOptions | None = None
) -> PackReport:
    """Plan ``entries`` and pack them into shards under ``output``.

    ``output`` is a directory or ``s3://bucket/prefix`` (or ignored for the bucket choice when
    ``options.zones_config`` names a zones file). Raises ``ManifestError`` (bad or duplicate
    entries, with ``on_error="fail"``), ``PackConfigError``, or ``PackAborted`` (a file failed
    with ``on_error="fail"``; shards finished before it stay complete and readable).
    """
    opts = options or PackOptions()
    opts.validate()
    plan = plan_shards(
        entries,
        n_bits=opts.n_bits,
        shard_range=opts.shard_range,
        on_duplicate="skip" if opts.on_error == "skip" else "fail",
    )
    return pack_plan(plan, output, opts)


def pack_plan(plan: PackPlan, output: str, options: PackOptions | None = None) -> PackReport:
    """Write the shards of ``plan`` (see :func:`pack`)."""
    opts = options or PackOptions()
    opts.validate()
    dest = open_destination(output, opts)
    packer = _Packer(plan, dest, opts)
    started = time.monotonic()
    try:
        return packer.run()
    except OSError as exc:  # writing the output failed: say where and how to fix it
        report = packer.totals.report(started)
        raise OutputFailed(describe_os_error(exc, dest.describe()), report) from exc
    finally:
        dest.close()


class _Packer:
    def __init__(self, plan: PackPlan, dest: Destination, options: PackOptions) -> None:
        self.plan = plan
        self.dest = dest
        self.opts = options
        self.sources = SourceReader(endpoint_url=options.s3_endpoint_url, region=options.s3_region)
        self.totals = _Totals()
        self.totals.failures.extend(plan.rejected)
        self.files_total = plan.files
        self.bytes_total = plan.bytes
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="des-commit")
        self._commits: deque[tuple[Future[int], _ShardState, int]] = deque()

    # ---- work items, lazily: a shard's existing index is read when the pipeline reaches it

    def _items(self) -> Iterator[tuple[_ShardState, WorkItem | None]]:
        for shard in self.plan.shards:
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
            state = _ShardState(shard, existing, todo, duplicates, remaining=len(todo))
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

    def _dictionary_for(self, state: _ShardState) -> bytes | None:
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

    # ---- the worker side (thread pool): read, checksum, compress

    def _prepare(self, state: _ShardState, entry: WorkItem) -> Any:
        if isinstance(entry, Block):
            return self._prepare_block(entry)
        if entry.size_bytes > self.opts.big_file_threshold:
            staged = self.dest.stage_path(state.shard.key)
            try:
                with staged.open("wb") as out:
                    sha, crc = self.sources.copy_to(entry, out)
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            return _StagedBigFile(staged, sha, crc, entry.size_bytes)
        data = self.sources.read(entry)
        try:
            return prepare_payload(
                entry.uid,
                data,
                name=source_name(entry.source),
                content_type=entry.content_type,
                meta=dict(entry.meta) if entry.meta else None,
                codec=self.opts.codec,
                level=self.opts.level,
                dictionary=state.dictionary,
                dict_max_file_size=self.opts.dict_max_file_size,
            )
        except (ValueError, TypeError) as exc:  # e.g. meta that is not plain JSON values
            raise EntryFailed(entry.uid, f"cannot pack this entry: {exc}") from None

    def _prepare_block(self, block: Block) -> _BlockResult:
        """Read the members of a block (each checked like a single file), then compress them
        together. A member that fails is left out (``on_error="skip"``: the block is made of
        the others) or ends the block (``"fail"``: the writer stops at it)."""
        skip = self.opts.on_error == "skip"
        members: list[ManifestEntry] = []
        files: list[tuple[str, bytes, dict[str, Any]]] = []
        failed: list[tuple[ManifestEntry, EntryFailed]] = []
        for entry in block.entries:
            try:
                data = self.sources.read(entry)
                meta = build_meta(
                    dict(entry.meta) if entry.meta else None,
                    source_name(entry.source),
                    entry.content_type,
                )
            except EntryFailed as exc:
                failed.append((entry, exc))
            except (ValueError, TypeError) as exc:  # e.g. meta that is not plain JSON values
                failed.append((entry, EntryFailed(entry.uid, f"cannot pack this entry: {exc}")))
            else:
                members.append(entry)
                files.append((entry.uid, data, meta))
                continue
            if not skip:
                return _BlockResult([], failed)
        prepared: list[PreparedPayload | PreparedBlock] = []
        try:
            prepared = prepare_block(files, level=self.opts.level)
        except (ValueError, TypeError):  # e.g. a uid the format refuses: each file alone
            for entry, (uid, data, meta) in zip(members, files, strict=True):
                try:
                    prepared.append(
                        prepare_payload(uid, data, meta=meta, codec="zstd", level=self.opts.level)
                    )
                except (ValueError, TypeError) as exc:
                    failed.append((entry, EntryFailed(uid, f"cannot pack this entry: {exc}")))
                    if not skip:
                        return _BlockResult([], failed)
        return _BlockResult(prepared, failed)

    def _prepare_batch(self, work: list[tuple[_ShardState, WorkItem]]) -> list[Any]:
        """``_prepare`` for consecutive entries: their results in order, an ``EntryFailed`` in
        place of an entry that failed."""
        out: list[Any] = []
        try:
            for state, entry in work:
                try:
                    out.append(self._prepare(state, entry))
                except EntryFailed as exc:
                    out.append(exc)
        except BaseException:
            _discard_staged(out)
            raise
        return out

    def _cost(self, entry: WorkItem) -> int:
        if isinstance(entry, Block):
            return max(entry.size_bytes, 1)
        if entry.size_bytes > self.opts.big_file_threshold:
            return _BIGFILE_COST
        return max(entry.size_bytes, 1)

    def _batches(self) -> Iterator[list[tuple[_ShardState, WorkItem | None]]]:
        """The work items in order, cut into batches of at most ``_BATCH_FILES`` files and
        about ``_BATCH_BYTES`` (a batch may span shards)."""
        batch: list[tuple[_ShardState, WorkItem | None]] = []
        nbytes = 0
        for state, entry in self._items():
            batch.append((state, entry))
            if entry is not None:
                nbytes += self._cost(entry)
            if len(batch) >= _BATCH_FILES or nbytes >= _BATCH_BYTES:
                yield batch
                batch = []
                nbytes = 0
        if batch:
            yield batch

    # ---- the writer side (this thread)

    def run(self) -> PackReport:
        started = time.monotonic()
        workers = self.opts.workers or default_workers()
        max_pending = max(16, workers * 16)  # batches in flight (also bounded by bytes)
        batches = self._batches()
        pending: deque[_Pending] = deque()
        inflight = 0
        exhausted = False
        current: _ShardState | None = None
        results: list[Any] = []
        taken = 0  # results[:taken] belong to the writer (or were reported as failed)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="des-pack") as pool:
            try:
                while True:
                    while not exhausted and len(pending) < max_pending:
                        if pending and inflight >= self.opts.max_inflight_bytes:
                            break
                        batch = next(batches, None)
                        if batch is None:
                            exhausted = True
                            break
                        work = [(st, e) for st, e in batch if e is not None]
                        cost = sum(self._cost(e) for _st, e in work)
                        inflight += cost
                        job = pool.submit(self._prepare_batch, work) if work else None
                        pending.append(_Pending(batch, job, cost))
                    if not pending:
                        break
                    item = pending.popleft()
                    results = item.job.result() if item.job is not None else []
                    taken = 0
                    inflight -= item.cost
                    for state, entry in item.batch:
                        if entry is None:
                            self._skip_shard(state)
                            continue
                        if state is not current:
                            current = state
                            self._open_shard(state)
                        result = results[taken]
                        taken += 1
                        if isinstance(entry, Block):
                            self._add_block(state, entry, result, started)
                        elif isinstance(result, EntryFailed):
                            self._entry_failed(state, entry, result, started)
                        else:
                            try:
                                self._add(state, entry, result)
                            except BaseException:
                                taken -= 1  # still staged: discarded below
                                raise
                        state.remaining -= len(entry.entries) if isinstance(entry, Block) else 1
                        if state.remaining == 0:
                            self._close_shard(state)
                            current = None
                self._drain(0)
            except BaseException:
                _discard_staged(results[taken:])
                if current is not None and current.txn is not None:
                    current.txn.abort()
                try:  # shards already complete are still published (and counted)
                    self._drain(0)
                except BaseException:  # noqa: BLE001 - the first error is the one raised
                    for commit, _state, _parts in self._commits:
                        commit.cancel()
                    self._commits.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                for p in pending:
                    f = p.job
                    if f is not None and f.done() and not f.cancelled() and f.exception() is None:
                        _discard_staged(f.result())
                raise
            finally:
                self._committer.shutdown(wait=True)
        return self.totals.report(started)

    def _open_shard(self, state: _ShardState) -> None:
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

    def _add(self, state: _ShardState, entry: ManifestEntry, result: Any) -> None:
        assert state.txn is not None
        if isinstance(result, _StagedBigFile):
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
        self._progress(entry.size_bytes)

    def _add_block(
        self, state: _ShardState, block: Block, result: _BlockResult, started: float
    ) -> None:
        """Write what a worker made of ``block``: its members that failed are reported (and
        stop the run with ``on_error="fail"``), the solid block and the files left alone
        are added."""
        for entry, exc in result.failed:
            self._entry_failed(state, entry, exc, started)
        sizes: list[int] = []
        for prepared in result.prepared:
            if isinstance(prepared, PreparedBlock):
                state.writer.add_block(prepared)
                state.blocks += 1
                state.block_files += len(prepared.members)
                sizes.extend(m.size for m in prepared.members)
            else:
                state.writer.add_prepared(prepared)
                sizes.append(prepared.size)
        for size in sizes:
            state.files += 1
            state.bytes_in += size
            self._progress(size)

    def _progress(self, nbytes: int, key: str | None = None, status: str | None = None) -> None:
        t = self.totals
        if key is None:
            t.files_seen += 1
            t.bytes_seen += nbytes
        if self.opts.progress is not None:
            self.opts.progress(
                ProgressEvent(
                    t.files_seen, t.bytes_seen, self.files_total, self.bytes_total, key, status
                )
            )

    def _entry_failed(
        self, state: _ShardState, entry: ManifestEntry, exc: EntryFailed, started: float
    ) -> None:
        if self.opts.on_error == "skip":
            self.totals.failures.append((entry.uid, exc.reason))
            self._progress(entry.size_bytes)
            return
        if state.txn is not None:
            state.txn.abort()
            state.txn = None
        self._drain(0)  # shards finished before this one are published and reported
        self.totals.failures.append((entry.uid, exc.reason))
        self.totals.shards.append(
            ShardResult(state.shard.key, "failed", 0, 0, 0, duplicates=len(state.duplicates))
        )
        raise PackAborted(str(exc), self.totals.report(started))

    def _skip_shard(self, state: _ShardState) -> None:
        if state.existing is not None:
            state.existing.release()
        t = self.totals
        t.skipped += 1
        t.duplicates.extend(state.duplicates)
        t.shards.append(
            ShardResult(state.shard.key, "skipped", 0, 0, 0, duplicates=len(state.duplicates))
        )
        t.files_seen += len(state.shard.entries)
        t.bytes_seen += state.shard.bytes
        self._progress(0, state.shard.key, "skipped")

    def _close_shard(self, state: _ShardState) -> None:
        try:
            self._finish_shard(state)
        finally:
            if state.existing is not None:
                state.existing.release()

    def _finish_shard(self, state: _ShardState) -> None:
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
            self._progress(0, state.shard.key, "failed")
            return
        summary = state.writer.close()
        state.writer = None
        job = self._committer.submit(_commit, txn)
        self._commits.append((job, state, len(summary.parts)))
        self._drain(1)

    def _drain(self, keep: int) -> None:
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
            self._progress(0, state.shard.key, status)
