"""Fixed byte layouts of the DES shard format (version 1): header, footer, varints, the bucket
hash, object-key helpers and the :class:`IndexEntry` value. Bytes in, values out; no I/O.

See ``FORMAT.md`` beside this package for the normative description.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from ._checksum import crc32
from ._codecs import MAX_DICTIONARY_SIZE, Codec
from ._errors import ChecksumMismatch, CorruptShard, UnsupportedFormatVersion

MAGIC = b"DESF"
PART_MAGIC = b"DESP"
LEGACY_MAGIC = b"DES2"
LEGACY_FOOTER_MAGIC = b"DESI"
FORMAT_VERSION = 1
FORMAT_MINOR = 0
#: Footer feature bit: the shard stores a zstd dictionary (FORMAT.md section 3.1); its length
#: is in the footer's reserved field and entries may use codec 3 (``Codec.ZSTD_DICT``).
FEATURE_DICTIONARY = 0x1
#: Footer feature bit: entries may be members of solid blocks (FORMAT.md section 3.2, codec 4,
#: ``Codec.ZSTD_BLOCK``). Set by writers whenever the index holds such an entry, so that a
#: reader without the feature refuses the shard as a whole instead of failing file by file.
FEATURE_BLOCKS = 0x2
KNOWN_FEATURES = FEATURE_DICTIONARY | FEATURE_BLOCKS  # footer feature bits this reader knows
DICT_CRC_SIZE = 4  # the dictionary block: dictionary bytes, then their CRC-32

DEFAULT_TAIL_SIZE = 65536
DEFAULT_BIG_FILE_THRESHOLD = 10 * 1024 * 1024
DEFAULT_BIGFILES_PREFIX = "_bigFiles"

# header: magic, major, minor, part number, crc32 of the first 12 bytes
HEADER = struct.Struct("<4sHHII")
HEADER_SIZE = HEADER.size  # 16
# footer: magic, major, minor, index offset, entry count, bucket count, directory crc32,
# feature bits, reserved, footer crc32 (of bytes 0..40), magic
FOOTER = struct.Struct("<4sHHQQIIIII4s")
FOOTER_SIZE = FOOTER.size  # 48
DIR_ENTRY = struct.Struct("<II")  # bucket end (relative to index offset), bucket crc32
DIR_ENTRY_SIZE = DIR_ENTRY.size
MAX_BUCKETS = 4096  # directory <= 32 KiB
TARGET_BUCKET_BYTES = 4096
HASH_PERSON = b"DES-idx1"

# entry flag bits
F_CODEC_MASK = 0x07
F_BIGFILE = 0x08
F_DELETED = 0x10
F_PART = 0x20
F_META = 0x40
F_NO_CRC = 0x80
F_KNOWN = 0xFF


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    minor: int
    part: int


@dataclass(frozen=True, slots=True)
class Footer:
    version: int
    minor: int
    index_offset: int
    entry_count: int
    bucket_count: int
    directory_crc: int
    features: int
    dictionary_size: int = 0  # bytes of the shard dictionary (0: none)

    @property
    def dictionary_block(self) -> int:
        """Bytes of the dictionary block between the buckets and the directory (0 or
        dictionary + CRC-32)."""
        return self.dictionary_size + DICT_CRC_SIZE if self.dictionary_size else 0


def serialize_header(part: int = 0) -> bytes:
    magic = MAGIC if part == 0 else PART_MAGIC
    head = HEADER.pack(magic, FORMAT_VERSION, FORMAT_MINOR, part, 0)[:12]
    return head + struct.pack("<I", crc32(head))


def parse_header(buf: bytes) -> Header:
    if len(buf) < HEADER_SIZE:
        raise CorruptShard(f"header needs {HEADER_SIZE} bytes, got {len(buf)}")
    magic, major, minor, part, crc = HEADER.unpack_from(buf)
    if magic not in (MAGIC, PART_MAGIC):
        raise CorruptShard(f"bad header magic {magic!r}")
    if crc32(buf[:12]) != crc:
        raise ChecksumMismatch("header checksum mismatch")
    if major != FORMAT_VERSION:
        raise UnsupportedFormatVersion(
            f"shard format version {major} is not supported (this reader knows {FORMAT_VERSION})"
        )
    if (magic == MAGIC) != (part == 0):
        raise CorruptShard(f"header magic {magic!r} does not match part number {part}")
    return Header(major, minor, part)


def serialize_footer(
    *,
    index_offset: int,
    entry_count: int,
    bucket_count: int,
    directory_crc: int,
    dictionary_size: int = 0,
    blocks: bool = False,
) -> bytes:
    """The 48-byte footer. With a dictionary, the feature bit is set and its length goes in
    the reserved field; ``blocks`` sets the solid-block bit. Without either, the footer is
    the version 1.0 footer."""
    if not 0 <= dictionary_size <= MAX_DICTIONARY_SIZE:
        raise ValueError(
            f"dictionary of {dictionary_size} bytes; the limit is {MAX_DICTIONARY_SIZE}"
        )
    body = FOOTER.pack(
        MAGIC,
        FORMAT_VERSION,
        FORMAT_MINOR,
        index_offset,
        entry_count,
        bucket_count,
        directory_crc,
        (FEATURE_DICTIONARY if dictionary_size else 0) | (FEATURE_BLOCKS if blocks else 0),
        dictionary_size,
        0,
        MAGIC,
    )
    crc = crc32(body[:40])
    return body[:40] + struct.pack("<I", crc) + MAGIC


def is_footer(tail: bytes) -> bool:
    """Whether the last bytes of an object look like a version-1 footer (magic only)."""
    return len(tail) >= FOOTER_SIZE and tail[-4:] == MAGIC and tail[-FOOTER_SIZE:][:4] == MAGIC


def parse_footer(buf: bytes) -> Footer:
    """Parse the last ``FOOTER_SIZE`` bytes of a shard (checks magic, CRC and version)."""
    if len(buf) != FOOTER_SIZE:
        raise CorruptShard(f"footer needs {FOOTER_SIZE} bytes, got {len(buf)}")
    (magic, major, minor, index_offset, count, buckets, dir_crc, features, res, crc, magic2) = (
        FOOTER.unpack(buf)
    )
    if magic != MAGIC or magic2 != MAGIC:
        raise CorruptShard("not a DES shard: footer magic missing")
    if crc32(buf[:40]) != crc:
        raise ChecksumMismatch("footer checksum mismatch")
    if major != FORMAT_VERSION:
        raise UnsupportedFormatVersion(
            f"shard format version {major} is not supported (this reader knows {FORMAT_VERSION});"
            " upgrade des-format"
        )
    if features & ~KNOWN_FEATURES:
        raise UnsupportedFormatVersion(
            f"shard uses format features 0x{features:x} unknown to this reader; upgrade des-format"
        )
    if buckets == 0 or buckets & (buckets - 1) or buckets > MAX_BUCKETS:
        raise CorruptShard(f"bucket count {buckets} is not a power of two <= {MAX_BUCKETS}")
    dict_size = 0
    if features & FEATURE_DICTIONARY:
        if not 1 <= res <= MAX_DICTIONARY_SIZE:
            raise CorruptShard(
                f"footer declares a dictionary of {res} bytes (1..{MAX_DICTIONARY_SIZE} allowed)"
            )
        dict_size = res
    return Footer(major, minor, index_offset, count, buckets, dir_crc, features, dict_size)


# ---- varints: unsigned LEB128, at most 10 bytes, value < 2**64 ----


def write_varint(out: bytearray, value: int) -> None:
    if 0 <= value < 0x80:
        out.append(value)
        return
    if value < 0:
        raise ValueError("varints are unsigned")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode one varint at ``pos``; returns (value, next position). ``CorruptShard`` if bad."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CorruptShard("index entry truncated inside a varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >= 1 << 64:
                raise CorruptShard("varint exceeds 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise CorruptShard("varint longer than 10 bytes")


# ---- the bucket hash ----


# A hasher with the parameters set and nothing hashed: copying it is cheaper than building one
# from keyword arguments for every uid (same digest).
_UID_HASHER = hashlib.blake2b(digest_size=8, person=HASH_PERSON)


def uid_hash(uid_bytes: bytes) -> int:
    """The fixed 64-bit hash of a uid's UTF-8 bytes: BLAKE2b, 8-byte digest, person 'DES-idx1'."""
    hasher = _UID_HASHER.copy()
    hasher.update(uid_bytes)
    return int.from_bytes(hasher.digest(), "big")


