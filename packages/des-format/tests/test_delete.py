"""Tombstones written through the append path, erased tombstones, repack writer helpers, the
local shard editor's conditional writes, and read request counts with tombstones."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from des_format import (
    BytesSource,
    Codec,
    DuplicateUid,
    EntryDeleted,
    EntryNotFound,
    IndexCache,
    IndexEntry,
    LocalShardEditor,
    PreconditionFailed,
    ShardReader,
    ShardRetriever,
    ShardWriter,
    codec_available,
    delete_entries,
    read_index,
    read_shard_index,
)
from des_format._index import parse_bucket, serialize_bucket
from des_format.testing import CountingStore

KEY = "20240101/07.des"


def write_shard(base: Path, n: int = 40, *, seed: int = 5) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {f"u{i:04d}": rnd.randbytes(100 + i) for i in range(n)}
    path = base / KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        w = ShardWriter(fh, codec="none")
        for uid, data in files.items():
            w.add(uid, data)
        w.close()
    return files


def test_erased_tombstone_encoding_round_trips() -> None:
    erased = IndexEntry(uid="gone", size=0, stored_size=0, deleted=True)
    assert erased.erased
    raw = serialize_bucket([(b"gone", erased)])
    # 0 metadata, 1 entry, uid, flags DELETED|NO_CRC (0x90 as a 2-byte varint), offset 0, size 0
    assert raw == b"\x00\x01\x04gone\x90\x01\x00\x00"
    assert parse_bucket(raw) == {"gone": erased}
    hidden = IndexEntry(uid="gone", size=3, stored_size=3, checksum=7, offset=16, deleted=True)
    assert not hidden.erased
    assert not IndexEntry(uid="x", size=0, stored_size=0, checksum=0).erased


def test_writer_add_erased_and_copy_stored_and_first_part() -> None:
    # zstd when installed (the suite also runs without the optional codecs)
    codec = Codec.ZSTD if codec_available(Codec.ZSTD) else Codec.NONE
    src = io.BytesIO()
    w = ShardWriter(src, codec=codec)
    kept = w.add("keep", b"k" * 500, content_type="text/plain")
    w.add("drop", b"d" * 500)
    w.close()
    old = read_index(BytesSource(src.getvalue()))
    stored = src.getvalue()[kept.offset : kept.offset + kept.stored_size]

    parts: dict[int, io.BytesIO] = {}

    def open_part(n: int) -> io.BytesIO:
        parts[n] = io.BytesIO()
        return parts[n]

    out = io.BytesIO()
    w2 = ShardWriter(out, max_size=17, open_part=open_part, first_part=5)
    copied = w2.copy_stored(old.lookup("keep"), stored)  # type: ignore[arg-type]
    assert (copied.part, copied.offset, copied.codec) == (0, 16, codec)
    more = w2.add("more", b"m" * 300, codec="none")
    assert (more.part, more.offset) == (5, 16)  # rollover numbers parts from first_part
    w2.add_erased("drop")
    with pytest.raises(DuplicateUid):
        w2.add_erased("keep")
    summary = w2.close()
    assert (summary.entry_count, summary.parts) == (3, (5,))
    reader = ShardReader(
        BytesSource(out.getvalue()), part_source=lambda n: BytesSource(parts[n].getvalue())
    )
    assert reader.read("keep") == b"k" * 500
    assert reader.lookup("keep").meta == {"content_type": "text/plain"}  # type: ignore[union-attr]
    gone = reader.lookup("drop")
    assert gone is not None
    assert gone.erased
    with pytest.raises(EntryDeleted):
        reader.read("drop")
    assert reader.read("more") == b"m" * 300
    assert reader.verify(deep=True) == 3
    with pytest.raises(ValueError, match="first_part must be >= 1"):
        ShardWriter(io.BytesIO(), first_part=0)


def test_delete_entries_through_the_local_editor(tmp_path: Path) -> None:
    files = write_shard(tmp_path)
    editor = LocalShardEditor(tmp_path)
    size_before = (tmp_path / KEY).stat().st_size
    res = delete_entries(editor, KEY, ["u0003", "u0007", "nope", "u0003"])
    assert (res.deleted, res.already, res.missing, res.attempts) == (
        ("u0003", "u0007"),
        (),
        ("nope",),
        1,
    )
    # the old bytes are untouched: the tombstones are in a tail (new index + footer)
    data = (tmp_path / KEY).read_bytes()
    assert len(data) > size_before
    retriever = ShardRetriever(editor.store)
    for uid, content in files.items():
        if uid in ("u0003", "u0007"):
            with pytest.raises(EntryDeleted):
                retriever.read(KEY, uid)
        else:
            assert retriever.read(KEY, uid) == content
    with pytest.raises(EntryNotFound):
        retriever.read(KEY, "nope")
    again = delete_entries(editor, KEY, ["u0003"])
    assert (again.deleted, again.already) == ((), ("u0003",))
    assert list(tmp_path.rglob(".des-edit.*")) == []


def test_local_editor_refuses_a_stale_version(tmp_path: Path) -> None:
    write_shard(tmp_path)
    editor = LocalShardEditor(tmp_path)
    _index, etag = read_shard_index(editor.store, KEY)
    delete_entries(editor, KEY, ["u0001"])  # someone else changes the shard
    tail = tmp_path / "tail"
    tail.write_bytes(b"x")
    before = (tmp_path / KEY).read_bytes()
    with pytest.raises(PreconditionFailed, match="changed since its index was read"):
        editor.append(KEY, tail, etag)
    with pytest.raises(PreconditionFailed):
        editor.replace(KEY, tail, etag)
    assert (tmp_path / KEY).read_bytes() == before


def test_delete_retries_when_the_shard_changes_underneath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_shard(tmp_path)
    editor = LocalShardEditor(tmp_path)
    real_append = editor.append
    calls: list[int] = []

    def racing_append(key: str, tail: object, etag: str) -> None:
        calls.append(1)
        if len(calls) == 1:  # another writer gets in first
            delete_entries(LocalShardEditor(tmp_path), KEY, ["u0009"])
        real_append(key, tail, etag)  # type: ignore[arg-type]

    monkeypatch.setattr(editor, "append", racing_append)
    res = delete_entries(editor, KEY, ["u0002"])
    assert (res.deleted, res.attempts) == (("u0002",), 2)
    index, _ = read_shard_index(editor.store, KEY)
    assert index.lookup("u0002").deleted  # type: ignore[union-attr]
    assert index.lookup("u0009").deleted  # type: ignore[union-attr]


def test_tombstones_add_no_request_to_cold_or_warm_reads(tmp_path: Path) -> None:
    plain, tomb = tmp_path / "plain", tmp_path / "tomb"
    write_shard(plain)
    write_shard(tomb)
    delete_entries(LocalShardEditor(tomb), KEY, [f"u{i:04d}" for i in range(0, 40, 3)])
    counts = {}
    for name, base in (("plain", plain), ("tomb", tomb)):
        store = CountingStore(LocalShardEditor(base).store)
        retriever = ShardRetriever(store, cache=IndexCache(1 << 20))
        retriever.read(KEY, "u0001")
        cold = store.count
        store.reset()
        retriever.read(KEY, "u0002")
        counts[name] = (cold, store.count)
        if name == "tomb":
            store.reset()
            with pytest.raises(EntryDeleted):
                retriever.read(KEY, "u0003")
            # no payload read for a deleted file: the cached index answers, and one HEAD
            # confirms the shard did not change since (as for any miss under a cached index)
            assert dict(store.by_method()) == {"head": 1}
    assert counts["plain"] == counts["tomb"] == (2, 1)


def test_a_warm_cache_sees_a_tombstone_written_elsewhere(tmp_path: Path) -> None:
    files = write_shard(tmp_path)
    store = CountingStore(LocalShardEditor(tmp_path).store)
    retriever = ShardRetriever(store, cache=IndexCache(1 << 20))
    assert retriever.read(KEY, "u0005") == files["u0005"]
    delete_entries(LocalShardEditor(tmp_path), KEY, ["u0005"])  # another replica
    with pytest.raises(EntryDeleted):
        retriever.read(KEY, "u0005")  # If-Match on the cached ETag fails, re-read cold
    store.reset()
    assert retriever.read(KEY, "u0006") == files["u0006"]
    assert store.count == 1  # warm again: one request


def test_stale_edit_temps_are_removed_only_when_old(tmp_path: Path) -> None:
    import os
    import time

    write_shard(tmp_path)
    editor = LocalShardEditor(tmp_path)
    old = tmp_path / "20240101" / ".des-edit.07.des.aaaa"
    young = tmp_path / "20240101" / ".des-edit.07.des.bbbb"
    other = tmp_path / "20240101" / ".des-edit.08.des.cccc"
    for p in (old, young, other):
        p.write_bytes(b"copy of an older version")
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert editor.remove_stale_temps(KEY) == 1
    assert (old.exists(), young.exists(), other.exists()) == (False, True, True)


def test_a_warm_cache_answers_deleted_once_the_big_file_is_erased(tmp_path: Path) -> None:
    from des_format import LocalBigFileSink, bigfile_key

    path = tmp_path / KEY
    path.parent.mkdir(parents=True)
    big = random.Random(1).randbytes(5000)
    with path.open("wb") as fh:
        w = ShardWriter(
            fh, codec="none", big_file_threshold=1000, bigfile_sink=LocalBigFileSink(path.parent)
        )
        entry = w.add("big", big)
        w.add("small", b"s" * 10)
        w.close()
    assert entry.bigfile_hash is not None
    editor = LocalShardEditor(tmp_path)
    retriever = ShardRetriever(editor.store, cache=IndexCache(1 << 20))
    assert b"".join(retriever.open(KEY, "big").iter_bytes()) == big  # index cached
    delete_entries(editor, KEY, ["big"])
    editor.remove(bigfile_key(KEY, entry.bigfile_hash))  # what a repack does
    with pytest.raises(EntryDeleted):
        b"".join(retriever.open(KEY, "big").iter_bytes())
    with pytest.raises(EntryDeleted):
        retriever.read(KEY, "big")
