"""Reading back files of one shard, each checked as a reader checks it, in as few requests as
the shard allows: what a writer's caller does before it trusts what it wrote (des-migrate's
verify step).

One suffix read of up to ``window`` bytes (8 MiB by default) brings the footer, the index and,
for a shard no larger than the window, every payload: a shard written a moment ago is checked
with that one request. A larger shard costs at most one more read for the rest of its index,
then coalesced reads of the payloads outside the window (as ``ShardRetriever.read_many``).
Continuation parts and big files are read from their own objects.

Each file is decoded and checked against its index entry exactly as the retrieval pipeline
does (``decode_payload``: stored length, decompression, length and CRC-32 of the original
bytes; big files are streamed through ``OpenedFile``: length, CRC-32 and SHA-256).
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._checksum import crc32
from ._codecs import Codec, _module, _zstd_decompressor
from ._errors import (
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from ._index import ShardIndex
from ._layout import DEFAULT_BIGFILES_PREFIX, IndexEntry, part_key
from ._read_index import read_index
from ._reader import decode_payload
from ._retriever import OpenedFile, ShardRetriever, plan_coalesced_ranges
from ._source import ObjectStore, TailRead

#: Bytes of the first (suffix) read of :func:`verify_files`: a shard up to this size is
#: checked with one request.
DEFAULT_VERIFY_WINDOW = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileCheck:
    """What reading one file back found.

    ``error`` is None when the file was found, live, and its bytes matched its index entry
    (``entry.size`` is then the length of the bytes read). ``crc32`` is the CRC-32 of those
    bytes; ``digest`` their hex digest in the algorithm asked for (None when none was).
    """

    uid: str
    entry: IndexEntry | None = None
    error: DesFormatError | None = None
    crc32: int | None = None
    digest: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def verify_files(
    store: ObjectStore,
    key: str,
    uids: Iterable[str],
    *,
    digest: str | None = None,
    window: int = DEFAULT_VERIFY_WINDOW,
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
    coalesce_gap: int = 64 * 1024,
    max_coalesced: int = 8 * 1024 * 1024,
) -> dict[str, FileCheck]:
    """Read back the files ``uids`` of the shard at ``key`` and check each one.

    Returns a :class:`FileCheck` per uid, in the order given. A file that is missing, deleted,
    or whose bytes do not match its entry gets its error there (``EntryNotFound``,
    ``EntryDeleted``, ``ChecksumMismatch``, ``CorruptShard``, or the store's error for its part
    or big-file object). Problems with the shard as a whole raise: the object is missing, its
    footer or index is corrupt, or the store is unavailable. ``digest``: a ``hashlib`` name, or
    ``"crc32"`` (the checked CRC-32 as 8 hex digits, no second pass over the bytes).

    The object is read as one snapshot: reads after the first carry ``If-Match`` with its ETag,
    and if the shard was replaced meanwhile (an append elsewhere) the whole check starts over
    once.
    """
    if window < 64:
        raise ValueError(f"window must be at least 64 bytes, got {window}")
    if digest is not None and digest != "crc32":
        hashlib.new(digest)  # an unknown name fails here, before any read
    wanted = list(dict.fromkeys(uids))

    def attempt() -> dict[str, FileCheck]:
        return _verify(
            store,
            key,
            wanted,
            digest=digest,
            window=window,
            bigfiles_prefix=bigfiles_prefix,
            coalesce_gap=coalesce_gap,
            max_coalesced=max_coalesced,
        )

    try:
        return attempt()
    except PreconditionFailed:  # replaced while it was read (an append elsewhere): once more
        return attempt()


class _Window:
    """A :class:`ByteSource` view of one object whose bytes ``[start, size)`` are in memory;
    reads before ``start`` go to the store with ``If-Match`` (the snapshot's ETag)."""

    def __init__(self, store: ObjectStore, key: str, tail: TailRead) -> None:
        self._store = store
        self._key = key
        self.data = tail.data
        self.size = tail.object_size
        self.start = tail.object_size - len(tail.data)
        self.etag = tail.etag

    def read_tail(self, n: int) -> TailRead:
        data = self.data if n >= len(self.data) else self.data[len(self.data) - n :]
        return TailRead(data, self.size, self.etag)

    def read_range(self, start: int, end: int) -> bytes:
        if start < 0 or end < start or end > self.size:
            raise RangeNotSatisfiable(
                f"range [{start}, {end}) outside object of {self.size} bytes", key=self._key
            )
        if start >= self.start:
            return self.data[start - self.start : end - self.start]
        return self._store.read_range(self._key, start, end, if_match=self.etag)

    def close(self) -> None:
        """Nothing to release: the store keeps its own connections."""

    def extend(self, start: int) -> None:
        """Hold ``[start, size)`` in memory (one read of the missing bytes)."""
        if start < self.start:
            more = self._store.read_range(self._key, start, self.start, if_match=self.etag)
            if len(more) != self.start - start:
                raise RangeNotSatisfiable(f"short read of {self._key}", key=self._key)
            self.data = more + self.data
            self.start = start


def _verify(
    store: ObjectStore,
    key: str,
    wanted: list[str],
    *,
    digest: str | None,
    window: int,
    bigfiles_prefix: str,
    coalesce_gap: int,
    max_coalesced: int,
) -> dict[str, FileCheck]:
    win = _Window(store, key, store.read_tail(key, window))
    index = read_index(win, tail_size=max(len(win.data), 64))
    if not index.is_legacy and index.index_offset < win.start:
        win.extend(index.index_offset)  # every bucket lookup is then answered from memory
    checks: dict[str, FileCheck] = {}
    outside: dict[int, list[IndexEntry]] = {}
    inline: list[tuple[IndexEntry, bytes]] = []
    data, start = win.data, win.start
    for uid in wanted:
        entry = index.lookup(uid)
        if entry is None:
            checks[uid] = FileCheck(uid, error=EntryNotFound(uid, store.describe(key)))
        elif entry.deleted:
            checks[uid] = FileCheck(uid, entry, EntryDeleted(uid, store.describe(key)))
        elif entry.is_bigfile:
            checks[uid] = _check_bigfile(
                store, key, entry, index, bigfiles_prefix=bigfiles_prefix, digest=digest
            )
        elif entry.stored_size == 0:
            inline.append((entry, b""))
        elif entry.part == 0 and entry.offset >= start:
            rel = entry.offset - start
            inline.append((entry, data[rel : rel + entry.stored_size]))
        else:
            outside.setdefault(entry.part, []).append(entry)
    for check in _check_inline_many(inline, index, digest):
        checks[check.uid] = check
    for part, entries in sorted(outside.items()):
        okey = key if part == 0 else part_key(key, part)
        plan = plan_coalesced_ranges(
            [(e.offset, e.offset + e.stored_size) for e in entries], coalesce_gap, max_coalesced
        )
        for span in plan:
            try:
                blob = store.read_range(
                    okey, span.start, span.end, if_match=win.etag if part == 0 else None
                )
            except (PreconditionFailed, StorageUnavailable):
                raise
            except DesFormatError as exc:
                for i in span.members:
                    checks[entries[i].uid] = FileCheck(entries[i].uid, entries[i], exc)
                continue
            items = []
            for i in span.members:
                e = entries[i]
                rel = e.offset - span.start
                items.append((e, blob[rel : rel + e.stored_size]))
            for check in _check_inline_many(items, index, digest):
                checks[check.uid] = check
    return {uid: checks[uid] for uid in wanted}


#: Original bytes decompressed in one call by :func:`_check_inline_many` (at most).
_BULK_BYTES = 4 * 1024 * 1024


def _check_inline_many(
    items: list[tuple[IndexEntry, bytes]], index: ShardIndex, digest: str | None
) -> list[FileCheck]:
    """:func:`_check_inline` for many entries. zstd payloads go through one
    ``multi_decompress_to_buffer`` call per group of up to 4 MiB of output instead of one call
    per payload (fewer GIL hand-overs when threads compete); their bytes are then checked
    against the entries here, and any group or entry that does not check out is decoded again
    alone by ``decode_payload``, so its error is the one a reader would raise."""
    out: list[FileCheck] = []
    groups: dict[Codec, list[tuple[IndexEntry, bytes]]] = {}
    blocks: dict[tuple[int, int], bytes] = {}  # solid blocks, decoded once for all members
    for entry, stored in items:
        codec = entry.codec
        if codec is Codec.ZSTD_BLOCK:
            out.append(_check_inline(entry, stored, index, digest, blocks))
        elif (
            (codec is Codec.ZSTD or (codec is Codec.ZSTD_DICT and index.dictionary is not None))
            and 0 < entry.size <= _BULK_BYTES
            and len(stored) == entry.stored_size
        ):
            groups.setdefault(codec, []).append((entry, stored))
        else:
            out.append(_check_inline(entry, stored, index, digest))
    for codec, group in groups.items():
        dec = _zstd_decompressor(index.dictionary if codec is Codec.ZSTD_DICT else None)
        chunk: list[tuple[IndexEntry, bytes]] = []
        total = 0
        for item in group:
            if chunk and total + item[0].size > _BULK_BYTES:
                out.extend(_check_zstd_chunk(dec, chunk, index, digest))
                chunk, total = [], 0
            chunk.append(item)
            total += item[0].size
        out.extend(_check_zstd_chunk(dec, chunk, index, digest))
    return out


def _check_zstd_chunk(
    dec: Any, chunk: list[tuple[IndexEntry, bytes]], index: ShardIndex, digest: str | None
) -> list[FileCheck]:
    zstd = _module(Codec.ZSTD)
    try:
        # as decode_payload does: a frame must declare exactly the size the index gives
        if any(zstd.frame_content_size(stored) != e.size for e, stored in chunk):
            raise zstd.ZstdError("a frame does not declare the size of its entry")
        sizes = array.array("Q", [e.size for e, _ in chunk])
        segments = dec.multi_decompress_to_buffer(
            [stored for _, stored in chunk], decompressed_sizes=sizes
        )
    except zstd.ZstdError:
        return [_check_inline(e, stored, index, digest) for e, stored in chunk]
    out: list[FileCheck] = []
    for i, (entry, stored) in enumerate(chunk):
        data = segments[i]
        crc = crc32(data)
        if len(data) != entry.size or (entry.checksum is not None and crc != entry.checksum):
            out.append(_check_inline(entry, stored, index, digest))
        elif digest is None:
            out.append(FileCheck(entry.uid, entry, None, crc))
        elif digest == "crc32":
            out.append(FileCheck(entry.uid, entry, None, crc, f"{crc:08x}"))
        else:
            out.append(
                FileCheck(entry.uid, entry, None, crc, hashlib.new(digest, data).hexdigest())
            )
    return out


def _check_inline(
    entry: IndexEntry,
    stored: bytes,
    index: ShardIndex,
    digest: str | None,
    blocks: dict[tuple[int, int], bytes] | None = None,
) -> FileCheck:
    try:
        data = decode_payload(entry, stored, index.dictionary, blocks)
    except DesFormatError as exc:
        return FileCheck(entry.uid, entry, exc)
    crc = entry.checksum if entry.checksum is not None else crc32(data)
    if digest is None:
        return FileCheck(entry.uid, entry, None, crc)
    if digest == "crc32":
        return FileCheck(entry.uid, entry, None, crc, f"{crc:08x}")
    return FileCheck(entry.uid, entry, None, crc, hashlib.new(digest, data).hexdigest())


def _check_bigfile(
    store: ObjectStore,
    key: str,
    entry: IndexEntry,
    index: ShardIndex,
    *,
    bigfiles_prefix: str,
    digest: str | None,
) -> FileCheck:
    """Stream a big file through the retrieval pipeline (length, CRC-32, SHA-256 checked)."""
    retriever = ShardRetriever(store, bigfiles_prefix=bigfiles_prefix)
    h = hashlib.new(digest) if digest is not None and digest != "crc32" else None
    crc = 0
    try:
        for piece in OpenedFile(retriever, key, entry, index.etag, index.dictionary).iter_bytes():
            crc = crc32(piece, crc)
            if h is not None:
                h.update(piece)
    except StorageUnavailable:
        raise
    except DesFormatError as exc:
        return FileCheck(entry.uid, entry, exc)
    if digest is None:
        return FileCheck(entry.uid, entry, None, crc)
    return FileCheck(entry.uid, entry, None, crc, f"{crc:08x}" if h is None else h.hexdigest())
