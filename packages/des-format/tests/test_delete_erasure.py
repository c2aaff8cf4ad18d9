"""What a delete erases at once, and how a replica with a stale cached index answers.

A delete tombstones the entry in the head's index (which changes the head's ETag, so a stale
replica learns of it from its next head payload read), then overwrites the entry's bytes in
a continuation part and removes a big-file object no live file shares. A replica that still
caches the old index reads overwritten bytes or no object there; it re-reads the index once
and answers ``EntryDeleted``. These tests build shards with parts and big files on local
disk, keep a second retriever warm, delete through a first one, and check the answers, the
bytes left on disk and the request counts.
"""

from __future__ import annotations

import os
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from des_format import (
    ChecksumMismatch,
    Codec,
    EntryDeleted,
    IndexCache,
    IndexEntry,
    LocalShardEditor,
    ShardRetriever,
    StorageUnavailable,
    bigfile_key,
    codec_available,
    delete_entries,
    fill_byte,
    part_key,
    payload_overwritten,
    read_shard_index,
)
from des_format.testing import CountingStore, write_local_shard

KEY = "20240101/07.des"
OTHER = "20240101/08.des"
CODECS = [
    pytest.param(
        c, id=c.label, marks=pytest.mark.skipif(not codec_available(c), reason=f"{c.label} missing")
    )
    for c in (Codec.NONE, Codec.ZSTD, Codec.LZ4)
]


@dataclass
class Shard:
    base: Path
    files: dict[str, bytes]
    entries: dict[str, IndexEntry]

    def stored(self, uid: str) -> bytes:
        e = self.entries[uid]
        okey = KEY if e.part == 0 else part_key(KEY, e.part)
        return (self.base / okey).read_bytes()[e.offset : e.offset + e.stored_size]

    def all_bytes(self) -> bytes:
        return b"\x00".join(p.read_bytes() for p in sorted(self.base.rglob("*")) if p.is_file())


def text(i: int) -> bytes:
    return (f"line {i} of a compressible file {i * 7919} " * 30).encode()


# zstd when installed (the suite also runs without the optional codecs)
DEFAULT_CODEC = Codec.ZSTD if codec_available(Codec.ZSTD) else Codec.NONE


def build(
    base: Path,
    codec: Codec = DEFAULT_CODEC,
    *,
    key: str = KEY,
    extra: dict[str, bytes] | None = None,
    max_size: int = 2000,
    seed: int = 7,
) -> Shard:
    """A shard whose payloads roll over into parts of about ``max_size`` bytes, plus two big
    files (``big-a`` and ``big-b``, different contents)."""
    rnd = random.Random(seed)
    files = {f"f{i:02d}": (text(i) if i % 2 else rnd.randbytes(300 + i)) for i in range(24)}
    files["big-a"] = rnd.randbytes(6000)
    files["big-b"] = rnd.randbytes(6500)
    files.update(extra or {})
    entries = write_local_shard(
        base, key, files, codec=codec, max_size=max_size, big_file_threshold=5000
    )
    return Shard(base, files, entries)


def in_part(shard: Shard, n: int = 1, codec: Codec | None = None) -> list[str]:
    """``n`` files stored in continuation parts (with ``codec``, when given)."""
    found = [
        u
        for u, e in shard.entries.items()
        if not e.is_bigfile and e.part >= 1 and codec in (None, e.codec)
    ][:n]
    assert len(found) == n
    return found


def warm(base: Path) -> tuple[ShardRetriever, CountingStore]:
    """Another replica: a retriever with its own index cache, every bucket loaded."""
    store = CountingStore(LocalShardEditor(base).store)
    r = ShardRetriever(store, cache=IndexCache(1 << 24))
    for uid in build_uids(base):
        r.stat(KEY, uid)
    store.reset()
    return r, store


def build_uids(base: Path) -> list[str]:
    index, _ = read_shard_index(LocalShardEditor(base).store, KEY)
    return [e.uid for e in index.iter_entries()]


