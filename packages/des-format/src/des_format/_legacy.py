"""Reading legacy DES2 shards (index v1 and v2): :class:`LegacyShardIndex`, a
:class:`ShardIndex` whose entries are all in memory.

Layout (little-endian): header ``DES2`` + version byte + 3 reserved bytes; payloads; index;
footer ``DESI`` + uint64 index size. The index version lives only in the header, so when the
tail read did not include the header the index is parsed both ways: a well-formed index
parses cleanly in only one of them; if both fit, the 8-byte header is read to decide.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Generator, Iterator
from typing import Any

from ._codecs import Codec
from ._errors import CorruptShard, UnknownCodec, UnsupportedFormatVersion
from ._index import ENTRY_OVERHEAD, Fetch, ShardIndex
from ._layout import LEGACY_MAGIC, IndexEntry

LEGACY_HEADER_SIZE = 8
LEGACY_FOOTER_SIZE = 12
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_V1_FIXED = struct.Struct("<QQBQQ")


class _Cursor:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise CorruptShard("legacy index truncated")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        return st.unpack(self.take(st.size))


def _codec(cid: int, uid: str) -> Codec:
    try:
        return Codec(cid)
    except ValueError:
        raise UnknownCodec(f"legacy entry {uid!r} uses unknown codec id {cid}") from None


def _meta(cur: _Cursor, uid: str) -> dict[str, Any]:
    (ln,) = cur.unpack(_U32)
    if ln == 0:
        return {}
    try:
        obj = json.loads(cur.take(ln).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptShard(f"legacy entry {uid!r} has invalid JSON metadata") from None
    if not isinstance(obj, dict):
        raise CorruptShard(f"legacy entry {uid!r} metadata is not a JSON object")
    return obj


def parse_legacy_entries(index: bytes, version: int, data_end: int) -> dict[str, IndexEntry]:
    """Parse a DES2 index body (v1 or v2) whose payloads end at ``data_end``."""
    if version not in (1, 2):
        raise UnsupportedFormatVersion(f"legacy DES2 index version {version} is not supported")
    cur = _Cursor(index)
    (count,) = cur.unpack(_U32)
    if count > len(index):
        raise CorruptShard("legacy index entry count exceeds its size")
    entries: dict[str, IndexEntry] = {}
    for _ in range(count):
        (ln,) = cur.unpack(_U16)
        try:
            uid = cur.take(ln).decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptShard("legacy uid is not valid UTF-8") from None
        flags = 0
        if version == 2:
            flags = cur.take(1)[0]
            if flags & ~1:
                raise CorruptShard(f"legacy entry {uid!r} has unknown flags 0x{flags:x}")
        if flags & 1:
            (hl,) = cur.unpack(_U16)
            try:
                sha = cur.take(hl).decode("ascii").lower()
            except UnicodeDecodeError:
                raise CorruptShard(f"legacy entry {uid!r} has a non-ASCII hash") from None
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise CorruptShard(f"legacy entry {uid!r} has a malformed sha256")
            (size,) = cur.unpack(_U64)
            meta = _meta(cur, uid)
            entry = IndexEntry(
                uid=uid,
                size=size,
                stored_size=size,
                is_bigfile=True,
                bigfile_hash=sha,
                meta=meta,
            )
        else:
            offset, length, cid, csize, usize = cur.unpack(_V1_FIXED)
            codec = _codec(cid, uid)
            if csize != length or (codec is Codec.NONE and usize != length):
                raise CorruptShard(f"legacy entry {uid!r} has inconsistent sizes")
            if offset < LEGACY_HEADER_SIZE or offset + length > data_end:
                raise CorruptShard(f"legacy entry {uid!r} points outside the data region")
            meta = _meta(cur, uid) if version == 2 else {}
            entry = IndexEntry(
                uid=uid,
                size=usize,
                stored_size=length,
                codec=codec,
                offset=offset,
                meta=meta,
            )
        if uid in entries:
            raise CorruptShard(f"legacy index lists uid {uid!r} twice")
        entries[uid] = entry
    if cur.pos != len(index):
        raise CorruptShard(f"legacy index has {len(index) - cur.pos} trailing bytes")
    return entries


class LegacyShardIndex(ShardIndex):
    """The index of a legacy DES2 shard: every entry parsed up front (the layout has no
    buckets), looked up in a dict, in index order when iterated. Entries carry no
    checksum, and the shard cannot take tombstones (``is_legacy``)."""

    is_legacy = True

    def __init__(
        self,
        *,
        entries: dict[str, IndexEntry],
        version: int,
        object_size: int,
        etag: str | None,
        index_offset: int,
        fetch: Fetch | None = None,
    ) -> None:
        # Not ShardIndex.__init__: there is no footer, directory or bucket area to check.
        self.object_size = object_size
        self.etag = etag
        self._fetch = fetch
        self.dictionary = None
        self.features = 0
        self.format_version = version
        self.index_offset = index_offset
        self.entry_count = len(entries)
        self.bucket_count = 1
        self._entries = entries

    @property
    def nbytes(self) -> int:
        return 256 + len(self._entries) * ENTRY_OVERHEAD

    @property
    def decoded_buckets(self) -> int:
        return 0

    def is_loaded(self, uid: str) -> bool:
        return True

    def lookup_loaded(self, uid: str) -> tuple[bool, IndexEntry | None]:
        return True, self._entries.get(uid)

    def lookup(self, uid: str) -> IndexEntry | None:
        return self._entries.get(uid)

    def bucket_to_load(self, uid: str) -> tuple[int, int, int] | None:
        return None  # every entry is in memory

    def load_bucket(self, b: int, raw: bytes) -> None:
        raise ValueError("a legacy DES2 index has no buckets to load")

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Every entry, in index order."""
        yield from self._entries.values()

    def check(self) -> None:
        """Nothing to check beyond what parsing checked."""


