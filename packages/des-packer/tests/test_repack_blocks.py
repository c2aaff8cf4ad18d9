"""``des repack`` and solid blocks: a block whose members are all live is copied as it is
stored (``copy_block``, no recompression); a block holding deleted members is decoded and
its live members written as a new block (or alone, when one is left), so no deleted byte
survives the repack, and every live member keeps reading byte-exact."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from des_format import (
    Codec,
    EntryDeleted,
    IndexEntry,
    LocalShardEditor,
    PreparedBlock,
    ShardReader,
    ShardWriter,
    codec_available,
    delete_entries,
    part_key,
    prepare_block,
    read_shard_index,
)
from des_format._codecs import decompress, decompress_block
from des_packer._repack import RepackOptions, repack, repack_shard, scan_shard

pytestmark = pytest.mark.skipif(not codec_available(Codec.ZSTD), reason="zstd missing")

KEY = "20240101/07.des"


def marker(uid: str) -> bytes:
    return f"<<the content of {uid}>>".encode()


def member_data(uid: str, seed: int) -> bytes:
    rnd = random.Random(seed)
    words = [rnd.choice([b"north", b"south", b"east", b"west", b"up"]) for _ in range(150)]
    return marker(uid) + b" ".join(words) + marker(uid)


@dataclass
class Shard:
    base: Path
    files: dict[str, bytes]
    blocks: list[list[str]]


def build(base: Path, sizes: tuple[int, ...] = (4, 4, 2, 3), max_size: int | None = 2000) -> Shard:
    """A shard of solid blocks of ``sizes`` members, each block followed by a raw file;
    with ``max_size``, the later blocks roll over into continuation parts."""
    handles: list[BinaryIO] = []

    def open_part(n: int) -> BinaryIO:
        handles.append((base / part_key(KEY, n)).open("wb"))
        return handles[-1]

    path = base / KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(1)
    files: dict[str, bytes] = {}
    blocks: list[list[str]] = []
    try:
        with path.open("wb") as fh:
            w = ShardWriter(
                fh,
                codec=Codec.ZSTD,
                max_size=max_size,
                open_part=open_part if max_size is not None else None,
            )
            for b, n in enumerate(sizes):
                group: list[tuple[str, bytes, dict[str, Any]]] = []
                for m in range(n):
                    uid = f"b{b}m{m}"
                    files[uid] = member_data(uid, 10 * b + m)
                    group.append((uid, files[uid], {"name": f"{uid}.txt"}))
                (block,) = prepare_block(group)
                assert isinstance(block, PreparedBlock)
                w.add_block(block)
                blocks.append([u for u, _, _ in group])
                files[f"raw{b}"] = rnd.randbytes(600)
                w.add(f"raw{b}", files[f"raw{b}"], meta={"name": f"raw{b}.bin"})
            w.close()
    finally:
        for h in handles:
            h.close()
    return Shard(base, files, blocks)


def index_of(base: Path) -> dict[str, IndexEntry]:
    index, _ = read_shard_index(LocalShardEditor(base).store, KEY)
    return {e.uid: e for e in index.iter_entries()}


def stored_of(base: Path, e: IndexEntry) -> bytes:
    okey = KEY if e.part == 0 else part_key(KEY, e.part)
    return (base / okey).read_bytes()[e.offset : e.offset + e.stored_size]


def stored_blocks(base: Path) -> dict[tuple[str, ...], bytes]:
    """Each solid block's stored bytes, by the uids of its live members."""
    by_block: dict[tuple[int, int], list[IndexEntry]] = {}
    for e in index_of(base).values():
        if e.codec is Codec.ZSTD_BLOCK and not e.deleted:
            by_block.setdefault((e.part, e.offset), []).append(e)
    return {tuple(sorted(m.uid for m in ms)): stored_of(base, ms[0]) for ms in by_block.values()}


def everything_decoded(base: Path) -> bytes:
    """Every byte the shard's objects hold, raw and decompressed: each stored payload of
    the current index decoded (blocks whole, tombstones' bytes included when they still
    have any), plus the raw bytes of every file under ``base``."""
    out: list[bytes] = [p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()]
    for e in index_of(base).values():
        if e.erased or e.is_bigfile or e.stored_size == 0:
            continue
        stored = stored_of(base, e)
        if e.codec is Codec.ZSTD_BLOCK:
            out.append(decompress_block(stored, 0))
        elif e.codec is Codec.ZSTD:
            out.append(decompress(Codec.ZSTD, stored, e.size))
    return b"\x00".join(out)


def check_live(base: Path, shard: Shard, deleted: set[str]) -> None:
    with ShardReader.open_path(base / KEY) as reader:
        assert reader.verify(deep=True) == len(shard.files)
        for uid, data in shard.files.items():
            if uid in deleted:
                with pytest.raises(EntryDeleted):
                    reader.read(uid)
            else:
                assert reader.read(uid) == data, uid


@pytest.mark.parametrize("max_size", [None, 2000], ids=["one-object", "parts"])
def test_blocks_without_deletions_are_copied_as_stored(
    tmp_path: Path, max_size: int | None
) -> None:
    shard = build(tmp_path, max_size=max_size)
    before = index_of(tmp_path)
    blocks_before = stored_blocks(tmp_path)
    assert len(blocks_before) == len(shard.blocks)
    res = repack_shard(LocalShardEditor(tmp_path), KEY, max_part_size=max_size)
    assert res.erased == ()
    after = index_of(tmp_path)
    assert stored_blocks(tmp_path) == blocks_before  # byte-identical, not recompressed
    for uid, e in before.items():
        n = after[uid]
        assert (n.codec, n.size, n.stored_size, n.checksum, n.block_offset, n.meta) == (
            e.codec,
            e.size,
            e.stored_size,
            e.checksum,
            e.block_offset,
            e.meta,
        )
    check_live(tmp_path, shard, set())


