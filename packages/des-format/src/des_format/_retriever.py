"""The one retrieval pipeline: index (cached by key + ETag) -> payload range -> decode -> verify.

Every backend (local directory, S3, multi-zone S3) is an :class:`ObjectStore`; this module never
knows which. Request budget: a cold read is a tail read [+ one bucket read] + one payload read;
a warm read (the uid's bucket already decoded) is exactly the payload read.

A cached index can be stale: another writer appended to the shard, a delete overwrote the bytes
of a deleted entry in a continuation part, or a repack or a delete removed a part or big-file
object. Each shows up on the payload read itself (412 on the head object's If-Match, bytes that
fail to decode or to match their CRC-32, an object not found), and each makes the read drop the
cached index and look the uid up again, cold, once. No read costs a request more for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ._cache import IndexCache
from ._checksum import crc32
from ._codecs import Codec, iter_decompress
from ._errors import (
    ChecksumMismatch,
    CorruptShard,
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    ObjectNotFound,
    PreconditionFailed,
)
from ._index import ShardIndex
from ._layout import (
    DEFAULT_BIGFILES_PREFIX,
    DEFAULT_TAIL_SIZE,
    IndexEntry,
    bigfile_key,
    part_key,
)
from ._read_index import read_index
from ._reader import check_payload, decode_payload
from ._source import DEFAULT_CHUNK_SIZE, ByteRange, ObjectStore, StoreSource

Observer = Callable[[str, int], None]
# Failures of a read under a cached index that a fresh index may explain: the shard changed
# (412), a payload that no longer decodes or matches its checksum (CorruptShard, of which
# ChecksumMismatch is a kind: a delete overwrote it), an object gone (a repack or a delete
# removed it).
_RETRYABLE = (PreconditionFailed, CorruptShard, ObjectNotFound)


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
        yield from self._r._stream(
            self.key, self.entry, self._etag, self._dictionary, cached=self._cached
        )

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

    def _notify(self, kind: str, nbytes: int) -> None:
        if self._observer is not None:
            self._observer(kind, nbytes)

    def _notify_read(self, kind: str, nbytes: int) -> None:
        """A request an index read made: its tail, or a range of the index."""
        self._notify("tail" if kind == "tail" else "index", nbytes)

    # ---- index ----

    def _cold_index(self, key: str) -> tuple[str | None, ShardIndex]:
        src = StoreSource(self.store, key, on_read=self._notify_read)
        index = read_index(src, tail_size=self.tail_size)
        if self.cache is not None:
            self.cache.put(key, index.etag, index)
        return index.etag, index

    def index(self, key: str) -> tuple[str | None, ShardIndex, bool]:
        """(etag, index, from_cache) for the shard at ``key``."""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit[0], hit[1], True
        etag, index = self._cold_index(key)
        return etag, index, False

    def _entry(self, key: str, index: ShardIndex, uid: str) -> IndexEntry:
        before = index.nbytes
        entry = index.lookup(uid)
        if self.cache is not None and index.nbytes != before:
            self.cache.resize(key, index)
        if entry is None:
            raise EntryNotFound(uid, self.store.describe(key))
        if entry.deleted:
            raise EntryDeleted(uid, self.store.describe(key))
        return entry

    def _drop(self, key: str, index: ShardIndex) -> None:
        if self.cache is not None:
            self.cache.discard(key, index)

    # ---- reads ----

    def _unchanged(self, key: str, etag: str | None) -> bool:
        """Whether the object still has ``etag`` (one HEAD request, reported as "index")."""
        if etag is None:
            return False
        info = self.store.head(key)
        self._notify("index", 0)
        return info.etag == etag

    def _locate(self, key: str, uid: str) -> tuple[str | None, ShardIndex, IndexEntry, bool]:
        """(etag, index, entry, from_cache). A miss under a cached index is confirmed with a
        HEAD request (the shard may have been appended to); other errors under a cached
        index drop it and re-read it once."""
        etag, index, cached = self.index(key)
        if not cached:
            return etag, index, self._entry(key, index, uid), False
        try:
            return etag, index, self._entry(key, index, uid), True
        except (EntryNotFound, EntryDeleted):
            if self._unchanged(key, etag):
                raise
        except _RETRYABLE:
            pass
        self._drop(key, index)
        etag, index = self._cold_index(key)
        return etag, index, self._entry(key, index, uid), False

    def stat(self, key: str, uid: str) -> IndexEntry:
        """The entry of ``uid`` (never reads the payload)."""
        return self._locate(key, uid)[2]

    def read(self, key: str, uid: str) -> bytes:
        """The original bytes of ``uid`` in the shard at ``key``, checksum verified."""
        etag, index, entry, cached = self._locate(key, uid)
        try:
            return self._read_entry(key, entry, etag, index.dictionary)
        except _RETRYABLE as exc:
            if not cached and not isinstance(exc, PreconditionFailed):
                raise
            self._drop(key, index)
            etag, index = self._cold_index(key)
            return self._read_entry(key, self._entry(key, index, uid), etag, index.dictionary)

    def _read_entry(
        self, key: str, entry: IndexEntry, etag: str | None, dictionary: bytes | None = None
    ) -> bytes:
        if entry.is_bigfile:
            assert entry.bigfile_hash is not None
            if entry.size == 0:
                return check_payload(entry, b"")
            bkey = bigfile_key(key, entry.bigfile_hash, self.bigfiles_prefix)
            data = self.store.read_range(bkey, 0, entry.size)
            self._notify("bigfile", len(data))
            check_payload(entry, data)
            if (
                entry.checksum is not None
                and hashlib.sha256(data).hexdigest() != entry.bigfile_hash
            ):
                raise ChecksumMismatch(f"sha256 mismatch for big file {entry.uid!r}")
            return data
        if entry.stored_size == 0:
            return decode_payload(entry, b"")
        okey = key if entry.part == 0 else part_key(key, entry.part)
        stored = self.store.read_range(
            okey,
            entry.offset,
            entry.offset + entry.stored_size,
            if_match=etag if entry.part == 0 else None,
        )
        self._notify("payload", len(stored))
        return decode_payload(entry, stored, dictionary)

    def open(self, key: str, uid: str) -> OpenedFile:
        """Find ``uid`` (index only) and return a handle that streams its bytes."""
        etag, index, entry, cached = self._locate(key, uid)
        return OpenedFile(self, key, entry, etag, index.dictionary, cached=cached)

    # ---- answers without I/O (for an event loop; every None means: use the methods above) ----

    def _cached_entry(self, key: str, uid: str) -> tuple[str | None, ShardIndex, IndexEntry] | None:
        """(etag, index, entry) of a live ``uid`` from a cached index whose bucket of ``uid``
        is in memory, else None. Counts no cache hit or miss (the caller counts a hit with
        ``cache.get`` once it answers, so the counters read as if ``stat``/``read`` ran)."""
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
        if index.nbytes != before:  # as _entry: a bucket decoded from the area
            cache.resize(key, index)
        if entry is None or entry.deleted:  # missing or deleted: needs a HEAD
            return None
        return etag, index, entry

    def stat_nowait(self, key: str, uid: str) -> IndexEntry | None:
        """:meth:`stat` when it needs no request to the store (the shard's index and the
        uid's bucket cached, the uid live), else None."""
        found = self._cached_entry(key, uid)
        if found is None:
            return None
        assert self.cache is not None
        self.cache.get(key)
        return found[2]

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
        only through a store with ``read_range_nowait`` (``LocalObjectStore``: data in the
        page cache, shard not replaced); the same ``if_match`` as :meth:`read` applies.
        Anything unusual (a miss, a tombstone, data not in memory, a checksum failure) gives
        None, and nothing is counted or reported for it; an answer counts one cache hit and,
        when the payload was read, one ``payload`` request, as :meth:`read` would.
        """
        reader = getattr(self.store, "read_range_nowait", None)
        if reader is None and only_if is None:
            return None
        found = self._cached_entry(key, uid)
        if found is None:
            return None
        etag, index, entry = found
        assert self.cache is not None
        if only_if is not None and not only_if(entry):
            self.cache.get(key)
            return entry, None
        if reader is None:
            return None
        if entry.is_bigfile or entry.size > max_bytes or entry.stored_size > max_bytes:
            return None
        stored: bytes | None = b""
        if entry.stored_size:
            okey = key if entry.part == 0 else part_key(key, entry.part)
            stored = reader(
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
        dictionary: bytes | None = None,
        *,
        cached: bool = True,
    ) -> Iterator[bytes]:
        """Decoded pieces of ``entry``. The first ``chunk_size`` bytes are held back until
        more follow or the stream ends verified, so a file that fits is checked whole before
        its first byte leaves. Until a byte has left, a failure that a stale cached index
        explains (``_RETRYABLE``) re-reads the index once, cold, and starts again (the file
        may have been deleted meanwhile: ``EntryDeleted``). Past that point a failure ends
        the stream with the error: the caller has then received only a prefix of what the
        store holds, never a complete wrong file."""
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
            except _RETRYABLE as exc:
                if attempt or not (cached or isinstance(exc, (PreconditionFailed, ObjectNotFound))):
                    raise
                attempt += 1
                if self.cache is not None:
                    self.cache.discard(key)
                etag, index = self._cold_index(key)
                entry = self._entry(key, index, entry.uid)
                dictionary = index.dictionary
                continue
            break
        yield from held
        if not finished:
            yield from pieces

    def _verified_pieces(
        self, key: str, entry: IndexEntry, etag: str | None, dictionary: bytes | None
    ) -> Iterator[bytes]:
        chunks = self._stored_chunks(key, entry, etag)
        if entry.codec is Codec.ZSTD_BLOCK and not entry.is_bigfile:
            # a solid block (at most MAX_BLOCK_SIZE) is decoded whole, then the member cut out
            yield decode_payload(entry, b"".join(chunks), dictionary)
            return
        crc = 0
        sha = hashlib.sha256() if entry.checksum is None and entry.is_bigfile else None
        codec = Codec.NONE if entry.is_bigfile else entry.codec
        total = 0
        for piece in iter_decompress(
            codec, chunks, entry.size, uid=entry.uid, dictionary=dictionary
        ):
            crc = crc32(piece, crc)
            if sha is not None:
                sha.update(piece)
            total += len(piece)
            yield piece
        if total != entry.size:
            raise CorruptShard(f"{entry.uid!r}: got {total} bytes, index says {entry.size}")
        if entry.checksum is not None and crc != entry.checksum:
            raise ChecksumMismatch(f"checksum mismatch for {entry.uid!r}")
        if sha is not None and sha.hexdigest() != entry.bigfile_hash:
            raise ChecksumMismatch(f"sha256 mismatch for big file {entry.uid!r}")

    def _stored_chunks(self, key: str, entry: IndexEntry, etag: str | None) -> Iterator[bytes]:
        if entry.is_bigfile:
            assert entry.bigfile_hash is not None
            okey, start, end, match, kind = (
                bigfile_key(key, entry.bigfile_hash, self.bigfiles_prefix),
                0,
                entry.size,
                None,
                "bigfile",
            )
        else:
            okey = key if entry.part == 0 else part_key(key, entry.part)
            start, end = entry.offset, entry.offset + entry.stored_size
            match, kind = (etag if entry.part == 0 else None), "payload"
        if end == start:
            return
        got = 0
        try:
            for chunk in self.store.iter_range(
                okey, start, end, if_match=match, chunk_size=self.chunk_size
            ):
                got += len(chunk)
                yield chunk
        finally:
            self._notify(kind, got)
        if got != end - start:
            raise CorruptShard(f"{entry.uid!r}: short read ({got} of {end - start} bytes)")

    def read_many(
        self, key: str, uids: Iterable[str]
    ) -> Iterator[tuple[str, bytes | DesFormatError]]:
        """Read several files of one shard, coalescing nearby payload ranges into single
        requests. Yields ``(uid, bytes)`` or ``(uid, error)`` per uid, in the order given."""
        wanted = list(uids)
        etag, index, cached = self.index(key)
        try:
            results = self._read_many(key, index, etag, wanted)
            errors = [v for v in results.values() if isinstance(v, DesFormatError)]
            stale = cached and (
                # bytes a delete overwrote, an object removed: the cached index is stale
                any(isinstance(v, (CorruptShard, ObjectNotFound)) for v in errors)
                or (
                    any(isinstance(v, (EntryNotFound, EntryDeleted)) for v in errors)
                    and not self._unchanged(key, etag)
                )
            )
        except (PreconditionFailed, ObjectNotFound):
            if not cached:
                raise
            stale = True
        if stale:
            self._drop(key, index)
            etag, index = self._cold_index(key)
            results = self._read_many(key, index, etag, wanted)
        for uid in wanted:
            yield uid, results[uid]

    def _read_many(
        self, key: str, index: ShardIndex, etag: str | None, uids: list[str]
    ) -> dict[str, bytes | DesFormatError]:
        results: dict[str, bytes | DesFormatError] = {}
        by_part: dict[int, list[IndexEntry]] = {}
        blocks: dict[tuple[int, int], bytes] = {}  # solid blocks decoded once per call
        for uid in dict.fromkeys(uids):
            try:
                entry = self._entry(key, index, uid)
            except (EntryNotFound, EntryDeleted) as exc:
                results[uid] = exc
                continue
            if entry.is_bigfile or entry.stored_size == 0:
                try:
                    results[uid] = self._read_entry(key, entry, etag, index.dictionary)
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
                    blob = self.store.read_range(
                        okey, span.start, span.end, if_match=etag if part == 0 else None
                    )
                except PreconditionFailed:
                    raise
                except DesFormatError as exc:
                    for i in span.members:
                        results[entries[i].uid] = exc
                    continue
                self._notify("payload", len(blob))
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
