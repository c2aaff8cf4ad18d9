"""The prefetch pipeline of one packing process: workers prepare, this thread writes.

Work items (from :meth:`ShardSink.items`) are cut into batches of consecutive items (up to
``PackTuning.batch_files`` files or about ``batch_bytes``), one worker task per batch, so the
per-file cost of futures and thread hand-overs is paid once per batch. Batches are submitted
ahead while the bytes read but not yet written stay under ``max_inflight_bytes``; results are
taken in submission order, so the writer adds entries in uid order and the output is
byte-identical whatever the number of workers. With one worker the batches are prepared in
this thread (no hand-over at all): that is how each process of a multi-process run works.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._blocks import Block, WorkItem
from ._errors import EntryFailed
from ._plan import PlannedShard
from ._prepare import Preparer, discard_staged
from ._shards import ShardSink, ShardState

__all__ = ["PackTuning", "run_pipeline"]


@dataclass(frozen=True, slots=True)
class PackTuning:
    """Knobs of the pipeline that change its speed, never its output.

    ``batch_files``/``batch_bytes``: one worker task reads, checksums and compresses
    consecutive items up to these bounds. ``batches_per_worker``: batches submitted ahead per
    worker (also bounded by ``max_inflight_bytes``)."""

    batch_files: int = 64
    batch_bytes: int = 1 << 20
    batches_per_worker: int = 16


@dataclass(frozen=True, slots=True)
class _Pending:
    """A batch of work items and the task preparing its files (None: nothing to prepare,
    e.g. shards to skip)."""

    batch: list[tuple[ShardState, WorkItem | None]]
    job: Future[list[Any]] | None
    cost: int


class _Inline:
    """An executor that runs each task at once, in the calling thread."""

    def submit(self, fn: Callable[..., list[Any]], *args: Any) -> Future[list[Any]]:
        fut: Future[list[Any]] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - the future carries it, as a pool's would
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _batches(
    items: Iterator[tuple[ShardState, WorkItem | None]],
    cost: Callable[[WorkItem], int],
    tuning: PackTuning,
) -> Iterator[tuple[list[tuple[ShardState, WorkItem | None]], int]]:
    """The work items in order, cut into batches (a batch may span shards), each with its
    cost (the bytes it holds in flight)."""
    batch: list[tuple[ShardState, WorkItem | None]] = []
    nbytes = 0
    max_files, max_bytes = tuning.batch_files, tuning.batch_bytes
    for state, entry in items:
        batch.append((state, entry))
        if entry is not None:
            nbytes += cost(entry)
        if len(batch) >= max_files or nbytes >= max_bytes:
            yield batch, nbytes
            batch = []
            nbytes = 0
    if batch:
        yield batch, nbytes


def run_pipeline(
    shards: Iterable[PlannedShard],
    sink: ShardSink,
    preparer: Preparer,
    *,
    workers: int,
    max_inflight_bytes: int,
    tuning: PackTuning,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Pack ``shards`` through ``sink``; True when all were done, False when ``should_stop``
    said to stop (the shard being written is then dropped, those finished are published).
    Errors propagate after the staged big files are removed and finished shards published."""
    cost = preparer.cost
    batches = _batches(sink.items(shards), cost, tuning)
    pending: deque[_Pending] = deque()
    inflight = 0
    exhausted = False
    current: ShardState | None = None
    results: list[Any] = []
    taken = 0  # results[:taken] belong to the writer (or were reported as failed)
    max_pending = max(16, workers * tuning.batches_per_worker)
    pool: ThreadPoolExecutor | _Inline = (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="des-pack")
        if workers > 1
        else _Inline()
    )
    try:
        while True:
            while not exhausted and len(pending) < max_pending:
                if pending and inflight >= max_inflight_bytes:
                    break
                next_batch = next(batches, None)
                if next_batch is None:
                    exhausted = True
                    break
                batch, c = next_batch
                work = [(st.shard.key, st.dictionary, e) for st, e in batch if e is not None]
                inflight += c
                job = pool.submit(preparer.prepare_batch, work) if work else None
                pending.append(_Pending(batch, job, c))
                if isinstance(pool, _Inline):
                    break  # prepared already: write it before reading more
            if not pending:
                break
            if should_stop is not None and should_stop():
                if current is not None:
                    sink.abort_shard(current)
                    if current.existing is not None:
                        current.existing.release()
                    current = None
                sink.drain(0)
                _discard_pending(pending)
                return False
            item = pending.popleft()
            results = item.job.result() if item.job is not None else []
            taken = 0
            inflight -= item.cost
            for state, entry in item.batch:
                if entry is None:
                    sink.skip_shard(state)
                    continue
                if state is not current:
                    current = state
                    sink.open_shard(state)
                result = results[taken]
                taken += 1
                try:
                    sink.add(state, entry, result)
                except BaseException:
                    if not isinstance(entry, Block) and not isinstance(result, EntryFailed):
                        taken -= 1  # still staged: discarded below
                    raise
                if state.remaining == 0:
                    current = None
        sink.drain(0)
        return True
    except BaseException:
        discard_staged(results[taken:])
        if current is not None:
            sink.abort_shard(current)
        try:  # shards already complete are still published (and counted)
            sink.drain(0)
        except BaseException:  # noqa: BLE001 - the first error is the one raised
            sink.cancel_commits()
        pool.shutdown(wait=True, cancel_futures=True)
        _discard_pending(pending)
        raise
    finally:
        pool.shutdown(wait=True)


def _discard_pending(pending: Iterable[_Pending]) -> None:
    for p in pending:
        f = p.job
        if f is not None and f.done() and not f.cancelled() and f.exception() is None:
            discard_staged(f.result())
