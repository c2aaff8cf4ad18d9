"""Reading one shard through a :class:`ByteSource`: lookups, payload reads, verification."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ._checksum import crc32
from ._codecs import Codec, decompress, decompress_block
from ._errors import (
    ChecksumMismatch,
    CorruptShard,
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    ObjectNotFound,
    RangeNotSatisfiable,
)
from ._index import ShardIndex
from ._layout import (
    DEFAULT_BIGFILES_PREFIX,
    DEFAULT_TAIL_SIZE,
    HEADER_SIZE,
    IndexEntry,
    parse_header,
    part_key,
)
from ._read_index import read_index
from ._source import ByteSource, LocalFileSource

PartSource = Callable[[int], ByteSource]
BigFileSource = Callable[[str], ByteSource]


def check_payload(entry: IndexEntry, data: bytes) -> bytes:
    """Verify original bytes against the entry (size, CRC-32 or sha256); returns ``data``."""
    if len(data) != entry.size:
        raise CorruptShard(f"{entry.uid!r}: got {len(data)} bytes, index says {entry.size}")
    if entry.checksum is not None:
        if crc32(data) != entry.checksum:
            raise ChecksumMismatch(f"checksum mismatch for {entry.uid!r}")
    elif (
        entry.is_bigfile
        and entry.bigfile_hash is not None
        and hashlib.sha256(data).hexdigest() != entry.bigfile_hash
    ):
        raise ChecksumMismatch(f"sha256 mismatch for big file {entry.uid!r}")
    return data


def decode_payload(
    entry: IndexEntry,
    stored: bytes,
    dictionary: bytes | None = None,
    blocks: dict[tuple[int, int], bytes] | None = None,
) -> bytes:
    """Original bytes of an inline entry from its stored bytes, verified (``dictionary``: the
    shard's, needed by entries stored with ``Codec.ZSTD_DICT``). For a solid-block member,
    ``stored`` is the whole block; ``blocks`` (``(part, offset) -> decompressed block``), when
    given, lets several members of one block decompress it once."""
    if len(stored) != entry.stored_size:
        raise CorruptShard(
            f"{entry.uid!r}: read {len(stored)} stored bytes, index says {entry.stored_size}"
        )
    if entry.codec is Codec.NONE:
        return check_payload(entry, stored)
    if entry.codec is Codec.ZSTD_BLOCK:
        start = entry.block_offset
        end = start + entry.size
        key = (entry.part, entry.offset)
        block = blocks.get(key) if blocks is not None else None
        if block is None or len(block) < end:
            block = decompress_block(stored, end, uid=entry.uid)
            if blocks is not None:
                blocks[key] = block
        return check_payload(entry, block[start:end])
    return check_payload(
        entry,
        decompress(entry.codec, stored, entry.size, uid=entry.uid, dictionary=dictionary),
    )


class ShardReader:
    """Reads files from one shard.

    ``part_source(n)`` opens continuation part ``n``; ``bigfile_source(sha256)`` opens a big
    file. Both are needed only for shards that use them.
    """

    def __init__(
        self,
        source: ByteSource,
        part_source: PartSource | None = None,
        bigfile_source: BigFileSource | None = None,
        *,
        tail_size: int = DEFAULT_TAIL_SIZE,
        index: ShardIndex | None = None,
    ) -> None:
        self.source = source
        self._part_source = part_source
        self._bigfile_source = bigfile_source
        self._parts: dict[int, ByteSource] = {}
        self.index = index if index is not None else read_index(source, tail_size=tail_size)

    @classmethod
    def open_path(
        cls, path: str | os.PathLike[str], *, bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX
    ) -> ShardReader:
        """A reader for a local shard file, finding parts and big files beside it."""
        p = Path(path)
        src = LocalFileSource(p)

        def parts(n: int) -> ByteSource:
            path = p.parent / part_key(p.name, n)
            try:
                return LocalFileSource(path)
            except ObjectNotFound:
                raise ObjectNotFound(
                    f"continuation part {n} is missing: {path}", key=str(path)
                ) from None

        def bigfiles(sha: str) -> ByteSource:
            path = p.parent / bigfiles_prefix / sha
            try:
                return LocalFileSource(path)
            except ObjectNotFound:
                raise ObjectNotFound(f"big file is missing: {path}", key=str(path)) from None

        return cls(src, parts, bigfiles)

    def close(self) -> None:
        for src in [self.source, *self._parts.values()]:
            src.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, uid: str) -> IndexEntry | None:
        return self.index.lookup(uid)

    def iter_entries(self) -> Iterator[IndexEntry]:
        return self.index.iter_entries()

    def entry(self, uid: str) -> IndexEntry:
        """The live entry for ``uid``: ``EntryNotFound`` / ``EntryDeleted`` otherwise."""
        entry = self.index.lookup(uid)
        if entry is None:
            raise EntryNotFound(uid)
        if entry.deleted:
            raise EntryDeleted(uid)
        return entry

    def read(self, uid: str) -> bytes:
        """The original bytes of ``uid``, checksum verified."""
        return self.read_entry(self.entry(uid))

    def _part(self, n: int) -> ByteSource:
        if n == 0:
            return self.source
        src = self._parts.get(n)
        if src is None:
            if self._part_source is None:
                raise DesFormatError(f"entry lives in continuation part {n}; no part_source given")
            src = self._part_source(n)
            self._parts[n] = src
        return src

    def read_entry(self, entry: IndexEntry) -> bytes:
        """Read and verify an entry's bytes (tombstones are read too, for repack)."""
        if entry.is_bigfile:
            if self._bigfile_source is None or entry.bigfile_hash is None:
                raise DesFormatError(f"{entry.uid!r} is a big file; no bigfile_source given")
            src = self._bigfile_source(entry.bigfile_hash)
            try:
                tail = src.read_tail(entry.size + 1)
            finally:
                src.close()
            if tail.object_size != entry.size:
                raise CorruptShard(
                    f"big file of {entry.uid!r} is {tail.object_size} bytes,"
                    f" index says {entry.size}"
                )
            data = tail.data
            check_payload(entry, data)
            if (
                entry.checksum is not None
                and entry.bigfile_hash is not None
                and hashlib.sha256(data).hexdigest() != entry.bigfile_hash
            ):
                raise ChecksumMismatch(f"sha256 mismatch for big file {entry.uid!r}")
            return data
        if entry.stored_size == 0:
            return decode_payload(entry, b"")
        src = self._part(entry.part)
        stored = src.read_range(entry.offset, entry.offset + entry.stored_size)
        return decode_payload(entry, stored, self.index.dictionary)

    def verify(self, deep: bool = True) -> int:
        """Check header, footer, index and (``deep``) every payload. Returns the number of
        entries checked; raises the first error, naming the entry. Each solid block is read
        and decompressed once for all its members (after the other entries: members of one
        block are spread over the buckets)."""
        if not self.index.is_legacy:
            parse_header(self.source.read_range(0, HEADER_SIZE))
        else:
            from ._legacy import _legacy_version

            _legacy_version(self.source.read_range(0, 8))
        self.index.check()
        count = 0
        checked_parts: set[int] = set()
        blocks: dict[tuple[int, int, int], list[IndexEntry]] = {}
        for entry in self.index.iter_entries():
            count += 1
            if not entry.is_bigfile and entry.part and entry.part not in checked_parts:
                header = parse_header(self._part(entry.part).read_range(0, HEADER_SIZE))
                if header.part != entry.part:
                    raise CorruptShard(f"part object {entry.part} says it is part {header.part}")
                checked_parts.add(entry.part)
            if not deep:
                continue
            if entry.codec is Codec.ZSTD_BLOCK and not entry.is_bigfile and entry.stored_size:
                blocks.setdefault((entry.part, entry.offset, entry.stored_size), []).append(entry)
                continue
            self._verify_entry(entry, self.read_entry)
        for members in blocks.values():
            self._verify_block(members)
        return count

    def _verify_block(self, members: list[IndexEntry]) -> None:
        """Check the members of one solid block, its bytes read and decompressed once."""
        stored: list[bytes] = []
        decoded: dict[tuple[int, int], bytes] = {}

        def read(e: IndexEntry) -> bytes:
            if not stored:
                stored.append(self._part(e.part).read_range(e.offset, e.offset + e.stored_size))
            return decode_payload(e, stored[0], self.index.dictionary, decoded)

        for entry in members:
            self._verify_entry(entry, read)

    def _verify_entry(self, entry: IndexEntry, read: Callable[[IndexEntry], bytes]) -> None:
        """``read(entry)``, with the errors ``verify`` raises (a tombstone's payload that a
        delete erased passes)."""
        try:
            read(entry)
        except (ObjectNotFound, CorruptShard) as exc:
            if entry.deleted and self._erased_by_delete(entry, exc):
                return
            if isinstance(exc, CorruptShard):
                raise
            raise CorruptShard(f"entry {entry.uid!r}: {exc}") from None
        except RangeNotSatisfiable as exc:
            raise CorruptShard(f"entry {entry.uid!r}: {exc}") from None

    def _erased_by_delete(self, entry: IndexEntry, exc: DesFormatError) -> bool:
        """Whether a tombstone's payload failed its check because a delete erased it: its
        big-file object removed, or its stored bytes in a continuation part overwritten
        with the filler byte (see ``des_format.delete_entries``); for a solid-block member,
        its block re-encoded with the member's range holding only its filler."""
        from ._erase import fill_byte, member_erased

        if entry.is_bigfile:
            return isinstance(exc, ObjectNotFound)
        if entry.part == 0 or isinstance(exc, ObjectNotFound):
            return False
        stored = self._part(entry.part).read_range(entry.offset, entry.offset + entry.stored_size)
        if entry.codec is Codec.ZSTD_BLOCK:
            return member_erased(entry, stored)
        return stored == bytes([fill_byte(entry)]) * entry.stored_size
