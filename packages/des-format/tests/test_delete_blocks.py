"""Deleting members of solid blocks: a member in a continuation part is erased in place by
re-encoding its block (the member's bytes replaced by filler, the frame padded to the old
stored size with a skippable frame), the block's other members keep reading byte-exact,
and a replica holding the old index answers ``EntryDeleted`` for the member."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from des_format import (
    Codec,
    EntryDeleted,
    IndexCache,
    IndexEntry,
    LocalShardEditor,
    PreparedBlock,
    ShardReader,
    ShardRetriever,
    ShardWriter,
    _delete,
    codec_available,
    delete_entries,
    fill_byte,
    part_key,
    payload_overwritten,
    prepare_block,
    read_shard_index,
)
from des_format._codecs import decompress_block
from des_format._erase import BLOCK_KEPT_REASON, erase_block, member_erased
from des_format._reader import decode_payload
from des_format.testing import CountingStore

pytestmark = pytest.mark.skipif(not codec_available(Codec.ZSTD), reason="zstd missing")

KEY = "20240101/07.des"


def marker(uid: str) -> bytes:
    return f"<<secret of {uid}>>".encode()


def member_data(uid: str, i: int) -> bytes:
    rnd = random.Random(i)
    words = [rnd.choice([b"alpha", b"beta", b"gamma", b"delta", b"omega"]) for _ in range(200)]
    return marker(uid) + b" ".join(words) + marker(uid)


@dataclass
class Shard:
    base: Path
    files: dict[str, bytes]
    entries: dict[str, IndexEntry]
    blocks: list[list[str]]  # uids of each block, in block order

    def part_path(self, uid: str) -> Path:
        return self.base / part_key(KEY, self.entries[uid].part)

    def stored(self, uid: str) -> bytes:
        e = self.entries[uid]
        okey = KEY if e.part == 0 else part_key(KEY, e.part)
        return (self.base / okey).read_bytes()[e.offset : e.offset + e.stored_size]


def build(base: Path, *, level: int | None = None, zeros: bool = False) -> Shard:
    """A shard whose head holds raw filler files and a first block, then three blocks of
    four members that roll over into continuation parts (``zeros``: one member of the
    second block is all zeros)."""
    handles: list[BinaryIO] = []

    def open_part(n: int) -> BinaryIO:
        handles.append((base / part_key(KEY, n)).open("wb"))
        return handles[-1]

    path = base / KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    entries: dict[str, IndexEntry] = {}
    blocks: list[list[str]] = []
    rnd = random.Random(3)
    try:
        with path.open("wb") as fh:
            w = ShardWriter(fh, codec=Codec.NONE, max_size=2000, open_part=open_part)
            for b in range(4):
                group: list[tuple[str, bytes, dict[str, Any]]] = []
                for m in range(4):
                    uid = f"b{b}m{m}"
                    data = bytes(700) if zeros and (b, m) == (1, 2) else member_data(uid, b * 4 + m)
                    group.append((uid, data, {}))
                    files[uid] = data
                prepared = prepare_block(group, level=level)
                assert len(prepared) == 1
                assert isinstance(prepared[0], PreparedBlock)
                for e in w.add_block(prepared[0]):
                    entries[e.uid] = e
                blocks.append([uid for uid, _, _ in group])
                raw = f"raw{b}"
                files[raw] = rnd.randbytes(900)
                entries[raw] = w.add(raw, files[raw])
            w.close()
    finally:
        for h in handles:
            h.close()
    shard = Shard(base, files, entries, blocks)
    assert shard.entries["b0m0"].part == 0
    assert all(shard.entries[blocks[i][0]].part >= 1 for i in (1, 2, 3))
    return shard


def warm(base: Path) -> tuple[ShardRetriever, CountingStore]:
    store = CountingStore(LocalShardEditor(base).store)
    r = ShardRetriever(store, cache=IndexCache(1 << 24))
    index, _ = read_shard_index(store, KEY)
    for e in index.iter_entries():
        r.stat(KEY, e.uid)
    store.reset()
    return r, store


def decoded_block(shard: Shard, uid: str) -> bytes:
    e = shard.entries[uid]
    return decompress_block(shard.stored(uid), e.block_offset + e.size)


def test_a_deleted_member_in_a_part_is_erased_and_its_block_mates_stay(tmp_path: Path) -> None:
    shard = build(tmp_path)
    mates = shard.blocks[1]
    victim = mates[1]
    e = shard.entries[victim]
    part = shard.part_path(victim)
    before = part.read_bytes()
    head_before = (tmp_path / KEY).read_bytes()

    res = delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    assert (res.deleted, res.gone, res.kept) == ((victim,), (victim,), ())
    assert res.overwritten == (part_key(KEY, e.part),)

    after = part.read_bytes()
    assert len(after) == len(before)
    # only the block's stored range changed
    assert after[: e.offset] == before[: e.offset]
    assert after[e.offset + e.stored_size :] == before[e.offset + e.stored_size :]
    assert marker(victim) not in decoded_block(shard, victim)
    block = decoded_block(shard, victim)
    assert block[e.block_offset : e.block_offset + e.size] == bytes(e.size)
    # the tombstone's index entry still points at the block; the head grew by a tail only
    assert (tmp_path / KEY).read_bytes()[: len(head_before)] == head_before

    index, _ = read_shard_index(LocalShardEditor(tmp_path).store, KEY)
    tomb = index.lookup(victim)
    assert tomb is not None
    assert tomb.deleted
    assert payload_overwritten(LocalShardEditor(tmp_path).store, KEY, tomb)
    with ShardReader.open_path(tmp_path / KEY) as reader:
        for uid, data in shard.files.items():
            if uid != victim:
                assert reader.read(uid) == data, uid
        with pytest.raises(EntryDeleted):
            reader.read(victim)
        assert reader.verify(deep=True) == len(shard.files)  # the erased member is excused


def test_the_block_is_padded_with_a_skippable_frame_to_its_old_size(tmp_path: Path) -> None:
    shard = build(tmp_path)
    victim = shard.blocks[2][0]
    e = shard.entries[victim]
    old = shard.stored(victim)
    members = [replace(shard.entries[u], deleted=u == victim) for u in shard.blocks[2]]
    new = erase_block(old, members)
    assert new is not None
    assert len(new) == len(old)
    # one zstd frame, then (when shorter) a skippable frame filling the rest
    frame_end = _frame_length(new)
    assert frame_end < len(new)  # filler compresses better than the member did
    magic, n = struct.unpack_from("<II", new, frame_end)
    assert magic == 0x184D2A50
    assert frame_end + 8 + n == len(new)
    was = decompress_block(old, 1)
    want = was[: e.block_offset] + bytes(e.size) + was[e.block_offset + e.size :]
    assert decompress_block(new, e.block_offset + e.size) == want
    assert member_erased(members[0], new)
    assert not member_erased(members[0], old)
    for m in members[1:]:
        assert decode_payload(m, new) == shard.files[m.uid]
    assert erase_block(old, members, levels=()) is None


def _frame_length(data: bytes) -> int:
    """Bytes of the first zstd frame of ``data`` (a decompressobj leaves the rest unused)."""
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    dobj.decompress(data)
    return len(data) - len(dobj.unused_data)


def test_a_stale_replica_answers_deleted_and_reads_the_block_mates(tmp_path: Path) -> None:
    shard = build(tmp_path)
    mates = shard.blocks[3]
    victim = mates[2]
    replica, counted = warm(tmp_path)
    assert replica.read(KEY, mates[0]) == shard.files[mates[0]]
    assert counted.count == 1  # a warm read of a block member in a part: one request

    res = delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    assert res.gone == (victim,)

    # through the stale index: the block's other members still read byte-exact
    counted.reset()
    for uid in mates:
        if uid != victim:
            assert replica.read(KEY, uid) == shard.files[uid], uid
    assert counted.count == len(mates) - 1  # no reload: nothing failed
    assert b"".join(replica.open(KEY, mates[0]).iter_bytes()) == shard.files[mates[0]]
    # the erased member fails its CRC-32 under the stale index: reload, then deleted
    with pytest.raises(EntryDeleted):
        replica.read(KEY, victim)
    # and through the fresh index
    for uid in mates:
        if uid != victim:
            assert replica.read(KEY, uid) == shard.files[uid], uid
    got = dict(replica.read_many(KEY, mates))
    assert isinstance(got[victim], EntryDeleted)
    for uid in mates:
        if uid != victim:
            assert got[uid] == shard.files[uid]


def test_a_stale_replica_answers_deleted_through_open_and_read_many(tmp_path: Path) -> None:
    shard = build(tmp_path)
    mates = shard.blocks[1]
    victim = mates[0]
    r1, _ = warm(tmp_path)
    r2, _ = warm(tmp_path)
    delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    with pytest.raises(EntryDeleted):
        b"".join(r1.open(KEY, victim).iter_bytes())
    got = dict(r2.read_many(KEY, mates))
    assert isinstance(got[victim], EntryDeleted)
    for uid in mates[1:]:
        assert got[uid] == shard.files[uid]


def test_several_members_of_one_block_each_erased_and_earlier_erasures_stay(
    tmp_path: Path,
) -> None:
    shard = build(tmp_path)
    mates = shard.blocks[2]
    editor = LocalShardEditor(tmp_path)
    replica, _ = warm(tmp_path)
    assert delete_entries(editor, KEY, [mates[0]]).gone == (mates[0],)
    assert delete_entries(editor, KEY, [mates[3]]).gone == (mates[3],)
    block = decoded_block(shard, mates[0])
    for uid in (mates[0], mates[3]):
        e = shard.entries[uid]
        assert block[e.block_offset : e.block_offset + e.size] == bytes(e.size)
        assert marker(uid) not in block
    for uid in (mates[1], mates[2]):
        assert replica.read(KEY, uid) == shard.files[uid]
    # both at once, in another block; and deleting again changes nothing
    other = shard.blocks[1]
    res = delete_entries(editor, KEY, [other[1], other[2]])
    assert res.gone == (other[1], other[2])
    assert len(res.overwritten) == 1  # the block was re-encoded once for both
    part = shard.part_path(other[1]).read_bytes()
    again = delete_entries(editor, KEY, [other[1], other[2], mates[0]])
    assert again.already == (other[1], other[2], mates[0])
    assert again.overwritten == ()
    assert shard.part_path(other[1]).read_bytes() == part
    with ShardReader.open_path(tmp_path / KEY) as reader:
        assert reader.verify(deep=True) == len(shard.files)
        for uid in (other[0], other[3], mates[1], mates[2]):
            assert reader.read(uid) == shard.files[uid]


def test_a_member_of_zeros_is_erased_with_another_filler(tmp_path: Path) -> None:
    shard = build(tmp_path, zeros=True)
    victim = shard.blocks[1][2]
    e = shard.entries[victim]
    assert shard.files[victim] == bytes(e.size)
    assert fill_byte(e) == 0xFF
    replica, _ = warm(tmp_path)
    assert delete_entries(LocalShardEditor(tmp_path), KEY, [victim]).gone == (victim,)
    block = decoded_block(shard, victim)
    assert block[e.block_offset : e.block_offset + e.size] == b"\xff" * e.size
    with pytest.raises(EntryDeleted):
        replica.read(KEY, victim)
    with ShardReader.open_path(tmp_path / KEY) as reader:
        assert reader.verify(deep=True) == len(shard.files)


def test_a_block_that_cannot_be_re_encoded_in_place_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = build(tmp_path)
    victim = shard.blocks[1][3]
    part = shard.part_path(victim)
    before = part.read_bytes()
    monkeypatch.setattr(_delete, "erase_block", lambda stored, members: None)
    res = delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    assert res.deleted == (victim,)
    assert (res.gone, res.kept, res.overwritten) == ((), ((victim, BLOCK_KEPT_REASON),), ())
    assert res.why_kept(victim) == BLOCK_KEPT_REASON
    assert part.read_bytes() == before
    index, _ = read_shard_index(LocalShardEditor(tmp_path).store, KEY)
    tomb = index.lookup(victim)
    assert tomb is not None
    assert not payload_overwritten(LocalShardEditor(tmp_path).store, KEY, tomb)
    # the next delete run (the encoder back) finishes it
    monkeypatch.undo()
    assert delete_entries(LocalShardEditor(tmp_path), KEY, [victim]).gone == (victim,)


def test_a_member_in_the_head_is_left_for_repack(tmp_path: Path) -> None:
    shard = build(tmp_path)
    victim = shard.blocks[0][1]
    res = delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    assert res.gone == ()
    assert res.why_kept(victim) == (
        "its bytes are in the shard's head object until a repack erases them"
    )


def test_overwrite_range_takes_bytes_of_the_range_length(tmp_path: Path) -> None:
    shard = build(tmp_path)
    e = shard.entries[shard.blocks[1][0]]
    editor = LocalShardEditor(tmp_path)
    okey = part_key(KEY, e.part)
    _, etag = read_shard_index(editor.store, KEY)
    with pytest.raises(ValueError, match="bytes given"):
        editor.overwrite_range(okey, 10, 20, b"x" * 9, shard_key=KEY, shard_etag=etag)
    before = (tmp_path / okey).read_bytes()
    assert editor.overwrite_range(okey, 10, 20, b"0123456789", shard_key=KEY, shard_etag=etag)
    after = (tmp_path / okey).read_bytes()
    assert after == before[:10] + b"0123456789" + before[20:]
    assert editor.overwrite_range(okey, 10, 20, 7, shard_key=KEY, shard_etag=etag)
    assert (tmp_path / okey).read_bytes() == before[:10] + bytes([7]) * 10 + before[20:]
    assert not editor.overwrite_range(okey, 10, 20, b"x" * 10, shard_key=KEY, shard_etag="no")


def test_a_block_is_rewritten_all_at_once_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given bytes (a re-encoded block, which also holds live files) replace the part file
    by a renamed copy: a reader that opened the old file reads it whole, and a failure
    before the rename leaves the part as it was (a torn write would break live members)."""
    import os as os_mod

    shard = build(tmp_path)
    e = shard.entries[shard.blocks[1][0]]
    editor = LocalShardEditor(tmp_path)
    okey = part_key(KEY, e.part)
    path = tmp_path / okey
    _, etag = read_shard_index(editor.store, KEY)
    before = path.read_bytes()
    with path.open("rb") as old_reader:
        ino = os_mod.stat(path).st_ino
        assert editor.overwrite_range(okey, 10, 20, b"0123456789", shard_key=KEY, shard_etag=etag)
        assert os_mod.stat(path).st_ino != ino  # a new file, renamed over the old
        assert old_reader.read() == before  # the old one, whole
    assert path.read_bytes() == before[:10] + b"0123456789" + before[20:]

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os_mod, "replace", refuse)
    now = path.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        editor.overwrite_range(okey, 10, 20, b"abcdefghij", shard_key=KEY, shard_etag=etag)
    assert path.read_bytes() == now
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".des-edit")] == []
