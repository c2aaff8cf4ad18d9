"""The version-1 index: hash buckets, their varint encoding, and :class:`ShardIndex`, which
decodes one bucket at a time on first use. (Legacy DES2 shards have their own index type,
:class:`~des_format._legacy.LegacyShardIndex`; :func:`~des_format._read_index.read_index`
tells the two apart from a shard's tail.)
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._checksum import crc32
from ._codecs import Codec
from ._errors import ChecksumMismatch, CorruptShard, DesFormatError, UnknownCodec
from ._layout import (
    DIR_ENTRY,
    DIR_ENTRY_SIZE,
    F_BIGFILE,
    F_CODEC_MASK,
    F_DELETED,
    F_KNOWN,
    F_META,
    F_NO_CRC,
    F_PART,
    FEATURE_BLOCKS,
    FOOTER_SIZE,
    Footer,
    IndexEntry,
    bucket_of,
    read_varint,
    write_varint,
)

Fetch = Callable[[int, int], bytes]
ENTRY_OVERHEAD = 160  # estimated bytes of Python memory per decoded entry (for IndexCache)
_CRC = struct.Struct("<I")


# allow_nan=False: NaN and Infinity are not JSON; other readers of the index would fail.
_ENCODE_META = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_json_str: Callable[[str], str] = json.encoder.encode_basestring


def canonical_meta(meta: dict[str, Any]) -> bytes:
    """Canonical JSON of a metadata object: sorted keys, compact separators, UTF-8.

    Exactly ``json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False).encode()``, built directly for the common case of string keys and
    str/int/bool/None/finite float values (about 5x faster); anything else goes through
    ``json``. Raises ``TypeError``/``ValueError`` for values JSON cannot hold.
    """
    parts: list[str] = []
    for key in sorted(meta) if all(type(k) is str for k in meta) else ():
        value = meta[key]
        kind = type(value)
        if kind is str:
            text = _json_str(value)
        elif kind is int:
            text = int.__repr__(value)
        elif value is None:
            text = "null"
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is float and math.isfinite(value):
            text = float.__repr__(value)
        else:
            break
        parts.append(f"{_json_str(key)}:{text}")
    else:
        if parts or not meta:
            return ("{" + ",".join(parts) + "}").encode()
    return _ENCODE_META(meta).encode()


#: An entry ready to be serialized: the 12 fields of :class:`IndexEntry` in order, then the
#: uid's UTF-8 bytes and the canonical JSON of its metadata (None: no metadata). Writers keep
#: new entries in this form (a tuple is far cheaper to build than an ``IndexEntry``).
Record = tuple[Any, ...]
REC_UID_BYTES = 12
REC_META_JSON = 13


def entry_record(e: IndexEntry, ub: bytes | None = None, blob: bytes | None = None) -> Record:
    """The :data:`Record` of an entry (``ub``/``blob``: its uid bytes and metadata JSON when
    already known; built here otherwise)."""
    if ub is None:
        ub = e.uid.encode("utf-8")
    if blob is None and e.meta:
        blob = canonical_meta(e.meta)
    return (
        e.uid,
        e.size,
        e.stored_size,
        e.codec,
        e.checksum,
        e.offset,
        e.part,
        e.is_bigfile,
        e.bigfile_hash,
        e.deleted,
        e.meta,
        e.block_offset,
        ub,
        blob,
    )


def as_entry(value: IndexEntry | Record) -> IndexEntry:
    """The ``IndexEntry`` of an entry kept as an ``IndexEntry`` or as a :data:`Record`."""
    if isinstance(value, IndexEntry):
        return value
    return IndexEntry(*value[:12])


def is_live(value: IndexEntry | Record | None) -> bool:
    """Whether an entry kept by a writer is there and not deleted (records always are)."""
    if value is None:
        return False
    return type(value) is not IndexEntry or not value.deleted


def serialize_bucket(entries: Iterable[tuple[bytes, IndexEntry]]) -> bytes:
    """Encode one bucket: its metadata table, then its entries sorted by UTF-8 uid bytes."""
    return serialize_records([entry_record(e, ub) for ub, e in entries])


def _record_key(rec: Record) -> bytes:
    key: bytes = rec[REC_UID_BYTES]
    return key


def serialize_records(items: list[Record]) -> bytes:
    """:func:`serialize_bucket` for entries given as :data:`Record` (sorted here, in place)."""
    if not items:
        return b""
    items.sort(key=_record_key)
    metas: dict[bytes, int] = {}
    for rec in items:
        blob = rec[REC_META_JSON]
        if blob is not None and blob not in metas:
            metas[blob] = len(metas)
    out = bytearray()
    wv = write_varint
    pack_crc = _CRC.pack
    none = Codec.NONE
    block = Codec.ZSTD_BLOCK
    wv(out, len(metas))
    for blob in metas:
        wv(out, len(blob))
        out += blob
    wv(out, len(items))
    for uid, size, stored, codec, crc, offset, part, big, sha, deleted, _m, boff, ub, blob in items:
        flags = codec | 0  # a plain int
        if big:
            flags |= F_BIGFILE
        if deleted:
            flags |= F_DELETED
        if part and not big:
            flags |= F_PART
        if blob is not None:
            flags |= F_META
        if crc is None:
            flags |= F_NO_CRC
        n = len(ub)
        if n < 0x80:
            out.append(n)
        else:
            wv(out, n)
        out += ub
        if flags < 0x80:
            out.append(flags)
        else:
            wv(out, flags)
        if big:
            if sha is None or len(sha) != 64:
                raise ValueError(f"big file {uid!r} needs a sha256 hex digest")
            out += bytes.fromhex(sha)
            wv(out, size)
        else:
            # varints written in line for the common values (one or two bytes)
            if offset < 0x4000:
                if offset < 0x80:
                    out.append(offset)
                else:
                    out.append((offset & 0x7F) | 0x80)
                    out.append(offset >> 7)
            elif offset < 0x200000:  # offsets in a shard of up to 2 MiB: three bytes
                out.append((offset & 0x7F) | 0x80)
                out.append(((offset >> 7) & 0x7F) | 0x80)
                out.append(offset >> 14)
            else:
                wv(out, offset)
            if size < 0x80:
                out.append(size)
            elif size < 0x4000:
                out.append((size & 0x7F) | 0x80)
                out.append(size >> 7)
            else:
                wv(out, size)
            if codec is not none:
                if stored < 0x80:
                    out.append(stored)
                elif stored < 0x4000:
                    out.append((stored & 0x7F) | 0x80)
                    out.append(stored >> 7)
                else:
                    wv(out, stored)
                if codec is block:
                    wv(out, boff)
            if part:
                wv(out, part)
        if crc is not None:
            out += pack_crc(crc)
        if blob is not None:
            mid = metas[blob]
            if mid < 0x80:
                out.append(mid)
            else:
                wv(out, mid)
    return bytes(out)


EntryFields = tuple[Any, ...]  # the positional arguments of IndexEntry


def decode_bucket(raw: bytes | memoryview) -> dict[str, EntryFields]:
    """Decode one bucket into ``uid -> IndexEntry fields`` (a tuple; cheap to build), with
    every consistency check of :func:`parse_bucket`."""
    if len(raw) == 0:
        return {}
    buf = bytes(raw)
    n = len(buf)
    rv = read_varint
    unpack_crc = _CRC.unpack_from
    pos = 0
    n_meta, pos = rv(buf, pos)
    if n_meta > n:
        raise CorruptShard("bucket metadata count exceeds bucket size")
    metas: list[dict[str, Any]] = []
    for _ in range(n_meta):
        ln, pos = rv(buf, pos)
        if pos + ln > n:
            raise CorruptShard("bucket metadata runs past the bucket")
        try:
            obj = json.loads(buf[pos : pos + ln].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptShard("bucket metadata is not valid JSON") from None
        if not isinstance(obj, dict):
            raise CorruptShard("bucket metadata is not a JSON object")
        metas.append(obj)
        pos += ln
    count, pos = rv(buf, pos)
    if count > n:
        raise CorruptShard("bucket entry count exceeds bucket size")
    out: dict[str, EntryFields] = {}
    codecs = _CODECS
    prev = b""
    try:
        for _ in range(count):
            ln = buf[pos]
            if ln < 0x80:
                pos += 1
            else:
                ln, pos = rv(buf, pos)
            end = pos + ln
            if end > n:
                raise CorruptShard("uid runs past the bucket")
            uid_b = buf[pos:end]
            pos = end
            if uid_b <= prev and out:
                raise CorruptShard("bucket entries are not sorted by uid")
            prev = uid_b
            uid = uid_b.decode("utf-8")
            flags = buf[pos]
            if flags < 0x80:
                pos += 1
            else:
                flags, pos = rv(buf, pos)
                if flags & ~F_KNOWN:
                    raise CorruptShard(f"entry {uid!r} has unknown flag bits 0x{flags:x}")
            codec = codecs[flags & F_CODEC_MASK]
            if codec is None:
                raise UnknownCodec(
                    f"entry {uid!r} uses codec id {flags & F_CODEC_MASK}, unknown to this reader"
                )
            sha: str | None = None
            part = 0
            boff = 0
            if flags & F_BIGFILE:
                if pos + 32 > n:
                    raise CorruptShard("big-file hash runs past the bucket")
                sha = buf[pos : pos + 32].hex()
                pos += 32
                size, pos = rv(buf, pos)
                offset = 0
                stored = size
                if codec is not Codec.NONE or flags & F_PART:
                    raise CorruptShard(f"big-file entry {uid!r} has inline-only flags")
            else:
                offset, pos = rv(buf, pos)
                size, pos = rv(buf, pos)
                if codec is Codec.NONE:
                    stored = size
                else:
                    stored, pos = rv(buf, pos)
                    if codec is Codec.ZSTD_BLOCK:
                        boff, pos = rv(buf, pos)
                if flags & F_PART:
                    part, pos = rv(buf, pos)
                    if part == 0:
                        raise CorruptShard(f"entry {uid!r} has a part flag with part 0")
            crc: int | None = None
            if not flags & F_NO_CRC:
                if pos + 4 > n:
                    raise CorruptShard("entry checksum runs past the bucket")
                crc = unpack_crc(buf, pos)[0]
                pos += 4
            meta: dict[str, Any] = {}
            if flags & F_META:
                mid, pos = rv(buf, pos)
                if mid >= len(metas):
                    raise CorruptShard(f"entry {uid!r} references missing metadata {mid}")
                meta = metas[mid]
            out[uid] = (
                uid,
                size,
                stored,
                codec,
                crc,
                offset,
                part,
                sha is not None,
                sha,
                bool(flags & F_DELETED),
                meta,
                boff,
            )
    except IndexError:
        raise CorruptShard("index entry truncated") from None
    except UnicodeDecodeError:
        raise CorruptShard("uid is not valid UTF-8") from None
    if pos != n:
        raise CorruptShard(f"bucket has {n - pos} trailing bytes")
    return out


_CODECS: list[Codec | None] = [None] * (F_CODEC_MASK + 1)
for _c in Codec:
    _CODECS[_c.value] = _c


def parse_bucket(raw: bytes | memoryview) -> dict[str, IndexEntry]:
    """Decode one bucket into ``uid -> IndexEntry``; ``CorruptShard`` on any inconsistency."""
    return {uid: IndexEntry(*fields) for uid, fields in decode_bucket(raw).items()}


def check_directory(raw: bytes, bucket_count: int, area_length: int) -> None:
    """Cheap whole-directory checks (the per-bucket ones happen when a bucket is used)."""
    if len(raw) != bucket_count * DIR_ENTRY_SIZE:
        raise CorruptShard("index directory has the wrong length")
    (last_end,) = _CRC.unpack_from(raw, len(raw) - DIR_ENTRY_SIZE)
    if last_end != area_length:
        raise CorruptShard("index directory does not cover the index")


class ShardIndex:
    """The index of one shard, decoded one bucket at a time.

    Built by :func:`read_index`. A lookup hashes the uid, picks its bucket and decodes only that
    bucket (fetching its bytes through ``fetch`` when they were not in the tail read), then keeps
    the decoded bucket, so later lookups in it are a dict hit. Thread-safe: two threads may both
    decode a bucket, with the same result.
    """

    #: True for a legacy DES2 shard (:class:`~des_format._legacy.LegacyShardIndex`, whose
    #: entries carry no checksum).
    is_legacy: bool = False

    def __init__(
        self,
        *,
        footer: Footer,
        object_size: int,
        etag: str | None,
        directory: bytes = b"",
        area: bytes | None = None,
        fetch: Fetch | None = None,
        dictionary: bytes | None = None,
    ) -> None:
        self.object_size = object_size
        self.etag = etag
        self._fetch = fetch
        #: The shard's zstd dictionary (entries with ``Codec.ZSTD_DICT`` need it), or None.
        self.dictionary = dictionary
        #: The footer's feature bits (0 for a legacy shard).
        self.features = footer.features
        self.format_version = footer.version
        self.index_offset = footer.index_offset
        self.entry_count = footer.entry_count
        self.bucket_count = footer.bucket_count
        if (dictionary is not None) != bool(footer.dictionary_size) or (
            dictionary is not None and len(dictionary) != footer.dictionary_size
        ):
            raise CorruptShard("the shard dictionary does not match the footer")
        self._area_len = (
            object_size
            - FOOTER_SIZE
            - len(directory)
            - footer.dictionary_block
            - footer.index_offset
        )
        check_directory(directory, footer.bucket_count, self._area_len)
        self._directory = directory
        self._area = area
        self._buckets: list[dict[str, EntryFields | IndexEntry] | None] = [None] * self.bucket_count
        self._decoded_entries = 0
        self._raw_bytes = (
            len(directory)
            + (len(area) if area is not None else 0)
            + (len(dictionary) if dictionary is not None else 0)
        )

    @property
    def nbytes(self) -> int:
        """Estimated memory held: raw index bytes kept plus decoded entries."""
        return 256 + self._raw_bytes + self._decoded_entries * ENTRY_OVERHEAD

    @property
    def decoded_buckets(self) -> int:
        """How many buckets have been decoded so far (lookups decode one at a time)."""
        return sum(1 for b in self._buckets if b is not None)

    @property
    def index_length(self) -> int:
        """Bytes from the index offset to the end of the object (index, directory, footer)."""
        return self.object_size - self.index_offset

    def bucket_index(self, uid: str) -> int:
        return bucket_of(uid.encode("utf-8", "surrogatepass"), self.bucket_count)

    def is_loaded(self, uid: str) -> bool:
        """Whether a lookup of ``uid`` can be answered without fetching anything."""
        b = self.bucket_index(uid)
        return self._buckets[b] is not None or self._area is not None

    def lookup_loaded(self, uid: str) -> tuple[bool, IndexEntry | None]:
        """``(is_loaded(uid), lookup(uid))`` with the uid hashed once; ``(False, None)``
        without looking up when the lookup would have to fetch."""
        b = self.bucket_index(uid)
        if self._buckets[b] is None and self._area is None:
            return False, None
        return True, self._lookup_in(b, uid)

    def _span(self, b: int) -> tuple[int, int, int]:
        """(start, end, crc) of bucket ``b``, relative to the index offset."""
        end, crc = DIR_ENTRY.unpack_from(self._directory, b * DIR_ENTRY_SIZE)
        start = DIR_ENTRY.unpack_from(self._directory, (b - 1) * DIR_ENTRY_SIZE)[0] if b else 0
        if not start <= end <= self._area_len:
            raise CorruptShard(f"index directory entry {b} is out of order")
        return start, end, crc

    def _raw_bucket(self, b: int) -> bytes:
        start, end, crc = self._span(b)
        if self._area is not None:
            raw = self._area[start:end]
        elif self._fetch is None:
            raise DesFormatError("index bucket is not in memory and this index cannot fetch")
        else:
            raw = self._fetch(self.index_offset + start, self.index_offset + end)
        return self._checked_bucket(b, raw, end - start, crc)

    @staticmethod
    def _checked_bucket(b: int, raw: bytes, length: int, crc: int) -> bytes:
        if len(raw) != length:
            raise CorruptShard("short read of an index bucket")
        if crc32(raw) != crc:
            raise ChecksumMismatch(f"index bucket {b} checksum mismatch")
        return raw

    def bucket_to_load(self, uid: str) -> tuple[int, int, int] | None:
        """``(bucket, start, end)``: the absolute byte range of the shard holding the bucket
        of ``uid`` when a lookup of ``uid`` would have to fetch it, else None. With
        :meth:`load_bucket`, a caller does the fetch itself (the retrieval pipeline, whose
        drivers read synchronously or asynchronously)."""
        if self._area is not None:
            return None
        b = self.bucket_index(uid)
        if self._buckets[b] is not None:
            return None
        start, end, _crc = self._span(b)
        return b, self.index_offset + start, self.index_offset + end

    def load_bucket(self, b: int, raw: bytes) -> None:
        """Check (length, CRC-32) and decode bucket ``b`` from its bytes ``raw``, fetched by
        the caller from the range :meth:`bucket_to_load` gave."""
        if self._buckets[b] is not None:
            return
        start, end, crc = self._span(b)
        decoded: dict[str, EntryFields | IndexEntry] = dict(
            decode_bucket(self._checked_bucket(b, raw, end - start, crc))
        )
        if self._buckets[b] is None:
            self._buckets[b] = decoded
            self._decoded_entries += len(decoded)

    def _bucket(self, b: int) -> dict[str, EntryFields | IndexEntry]:
        decoded = self._buckets[b]
        if decoded is None:
            decoded = dict(decode_bucket(self._raw_bucket(b)))
            self._buckets[b] = decoded
            self._decoded_entries += len(decoded)
        return decoded

    def lookup(self, uid: str) -> IndexEntry | None:
        """The entry for ``uid`` (tombstones included), or None."""
        return self._lookup_in(self.bucket_index(uid), uid)

    def _lookup_in(self, b: int, uid: str) -> IndexEntry | None:
        bucket = self._bucket(b)
        found = bucket.get(uid)
        if found is None or isinstance(found, IndexEntry):
            return found
        entry = IndexEntry(*found)
        bucket[uid] = entry
        return entry

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self.lookup(uid) is not None

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Every entry, bucket by bucket, sorted by uid bytes inside a bucket. Fetches the
        whole bucket area in one read when it is not in memory."""
        area = self._area
        if area is None and any(b is None for b in self._buckets) and self._fetch is not None:
            area = self._fetch(self.index_offset, self.index_offset + self._area_len)
        for b in range(self.bucket_count):
            decoded = self._buckets[b]
            if decoded is None:
                if area is not None:
                    start, stop, crc = self._span(b)
                    raw = area[start:stop]
                    if crc32(raw) != crc:
                        raise ChecksumMismatch(f"index bucket {b} checksum mismatch")
                    decoded = dict(decode_bucket(raw))
                else:
                    decoded = self._bucket(b)
            entries = [v if isinstance(v, IndexEntry) else IndexEntry(*v) for v in decoded.values()]
            entries.sort(key=lambda e: e.uid.encode("utf-8"))
            yield from entries

    def check(self) -> None:
        """Decode every bucket and check counts and bucket membership (used by verify)."""
        seen = 0
        for entry in self.iter_entries():
            seen += 1
            if entry.is_bigfile and (entry.bigfile_hash is None or entry.offset != 0):
                raise CorruptShard(f"big-file entry {entry.uid!r} is malformed")
            if entry.codec is Codec.ZSTD_BLOCK and not self.features & FEATURE_BLOCKS:
                raise CorruptShard(
                    f"entry {entry.uid!r} is in a solid block, but the footer lacks the"
                    " solid-block feature bit"
                )
        if seen != self.entry_count:
            raise CorruptShard(f"footer says {self.entry_count} entries, index holds {seen}")
        for b in range(self.bucket_count):
            for uid in self._bucket(b):
                if self.bucket_index(uid) != b:
                    raise CorruptShard(f"uid {uid!r} is stored in the wrong bucket")
