"""The retrieval pipeline without I/O: locate, index, payload, decompress, verify.

Each operation (:meth:`RetrievalPipeline.stat`, ``read``, ``locate``, ``read_many``) is a
generator. It yields the next request it needs (:class:`ReadTail`, :class:`ReadRange` or
:class:`Head`), is sent the answer (or has the store's error thrown into it) and finally
returns its result. It never touches a store itself, so the same steps, with the same request
budget, retries and errors, run under two drivers: :func:`run_steps` over a blocking
:class:`~des_format.ObjectStore` (``ShardRetriever``: ``des get``, the packer's checks) and
``run_steps_async`` over an :class:`~des_format.AsyncObjectStore` (``AsyncShardRetriever``:
the HTTP service on S3). Streams are driven the same way: the pipeline says which range holds
the payload (:meth:`RetrievalPipeline.payload_read`) and a :class:`PayloadVerifier` turns the
stored chunks a driver reads into checked original bytes.

Request budget: a cold read is a tail read [+ one directory read] [+ one bucket read] + one
payload read; a warm read (the uid's bucket decoded) is exactly the payload read. A cached
index can be stale (another writer appended, a delete overwrote bytes, a repack removed a part):
each shows up on the payload read (412 on the head object's If-Match, bytes failing their
checks, an object not found) and makes the read drop the cached index and look the uid up
again, cold, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._cache import IndexCache
from ._checksum import crc32
from ._codecs import Codec, StreamDecoder
from ._errors import (
    ChecksumMismatch,
    CorruptShard,
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    ObjectNotFound,
    PreconditionFailed,
)
from ._index import Fetch, ShardIndex
from ._layout import DEFAULT_BIGFILES_PREFIX, DEFAULT_TAIL_SIZE, IndexEntry, bigfile_key, part_key
from ._read_index import read_index_steps
from ._reader import check_payload, decode_payload
from ._source import ByteRange, ObjectInfo, ObjectStore, TailRead

T = TypeVar("T")

# Failures of a read under a cached index that a fresh index may explain: the shard changed
# (412), a payload that no longer decodes or matches its checksum (CorruptShard, of which
# ChecksumMismatch is a kind: a delete overwrote it), an object gone (a repack or a delete
# removed it).
RETRYABLE = (PreconditionFailed, CorruptShard, ObjectNotFound)


@dataclass(frozen=True, slots=True)
class ReadTail:
    """Read the last ``n`` bytes of ``key`` (answer: :class:`TailRead`)."""

    key: str
    n: int
    kind: str = "tail"


@dataclass(frozen=True, slots=True)
class ReadRange:
    """Read bytes ``[start, end)`` of ``key``, failing with ``PreconditionFailed`` when
    ``if_match`` is set and differs from the object's ETag (answer: ``bytes``). ``kind`` is
    what the read is for (``index``, ``payload``, ``bigfile``), as reported to observers."""

    key: str
    start: int
    end: int
    if_match: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class Head:
    """Ask for the size and ETag of ``key`` (answer: :class:`ObjectInfo`); reported as an
    ``index`` request of 0 bytes."""

    key: str
    kind: str = "index"


Step = ReadTail | ReadRange | Head
Steps = Generator[Step, Any, T]
Observer = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class Located:
    """Where a live uid's bytes are: its entry in ``index`` (read with ETag ``etag``)."""

    etag: str | None
    index: ShardIndex
    entry: IndexEntry
    cached: bool


def answer_size(step: Step, answer: object) -> int:
    """The byte count an observer is told for ``answer`` to ``step``."""
    if isinstance(answer, bytes | bytearray | memoryview):
        return len(answer)
    if isinstance(answer, TailRead):
        return len(answer.data)
    return 0