def age(path: Path, seconds: float = 7200) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.mark.parametrize("codec", CODECS)
def test_a_warm_replica_answers_deleted_for_a_file_in_a_part(tmp_path: Path, codec: Codec) -> None:
    shard = build(tmp_path, codec)
    victim, live = in_part(shard, 2, codec)
    stored = shard.stored(victim)
    part = tmp_path / part_key(KEY, shard.entries[victim].part)
    part_before = part.read_bytes()
    replica, counted = warm(tmp_path)
    assert replica.read(KEY, live) == shard.files[live]
    assert counted.count == 1  # a warm read of a live part payload: one request

    res = delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    assert (res.deleted, res.gone, res.kept) == ((victim,), (victim,), ())
    assert res.overwritten == (part_key(KEY, shard.entries[victim].part),)

    # only the victim's range of the part changed, to the filler byte
    e = shard.entries[victim]
    after = part.read_bytes()
    fill = bytes([fill_byte(e)])
    assert len(after) == len(part_before)
    assert after[: e.offset] == part_before[: e.offset]
    assert after[e.offset + e.stored_size :] == part_before[e.offset + e.stored_size :]
    assert after[e.offset : e.offset + e.stored_size] == fill * e.stored_size
    assert stored not in shard.all_bytes()
    assert shard.files[victim] not in shard.all_bytes()
    assert payload_overwritten(LocalShardEditor(tmp_path).store, KEY, read_entry(tmp_path, victim))

    counted.reset()
    with pytest.raises(EntryDeleted):
        replica.read(KEY, victim)
    # the part payload (fails its check), then the index again, cold: nothing more
    assert [(r.method, r.key) for r in counted.requests][:2] == [
        ("read_range", part_key(KEY, e.part)),
        ("read_tail", KEY),
    ]
    assert all(r.key == KEY for r in counted.requests[1:])
    for uid, data in shard.files.items():
        if uid != victim:
            assert replica.read(KEY, uid) == data, uid
    counted.reset()
    assert replica.read(KEY, live) == shard.files[live]
    assert counted.count == 1  # warm again, and still one request


def read_entry(base: Path, uid: str) -> IndexEntry:
    index, _ = read_shard_index(LocalShardEditor(base).store, KEY)
    e = index.lookup(uid)
    assert e is not None
    return e


@pytest.mark.parametrize("codec", CODECS)
def test_stale_open_and_read_many_answer_deleted_too(tmp_path: Path, codec: Codec) -> None:
    shard = build(tmp_path, codec)
    victim = in_part(shard, 1, codec)[0]
    opener, _ = warm(tmp_path)
    batch, _ = warm(tmp_path)
    batch_all, _ = warm(tmp_path)
    delete_entries(LocalShardEditor(tmp_path), KEY, [victim])
    handle = opener.open(KEY, victim)  # the stale index still lists it as live
    with pytest.raises(EntryDeleted):
        next(handle.iter_bytes())  # nothing was yielded before the answer
    assert opener.read(KEY, "f00") == shard.files["f00"]
    # files of the parts only: no read of the head object (whose ETag changed) is involved
    others = [u for u, e in shard.entries.items() if u != victim and e.part and not e.is_bigfile]
    got = dict(batch.read_many(KEY, [victim, *others]))
    assert isinstance(got.pop(victim), EntryDeleted)
    assert got == {u: shard.files[u] for u in others}
    everything = dict(batch_all.read_many(KEY, list(shard.files)))
    assert isinstance(everything.pop(victim), EntryDeleted)
    assert everything == {u: d for u, d in shard.files.items() if u != victim}


