"""Building the new version of a shard for a repack, in scratch space: every live payload
copied as stored (fetched in windows of up to 8 MiB per object), solid blocks with deleted
members decoded and compressed again without them, deleted entries written as erased
tombstones, continuation parts numbered above every existing one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from des_format import (
    Codec,
    IndexEntry,
    ObjectStore,
    PreparedBlock,
    ShardWriter,
    decode_payload,
    part_key,
    prepare_block,
)

__all__ = ["build_shard"]

_WINDOW = 8 << 20  # payload bytes fetched per range request while copying


def _copy_windows(
    store: ObjectStore, key: str, etag: str, entries: list[IndexEntry]
) -> Iterator[tuple[IndexEntry, bytes]]:
    """Stored bytes of live inline entries, fetched in ranges of up to 8 MiB per object."""
    by_part: dict[int, list[IndexEntry]] = {}
    for e in entries:
        by_part.setdefault(e.part, []).append(e)
    for part in sorted(by_part):
        okey = key if part == 0 else part_key(key, part)
        pinned = etag if part == 0 else None
        group = sorted(by_part[part], key=lambda e: e.offset)
        i = 0
        while i < len(group):
            start = group[i].offset
            j = i
            end = start
            while j < len(group) and (
                j == i or group[j].offset + group[j].stored_size - start <= _WINDOW
            ):
                end = max(end, group[j].offset + group[j].stored_size)
                j += 1
            data = store.read_range(okey, start, end, if_match=pinned) if end > start else b""
            for e in group[i:j]:
                yield e, data[e.offset - start : e.offset - start + e.stored_size]
            i = j


def build_shard(  # noqa: PLR0917 - internal step with its full context
    store: ObjectStore,
    key: str,
    etag: str,
    old_entries: list[IndexEntry],
    workdir: Path,
    first_part: int,
    max_part_size: int | None,
    dictionary: bytes | None = None,
    recoded: dict[str, Codec] | None = None,
) -> tuple[Path, dict[int, Path], tuple[str, ...]]:
    """Write the rebuilt shard into ``workdir``; returns (head, {part: path}, erased uids).
    The shard's zstd dictionary (if any) is kept: payloads are copied as they are stored,
    but for the live members of solid blocks that hold deleted members, which are written
    as a new block (``recoded``, when given, gets the codec each of them was written with).
    """
    entries = sorted(old_entries, key=lambda e: e.uid.encode("utf-8"))
    inline = [e for e in entries if not e.deleted and not e.is_bigfile]
    # Solid blocks by (part, offset): their live members, and whether any member is deleted.
    block_live: dict[tuple[int, int], list[IndexEntry]] = {}
    block_dead: set[tuple[int, int]] = set()
    for e in entries:
        if e.codec is Codec.ZSTD_BLOCK and not e.is_bigfile and not e.erased:
            bkey = (e.part, e.offset)
            if e.deleted:
                block_dead.add(bkey)
            else:
                block_live.setdefault(bkey, []).append(e)
    blocks_done: set[tuple[int, int]] = set()
    part_paths: dict[int, Path] = {}
    part_files: list[BinaryIO] = []

    def open_part(n: int) -> BinaryIO:
        path = workdir / f"part{n}"
        part_paths[n] = path
        fh: BinaryIO = path.open("w+b")
        part_files.append(fh)
        return fh

    head = workdir / "head"
    erased: list[str] = []
    with head.open("w+b") as out:
        writer = ShardWriter(
            out,
            max_size=max_part_size,
            open_part=open_part if max_part_size is not None else None,
            first_part=first_part,
            dictionary=dictionary,
        )
        # Payloads in the order they were stored (one pass over each object), index by uid.
        for entry, stored in _copy_windows(store, key, etag, inline):
            if entry.codec is not Codec.ZSTD_BLOCK:
                writer.copy_stored(entry, stored)
                continue
            bkey = (entry.part, entry.offset)
            if bkey in blocks_done:
                continue  # every member of a block is written with its first one
            blocks_done.add(bkey)
            members = sorted(block_live[bkey], key=lambda e: e.block_offset)
            if bkey not in block_dead:
                writer.copy_block(members, stored)  # the block as it is stored
                continue
            written = _rewrite_block(writer, members, stored)
            if recoded is not None:
                recoded.update(written)
        for e in entries:
            if e.deleted:
                writer.add_erased(e.uid)
                if not e.erased:
                    erased.append(e.uid)
            elif e.is_bigfile:
                assert e.bigfile_hash is not None
                writer.add_bigfile(
                    e.uid, sha256=e.bigfile_hash, size=e.size, meta=e.meta, checksum=e.checksum
                )
        writer.close()
        out.flush()
        os.fsync(out.fileno())
    for fh in part_files:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
    return head, part_paths, tuple(erased)


def _rewrite_block(
    writer: ShardWriter, members: list[IndexEntry], stored: bytes
) -> dict[str, Codec]:
    """Write the live ``members`` of a solid block that also holds deleted members as a
    new block of their own (decoded, each checked against its CRC-32, compressed again):
    the deleted members' bytes, or the filler a delete left in their place, are not
    carried over. Members :func:`prepare_block` leaves alone are written alone. Returns
    the codec each member was written with."""
    decoded: dict[tuple[int, int], bytes] = {}
    files = [(m.uid, decode_payload(m, stored, None, decoded), dict(m.meta)) for m in members]
    out: dict[str, Codec] = {}
    for item in prepare_block(files):
        if isinstance(item, PreparedBlock):
            for e in writer.add_block(item):
                out[e.uid] = e.codec
        else:
            out[item.uid] = writer.add_prepared(item).codec
    return out
