"""The first :class:`~des_http._retrieval.AsyncRetriever`: des-format's sync
``ShardRetriever`` driven from a thread pool, for every backend.

An answer that needs no I/O (the shard's index cached; for a payload, a small local file
whose bytes are in the page cache: ``read_nowait``) is given on the event loop at once;
anything else takes one trip to the pool (and one per further chunk of a streamed file).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ._retrieval import AsyncOpenedFile, FileEntry, Observer, OpenedFile, Retriever

if TYPE_CHECKING:
    from des_format import IndexCache, ObjectStore

    from ._settings import HttpSettings

T = TypeVar("T")
_END = object()
#: Stored bytes per read of a streamed file, and about the most the sync retriever holds
#: back before the first byte leaves. With zstd's window (2 MiB for des-pack's level 3), a
#: streamed answer holds about 5 MiB whatever the client's pace (40 stalled clients of a
#: 10 MiB text file: +200-220 MiB in test_hostile).
STREAM_CHUNK_BYTES = 256 << 10


def sync_retriever(
    settings: HttpSettings,
    *,
    observer: Observer | None = None,
    store: ObjectStore | None = None,
    cache: IndexCache | None = None,
) -> Retriever:
    """des-format's ``ShardRetriever`` for ``settings`` (store: ``open_store(settings)``)."""
    from des_format import ShardRetriever

    des = settings.des
    if store is None:
        from des_storage_s3 import open_store

        store = open_store(des)
    retriever: Retriever = ShardRetriever(
        store,
        cache=cache,
        tail_size=des.tail_read_bytes,
        bigfiles_prefix=des.bigfiles_prefix,
        observer=observer,
        chunk_size=STREAM_CHUNK_BYTES,
    )
    return retriever


class _MemoryFile:
    """A file read whole without I/O: one chunk (``whole``: all of it, for the handler)."""

    def __init__(self, entry: FileEntry, data: bytes) -> None:
        self._entry = entry
        self._data = data
        self.whole = data

    @property
    def entry(self) -> FileEntry:
        return self._entry

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._data:
            yield self._data

    async def aclose(self) -> None:
        self._data = b""


class _ThreadedFile:
    """A file streamed by the sync retriever: each further chunk is one trip to the pool
    (``whole``: all of it when the first trip read it to its end, else None)."""

    def __init__(
        self,
        owner: ThreadedRetriever,
        entry: FileEntry,
        first: list[bytes],
        rest: Iterator[bytes] | None,
    ) -> None:
        self._owner = owner
        self._entry = entry
        self._first = first
        self._rest: Iterator[bytes] | None = rest
        self.whole: bytes | None = None
        if rest is None:
            self.whole = first[0] if len(first) == 1 else b"".join(first)

    @property
    def entry(self) -> FileEntry:
        return self._entry

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, []
        for chunk in first:
            yield chunk
        while self._rest is not None:
            chunk = await self._owner.run(next, self._rest, _END)
            if chunk is _END:
                self._rest = None
                return
            yield chunk

    async def aclose(self) -> None:
        rest, self._rest = self._rest, None
        if isinstance(rest, Generator):  # a generator holds the store's response open
            await self._owner.run(rest.close)


class ThreadedRetriever:
    """:class:`AsyncRetriever` over a sync retriever (des-format's ``ShardRetriever``).

    ``open`` returns once the first chunk is read and verified as far as the sync retriever
    verifies before yielding (a file of up to its chunk size: whole; a stale cached index
    re-read, so a file deleted meanwhile is ``EntryDeleted``): the caller sends no header of
    a 200 before that.
    """

    def __init__(
        self,
        sync: Retriever,
        settings: HttpSettings,
        *,
        executor: Executor | None = None,
        on_nowait: Callable[[bool], None] | None = None,
    ) -> None:
        self.sync = sync
        self.cache = sync.cache
        self.executor = executor or ThreadPoolExecutor(
            settings.io_threads, thread_name_prefix="des-io"
        )
        self.on_nowait = on_nowait
        #: The sync retriever's answers without waiting, when ``DES_NOWAIT_READS`` allows.
        self._nowait = sync if settings.nowait_reads else None
        # Only files answered whole from memory: never one that would be streamed.
        self._nowait_limit = min(settings.nowait_max_bytes, settings.stream_threshold_bytes)
        self._whole_limit = settings.stream_threshold_bytes

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _counted(self, served: bool) -> None:
        if self.on_nowait is not None:
            self.on_nowait(served)

    async def stat(self, key: str, uid: str) -> FileEntry:
        if self._nowait is not None:
            entry = self._nowait.stat_nowait(key, uid)
            self._counted(entry is not None)
            if entry is not None:
                return entry
        return await self.run(self.sync.stat, key, uid)

    async def open(self, key: str, uid: str) -> AsyncOpenedFile:
        if self._nowait is not None:
            found = self._nowait.read_nowait(key, uid, max_bytes=self._nowait_limit)
            self._counted(found is not None)
            if found is not None:
                entry, data = found
                assert data is not None  # no ``only_if``: the payload was read
                return _MemoryFile(entry, data[: entry.size])
        return await self.run(self._open_sync, key, uid)

    def _open_sync(self, key: str, uid: str) -> _ThreadedFile:
        """Open and read the first chunk; a file answered whole (up to the stream threshold)
        is read to its end in the same trip."""
        opened: OpenedFile = self.sync.open(key, uid)
        size = opened.entry.size
        chunks = opened.iter_bytes()
        first: list[bytes] = []
        got = 0
        for chunk in chunks:
            first.append(chunk)
            got += len(chunk)
            if got >= size:
                break
            if got >= self._whole_limit:  # a file to stream: the rest chunk by chunk
                return _ThreadedFile(self, opened.entry, first, chunks)
        first.extend(chunks)  # nothing left to read: the end of the stream (and its checks)
        return _ThreadedFile(self, opened.entry, first, None)

    async def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | BaseException]]:
        results = self.sync.read_many(key, list(uids))
        try:
            while True:
                item = await self.run(next, results, _END)
                if item is _END:
                    return
                uid, value = item
                yield uid, value
        finally:
            if isinstance(results, Generator):
                await self.run(results.close)
