"""The verify step's reads, in a worker process.

The packer's own Python work holds this process's GIL most of the time (files are small), so
reading shards back in threads here slows the pack by about as much as the reads cost. A
worker process (``_verify_worker.py``, loaded on its own: standard library and des-format)
reads each published shard back with des-format's ``verify_files`` on another core, compares
each file with its row (size, the table's checksum) and answers only for the files that need
the migrator's attention. Only the store's description crosses the process boundary (a local
directory or an ``s3://`` bucket and prefix); a store object handed to the orchestrator
(tests, embedding) is read in threads of this process instead, by the same code.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import MigrateError
from ._verify_worker import (
    Answer,
    Item,
    Row,
    ShardAnswer,
    StoreSpec,
    Validated,
    brief,
    check_shard,
    read_frame,
    write_frame,
)

if TYPE_CHECKING:
    from des_format import ObjectStore

__all__ = [
    "WORKER_FILE",
    "Answer",
    "Item",
    "Row",
    "ShardAnswer",
    "StoreSpec",
    "Validated",
    "Verifier",
    "VerifyWorkerError",
    "brief",
]

#: The worker's code (a cycle verifies in threads if this is not a file: zipped installs).
WORKER_FILE = Path(__file__).with_name("_verify_worker.py")
#: Loads the worker's file as a module of its own: the package (and what it imports) is not
#: loaded in the worker. -P: the current directory is not put on sys.path.
_WORKER_CODE = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location('des_migrate_verify_worker', sys.argv[1]); "
    "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
    "module.main()"
)


class VerifyWorkerError(MigrateError, RuntimeError):
    """The verify worker process exited with reads outstanding, or failed one."""


#: ident, future, request, how the answer becomes the future's result
_Request = tuple[int, "Future[Any]", list[Any], Callable[[Any], Any]]


class _WorkerProcess:
    """One worker child (``_verify_worker.py``) reading requests (JSON, length-prefixed) on its
    stdin and answering on its stdout, in order. A sender thread writes
    requests (submit never blocks the packer), a receiver thread resolves the futures. Once
    the child has exited, every future outstanding or submitted later fails with
    :class:`VerifyWorkerError`. The child exits when its stdin closes, so it never outlives
    this process."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_CODE, str(WORKER_FILE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._outbox: queue.SimpleQueue[_Request | None]
        self._outbox = queue.SimpleQueue()
        self._pending: dict[int, tuple[Future[Any], Callable[[Any], Any]]] = {}
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

    def submit(self, args: list[Any], convert: Callable[[Any], Any]) -> Future[Any]:
        """Send ``args``; the future gets ``convert(answer)``."""
        job: Future[Any] = Future()
        with self._lock:
            if self._gone is not None:
                job.set_running_or_notify_cancel()
                job.set_exception(VerifyWorkerError(self._gone))
                return job
            self._next += 1
            self._outbox.put((self._next, job, args, convert))
        return job

    def _send(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while (item := self._outbox.get()) is not None:
                ident, job, args, convert = item
                if not job.set_running_or_notify_cancel():
                    continue  # cancelled (its batch failed) before it was sent
                with self._lock:
                    if self._gone is not None:
                        job.set_exception(VerifyWorkerError(self._gone))
                        continue
                    self._pending[ident] = (job, convert)
                write_frame(stdin, [ident, *args])
        except OSError:
            pass  # the child is gone: the receiver fails what is outstanding
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _receive(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while (answer := read_frame(stdout)) is not None:
                ident, ok, value = answer
                with self._lock:
                    job, convert = self._pending.pop(ident)
                if ok:
                    job.set_result(convert(value))
                else:
                    job.set_exception(VerifyWorkerError(f"the verify worker failed: {value}"))
        finally:
            code = self._proc.wait()
            with self._lock:
                self._gone = f"the verify worker exited with status {code}"
                left, self._pending = [job for job, _ in self._pending.values()], {}
                queued: list[Future[Any]] = []
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


class Verifier:
    """Where the verify step's reads run: a worker process for a store it can describe, else
    threads of this process. ``submit`` returns a future of :data:`ShardAnswer`."""

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

    def submit(self, key: str, items: list[Item], algorithm: str | None) -> Future[ShardAnswer]:
        store = self._store
        if self._worker is not None:
            assert isinstance(store, tuple)
            return self._worker.submit(["check", list(store), key, algorithm, items], _shard_answer)
        assert self._threads is not None
        assert not isinstance(store, tuple)
        fn: Callable[..., ShardAnswer] = check_shard
        return self._threads.submit(fn, store, key, items, algorithm)

    def validate(self, rows: list[Row], n_bits: int) -> Future[Validated] | None:
        """The validate step for rows with local sources in the worker process (None when
        reads run in threads: validate here then)."""
        if self._worker is None:
            return None
        return self._worker.submit(["validate", rows, n_bits], _validated)

    def close(self) -> None:
        """Wait for the reads submitted and not cancelled, then stop the worker or threads."""
        if self._worker is not None:
            self._worker.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)


def _shard_answer(value: Any) -> ShardAnswer:
    error, answers = value
    return error, [(a[0], a[1], a[2]) for a in answers]


def _validated(value: Any) -> Validated:
    keys, refused = value
    return keys, [(i, reason) for i, reason in refused]