@pytest.mark.parametrize("max_size", [None, 2000], ids=["one-object", "parts"])
def test_a_deleted_member_does_not_survive_a_repack(tmp_path: Path, max_size: int | None) -> None:
    shard = build(tmp_path, max_size=max_size)
    victim = shard.blocks[0][1]  # in the head: the delete leaves it for the repack
    untouched = tuple(sorted(shard.blocks[1]))
    editor = LocalShardEditor(tmp_path)
    res = delete_entries(editor, KEY, [victim])
    assert res.gone == ()
    assert marker(victim) in everything_decoded(tmp_path)
    kept_block = stored_blocks(tmp_path)[untouched]

    report = repack(editor, RepackOptions(bigfile_grace_seconds=0, max_part_size=max_size))
    assert [r.erased for r in report.repacked] == [(victim,)]
    assert report.failures == ()
    assert marker(victim) not in everything_decoded(tmp_path)
    after = index_of(tmp_path)
    assert after[victim].erased
    mates = [u for u in shard.blocks[0] if u != victim]
    assert all(after[u].codec is Codec.ZSTD_BLOCK for u in mates)  # a new block of three
    assert len({(after[u].part, after[u].offset) for u in mates}) == 1
    assert [after[u].block_offset for u in mates] == [
        0,
        after[mates[0]].size,
        after[mates[0]].size + after[mates[1]].size,
    ]
    assert stored_blocks(tmp_path)[untouched] == kept_block  # the other blocks: copied
    check_live(tmp_path, shard, {victim})


def test_members_erased_by_a_delete_and_a_lone_survivor(tmp_path: Path) -> None:
    shard = build(tmp_path)
    in_part = shard.blocks[2]  # two members, in a continuation part
    victims = {in_part[0], shard.blocks[3][0], shard.blocks[3][2], shard.blocks[0][3]}
    editor = LocalShardEditor(tmp_path)
    res = delete_entries(editor, KEY, sorted(victims))
    assert set(res.gone) == victims - {shard.blocks[0][3]}  # erased in place in their parts
    for uid in victims - {shard.blocks[0][3]}:
        assert marker(uid) not in everything_decoded(tmp_path)

    repack_shard(editor, KEY, max_part_size=2000)
    assert not any(marker(uid) in everything_decoded(tmp_path) for uid in victims)
    after = index_of(tmp_path)
    lone = in_part[1]
    assert after[lone].codec in (Codec.ZSTD, Codec.NONE)  # prepare_block left it alone
    assert after[lone].block_offset == 0
    survivors = [shard.blocks[3][1]]
    assert after[survivors[0]].codec in (Codec.ZSTD, Codec.NONE)
    check_live(tmp_path, shard, victims)
    # a second repack finds nothing left to erase
    assert repack(editor, RepackOptions(bigfile_grace_seconds=0)).repacked == ()


def test_a_block_whose_members_are_all_deleted_is_dropped(tmp_path: Path) -> None:
    shard = build(tmp_path)
    victims = set(shard.blocks[1])
    editor = LocalShardEditor(tmp_path)
    delete_entries(editor, KEY, sorted(victims))
    repack_shard(editor, KEY, max_part_size=2000)
    decoded = everything_decoded(tmp_path)
    assert not any(marker(uid) in decoded for uid in victims)
    assert len(stored_blocks(tmp_path)) == len(shard.blocks) - 1
    check_live(tmp_path, shard, victims)


def test_a_member_counts_its_share_of_the_block(tmp_path: Path) -> None:
    shard = build(tmp_path)
    victim = shard.blocks[1][0]
    editor = LocalShardEditor(tmp_path)
    delete_entries(editor, KEY, [victim])
    index, _ = read_shard_index(editor.store, KEY)
    entries = {e.uid: e for e in index.iter_entries()}
    stats = scan_shard(KEY, index)
    block = [entries[u] for u in shard.blocks[1]]
    total = sum(m.size for m in block)
    e = entries[victim]
    assert stats.hidden_bytes == e.stored_size * e.size // total  # not the whole block
    # every block counted once (each member's share rounded down): what the payloads take
    stored = sum(len(stored_of(tmp_path, entries[b[0]])) for b in shard.blocks)
    stored += sum(len(shard.files[f"raw{b}"]) for b in range(len(shard.blocks)))
    members = sum(len(b) for b in shard.blocks)
    assert stored - members <= stats.live_bytes + stats.hidden_bytes <= stored
    # bytes_before: the head, plus each payload in a part once (a block once, not per member)
    in_parts = {(x.part, x.offset): x.stored_size for x in entries.values() if x.part}
    head = (tmp_path / KEY).stat().st_size
    res = repack_shard(editor, KEY, max_part_size=2000)
    assert res.bytes_before == head + sum(in_parts.values())


def test_des_deletions_counts_a_hidden_member_by_its_share(tmp_path: Path) -> None:
    """`des deletions` reports the bytes a hidden file still takes: for a member of a block
    in the head object (not erasable before a repack), its share of the block."""
    from des_packer._deletions import iter_deletions

    shard = build(tmp_path, max_size=None)
    victim = shard.blocks[0][1]
    editor = LocalShardEditor(tmp_path)
    delete_entries(editor, KEY, [victim])
    entries = index_of(tmp_path)
    e = entries[victim]
    total = sum(entries[u].size for u in shard.blocks[0])
    (record,) = list(iter_deletions(editor))
    assert (record.uid, record.state) == (victim, "hidden")
    assert record.stored_bytes == e.stored_size * e.size // total
    assert 0 < record.stored_bytes < e.stored_size