def run_steps(steps: Steps[T], store: ObjectStore, observer: Observer | None = None) -> T:
    """Drive ``steps`` with a blocking :class:`~des_format.ObjectStore`; each answered
    request is reported to ``observer(kind, bytes)``."""
    answer: Any = None
    try:
        step = steps.send(None)
        while True:
            try:
                if type(step) is ReadRange:
                    answer = store.read_range(
                        step.key, step.start, step.end, if_match=step.if_match
                    )
                elif type(step) is ReadTail:
                    answer = store.read_tail(step.key, step.n)
                else:
                    answer = store.head(step.key)
            except Exception as exc:  # noqa: BLE001 - the pipeline decides what each error means
                step = steps.throw(exc)
                continue
            if observer is not None:
                observer(step.kind, answer_size(step, answer))
            step = steps.send(answer)
    except StopIteration as done:
        result: T = done.value
        return result


class PayloadVerifier:
    """Stored chunks of one entry in, checked original bytes out (no I/O).

    :meth:`feed` takes each stored chunk as read and returns the original bytes it gives;
    :meth:`finish` returns what is left (a solid block member comes out whole here) after
    checking the stored length, the frame's end, the size, the CRC-32 or big file's SHA-256.
    """

    def __init__(self, entry: IndexEntry, dictionary: bytes | None, stored_length: int) -> None:
        self.entry = entry
        self._dictionary = dictionary
        self._want = stored_length
        self._got = 0
        self._block: list[bytes] | None = None
        self._decoder: StreamDecoder | None = None
        self._crc = 0
        self._sha: Any = None
        if entry.codec is Codec.ZSTD_BLOCK and not entry.is_bigfile:
            self._block = []
        else:
            codec = Codec.NONE if entry.is_bigfile else entry.codec
            self._decoder = StreamDecoder(codec, entry.size, uid=entry.uid, dictionary=dictionary)
            if entry.checksum is None and entry.is_bigfile:
                self._sha = hashlib.sha256()

    def feed(self, chunk: bytes) -> bytes:
        """The original bytes of one stored chunk (:meth:`pieces`, joined)."""
        return b"".join(self.pieces(chunk))

    def pieces(self, chunk: bytes) -> Iterator[bytes]:
        """The original bytes of one stored chunk in bounded pieces, decompressed as they are
        asked for (``StreamDecoder.pieces``); iterate to the end before the next chunk."""
        self._got += len(chunk)
        if self._block is not None:
            self._block.append(chunk)
            return
        assert self._decoder is not None
        for piece in self._decoder.pieces(chunk):
            self._crc = crc32(piece, self._crc)
            if self._sha is not None:
                self._sha.update(piece)
            yield piece

    def finish(self) -> bytes:
        entry = self.entry
        if self._got != self._want:
            raise CorruptShard(f"{entry.uid!r}: short read ({self._got} of {self._want} bytes)")
        if self._block is not None:
            # a solid block (at most MAX_BLOCK_SIZE) is decoded whole, then the member cut out
            return decode_payload(entry, b"".join(self._block), self._dictionary)
        assert self._decoder is not None
        self._decoder.finish()
        if entry.checksum is not None and self._crc != entry.checksum:
            raise ChecksumMismatch(f"checksum mismatch for {entry.uid!r}")
        if self._sha is not None and self._sha.hexdigest() != entry.bigfile_hash:
            raise ChecksumMismatch(f"sha256 mismatch for big file {entry.uid!r}")
        return b""


@dataclass(frozen=True, slots=True)
class CoalescedRange:
    """One read covering several requested ranges; ``members`` index the input ranges."""

    start: int
    end: int
    members: tuple[int, ...]


