"""Opening a shard's index from its tail: the current layout (a footer) or a legacy DES2
shard, told apart by the magic at the end of the object."""

from __future__ import annotations

import struct

from ._checksum import crc32
from ._errors import ChecksumMismatch, CorruptShard
from ._index import Fetch, ShardIndex
from ._layout import (
    DEFAULT_TAIL_SIZE,
    DIR_ENTRY_SIZE,
    FOOTER_SIZE,
    HEADER_SIZE,
    LEGACY_FOOTER_MAGIC,
    is_footer,
    parse_footer,
)
from ._legacy import parse_legacy_index
from ._source import ByteSource

_CRC = struct.Struct("<I")


def read_index(
    source: ByteSource, *, tail_size: int = DEFAULT_TAIL_SIZE, fetch: Fetch | None = None
) -> ShardIndex:
    """Read a shard's index with at most 2 reads: the tail, plus the directory (v1) or the index
    (legacy) when the tail did not hold it. Buckets are fetched later, one per lookup, through
    ``fetch`` (default: ``source.read_range``)."""
    tail = source.read_tail(max(tail_size, 64))
    data = tail.data
    size = tail.object_size
    if len(data) != min(size, max(tail_size, 64)):
        raise CorruptShard("tail read returned the wrong number of bytes")
    tail_start = size - len(data)
    reader = fetch if fetch is not None else source.read_range
    if is_footer(data):
        footer = parse_footer(data[-FOOTER_SIZE:])
        dir_len = footer.bucket_count * DIR_ENTRY_SIZE
        dir_start = size - FOOTER_SIZE - dir_len
        # With a dictionary, its block (dictionary + CRC-32) sits right before the directory;
        # it is read together with the directory (in the tail read whenever the directory is).
        dict_start = dir_start - footer.dictionary_block
        if footer.index_offset < HEADER_SIZE or dict_start < footer.index_offset:
            raise CorruptShard("footer index offset is outside the shard")
        if dict_start >= tail_start:
            block = data[dict_start - tail_start : len(data) - FOOTER_SIZE]
        else:
            block = reader(dict_start, size - FOOTER_SIZE)
            if len(block) != size - FOOTER_SIZE - dict_start:
                raise CorruptShard("short read of the index directory")
        directory = block[footer.dictionary_block :]
        if crc32(directory) != footer.directory_crc:
            raise ChecksumMismatch("index directory checksum mismatch")
        dictionary = None
        if footer.dictionary_size:
            dictionary = bytes(block[: footer.dictionary_size])
            (dict_crc,) = _CRC.unpack_from(block, footer.dictionary_size)
            if crc32(dictionary) != dict_crc:
                raise ChecksumMismatch("shard dictionary checksum mismatch")
        area = None
        if footer.index_offset >= tail_start:
            area = data[footer.index_offset - tail_start : dict_start - tail_start]
        return ShardIndex(
            footer=footer,
            object_size=size,
            etag=tail.etag,
            directory=directory,
            area=area,
            fetch=reader,
            dictionary=dictionary,
        )
    if len(data) >= 12 and data[-12:-8] == LEGACY_FOOTER_MAGIC:
        return parse_legacy_index(data, size, tail.etag, reader)
    if size < 12:
        raise CorruptShard(f"object of {size} bytes is too small to be a DES shard")
    raise CorruptShard("not a DES shard: no footer magic at the end of the object")
