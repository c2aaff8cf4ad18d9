"""The asynchronous driver of the retrieval pipeline (:mod:`des_format._pipeline`).

:class:`AsyncShardRetriever` performs the pipeline's steps on an :class:`AsyncObjectStore`
(an object store whose reads are awaited, such as des-storage-s3's obstore-backed store), with
the same request budget, index cache, retries and errors as the blocking
:class:`~des_format.ShardRetriever`: cold 2 or 3 requests, warm 1, If-Match on the head
object's payload reads, one cold re-read when a cached index turns out stale.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._cache import IndexCache
from ._errors import DesFormatError
from ._index import ShardIndex
from ._layout import DEFAULT_BIGFILES_PREFIX, DEFAULT_TAIL_SIZE, IndexEntry
from ._pipeline import (
    RETRYABLE,
    Located,
    PayloadVerifier,
    ReadRange,
    ReadTail,
    RetrievalPipeline,
    Steps,
    answer_size,
)
from ._source import DEFAULT_CHUNK_SIZE, ObjectInfo, TailRead

T = TypeVar("T")
Observer = Callable[[str, int], None]


@runtime_checkable
class AsyncObjectStore(Protocol):
    """:class:`~des_format.ObjectStore` with awaited reads: same keys, ranges, ``if_match``
    and errors (``ObjectNotFound``, ``PreconditionFailed``, ``RangeNotSatisfiable``,
    ``StoreError``)."""

    async def read_tail(self, key: str, n: int) -> TailRead: ...

    async def read_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes: ...

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        """Chunks of ``[start, end)``, each at most ``chunk_size`` bytes."""
        ...

    async def head(self, key: str) -> ObjectInfo: ...

    def describe(self, key: str = "") -> str: ...


async def run_steps_async(
    steps: Steps[T], store: AsyncObjectStore, observer: Observer | None = None
) -> T:
    """Drive ``steps`` with an :class:`AsyncObjectStore` (no thread: each read is awaited
    on the caller's event loop); each answered request is reported to ``observer``."""
    answer: Any = None
    try:
        step = steps.send(None)
        while True:
            try:
                if type(step) is ReadRange:
                    answer = await store.read_range(
                        step.key, step.start, step.end, if_match=step.if_match
                    )
                elif type(step) is ReadTail:
                    answer = await store.read_tail(step.key, step.n)
                else:
                    answer = await store.head(step.key)
            except Exception as exc:  # noqa: BLE001 - the pipeline decides what each error means
                step = steps.throw(exc)
                continue
            if observer is not None:
                observer(step.kind, answer_size(step, answer))
            step = steps.send(answer)
    except StopIteration as done:
        result: T = done.value
        return result


class AsyncOpenedFile:
    """A file found in a shard whose first bytes are already read and verified (a file of at
    most ``chunk_size`` bytes is verified whole). :meth:`aiter_bytes` gives the original
    bytes in verified chunks of at most ``chunk_size`` bytes; a failure past the first chunk
    ends the stream with the error (``ChecksumMismatch``...), never with wrong bytes.

    ``whole``: the file's verified bytes when it was read whole at open (it fits one chunk),
    else None; a caller may answer from it without iterating."""

    def __init__(
        self,
        key: str,
        entry: IndexEntry,
        held: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> None:
        self.key = key
        self.entry = entry
        self._held = held
        self._rest = rest
        self.whole: bytes | None = None
        if rest is None and len(held) <= 1:
            self.whole = held[0] if held else b""

    @property
    def size(self) -> int:
        return self.entry.size

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        held, self._held = self._held, []
        for piece in held:
            yield piece
        rest, self._rest = self._rest, None
        if rest is not None:
            try:
                async for piece in rest:
                    yield piece
            finally:
                await _aclose(rest)

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Stop reading (closes the store's response); safe to call more than once."""
        self._held = []
        rest, self._rest = self._rest, None
        if rest is not None:
            await _aclose(rest)


async def _aclose(it: AsyncIterator[bytes]) -> None:
    """Close a stream of chunks that can be closed (an async generator: a store's
    ``iter_range``), so its response is released now rather than when it is collected."""
    if isinstance(it, AsyncGenerator):
        await it.aclose()


def _split(piece: bytes, size: int) -> list[bytes]:
    if len(piece) <= size:
        return [piece]
    view = memoryview(piece)
    return [bytes(view[i : i + size]) for i in range(0, len(piece), size)]


class AsyncShardRetriever:
    """Reads files from shards in an :class:`AsyncObjectStore`, by shard key and uid.

    The same options as :class:`~des_format.ShardRetriever`; one index cache may serve both.
    """

    def __init__(
        self,
        store: AsyncObjectStore,
        *,
        cache: IndexCache | None = None,
        tail_size: int = DEFAULT_TAIL_SIZE,
        bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
        observer: Observer | None = None,
        coalesce_gap: int = 64 * 1024,
        max_coalesced: int = 8 * 1024 * 1024,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.store = store
        self.cache = cache
        self.chunk_size = chunk_size
        self._observer = observer
        self.pipeline = RetrievalPipeline(
            store.describe,
            cache=cache,
            tail_size=tail_size,
            bigfiles_prefix=bigfiles_prefix,
            coalesce_gap=coalesce_gap,
            max_coalesced=max_coalesced,
        )

    def _run(self, steps: Steps[T]) -> Any:
        return run_steps_async(steps, self.store, self._observer)

    async def index(self, key: str) -> tuple[str | None, ShardIndex, bool]:
        """(etag, index, from_cache) for the shard at ``key``."""
        found: tuple[str | None, ShardIndex, bool] = await self._run(self.pipeline.index(key))
        return found

    async def stat(self, key: str, uid: str) -> IndexEntry:
        """The entry of ``uid`` (never reads the payload)."""
        entry: IndexEntry = await self._run(self.pipeline.stat(key, uid))
        return entry

    async def read(self, key: str, uid: str) -> bytes:
        """The original bytes of ``uid`` in the shard at ``key``, checksum verified."""
        data: bytes = await self._run(self.pipeline.read(key, uid))
        return data

    async def open(self, key: str, uid: str) -> AsyncOpenedFile:
        """Find ``uid`` and read its first ``chunk_size`` original bytes (all of them, verified,
        for a file that fits); returns once that read succeeded. Until then a failure that a
        stale cached index explains re-reads the index once, cold, and starts again."""
        loc = self.pipeline.located_in_cache(key, uid)
        if loc is None:
            loc = await self._run(self.pipeline.locate(key, uid))
        else:
            assert self.cache is not None
            self.cache.get(key)  # the hit locate() would have counted
        attempt = 0
        while True:
            step = self.pipeline.payload_read(key, loc.entry, loc.etag)
            if loc.entry.size <= self.chunk_size and (
                step is None or step.end - step.start <= self.chunk_size
            ):
                # a file that fits one chunk: one whole read, decoded in one go (a stream of
                # one chunk would cost more CPU for the same bytes and checks)
                try:
                    data = await self._read_whole(key, loc, step)
                except RETRYABLE as exc:
                    if not self.pipeline.may_restart_stream(exc, attempt, loc.cached):
                        raise
                    attempt += 1
                    loc = await self._run(self.pipeline.relocate(key, uid))
                    continue
                return AsyncOpenedFile(key, loc.entry, [data] if data else [], None)
            pieces = self._verified_pieces(key, loc)
            held: list[bytes] = []
            size = 0
            finished = False
            try:
                async for piece in pieces:
                    held.append(piece)
                    size += len(piece)
                    if size > self.chunk_size:
                        break
                else:
                    finished = True
            except RETRYABLE as exc:
                await pieces.aclose()
                if not self.pipeline.may_restart_stream(exc, attempt, loc.cached):
                    raise
                attempt += 1
                loc = await self._run(self.pipeline.relocate(key, uid))
                continue
            except BaseException:
                await pieces.aclose()
                raise
            break
        held = [part for piece in held for part in _split(piece, self.chunk_size)]
        return AsyncOpenedFile(key, loc.entry, held, None if finished else pieces)

    async def _read_whole(self, key: str, loc: Located, step: ReadRange | None) -> bytes:
        """The verified bytes of a file that fits one chunk, in one read. Its request is
        reported as a stream's is, failed or not (``(kind, 0)`` when the store refused it)."""
        stored = b""
        if step is not None:  # the pipeline's read_entry, its one read awaited here
            observer = self._observer
            try:
                stored = await self.store.read_range(
                    step.key, step.start, step.end, if_match=step.if_match
                )
            except BaseException:
                if observer is not None:
                    observer(step.kind, 0)
                raise
            if observer is not None:
                observer(step.kind, len(stored))
        return self.pipeline.decode_entry(loc.entry, stored, loc.index.dictionary)

    async def _verified_pieces(self, key: str, loc: Located) -> AsyncGenerator[bytes, None]:
        entry = loc.entry
        step = self.pipeline.payload_read(key, entry, loc.etag)
        verifier = PayloadVerifier(
            entry, loc.index.dictionary, 0 if step is None else step.end - step.start
        )
        if step is not None:
            got = 0
            chunks = self.store.iter_range(
                step.key, step.start, step.end, if_match=step.if_match, chunk_size=self.chunk_size
            )
            try:
                async for chunk in chunks:
                    got += len(chunk)
                    for part in verifier.pieces(chunk):
                        yield part
            finally:
                await _aclose(chunks)
                if self._observer is not None:
                    self._observer(step.kind, got)
        last = verifier.finish()
        for part in _split(last, self.chunk_size) if last else ():
            yield part

    async def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | DesFormatError]]:
        """Read several files of one shard, coalescing nearby payload ranges into single
        requests. Yields ``(uid, bytes)`` or ``(uid, error)`` per uid, in the order given."""
        wanted = list(uids)
        results: dict[str, bytes | DesFormatError] = await self._run(
            self.pipeline.read_many(key, wanted)
        )
        for uid in wanted:
            yield uid, results[uid]

    def stat_nowait(self, key: str, uid: str) -> IndexEntry | None:
        """:meth:`stat` when it needs no request (the shard's index and the uid's bucket
        cached, the uid live), else None; counts a cache hit when it answers."""
        loc = self.pipeline.located_in_cache(key, uid)
        if loc is None:
            return None
        assert self.cache is not None
        self.cache.get(key)
        return loc.entry
