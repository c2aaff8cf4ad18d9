"""The blocking driver of the retrieval pipeline (:mod:`des_format._pipeline`).

:class:`ShardRetriever` performs the pipeline's steps on an :class:`ObjectStore` (local
directory, S3, multi-zone S3: it never knows which), so ``des get``, the packer's checks and
the service's local backend read with the same request budget, retries and errors as the
asynchronous driver (:class:`~des_format.AsyncShardRetriever`). It adds the answers a caller
on an event loop may take without waiting (``stat_nowait``, ``read_nowait``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._cache import IndexCache
from ._codecs import Codec
from ._errors import DesFormatError
from ._index import Fetch, ShardIndex
from ._layout import DEFAULT_BIGFILES_PREFIX, DEFAULT_TAIL_SIZE, IndexEntry, part_key
from ._pipeline import (
    RETRYABLE,
    CoalescedRange,
    Located,
    PayloadVerifier,
    RetrievalPipeline,
    Steps,
    plan_coalesced_ranges,
    run_steps,
)
from ._reader import decode_payload
from ._source import DEFAULT_CHUNK_SIZE, ObjectStore

__all__ = ["CoalescedRange", "OpenedFile", "ShardRetriever", "plan_coalesced_ranges"]

Observer = Callable[[str, int], None]


def _small_block(stored: bytes, max_bytes: int) -> bool:
    """Whether a solid block declares at most ``4 * max_bytes`` decompressed bytes (a read
    without waiting decompresses the whole block on the caller's thread: at most 256 KiB
    with des-http's 64 KiB limit, against up to ``MAX_BLOCK_SIZE`` in a valid shard)."""
    from ._codecs import _module

    zstd = _module(Codec.ZSTD)
    try:
        declared = int(zstd.frame_content_size(stored))
    except zstd.ZstdError:  # not a frame: decode_payload reports it on the waiting path
        return False
    return 0 <= declared <= 4 * max_bytes


class OpenedFile:
    """A file found in a shard, its bytes not read yet. ``iter_bytes`` streams and verifies."""

    def __init__(
        self,
        retriever: ShardRetriever,
        key: str,
        entry: IndexEntry,
        etag: str | None,
        dictionary: bytes | None = None,
        *,
        cached: bool = True,
    ):
        self._r = retriever
        self.key = key
        self.entry = entry
        self._etag = etag
        self._dictionary = dictionary
        self._cached = cached

    @property
    def size(self) -> int:
        return self.entry.size

    def iter_bytes(self) -> Iterator[bytes]:
        """The original bytes in chunks; the checksum is checked after the last chunk
        (``ChecksumMismatch`` then, never silently wrong data). A file of at most the
        retriever's ``chunk_size`` is verified before its first byte is yielded, so a stale
        cached index is re-read instead (``EntryDeleted`` for a file deleted meanwhile)."""
        yield from self._r._stream(self.key, self.entry, self._etag, self._dictionary, self._cached)

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())