def plan_coalesced_ranges(
    ranges: Sequence[ByteRange | tuple[int, int]],
    max_gap: int,
    max_span: int | None = None,
) -> list[CoalescedRange]:
    """Merge ranges whose gap is at most ``max_gap`` bytes into single reads (pure).

    Ranges are taken in order of start; a merged read never exceeds ``max_span`` bytes unless
    one input range alone does. Empty ranges ride along with their neighbours, and so does a
    range inside the read being built (the members of one solid block share one range, so
    they are read once even when the block alone exceeds ``max_span``).
    """
    spans: list[tuple[int, int, int]] = []
    for i, r in enumerate(ranges):
        start, end = (r.start, r.end) if isinstance(r, ByteRange) else r
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        spans.append((start, end, i))
    spans.sort()
    out: list[CoalescedRange] = []
    cur_start = cur_end = 0
    members: list[int] = []
    for start, end, i in spans:
        if members and start - cur_end <= max_gap:
            new_end = max(cur_end, end)
            if max_span is None or new_end == cur_end or new_end - cur_start <= max_span:
                cur_end = new_end
                members.append(i)
                continue
        if members:
            out.append(CoalescedRange(cur_start, cur_end, tuple(members)))
        cur_start, cur_end, members = start, end, [i]
    if members:
        out.append(CoalescedRange(cur_start, cur_end, tuple(members)))
    return out