def test_a_streamed_file_past_the_held_back_chunk_never_yields_its_content(
    tmp_path: Path,
) -> None:
    big_raw = random.Random(3).randbytes(4000)
    shard = build(tmp_path, Codec.NONE, extra={"raw": big_raw})
    e = shard.entries["raw"]
    assert (e.is_bigfile, e.part >= 1, e.codec) == (False, True, Codec.NONE)
    store = LocalShardEditor(tmp_path).store
    stale = ShardRetriever(store, cache=IndexCache(1 << 24), chunk_size=512)
    stale.stat(KEY, "raw")
    delete_entries(LocalShardEditor(tmp_path), KEY, ["raw"])
    got: list[bytes] = []
    with pytest.raises(ChecksumMismatch):
        got.extend(stale.open(KEY, "raw").iter_bytes())
    # the bytes that did leave are the filler the delete wrote, never the file's
    assert b"".join(got) == b"\x00" * len(b"".join(got))
    assert 512 < len(b"".join(got)) <= len(big_raw)
    with pytest.raises(EntryDeleted):  # the next read re-reads the index
        stale.read(KEY, "raw")


def test_a_file_of_zeros_is_overwritten_with_another_byte(tmp_path: Path) -> None:
    zeros = bytes(700)
    shard = build(tmp_path, Codec.NONE, extra={"zeros": zeros})
    e = shard.entries["zeros"]
    assert e.part >= 1
    assert fill_byte(e) == 0xFF  # zeros would pass the CRC-32 of a file of zeros
    assert zlib.crc32(b"\xff" * 700) != e.checksum
    assert fill_byte(shard.entries["f01"]) == 0
    replica, _ = warm(tmp_path)
    delete_entries(LocalShardEditor(tmp_path), KEY, ["zeros"])
    with pytest.raises(EntryDeleted):
        replica.read(KEY, "zeros")
    assert shard.stored("zeros") == b"\xff" * 700


def test_big_file_removed_when_old_and_unshared(tmp_path: Path) -> None:
    shared = random.Random(11).randbytes(5500)
    shard = build(tmp_path, extra={"big-c": shared})
    build(tmp_path, key=OTHER, extra={"big-c2": shared}, seed=8)  # big-c's content, live
    day = tmp_path / "20240101" / "_bigFiles"
    for p in day.iterdir():
        age(p)
    replica, _ = warm(tmp_path)
    assert replica.read(KEY, "big-a") == shard.files["big-a"]
    editor = LocalShardEditor(tmp_path)
    res = delete_entries(editor, KEY, ["big-a", "big-c"])
    a_key = bigfile_key(KEY, shard.entries["big-a"].bigfile_hash or "")
    assert res.bigfiles_removed == (a_key,)
    assert res.gone == ("big-a",)
    assert res.why_kept("big-c") == (
        "a live file has the same content, stored once in one big-file object"
    )
    assert not (tmp_path / a_key).exists()
    assert shard.files["big-a"] not in shard.all_bytes()
    with pytest.raises(EntryDeleted):
        replica.read(KEY, "big-a")
    with pytest.raises(EntryDeleted):
        replica.read(KEY, "big-c")  # the head's ETag changed: its next read learns it
    assert replica.read(OTHER, "big-c2") == shared
    with pytest.raises(EntryDeleted):
        b"".join(warm(tmp_path)[0].open(KEY, "big-a").iter_bytes())


def test_a_young_big_file_is_kept_until_a_later_delete(tmp_path: Path) -> None:
    shard = build(tmp_path)
    editor = LocalShardEditor(tmp_path)
    b_key = bigfile_key(KEY, shard.entries["big-b"].bigfile_hash or "")
    res = delete_entries(editor, KEY, ["big-b"])  # just packed: within the grace period
    assert res.gone == ()
    why = res.why_kept("big-b")
    assert why is not None
    assert why.startswith("its big-file object is younger than the grace period (3600 s)")
    assert (tmp_path / b_key).read_bytes() == shard.files["big-b"]
    again = delete_entries(editor, KEY, ["big-b"], now=time.time() + 3601)
    assert (again.already, again.gone, again.bigfiles_removed) == (("big-b",), ("big-b",), (b_key,))
    assert not (tmp_path / b_key).exists()
    editor0 = LocalShardEditor(tmp_path, bigfile_grace_seconds=0)
    assert delete_entries(editor0, KEY, ["big-a"]).gone == ("big-a",)


