"""Opening a shard's index from its tail: the current layout (a footer) or a legacy DES2
shard, told apart by the magic at the end of the object. :func:`read_index_steps` does it
without I/O (a generator of reads), :func:`read_index` drives it over a ``ByteSource``."""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import Any

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
from ._legacy import parse_legacy_index_steps
from ._source import ByteSource, TailRead

_CRC = struct.Struct("<I")


#: What :func:`read_index_steps` asks for: an ``int`` n is a tail read of n bytes (answered
#: with a :class:`TailRead`), a ``(start, end)`` pair a range read (answered with bytes).
IndexRequest = int | tuple[int, int]


def read_index(
    source: ByteSource, *, tail_size: int = DEFAULT_TAIL_SIZE, fetch: Fetch | None = None
) -> ShardIndex:
    """Read a shard's index with at most 2 reads: the tail, plus the directory (v1) or the index
    (legacy) when the tail did not hold it. Buckets are fetched later, one per lookup, through
    ``fetch`` (default: ``source.read_range``)."""
    reader = fetch if fetch is not None else source.read_range
    steps = read_index_steps(tail_size=tail_size, fetch=reader)
    answer: Any = None
    try:
        while True:
            request = steps.send(answer)
            answer = source.read_tail(request) if isinstance(request, int) else reader(*request)
    except StopIteration as done:
        index: ShardIndex = done.value
        return index


def read_index_steps(
    *, tail_size: int = DEFAULT_TAIL_SIZE, fetch: Fetch | None = None
) -> Generator[IndexRequest, Any, ShardIndex]:
    """:func:`read_index` without I/O: a generator that yields each read it needs (see
    :data:`IndexRequest`), is sent each answer, and returns the :class:`ShardIndex`
    (``fetch``: kept by the index for later bucket reads; None where the caller loads
    buckets itself through :meth:`ShardIndex.bucket_to_load`)."""
    tail: TailRead = yield max(tail_size, 64)
    data = tail.data
    size = tail.object_size
    if len(data) != min(size, max(tail_size, 64)):
        raise CorruptShard("tail read returned the wrong number of bytes")
    tail_start = size - len(data)
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
            block = yield (dict_start, size - FOOTER_SIZE)
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
            fetch=fetch,
            dictionary=dictionary,
        )
    if len(data) >= 12 and data[-12:-8] == LEGACY_FOOTER_MAGIC:
        index: ShardIndex = yield from parse_legacy_index_steps(data, size, tail.etag, fetch)
        return index
    if size < 12:
        raise CorruptShard(f"object of {size} bytes is too small to be a DES shard")
    raise CorruptShard("not a DES shard: no footer magic at the end of the object")