class RetrievalPipeline:
    """The steps of reading files from shards, by shard key and uid (see the module docs).

    ``describe(key)`` names a location in messages; ``fetch_for(key, etag)``, when given, is
    kept by each index read cold for its own later bucket reads (a blocking driver's way to
    let callers use ``ShardIndex.lookup`` directly); the pipeline itself reads buckets as
    steps.
    """

    def __init__(
        self,
        describe: Callable[[str], str],
        *,
        cache: IndexCache | None = None,
        tail_size: int = DEFAULT_TAIL_SIZE,
        bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
        coalesce_gap: int = 64 * 1024,
        max_coalesced: int = 8 * 1024 * 1024,
        fetch_for: Callable[[str, Callable[[], str | None]], Fetch] | None = None,
    ) -> None:
        self.describe = describe
        self.cache = cache
        self.tail_size = tail_size
        self.bigfiles_prefix = bigfiles_prefix
        self.coalesce_gap = coalesce_gap
        self.max_coalesced = max_coalesced
        self.fetch_for = fetch_for

    # ---- index ----

    def cold_index(self, key: str) -> Steps[tuple[str | None, ShardIndex]]:
        """Read the index of ``key`` from the store (tail [+ directory]) and cache it."""
        etag: str | None = None
        fetch = self.fetch_for(key, lambda: etag) if self.fetch_for is not None else None
        inner = read_index_steps(tail_size=self.tail_size, fetch=fetch)
        answer: Any = None
        failure: Exception | None = None
        try:
            while True:
                request = inner.send(answer) if failure is None else inner.throw(failure)
                failure = None
                step: Step
                if isinstance(request, int):
                    step = ReadTail(key, request)
                else:
                    step = ReadRange(key, request[0], request[1], etag, "index")
                try:
                    answer = yield step
                except Exception as exc:  # noqa: BLE001 - handed to the index steps
                    failure = exc
                    continue
                if isinstance(answer, TailRead):
                    etag = answer.etag
        except StopIteration as done:
            index: ShardIndex = done.value
        if self.cache is not None:
            self.cache.put(key, index.etag, index)
        return index.etag, index

    def index(self, key: str) -> Steps[tuple[str | None, ShardIndex, bool]]:
        """(etag, index, from_cache) for the shard at ``key``."""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit[0], hit[1], True
        etag, index = yield from self.cold_index(key)
        return etag, index, False

    def entry(self, key: str, index: ShardIndex, uid: str) -> Steps[IndexEntry]:
        """The live entry of ``uid`` (one bucket read when its bucket is not decoded yet)."""
        before = index.nbytes
        need = index.bucket_to_load(uid)
        if need is not None:
            bucket, start, end = need
            raw = yield ReadRange(key, start, end, index.etag, "index")
            index.load_bucket(bucket, raw)
        entry = index.lookup(uid)
        if self.cache is not None and index.nbytes != before:
            self.cache.resize(key, index)
        if entry is None:
            raise EntryNotFound(uid, self.describe(key))
        if entry.deleted:
            raise EntryDeleted(uid, self.describe(key))
        return entry

    def drop(self, key: str, index: ShardIndex | None = None) -> None:
        if self.cache is not None:
            self.cache.discard(key, index)

    def unchanged(self, key: str, etag: str | None) -> Steps[bool]:
        """Whether the object still has ``etag`` (one HEAD request)."""
        if etag is None:
            return False
        info: ObjectInfo = yield Head(key)
        return info.etag == etag

    def locate(self, key: str, uid: str) -> Steps[Located]:
        """Find a live ``uid``. A miss under a cached index is confirmed with a HEAD request
        (the shard may have been appended to); other errors under a cached index drop it and
        re-read it once."""
        etag, index, cached = yield from self.index(key)
        if not cached:
            entry = yield from self.entry(key, index, uid)
            return Located(etag, index, entry, False)
        try:
            entry = yield from self.entry(key, index, uid)
            return Located(etag, index, entry, True)
        except (EntryNotFound, EntryDeleted) as exc:
            if (yield from self.unchanged(key, etag)):
                raise exc from None
        except RETRYABLE:
            pass
        return (yield from self.relocate(key, uid, index))

    def located_in_cache(self, key: str, uid: str) -> Located | None:
        """:meth:`locate` answered without a request: the index of ``key`` cached and the
        bucket of ``uid`` in memory, ``uid`` live; None for anything else (a miss or a
        tombstone needs a HEAD, a bucket not decoded needs a read, a corrupt bucket an
        error: :meth:`locate` decides those). Counts no cache hit or miss: the caller
        counts a hit with ``cache.get`` once it answers."""
        cache = self.cache
        if cache is None:
            return None
        hit = cache.peek(key)
        if hit is None:
            return None
        etag, index = hit
        before = index.nbytes
        try:
            loaded, entry = index.lookup_loaded(uid)
        except DesFormatError:  # a corrupt bucket
            return None
        if not loaded:
            return None
        if index.nbytes != before:  # as entry(): a bucket decoded from the area
            cache.resize(key, index)
        if entry is None or entry.deleted:
            return None
        return Located(etag, index, entry, True)

    def relocate(self, key: str, uid: str, stale: ShardIndex | None = None) -> Steps[Located]:
        """Drop the cached index of ``key`` (only ``stale``, when given) and find ``uid`` in
        a fresh one."""
        self.drop(key, stale)
        etag, index = yield from self.cold_index(key)
        entry = yield from self.entry(key, index, uid)
        return Located(etag, index, entry, False)

    # ---- payloads ----

    def payload_read(self, key: str, entry: IndexEntry, etag: str | None) -> ReadRange | None:
        """The read holding the stored bytes of ``entry`` (None: it has none), If-Match on the
        shard's head object."""
        if entry.is_bigfile:
            assert entry.bigfile_hash is not None
            if entry.size == 0:
                return None
            bkey = bigfile_key(key, entry.bigfile_hash, self.bigfiles_prefix)
            return ReadRange(bkey, 0, entry.size, None, "bigfile")
        if entry.stored_size == 0:
            return None
        okey = key if entry.part == 0 else part_key(key, entry.part)
        match = etag if entry.part == 0 else None
        return ReadRange(okey, entry.offset, entry.offset + entry.stored_size, match, "payload")

    def read_entry(
        self, key: str, entry: IndexEntry, etag: str | None, dictionary: bytes | None = None
    ) -> Steps[bytes]:
        """The verified original bytes of ``entry`` (one read at most)."""
        step = self.payload_read(key, entry, etag)
        stored: bytes = b"" if step is None else (yield step)
        return self.decode_entry(entry, stored, dictionary)

    @staticmethod
    def decode_entry(entry: IndexEntry, stored: bytes, dictionary: bytes | None) -> bytes:
        """The verified original bytes of ``entry`` from the answer to its
        :meth:`payload_read` (``b""`` when there was none)."""
        if entry.is_bigfile:
            check_payload(entry, stored)
            if (
                entry.checksum is not None
                and hashlib.sha256(stored).hexdigest() != entry.bigfile_hash
            ):
                raise ChecksumMismatch(f"sha256 mismatch for big file {entry.uid!r}")
            return stored
        return decode_payload(entry, stored, dictionary)

    def stat(self, key: str, uid: str) -> Steps[IndexEntry]:
        """The entry of ``uid`` (never reads the payload)."""
        return (yield from self.locate(key, uid)).entry

    def read(self, key: str, uid: str) -> Steps[bytes]:
        """The original bytes of ``uid`` in the shard at ``key``, checksum verified."""
        loc = yield from self.locate(key, uid)
        try:
            return (yield from self.read_entry(key, loc.entry, loc.etag, loc.index.dictionary))
        except RETRYABLE as exc:
            if not loc.cached and not isinstance(exc, PreconditionFailed):
                raise
        loc = yield from self.relocate(key, uid, loc.index)
        return (yield from self.read_entry(key, loc.entry, loc.etag, loc.index.dictionary))

    @staticmethod
    def may_restart_stream(exc: BaseException, attempt: int, cached: bool) -> bool:
        """Whether a stream that failed with ``exc`` before any byte left may start again
        under a fresh index (once; only for what a stale cached index explains)."""
        return (
            isinstance(exc, RETRYABLE)
            and not attempt
            and (cached or isinstance(exc, PreconditionFailed | ObjectNotFound))
        )

    # ---- several files of one shard ----

    def read_many(self, key: str, uids: Sequence[str]) -> Steps[dict[str, bytes | DesFormatError]]:
        """Read several files of one shard, coalescing nearby payload ranges into single
        requests: ``uid -> bytes or error`` for each distinct uid."""
        etag, index, cached = yield from self.index(key)
        try:
            results = yield from self._read_many(key, index, etag, uids)
            errors = [v for v in results.values() if isinstance(v, DesFormatError)]
            stale = cached and (
                # bytes a delete overwrote, an object removed: the cached index is stale
                any(isinstance(v, CorruptShard | ObjectNotFound) for v in errors)
                or (
                    any(isinstance(v, EntryNotFound | EntryDeleted) for v in errors)
                    and not (yield from self.unchanged(key, etag))
                )
            )
        except (PreconditionFailed, ObjectNotFound):
            if not cached:
                raise
            stale = True
        if stale:
            self.drop(key, index)
            etag, index = yield from self.cold_index(key)
            results = yield from self._read_many(key, index, etag, uids)
        return results

    def _read_many(
        self, key: str, index: ShardIndex, etag: str | None, uids: Sequence[str]
    ) -> Steps[dict[str, bytes | DesFormatError]]:
        results: dict[str, bytes | DesFormatError] = {}
        by_part: dict[int, list[IndexEntry]] = {}
        blocks: dict[tuple[int, int], bytes] = {}  # solid blocks decoded once per call
        for uid in dict.fromkeys(uids):
            try:
                entry = yield from self.entry(key, index, uid)
            except (EntryNotFound, EntryDeleted) as exc:
                results[uid] = exc
                continue
            if entry.is_bigfile or entry.stored_size == 0:
                try:
                    results[uid] = yield from self.read_entry(key, entry, etag, index.dictionary)
                except PreconditionFailed:
                    raise
                except DesFormatError as exc:
                    results[uid] = exc
                continue
            by_part.setdefault(entry.part, []).append(entry)
        for part, entries in sorted(by_part.items()):
            okey = key if part == 0 else part_key(key, part)
            plan = plan_coalesced_ranges(
                [(e.offset, e.offset + e.stored_size) for e in entries],
                self.coalesce_gap,
                self.max_coalesced,
            )
            for span in plan:
                try:
                    blob = yield ReadRange(
                        okey, span.start, span.end, etag if part == 0 else None, "payload"
                    )
                except PreconditionFailed:
                    raise
                except DesFormatError as exc:
                    for i in span.members:
                        results[entries[i].uid] = exc
                    continue
                for i in span.members:
                    e = entries[i]
                    rel = e.offset - span.start
                    try:
                        results[e.uid] = decode_payload(
                            e, blob[rel : rel + e.stored_size], index.dictionary, blocks
                        )
                    except DesFormatError as exc:
                        results[e.uid] = exc
        return results