def parse_legacy_index(
    tail: bytes, size: int, etag: str | None, fetch: Callable[[int, int], bytes]
) -> LegacyShardIndex:
    """Build the index of a DES2 shard from its tail (+1 read if needed)."""
    steps = parse_legacy_index_steps(tail, size, etag, fetch)
    try:
        request = next(steps)
        while True:
            request = steps.send(fetch(*request))
    except StopIteration as done:
        index: LegacyShardIndex = done.value
        return index


def parse_legacy_index_steps(
    tail: bytes, size: int, etag: str | None, fetch: Callable[[int, int], bytes] | None
) -> Generator[tuple[int, int], bytes, LegacyShardIndex]:
    """:func:`parse_legacy_index` without I/O: yields each ``(start, end)`` range it needs
    and is sent its bytes (``fetch``: kept by the index, may be None)."""
    (index_size,) = _U64.unpack(tail[-8:])
    index_start = size - LEGACY_FOOTER_SIZE - index_size
    if index_start < LEGACY_HEADER_SIZE:
        raise CorruptShard("legacy footer index size is larger than the shard")
    tail_start = size - len(tail)
    if index_start >= tail_start:
        index = tail[index_start - tail_start : len(tail) - LEGACY_FOOTER_SIZE]
    else:
        index = yield (index_start, size - LEGACY_FOOTER_SIZE)
        if len(index) != index_size:
            raise CorruptShard("short read of the legacy index")
    if tail_start == 0:
        header = tail[:LEGACY_HEADER_SIZE]
        version = _legacy_version(header)
        entries = parse_legacy_entries(index, version, index_start)
    else:
        parsed: dict[int, dict[str, IndexEntry]] = {}
        errors: list[Exception] = []
        for version in (2, 1):
            try:
                parsed[version] = parse_legacy_entries(index, version, index_start)
            except (CorruptShard, UnknownCodec) as exc:  # the other version's layout
                errors.append(exc)
        if len(parsed) == 1:
            version, entries = next(iter(parsed.items()))
        elif not parsed:
            raise errors[0]
        else:
            version = _legacy_version((yield (0, LEGACY_HEADER_SIZE)))
            entries = parsed[version]
    return LegacyShardIndex(
        entries=entries,
        version=version,
        object_size=size,
        etag=etag,
        index_offset=index_start,
        fetch=fetch,
    )


def _legacy_version(header: bytes) -> int:
    if len(header) < LEGACY_HEADER_SIZE or header[:4] != LEGACY_MAGIC:
        raise CorruptShard("legacy shard header magic DES2 missing")
    version = header[4]
    if version not in (1, 2):
        raise UnsupportedFormatVersion(f"legacy DES2 version {version} is not supported")
    return version
