"""The verify step's reads, in a worker process.

The packer's own Python work holds this process's GIL most of the time (files are small), so
reading shards back in threads here slows the pack by about as much as the reads cost. A
worker process reads and checks each published shard with des-format's ``verify_files`` on
another core and sends back plain values per file (size, CRC-32, digest, error text); the
comparison with the table's rows stays in the migrator. Only the store's description crosses
the process boundary (a local directory or an ``s3://`` bucket and prefix); a store object
handed to the orchestrator (tests, embedding) is read in threads instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from des_format import ObjectStore

#: How a worker process builds the store: ("local", base_dir) or
#: ("s3", bucket, prefix, region_name, endpoint_url) with "" for unset values.
StoreSpec = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadBack:
    """One file as read back: its length, CRC-32 and digest, or why it could not be."""

    uid: str
    size: int | None = None
    crc32: int | None = None
    digest: str | None = None
    error: str | None = None


#: (error that fails the whole batch, or None; one ReadBack per uid, in the order asked)
ShardReadBack = tuple[str | None, list[ReadBack]]


def brief(exc: BaseException) -> str:
    """``ClassName: first line of the message`` (what reports and the error column show)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def open_store(spec: StoreSpec) -> ObjectStore:
    """The store ``spec`` describes."""
    if spec[0] == "local":
        from des_format import LocalObjectStore

        return LocalObjectStore(spec[1])
    if spec[0] == "s3":
        from des_storage_s3 import ClientSettings, S3ObjectStore, make_client

        _kind, bucket, prefix, region, endpoint = spec
        client = make_client(
            ClientSettings(region_name=region or None, endpoint_url=endpoint or None)
        )
        return S3ObjectStore(client, bucket, prefix)
    raise ValueError(f"unknown store kind {spec[0]!r}")  # pragma: no cover - ours only


def close_store(store: ObjectStore) -> None:
    closer = getattr(store, "close", None)
    if callable(closer):
        closer()


def read_back(
    store: ObjectStore | StoreSpec,
    key: str,
    uids: list[str],
    digest: str | None,
    *,
    stores: dict[StoreSpec, ObjectStore] | None = None,
) -> ShardReadBack:
    """Read ``uids`` back from the shard at ``key`` (des-format's ``verify_files``).

    A missing or unreadable shard, or an unavailable store, is returned as the first item
    (the batch cannot be trusted); a file that is missing or does not match its entry gets
    its reason in its ReadBack.
    """
    from des_format import DesFormatError, verify_files

    if isinstance(store, tuple):
        source = stores.get(store) if stores is not None else None
        if source is None:
            source = open_store(store)
            if stores is not None:
                stores[store] = source
            else:
                try:
                    return read_back(source, key, uids, digest)
                finally:
                    close_store(source)
    else:
        source = store
    try:
        checks = verify_files(source, key, uids, digest=digest)
    except DesFormatError as exc:
        return brief(exc), []
    out: list[ReadBack] = []
    for uid, check in checks.items():
        if check.error is not None or check.entry is None:
            out.append(ReadBack(uid, error=brief(check.error or Exception("no entry"))))
        else:
            out.append(ReadBack(uid, check.entry.size, check.crc32, check.digest))
    return None, out


class VerifyWorkerError(RuntimeError):
    """The verify worker process exited with reads outstanding, or failed one."""


_FRAME = struct.Struct("<I")


def _write_frame(out: IO[bytes], obj: object) -> None:
    blob = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    out.write(_FRAME.pack(len(blob)))
    out.write(blob)
    out.flush()


def _read_frame(src: IO[bytes]) -> Any:
    """The next JSON value, or None at the end of the stream."""
    head = src.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (n,) = _FRAME.unpack(head)
    blob = src.read(n)
    if len(blob) < n:
        return None
    return json.loads(blob)


