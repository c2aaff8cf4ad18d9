"""Packing with several processes: one per core, each writing whole shards (Linux, fork).

The Python that every file costs (reading, building index entries, writing) holds the GIL,
so one process cannot keep two cores busy on small files. Here the plan made by the parent
is shared with ``processes`` children by ``fork`` (no copying, no pickling); each child
claims the next shard not yet taken (a counter in shared memory, so fast and slow shards
balance themselves) and packs it with the same pipeline and shard state machine as a
single-process run. A shard is written by exactly one process, so its bytes are the same as
a single process would write (R5); every shard is still published atomically after its
fsync (R7); each child holds at most its share of ``max_inflight_bytes`` (R8).

Children report to the parent through one pipe each: progress (at most every 50 ms, and
every shard), then their totals. A child that fails (a bad file with ``on_error="fail"``, or
an error) raises a shared stop flag: the others drop the shard they are writing, publish
those finished and stop; the parent then raises the first error (``PackAborted`` with the
merged report for a bad file). Children die with the parent (``PR_SET_PDEATHSIG``), so a
killed des-pack leaves no process writing behind it.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ._dest import Destination, LocalDestination
from ._errors import OutputFailed, PackAborted, PackerError, describe_os_error
from ._options import PackOptions, ProgressEvent
from ._pipeline import PackTuning, run_pipeline
from ._plan import PackPlan, PlannedShard
from ._prepare import Preparer
from ._report import PackReport
from ._shards import ShardSink, Totals, default_workers
from ._sources import SourceReader

__all__ = ["fork_available", "pack_in_processes"]

_PROGRESS_EVERY = 0.05  # seconds between a child's per-file progress messages
_PR_SET_PDEATHSIG = 1


def fork_available() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class _Claims:
    """Shards handed out one at a time from shared memory, and the stop flag."""

    def __init__(self, ctx: Any) -> None:
        self._next = ctx.RawValue("q", 0)
        self._stop = ctx.RawValue("b", 0)
        self._lock = ctx.Lock()

    def shards(self, shards: list[PlannedShard]) -> Iterator[PlannedShard]:
        while not self._stop.value:
            with self._lock:
                i = self._next.value
                self._next.value = i + 1
            if i >= len(shards):
                return
            yield shards[i]

    def stop(self) -> None:
        self._stop.value = 1

    def stopped(self) -> bool:
        return bool(self._stop.value)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _sendable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, made just above
    except Exception:  # noqa: BLE001 - any exception that does not travel becomes a message
        return PackerError(f"{type(exc).__name__}: {exc}")
    return exc


@dataclass(frozen=True, slots=True)
class _Job:
    """What every child inherits through fork (nothing is pickled)."""

    plan: PackPlan
    dest: Destination
    opts: PackOptions
    tuning: PackTuning
    claims: _Claims
    workers: int
    inflight: int
    parent: int


def _child(job: _Job, conn: Connection, others: list[Connection]) -> None:
    plan, dest, opts, claims = job.plan, job.dest, job.opts, job.claims
    _die_with_parent(job.parent)
    for other in others:
        other.close()
    gc.freeze()  # this child's copy of the plan: never traversed by the collector again
    last = [0.0]

    def progress(ev: ProgressEvent) -> None:
        if ev.shard_key is None:
            now = time.monotonic()
            if now - last[0] < _PROGRESS_EVERY:
                return
            last[0] = now
        conn.send(("progress", ev.files_done, ev.bytes_done, ev.shard_key, ev.shard_status))

    sources = SourceReader(endpoint_url=opts.s3_endpoint_url, region=opts.s3_region)
    sink = ShardSink(
        dest,
        opts,
        sources,
        files_total=plan.files,
        bytes_total=plan.bytes,
        progress=progress if opts.progress is not None else None,
        started=time.monotonic(),
    )
    message: tuple[Any, ...]
    try:
        run_pipeline(
            claims.shards(list(plan.shards)),
            sink,
            Preparer(dest, opts, sources),
            workers=job.workers,
            max_inflight_bytes=job.inflight,
            tuning=job.tuning,
            should_stop=claims.stopped,
        )
        message = ("done", sink.totals, None)
    except PackAborted as exc:
        claims.stop()
        message = ("aborted", sink.totals, str(exc))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, raised there
        claims.stop()
        message = ("error", sink.totals, _sendable(exc))
    finally:
        sink.shutdown()
    made = dest.made_dirs() if isinstance(dest, LocalDestination) else frozenset()
    conn.send((*message, made))
    conn.close()


def pack_in_processes(
    plan: PackPlan,
    dest: Destination,
    opts: PackOptions,
    *,
    processes: int,
    tuning: PackTuning,
    started: float,
) -> PackReport:
    """Pack ``plan`` into ``dest`` with ``processes`` children (see the module)."""
    ctx = multiprocessing.get_context("fork")
    claims = _Claims(ctx)
    pipes = [ctx.Pipe(duplex=False) for _ in range(processes)]
    workers = max(1, (opts.workers or default_workers()) // processes)
    inflight = max(1, opts.max_inflight_bytes // processes)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    procs = []
    job = _Job(plan, dest, opts, tuning, claims, workers, inflight, os.getpid())
    for k, (_reader, writer) in enumerate(pipes):
        # the child keeps only its own writing end
        others = [w for j, (_r, w) in enumerate(pipes) if j != k] + [r for r, _w in pipes]
        proc = ctx.Process(
            target=_child,
            args=(job, writer, others),
            name=f"des-pack-{k}",
        )
        proc.start()
        procs.append(proc)
    for _reader, writer in pipes:
        writer.close()
    readers = {r: k for k, (r, _w) in enumerate(pipes)}
    files_total, bytes_total = plan.files, plan.bytes  # properties that sum the plan
    seen = [(0, 0)] * processes
    results: list[Totals] = []
    aborted: str | None = None
    error: BaseException | None = None
    try:
        while readers:
            for conn in wait(list(readers)):
                assert isinstance(conn, Connection)
                k = readers[conn]
                try:
                    msg = conn.recv()
                except EOFError:
                    del readers[conn]
                    procs[k].join()
                    claims.stop()
                    error = error or PackerError(
                        f"packing process {k} exited with code {procs[k].exitcode} before "
                        "reporting; shards it had finished are complete, rerun to pack the rest"
                    )
                    continue
                if msg[0] == "progress":
                    seen[k] = (msg[1], msg[2])
                    if opts.progress is not None:
                        files = sum(f for f, _b in seen)
                        nbytes = sum(b for _f, b in seen)
                        opts.progress(
                            ProgressEvent(files, nbytes, files_total, bytes_total, msg[3], msg[4])
                        )
                    continue
                del readers[conn]
                results.append(msg[1])
                if isinstance(dest, LocalDestination):  # emptied day directories go at close
                    dest.adopt_dirs(msg[3])
                if msg[0] == "aborted" and aborted is None:
                    aborted = msg[2]
                elif msg[0] == "error" and error is None:
                    error = msg[2]
    finally:
        claims.stop()
        for proc in procs:
            proc.join()
    totals = _merge(plan, results)
    report = totals.report(started)
    if isinstance(error, OSError):  # writing the output failed: say where and how to fix it
        raise OutputFailed(describe_os_error(error, dest.describe()), report) from error
    if error is not None:
        raise error
    if aborted is not None:
        raise PackAborted(aborted, report)
    return report


def _merge(plan: PackPlan, parts: Iterable[Totals]) -> Totals:
    """One set of totals, in the plan's order (as a single process would list them)."""
    out = Totals()
    failures: list[tuple[str, str]] = []
    duplicates: set[str] = set()
    for t in parts:
        out.files += t.files
        out.bytes_in += t.bytes_in
        out.bytes_out += t.bytes_out
        out.written += t.written
        out.appended += t.appended
        out.skipped += t.skipped
        out.blocks += t.blocks
        out.block_files += t.block_files
        out.shards.extend(t.shards)
        failures.extend(t.failures)
        duplicates.update(t.duplicates)
    order = {s.key: i for i, s in enumerate(plan.shards)}
    out.shards.sort(key=lambda r: order[r.key])
    out.failures.extend(plan.rejected)
    if failures or duplicates:
        position = {}
        wanted = {uid for uid, _r in failures} | duplicates
        for i, shard in enumerate(plan.shards):
            for j, e in enumerate(shard.entries):
                if e.uid in wanted:
                    position[e.uid] = (i, j)
        failures.sort(key=lambda f: position.get(f[0], (-1, -1)))
        out.failures.extend(failures)
        out.duplicates.extend(sorted(duplicates, key=lambda u: position[u]))
    return out