def bucket_of(uid_bytes: bytes, bucket_count: int) -> int:
    """The bucket of a uid: the top log2(bucket_count) bits of :func:`uid_hash`."""
    bits = bucket_count.bit_length() - 1
    if bits == 0:
        return 0
    return uid_hash(uid_bytes) >> (64 - bits)


def plan_bucket_count(estimated_index_bytes: int) -> int:
    """Smallest power of two giving buckets of about 4 KiB, capped at ``MAX_BUCKETS``."""
    want = max(1, -(-estimated_index_bytes // TARGET_BUCKET_BYTES))
    n = 1
    while n < want and n < MAX_BUCKETS:
        n <<= 1
    return n


# ---- object keys ----


def part_key(shard_key: str, n: int) -> str:
    """Key of continuation part ``n`` (>= 1): ``20240101/A7.des`` -> ``20240101/A7.p2.des``."""
    if n < 1:
        raise ValueError(f"part numbers start at 1, got {n}")
    stem = shard_key[:-4] if shard_key.endswith(".des") else shard_key
    return f"{stem}.p{n}.des"


def bigfile_key(shard_key: str, sha256: str, prefix: str = DEFAULT_BIGFILES_PREFIX) -> str:
    """Key of a big file beside its shard: ``20240101/A7.des`` -> ``20240101/_bigFiles/<sha>``."""
    parent = shard_key.rsplit("/", 1)[0] + "/" if "/" in shard_key else ""
    return f"{parent}{prefix.strip('/')}/{sha256}"


# ---- the entry value ----


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One file in a shard's index.

    ``size`` is the original length; ``stored_size`` the bytes in the object (``size`` for big
    files, which live in their own object); ``checksum`` the CRC-32 of the original bytes
    (``None`` for legacy DES2 entries and for big files added by hash only); ``offset`` is within
    the object named by ``part`` (0: the shard object itself). ``meta`` may be shared by
    entries with equal metadata: treat it as read-only.
    """

    uid: str
    size: int
    stored_size: int
    codec: Codec = Codec.NONE
    checksum: int | None = None
    offset: int = 0
    part: int = 0
    is_bigfile: bool = False
    bigfile_hash: str | None = None
    deleted: bool = False
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    #: Codec ``ZSTD_BLOCK`` only: where the file starts inside its decompressed block
    #: (``offset`` and ``stored_size`` are then the whole block's).
    block_offset: int = 0

    @property
    def content_type(self) -> str | None:
        value = self.meta.get("content_type")
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        value = self.meta.get("name")
        return value if isinstance(value, str) else None

    @property
    def erased(self) -> bool:
        """An erased tombstone: the file was deleted and its bytes removed by a repack.

        Written as DELETED + NO_CRC on an inline entry with offset, size and metadata all
        empty (see FORMAT.md, section 8.1): nothing about the content is kept but the uid.
        """
        return (
            self.deleted
            and not self.is_bigfile
            and self.checksum is None
            and self.size == 0
            and self.stored_size == 0
            and not self.meta
        )

    @property
    def etag(self) -> str:
        """A strong HTTP ETag derived from the content checksum and size."""
        if self.checksum is not None:
            return f'"des-{self.checksum:08x}-{self.size:x}"'
        if self.bigfile_hash:
            return f'"des-{self.bigfile_hash[:16]}-{self.size:x}"'
        return f'"des-legacy-{self.offset:x}-{self.stored_size:x}-{self.size:x}"'


def entry_to_json(entry: IndexEntry) -> dict[str, Any]:
    """The ``ls`` record of an entry (checksum as 8 hex digits, or null for legacy). A
    solid-block member (codec ``zstd_block``) also has ``block_offset``, right after
    ``offset`` (its ``offset`` and ``stored_size`` are then the whole block's)."""
    record: dict[str, Any] = {
        "uid": entry.uid,
        "size": entry.size,
        "stored_size": entry.stored_size,
        "codec": entry.codec.label,
        "checksum": None if entry.checksum is None else f"{entry.checksum:08x}",
        "bigfile": entry.is_bigfile,
        "bigfile_hash": entry.bigfile_hash,
        "part": entry.part,
        "offset": entry.offset,
    }
    if entry.codec is Codec.ZSTD_BLOCK:
        record["block_offset"] = entry.block_offset
    record["deleted"] = entry.deleted
    record["meta"] = entry.meta
    return record