def test_head_payloads_stay_until_a_repack(tmp_path: Path) -> None:
    shard = build(tmp_path, max_size=1 << 20)  # no parts: every payload in the head
    res = delete_entries(LocalShardEditor(tmp_path), KEY, ["f03"])
    assert res.kept == (
        ("f03", "its bytes are in the shard's head object until a repack erases them"),
    )
    assert shard.stored("f03") in shard.all_bytes()


class CrashingEditor(LocalShardEditor):
    """A process that dies right after the tombstone is durable: the first overwrite fails
    before it writes anything."""

    crashes = 1

    def overwrite_range(
        self,
        key: str,
        start: int,
        end: int,
        fill: int | bytes,
        *,
        shard_key: str,
        shard_etag: str,
    ) -> bool:
        if self.crashes:
            self.crashes -= 1
            raise StorageUnavailable("the process died here", key=key)
        return super().overwrite_range(
            key, start, end, fill, shard_key=shard_key, shard_etag=shard_etag
        )


def test_a_delete_interrupted_before_the_overwrite_is_finished_by_running_it_again(
    tmp_path: Path,
) -> None:
    shard = build(tmp_path)
    victims = in_part(shard, 2)
    stored = {u: shard.stored(u) for u in victims}
    editor = CrashingEditor(tmp_path)
    with pytest.raises(StorageUnavailable):
        delete_entries(editor, KEY, victims)
    # the tombstones are durable, the bytes are still there: hidden
    fresh = ShardRetriever(LocalShardEditor(tmp_path).store)
    for u in victims:
        with pytest.raises(EntryDeleted):
            fresh.read(KEY, u)
        assert not payload_overwritten(editor.store, KEY, read_entry(tmp_path, u))
    assert all(s in shard.all_bytes() for s in stored.values())
    parts_before = {p.name: p.read_bytes() for p in tmp_path.rglob("*.p*.des")}
    head_before = (tmp_path / KEY).read_bytes()

    again = delete_entries(editor, KEY, victims)
    assert (again.deleted, again.already, again.gone) == ((), tuple(victims), tuple(victims))
    assert (tmp_path / KEY).read_bytes() == head_before  # no new tombstone, no new version
    for u in victims:
        assert payload_overwritten(editor.store, KEY, read_entry(tmp_path, u))
    assert not any(s in shard.all_bytes() for s in stored.values())
    # nothing but the victims' ranges changed
    changed = {
        (n, i)
        for p in tmp_path.rglob("*.p*.des")
        for n in [p.name]
        for i, (a, b) in enumerate(zip(parts_before[n], p.read_bytes(), strict=True))
        if a != b
    }
    ranges = {
        (Path(part_key(KEY, e.part)).name, i)
        for u in victims
        for e in [shard.entries[u]]
        for i in range(e.offset, e.offset + e.stored_size)
    }
    assert changed <= ranges
    for uid, data in shard.files.items():
        if uid not in victims:
            assert fresh.read(KEY, uid) == data
    # and a third run changes nothing at all
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    third = delete_entries(editor, KEY, victims)
    assert (third.gone, third.overwritten) == (tuple(victims), ())
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_the_overwrite_is_refused_once_the_head_changed(tmp_path: Path) -> None:
    shard = build(tmp_path)
    victim = in_part(shard)[0]
    e = shard.entries[victim]
    editor = LocalShardEditor(tmp_path)
    _index, etag = read_shard_index(editor.store, KEY)
    delete_entries(editor, KEY, ["f00"])  # another writer: the head has a new ETag
    okey = part_key(KEY, e.part)
    before = (tmp_path / okey).read_bytes()
    ok = editor.overwrite_range(
        okey, e.offset, e.offset + e.stored_size, 0, shard_key=KEY, shard_etag=etag
    )
    assert ok is False
    assert (tmp_path / okey).read_bytes() == before
