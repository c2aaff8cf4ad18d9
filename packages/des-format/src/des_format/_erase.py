"""Erasing the bytes of deleted files in place: the filler byte a delete writes over a
payload, checks that a payload was overwritten, and the re-encoding of a solid block with
its deleted members' bytes replaced (same stored size, so the other members keep their
offsets). Pure functions over bytes and index entries (one reads through a store)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ._checksum import crc32
from ._codecs import Codec, compress, decompress_block
from ._errors import CorruptShard, ObjectNotFound
from ._index import ShardIndex
from ._layout import IndexEntry, part_key
from ._source import ObjectStore

_COPY = 1 << 20
#: zstd levels tried, in order, when a solid block is re-encoded without a deleted member.
BLOCK_ERASE_LEVELS = (3, 1, 6, 9, 19)
#: Why a delete keeps the bytes of a solid-block member in a continuation part.
BLOCK_KEPT_REASON = "its solid block could not be re-encoded in place; des repack erases it"
_SKIPPABLE_MAGIC = 0x184D2A50  # zstd skippable frame: magic, 4-byte length, that many bytes
_SKIPPABLE_HEADER = 8


def fill_byte(entry: IndexEntry) -> int:
    """The byte a delete overwrites the stored bytes of ``entry`` with.

    0, so that a reader still holding the old index fails: a compressed payload no longer
    starts with a frame, and a raw one no longer matches its CRC-32. For a raw file whose
    content would pass its own check once overwritten (a file of zeros), the first of 0xFF,
    0x01, 0x02, ... whose run does not match the CRC-32.

    For a member of a solid block (codec ``ZSTD_BLOCK``) the filler replaces the member's
    original bytes inside its decompressed block (:func:`erase_block`), so the same rule
    applies to its ``size`` original bytes.
    """
    if entry.codec is Codec.ZSTD_BLOCK:
        n = entry.size
    elif entry.codec is Codec.NONE:
        n = entry.stored_size
    else:
        return 0
    if entry.checksum is None or n == 0:
        return 0
    candidates: list[int] = [0x00, 0xFF, *range(1, 0xFF)]
    for fill in candidates:
        if _crc_of_run(fill, n) != entry.checksum:
            return fill
    return 0  # pragma: no cover - no length makes every run of one byte share a CRC-32


def _crc_of_run(fill: int, n: int) -> int:
    block = bytes([fill]) * min(n, _COPY)
    crc = 0
    left = n
    while left:
        step = min(left, len(block))
        crc = crc32(block[:step], crc)
        left -= step
    return crc


def payload_overwritten(store: ObjectStore, key: str, entry: IndexEntry) -> bool:
    """Whether the stored bytes of the tombstone ``entry`` (an inline entry of a
    continuation part of the shard at ``key``) now hold only :func:`fill_byte` bytes, or
    its part object is gone. Reads the range (in chunks). For a solid-block member: whether
    its block decodes and the member's range of it holds only its filler
    (:func:`member_erased`)."""
    if entry.is_bigfile or entry.part == 0:
        raise ValueError(f"{entry.uid!r} is not stored in a continuation part")
    if entry.stored_size == 0:
        return True
    okey = part_key(key, entry.part)
    if entry.codec is Codec.ZSTD_BLOCK:
        try:
            stored = store.read_range(okey, entry.offset, entry.offset + entry.stored_size)
        except ObjectNotFound:
            return True
        return member_erased(entry, stored)
    fill = fill_byte(entry)
    block = bytes([fill]) * min(entry.stored_size, _COPY)
    try:
        for chunk in store.iter_range(okey, entry.offset, entry.offset + entry.stored_size):
            if chunk != block[: len(chunk)]:
                return False
    except ObjectNotFound:
        return True
    return True


def member_erased(entry: IndexEntry, stored: bytes) -> bool:
    """Whether the solid-block member ``entry`` is erased in its block's stored bytes
    ``stored``: the block decodes and the member's range holds only its :func:`fill_byte`."""
    if entry.codec is not Codec.ZSTD_BLOCK:
        raise ValueError(f"{entry.uid!r} is not a solid-block member")
    if entry.size == 0:
        return True
    start = entry.block_offset
    try:
        block = decompress_block(stored, start + entry.size, uid=entry.uid)
    except CorruptShard:
        return False
    return block[start : start + entry.size] == bytes([fill_byte(entry)]) * entry.size


def erase_block(
    stored: bytes, members: Sequence[IndexEntry], *, levels: Sequence[int] = BLOCK_ERASE_LEVELS
) -> bytes | None:
    """New stored bytes for a solid block whose deleted members are erased, of exactly
    ``len(stored)`` bytes, or None when no encoding fits.

    ``stored`` is the block's current stored bytes; ``members`` are the index entries of
    the block's members (``deleted`` ones are erased, the others must stay). The block is
    decoded, the range of every deleted member is replaced with its :func:`fill_byte` run
    (earlier erasures stay so: the result is the same whichever were done before), and the
    result is encoded as one zstd frame with each of ``levels`` in turn until one is exactly
    ``len(stored)`` bytes, or at most 8 bytes shorter and then padded with a zstd skippable
    frame (which readers skip). The new bytes are decoded again before they are returned:
    every byte but the deleted members' ranges is the old one. ``CorruptShard`` when the
    block does not decode or a live member's bytes fail their CRC-32.
    """
    if not members:
        raise ValueError("a solid block has members")
    for m in members:
        if m.codec is not Codec.ZSTD_BLOCK:
            raise ValueError(f"{m.uid!r} is not a solid-block member")
    uid = members[0].uid
    need = max(m.block_offset + m.size for m in members)
    old = decompress_block(stored, need, uid=uid)
    new = bytearray(old)
    live = [m for m in members if not m.deleted]
    for m in live:
        part = old[m.block_offset : m.block_offset + m.size]
        if m.checksum is not None and crc32(part) != m.checksum:
            raise CorruptShard(f"solid block of {m.uid!r}: the member fails its CRC-32")
    for m in members:
        if m.deleted and m.size:
            new[m.block_offset : m.block_offset + m.size] = bytes([fill_byte(m)]) * m.size
    want = bytes(new)
    for m in live:
        if (
            want[m.block_offset : m.block_offset + m.size]
            != old[m.block_offset : m.block_offset + m.size]
        ):
            raise ValueError(f"{m.uid!r} overlaps a deleted member of its block")
    size = len(stored)
    for level in levels:
        frame = compress(Codec.ZSTD, want, level)
        if len(frame) == size:
            out = frame
        elif len(frame) <= size - _SKIPPABLE_HEADER:
            pad = size - _SKIPPABLE_HEADER - len(frame)
            out = frame + struct.pack("<II", _SKIPPABLE_MAGIC, pad) + bytes(pad)
        else:
            continue
        # what every reader will see: the same decoded block, but for the erased ranges
        if decompress_block(out, need, uid=uid) != want:  # pragma: no cover - zstd bug
            raise AssertionError(f"re-encoded solid block of {uid!r} does not round-trip")
        return out
    return None


def block_members(index: ShardIndex) -> dict[tuple[int, int], list[IndexEntry]]:
    """Solid-block members of ``index`` (tombstones included) by block: (part, offset)."""
    out: dict[tuple[int, int], list[IndexEntry]] = {}
    for e in index.iter_entries():
        if e.codec is Codec.ZSTD_BLOCK and not e.erased and not e.is_bigfile:
            out.setdefault((e.part, e.offset), []).append(e)
    return out