class ShardRetriever:
    """Reads files from shards in an :class:`ObjectStore`, by shard key and uid."""

    def __init__(
        self,
        store: ObjectStore,
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
        self.tail_size = tail_size
        self.bigfiles_prefix = bigfiles_prefix
        self._observer = observer
        self.coalesce_gap = coalesce_gap
        self.max_coalesced = max_coalesced
        self.chunk_size = chunk_size
        self.pipeline = RetrievalPipeline(
            store.describe,
            cache=cache,
            tail_size=tail_size,
            bigfiles_prefix=bigfiles_prefix,
            coalesce_gap=coalesce_gap,
            max_coalesced=max_coalesced,
            fetch_for=self._fetch_for,
        )

    def _notify(self, kind: str, nbytes: int) -> None:
        if self._observer is not None:
            self._observer(kind, nbytes)

    def _fetch_for(self, key: str, etag: Callable[[], str | None]) -> Fetch:
        """Bucket reads of an index used directly (``ShardIndex.lookup``), as the pipeline's."""

        def fetch(start: int, end: int) -> bytes:
            data = self.store.read_range(key, start, end, if_match=etag())
            self._notify("index", len(data))
            return data

        return fetch

    def _run(self, steps: Steps[Any]) -> Any:
        return run_steps(steps, self.store, self._observer)

    # ---- index ----

    def index(self, key: str) -> tuple[str | None, ShardIndex, bool]:
        """(etag, index, from_cache) for the shard at ``key``."""
        found: tuple[str | None, ShardIndex, bool] = self._run(self.pipeline.index(key))
        return found

    # ---- reads ----

    def stat(self, key: str, uid: str) -> IndexEntry:
        """The entry of ``uid`` (never reads the payload)."""
        entry: IndexEntry = self._run(self.pipeline.stat(key, uid))
        return entry

    def read(self, key: str, uid: str) -> bytes:
        """The original bytes of ``uid`` in the shard at ``key``, checksum verified."""
        data: bytes = self._run(self.pipeline.read(key, uid))
        return data

    def open(self, key: str, uid: str) -> OpenedFile:
        """Find ``uid`` (index only) and return a handle that streams its bytes."""
        loc: Located = self._run(self.pipeline.locate(key, uid))
        return OpenedFile(self, key, loc.entry, loc.etag, loc.index.dictionary, cached=loc.cached)

    # ---- answers without I/O (for an event loop; every None means: use the methods above) ----

    def stat_nowait(self, key: str, uid: str) -> IndexEntry | None:
        """:meth:`stat` when it needs no request to the store (the shard's index and the
        uid's bucket cached, the uid live), else None."""
        loc = self.pipeline.located_in_cache(key, uid)
        if loc is None:
            return None
        assert self.cache is not None
        self.cache.get(key)
        return loc.entry

    def read_nowait(
        self,
        key: str,
        uid: str,
        *,
        max_bytes: int = 64 * 1024,
        only_if: Callable[[IndexEntry], bool] | None = None,
    ) -> tuple[IndexEntry, bytes | None] | None:
        """(entry, original bytes) of ``uid`` when no step has to wait for I/O, else None;
        the caller then uses :meth:`read` or :meth:`open`, which do the same work with all
        their checks, retries and errors. ``only_if``: when it is false for the entry, the
        payload is not read at all and the answer is ``(entry, None)`` (an HTTP 304 or 416).

        Answers only from a cached index, for an inline entry of at most ``max_bytes``
        stored and original bytes (the decode and checksum run on the caller's thread), and
        only through a store declaring ``supports_nowait_reads`` (``LocalObjectStore``: data
        in the page cache, shard not replaced); the same ``if_match`` as :meth:`read` applies.
        Anything unusual (a miss, a tombstone, data not in memory, a checksum failure) gives
        None, and nothing is counted or reported for it; an answer counts one cache hit and,
        when the payload was read, one ``payload`` request, as :meth:`read` would.
        """
        nowait = self.store.supports_nowait_reads
        if not nowait and only_if is None:
            return None
        loc = self.pipeline.located_in_cache(key, uid)  # counts no hit: done once it answers
        if loc is None:
            return None
        etag, index, entry = loc.etag, loc.index, loc.entry
        assert self.cache is not None
        if only_if is not None and not only_if(entry):
            self.cache.get(key)
            return entry, None
        if not nowait:
            return None
        if entry.is_bigfile or entry.size > max_bytes or entry.stored_size > max_bytes:
            return None
        stored: bytes | None = b""
        if entry.stored_size:
            okey = key if entry.part == 0 else part_key(key, entry.part)
            stored = self.store.read_range_nowait(
                okey,
                entry.offset,
                entry.offset + entry.stored_size,
                if_match=etag if entry.part == 0 else None,
            )
            if stored is None:
                return None
        assert stored is not None
        if entry.codec is Codec.ZSTD_BLOCK and not _small_block(stored, max_bytes):
            return None  # a block this big is decompressed off the caller's thread
        try:
            data = decode_payload(entry, stored, index.dictionary)
        except DesFormatError:
            return None
        self.cache.get(key)
        if entry.stored_size:
            self._notify("payload", len(stored))
        return entry, data

    def _stream(
        self,
        key: str,
        entry: IndexEntry,
        etag: str | None,
        dictionary: bytes | None,
        cached: bool,
    ) -> Iterator[bytes]:
        """Decoded pieces of ``entry``. The first ``chunk_size`` bytes are held back until
        more follow or the stream ends verified, so a file that fits is checked whole before
        its first byte leaves. Until a byte has left, a failure that a stale cached index
        explains re-reads the index once, cold, and starts again (the file may have been
        deleted meanwhile: ``EntryDeleted``). Past that point a failure ends the stream with
        the error: the caller has then received only a prefix of what the store holds, never
        a complete wrong file."""
        attempt = 0
        while True:
            pieces = self._verified_pieces(key, entry, etag, dictionary)
            held: list[bytes] = []
            size = 0
            finished = False
            try:
                for piece in pieces:
                    held.append(piece)
                    size += len(piece)
                    if size > self.chunk_size:
                        break
                else:
                    finished = True
            except RETRYABLE as exc:
                if not self.pipeline.may_restart_stream(exc, attempt, cached):
                    raise
                attempt += 1
                loc: Located = self._run(self.pipeline.relocate(key, entry.uid))
                entry, etag, dictionary = loc.entry, loc.etag, loc.index.dictionary
                continue
            break
        yield from held
        if not finished:
            yield from pieces

    def _verified_pieces(
        self, key: str, entry: IndexEntry, etag: str | None, dictionary: bytes | None
    ) -> Iterator[bytes]:
        step = self.pipeline.payload_read(key, entry, etag)
        verifier = PayloadVerifier(entry, dictionary, 0 if step is None else step.end - step.start)
        if step is not None:
            got = 0
            try:
                for chunk in self.store.iter_range(
                    step.key,
                    step.start,
                    step.end,
                    if_match=step.if_match,
                    chunk_size=self.chunk_size,
                ):
                    got += len(chunk)
                    yield from verifier.pieces(chunk)
            finally:
                self._notify(step.kind, got)
        last = verifier.finish()
        if last:
            yield last

    def read_many(
        self, key: str, uids: Iterable[str]
    ) -> Iterator[tuple[str, bytes | DesFormatError]]:
        """Read several files of one shard, coalescing nearby payload ranges into single
        requests. Yields ``(uid, bytes)`` or ``(uid, error)`` per uid, in the order given."""
        wanted = list(uids)
        results: dict[str, bytes | DesFormatError] = self._run(self.pipeline.read_many(key, wanted))
        for uid in wanted:
            yield uid, results[uid]