class _WorkerProcess:
    """One ``python -m des_migrate._verify_worker`` child reading requests (JSON, length-
    prefixed) on its stdin and answering on its stdout, in order. A sender thread writes
    requests (submit never blocks the packer), a receiver thread resolves the futures. Once
    the child has exited, every future outstanding or submitted later fails with
    :class:`VerifyWorkerError`. The child exits when its stdin closes, so it never outlives
    this process."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "des_migrate._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._outbox: queue.SimpleQueue[tuple[int, Future[ShardReadBack], tuple[Any, ...]] | None]
        self._outbox = queue.SimpleQueue()
        self._pending: dict[int, Future[ShardReadBack]] = {}
        self._lock = threading.Lock()  # guards _next, _pending, _gone and puts to _outbox
        self._next = 0
        self._gone: str | None = None  # why the child is no longer answering
        self._sender = threading.Thread(
            target=self._send, name="des-migrate-verify-send", daemon=True
        )
        self._receiver = threading.Thread(
            target=self._receive, name="des-migrate-verify-receive", daemon=True
        )
        self._sender.start()
        self._receiver.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def submit(self, args: tuple[Any, ...]) -> Future[ShardReadBack]:
        job: Future[ShardReadBack] = Future()
        with self._lock:
            if self._gone is not None:
                job.set_running_or_notify_cancel()
                job.set_exception(VerifyWorkerError(self._gone))
                return job
            self._next += 1
            self._outbox.put((self._next, job, args))
        return job

    def _send(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while (item := self._outbox.get()) is not None:
                ident, job, args = item
                if not job.set_running_or_notify_cancel():
                    continue  # cancelled (its batch failed) before it was sent
                with self._lock:
                    if self._gone is not None:
                        job.set_exception(VerifyWorkerError(self._gone))
                        continue
                    self._pending[ident] = job
                _write_frame(stdin, [ident, args])
        except OSError:
            pass  # the child is gone: the receiver fails what is outstanding
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _receive(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while (answer := _read_frame(stdout)) is not None:
                ident, ok, value = answer
                with self._lock:
                    job = self._pending.pop(ident)
                if ok:
                    error, reads = value
                    job.set_result((error, [ReadBack(*r) for r in reads]))
                else:
                    job.set_exception(VerifyWorkerError(f"the verify worker failed: {value}"))
        finally:
            code = self._proc.wait()
            with self._lock:
                self._gone = f"the verify worker exited with status {code}"
                left, self._pending = list(self._pending.values()), {}
                queued: list[Future[ShardReadBack]] = []
                stop = False
                while True:  # requests the sender has not taken
                    try:
                        item = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                    elif item[1].set_running_or_notify_cancel():
                        queued.append(item[1])
                if stop:
                    self._outbox.put(None)  # still the sender's to see
            for job in [*left, *queued]:
                job.set_exception(VerifyWorkerError(self._gone))

    def close(self) -> None:
        with self._lock:
            self._outbox.put(None)  # the child reads to the end of its stdin, then exits
        self._sender.join()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover - a child stuck in a read
            self._proc.kill()
            self._proc.wait()
        self._receiver.join()


def worker_main() -> None:
    """The child's loop: one answer per request, in order, until stdin ends."""
    # Ctrl-C reaches the whole process group: the migrator decides (it rolls the batch back)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the answers
    requests = sys.stdin.buffer
    stores: dict[StoreSpec, ObjectStore] = {}
    try:
        while (request := _read_frame(requests)) is not None:
            ident, (spec, key, uids, digest) = request
            try:
                error, reads = read_back(tuple(spec), key, uids, digest, stores=stores)
                answer = [error, [[r.uid, r.size, r.crc32, r.digest, r.error] for r in reads]]
                _write_frame(answers, [ident, True, answer])
            except Exception as exc:  # noqa: BLE001  (sent back: the batch fails with it)
                _write_frame(answers, [ident, False, brief(exc)])
    finally:
        for store in stores.values():
            close_store(store)


class Verifier:
    """Where the verify step's reads run: a worker process for a store it can describe, else
    threads of this process. ``submit`` returns a future of :data:`ShardReadBack`."""

    def __init__(self, store: ObjectStore | StoreSpec, threads: int) -> None:
        self._store = store
        self._worker: _WorkerProcess | None = None
        self._threads: ThreadPoolExecutor | None = None
        if isinstance(store, tuple):
            self._worker = _WorkerProcess()
        else:
            self._threads = ThreadPoolExecutor(
                max_workers=max(1, threads), thread_name_prefix="des-migrate-verify"
            )

    @property
    def pid(self) -> int | None:
        """The worker process's id (None when reads run in threads of this process)."""
        return self._worker.pid if self._worker is not None else None

    def submit(self, key: str, uids: list[str], digest: str | None) -> Future[ShardReadBack]:
        if self._worker is not None:
            return self._worker.submit((self._store, key, uids, digest))
        assert self._threads is not None
        fn: Callable[..., ShardReadBack] = read_back
        return self._threads.submit(fn, self._store, key, uids, digest)

    def close(self) -> None:
        """Wait for the reads submitted and not cancelled, then stop the worker or threads."""
        if self._worker is not None:
            self._worker.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
