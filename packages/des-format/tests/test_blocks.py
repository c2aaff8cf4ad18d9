"""Solid blocks (FORMAT.md section 3.2, codec 4, footer feature 0x2): several small files
compressed together as one zstd frame, each member cut out of the decompressed block."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from des_format import (
    DEFAULT_TAIL_SIZE,
    FEATURE_BLOCKS,
    FEATURE_DICTIONARY,
    MAX_BLOCK_SIZE,
    BytesSource,
    ChecksumMismatch,
    Codec,
    CorruptShard,
    DesFormatError,
    EntryDeleted,
    IndexCache,
    IndexEntry,
    LocalObjectStore,
    PreparedBlock,
    PreparedPayload,
    ShardReader,
    ShardRetriever,
    ShardWriter,
    UnsupportedFormatVersion,
    codec_available,
    part_key,
    plan_coalesced_ranges,
    prepare_block,
    prepare_payload,
    read_index,
    verify_files,
)
from des_format.testing import CountingStore, append_local
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(
    not codec_available(Codec.ZSTD), reason="solid blocks need the zstd library"
)

KEY = "20240101/A7.des"
Files = Sequence[tuple[str, bytes, dict[str, Any]]]


def text(seed: str, n: int) -> bytes:
    """Deterministic compressible text of n bytes (words shared between seeds)."""
    words = [hashlib.sha256(f"w{i}".encode()).hexdigest()[:7] for i in range(60)]
    salt = int(hashlib.sha256(seed.encode()).hexdigest()[:4], 16)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += words[(i * 7 + salt) % 60].encode() + b" "
        i += 1
    return bytes(out[:n])


def group(prefix: str, sizes: Sequence[int], ctype: str = "text/plain") -> Files:
    return [
        (f"{prefix}-{i}", text(f"{prefix}{i}", n), {"content_type": ctype})
        for i, n in enumerate(sizes)
    ]


def add_all(w: ShardWriter, files: Files) -> list[IndexEntry]:
    out: list[IndexEntry] = []
    for item in prepare_block(files):
        if isinstance(item, PreparedBlock):
            out += w.add_block(item)
        else:
            out.append(w.add_prepared(item))
    return out


def build(*groups: Files, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd", **kwargs)
    for g in groups:
        add_all(w, g)
    w.close()
    return out.getvalue()


def datas(*groups: Files) -> dict[str, bytes]:
    return {uid: data for g in groups for uid, data, _ in g}


def write(base: Path, blob: bytes) -> Path:
    path = base / KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def exact(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return "^" + re.escape(message) + "$"


def skippable(n: int) -> bytes:
    """A zstd skippable frame of n bytes in all (n >= 8)."""
    return struct.pack("<II", 0x184D2A5A, n - 8) + b"\xaa" * (n - 8)


def zstd_frame(data: bytes, *, content_size: bool = True) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(data)


def members(
    uid_data: Sequence[tuple[str, bytes]], offsets: Sequence[int] | None = None
) -> tuple[PreparedPayload, ...]:
    """Members as prepare_block makes them (offsets: the real ones unless given)."""
    out = []
    pos = 0
    for i, (uid, data) in enumerate(uid_data):
        off = pos if offsets is None else offsets[i]
        out.append(
            PreparedPayload(
                uid, len(data), b"", Codec.ZSTD_BLOCK, zlib.crc32(data), {}, block_offset=off
            )
        )
        pos += len(data)
    return tuple(out)


def shard_with_block(stored: bytes, uid_data: Sequence[tuple[str, bytes]]) -> bytes:
    """A shard holding one block whose stored bytes are ``stored`` (possibly forged: the
    writer's check of the frame's declared size is switched off)."""
    import des_format._writer as writer_mod

    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer_mod, "_block_frame_size", lambda _: sum(len(d) for _, d in uid_data))
        w.add_block(PreparedBlock(stored, members(uid_data)))
    w.close()
    return out.getvalue()


NOTES = group("note", [400, 900, 1500, 50])
RECORDS = group("rec", [300, 700], "application/json")
ALONE: Files = [
    ("photo.jpg", bytes(range(256)) * 3, {"name": "photo.jpg"}),
    ("empty", b"", {}),
]


# ---- layout and round trips ----


def test_members_share_the_block_range_and_the_feature_bit_is_set() -> None:
    blob = build(NOTES, RECORDS)
    index = read_index(BytesSource(blob))
    assert index.features == FEATURE_BLOCKS
    notes = [index.lookup(uid) for uid, _, _ in NOTES]
    found = [e for e in notes if e is not None and e.codec is Codec.ZSTD_BLOCK]
    assert len(found) == 4
    stored = found[0].stored_size
    assert {(e.offset, e.stored_size, e.part) for e in found} == {(16, stored, 0)}
    assert [e.block_offset for e in found] == [0, 400, 1300, 2800]
    assert sum(len(d) for _, d, _ in NOTES) > stored
    reader = ShardReader(BytesSource(blob))
    for uid, data in datas(NOTES, RECORDS).items():
        assert reader.read(uid) == data
    assert reader.verify(deep=True) == 6


def test_a_shard_without_blocks_keeps_features_zero() -> None:
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd")
    w.add("a", text("a", 500))
    w.close()
    assert read_index(BytesSource(out.getvalue())).features == 0


def test_prepare_block_stores_empty_and_precompressed_files_alone() -> None:
    files = [*NOTES[:2], *ALONE, ("clip", text("clip", 800), {"content_type": "video/mp4"})]
    result = prepare_block(files)
    block = result[0]
    assert isinstance(block, PreparedBlock)
    assert [m.uid for m in block.members] == ["note-0", "note-1"]
    assert block.size == 1300
    alone = result[1:]
    assert [(p.uid, p.codec) for p in alone if isinstance(p, PreparedPayload)] == [
        ("photo.jpg", Codec.NONE),
        ("empty", Codec.NONE),
        ("clip", Codec.NONE),
    ]
    # fewer than two members left: everything alone, as prepare_payload would
    single = prepare_block([NOTES[0], *ALONE])
    assert all(isinstance(p, PreparedPayload) for p in single)
    assert [p.codec for p in single if isinstance(p, PreparedPayload)] == [
        Codec.ZSTD,
        Codec.NONE,
        Codec.NONE,
    ]
    # a block that would not be smaller than its members: alone
    noise: Files = [
        (f"n{i}", b"".join(hashlib.sha256(f"{i}:{j}".encode()).digest() for j in range(4)), {})
        for i in range(3)
    ]
    assert all(isinstance(p, PreparedPayload) for p in prepare_block(noise))


_NAMES = st.sampled_from([None, "a.txt", "b.json", "c.JPG", "d.zip", "e.csv"])
_DATA = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.text("abcdef", min_size=1, max_size=8), st.integers(0, 5000)).map(
        lambda t: text(t[0], t[1])
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(st.tuples(_DATA, _NAMES), max_size=8), min_size=1, max_size=4),
    st.integers(0, 2),
)
def test_any_member_sets_round_trip_through_every_read_path(
    groups_spec: list[list[tuple[bytes, str | None]]], rollover: int
) -> None:
    groups: list[Files] = []
    for n, spec in enumerate(groups_spec):
        groups.append(
            [
                (f"g{n}-{i:02d}", data, {"name": name} if name else {})
                for i, (data, name) in enumerate(spec)
            ]
        )
    want = datas(*groups)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = base / KEY
        path.parent.mkdir(parents=True)
        handles: list[BinaryIO] = []

        def open_part(n: int) -> BinaryIO:
            handles.append((base / part_key(KEY, n)).open("wb"))
            return handles[-1]

        with path.open("wb") as fh:
            kwargs: dict[str, Any] = {}
            if rollover:
                kwargs = {"max_size": 2000 * rollover, "open_part": open_part}
            w = ShardWriter(fh, codec="zstd", **kwargs)
            for g in groups:
                add_all(w, g)
            w.close()
        for h in handles:
            h.close()
        with ShardReader.open_path(path) as reader:
            assert reader.verify(deep=True) == len(want)
            for uid, data in want.items():
                assert reader.read(uid) == data
            entries = list(reader.iter_entries())
            has_block = any(e.codec is Codec.ZSTD_BLOCK for e in entries)
            assert bool(reader.index.features & FEATURE_BLOCKS) == has_block
        store = LocalObjectStore(base)
        r = ShardRetriever(store, cache=IndexCache(1 << 20))
        uids = list(want)
        for uid in uids:
            assert r.read(KEY, uid) == want[uid]
            assert b"".join(r.open(KEY, uid).iter_bytes()) == want[uid]
            got = r.read_nowait(KEY, uid)
            if got is not None:  # None: not answerable without I/O (then read() is used)
                assert got[1] == want[uid]
        assert dict(r.read_many(KEY, uids)) == want
        checks = verify_files(store, KEY, uids, digest="sha256")
        assert all(c.ok for c in checks.values()), checks
        assert {u: c.digest for u, c in checks.items()} == {
            u: hashlib.sha256(d).hexdigest() for u, d in want.items()
        }


# ---- request budget ----


def test_cold_read_of_a_member_is_two_requests_and_warm_is_one(tmp_path: Path) -> None:
    path = write(tmp_path, build(NOTES, RECORDS, ALONE))
    store = CountingStore(LocalObjectStore(tmp_path))
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    assert r.read(KEY, "note-2") == NOTES[2][1]
    assert [q.method for q in store.requests] == ["read_tail", "read_range"]
    assert store.requests[0].nbytes == min(DEFAULT_TAIL_SIZE, path.stat().st_size)
    entry = r.stat(KEY, "note-2")
    payload = store.requests[1]
    assert (payload.start, payload.end) == (entry.offset, entry.offset + entry.stored_size)
    store.reset()
    assert r.read(KEY, "note-1") == NOTES[1][1]  # the same block again: one request
    assert [q.method for q in store.requests] == ["read_range"]
    store.reset()
    assert r.open(KEY, "rec-1").read() == RECORDS[1][1]
    assert [q.method for q in store.requests] == ["iter_range"]


@pytest.mark.parametrize("max_coalesced", [8 << 20, 64])
def test_read_many_of_members_of_one_block_is_one_request(
    tmp_path: Path, max_coalesced: int
) -> None:
    """With any ``max_coalesced``, even one smaller than the block: the members share one range."""
    write(tmp_path, build(NOTES, RECORDS))
    store = CountingStore(LocalObjectStore(tmp_path))
    r = ShardRetriever(
        store, cache=IndexCache(1 << 20), coalesce_gap=0, max_coalesced=max_coalesced
    )
    r.index(KEY)
    store.reset()
    uids = [uid for uid, _, _ in NOTES]
    assert dict(r.read_many(KEY, uids)) == datas(NOTES)
    assert [q.method for q in store.requests] == ["read_range"]
    store.reset()
    checks = verify_files(store, KEY, uids, window=64, coalesce_gap=0, max_coalesced=max_coalesced)
    assert all(c.ok for c in checks.values())
    assert [q.method for q in store.requests] == ["read_tail", "read_range", "read_range"]


def test_plan_keeps_ranges_inside_an_oversized_read_together() -> None:
    plan = plan_coalesced_ranges([(100, 500), (100, 500), (100, 500), (600, 700)], 1000, 50)
    assert [(p.start, p.end, p.members) for p in plan] == [(100, 500, (0, 1, 2)), (600, 700, (3,))]


def test_read_many_decodes_each_block_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import des_format._reader as reader_mod
    from des_format._codecs import decompress_block

    write(tmp_path, build(NOTES, RECORDS))
    calls: list[int] = []
    real = decompress_block

    def counting(data: bytes, need: int, *, uid: str = "") -> bytes:
        calls.append(need)
        return real(data, need, uid=uid)

    monkeypatch.setattr(reader_mod, "decompress_block", counting)
    r = ShardRetriever(LocalObjectStore(tmp_path))
    assert dict(r.read_many(KEY, list(datas(NOTES, RECORDS)))) == datas(NOTES, RECORDS)
    assert len(calls) == 2  # two blocks


# ---- appends, rollover, repack ----


def test_appends_keep_block_members_and_the_feature_bit(tmp_path: Path) -> None:
    path = write(tmp_path, build(NOTES))
    before = {e.uid: e for e in read_index(BytesSource(path.read_bytes())).iter_entries()}
    append_local(path, {"late": b"a late file\n"}, delete=("note-1",))
    index = read_index(BytesSource(path.read_bytes()))
    assert index.features == FEATURE_BLOCKS
    for uid, e in before.items():
        now = index.lookup(uid)
        assert now is not None
        assert (now.codec, now.offset, now.stored_size, now.block_offset) == (
            e.codec,
            e.offset,
            e.stored_size,
            e.block_offset,
        )
    reader = ShardReader(BytesSource(path.read_bytes()))
    with pytest.raises(EntryDeleted):
        reader.read("note-1")
    for uid, data in datas(NOTES).items():
        if uid != "note-1":
            assert reader.read(uid) == data
    assert reader.read("late") == b"a late file\n"
    assert reader.verify(deep=True) == 5
    # an append that adds a block of its own, to a shard that had none
    plain = io.BytesIO()
    w = ShardWriter(plain, codec="zstd")
    w.add("p", text("p", 900))
    w.close()
    old = plain.getvalue()
    assert read_index(BytesSource(old)).features == 0
    tail = io.BytesIO()
    w = ShardWriter(tail, codec="zstd", base_offset=len(old), existing=read_index(BytesSource(old)))
    add_all(w, RECORDS)
    w.close()
    reader = ShardReader(BytesSource(old + tail.getvalue()))
    assert reader.index.features == FEATURE_BLOCKS
    assert {u: reader.read(u) for u in ("p", "rec-0", "rec-1")} == {
        "p": text("p", 900),
        **datas(RECORDS),
    }


def test_deleting_every_member_keeps_the_feature_bit() -> None:
    blob = build(RECORDS)
    tail = io.BytesIO()
    w = ShardWriter(tail, base_offset=len(blob), existing=read_index(BytesSource(blob)))
    w.delete("rec-0")
    w.delete("rec-1")
    w.close()
    index = read_index(BytesSource(blob + tail.getvalue()))
    assert index.features == FEATURE_BLOCKS  # the tombstones still encode a block_offset
    index.check()


def test_rollover_puts_a_block_whole_in_one_part(tmp_path: Path) -> None:
    parts: dict[int, io.BytesIO] = {}

    def open_part(n: int) -> io.BytesIO:
        parts[n] = io.BytesIO()
        return parts[n]

    groups = [group(f"g{i}", [700, 800, 900]) for i in range(5)]
    head = io.BytesIO()
    w = ShardWriter(head, codec="zstd", max_size=400, open_part=open_part)
    for g in groups:
        add_all(w, g)
    w.close()
    assert len(parts) >= 2
    blobs = {0: head.getvalue(), **{n: b.getvalue() for n, b in parts.items()}}
    index = read_index(BytesSource(blobs[0]))
    for g in groups:
        es = [index.lookup(uid) for uid, _, _ in g]
        assert len({(e.part, e.offset, e.stored_size) for e in es if e}) == 1
        e = es[0]
        assert e is not None
        assert e.codec is Codec.ZSTD_BLOCK
        assert e.offset + e.stored_size <= len(blobs[e.part])
    write(tmp_path, blobs[0])
    for n, b in parts.items():
        (tmp_path / part_key(KEY, n)).write_bytes(b.getvalue())
    with ShardReader.open_path(tmp_path / KEY) as reader:
        assert reader.verify(deep=True) == 15
        for g in groups:
            for uid, data, _ in g:
                assert reader.read(uid) == data
    r = ShardRetriever(LocalObjectStore(tmp_path))
    want = datas(*groups)
    assert dict(r.read_many(KEY, list(want))) == want
    assert b"".join(r.open(KEY, "g3-2").iter_bytes()) == want["g3-2"]


def test_copy_block_round_trip() -> None:
    src_blob = build(NOTES, RECORDS, ALONE)
    src = ShardReader(BytesSource(src_blob))
    by_block: dict[tuple[int, int], list[IndexEntry]] = {}
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd", base_offset=0)
    w.add("first", text("first", 333))  # so that offsets change
    for e in src.iter_entries():
        if e.codec is Codec.ZSTD_BLOCK:
            by_block.setdefault((e.part, e.offset), []).append(e)
        else:
            w.copy_stored(e, src_blob[e.offset : e.offset + e.stored_size])
    for (_, offset), es in by_block.items():
        copied = w.copy_block(es, src_blob[offset : offset + es[0].stored_size])
        assert [c.block_offset for c in copied] == [e.block_offset for e in es]
        assert len({c.offset for c in copied}) == 1
    assert w.copy_block([], b"") == []
    w.close()
    reader = ShardReader(BytesSource(out.getvalue()))
    assert reader.index.features == FEATURE_BLOCKS
    assert reader.verify(deep=True) == 9
    for uid, data in datas(NOTES, RECORDS, ALONE).items():
        assert reader.read(uid) == data
    # refusals
    notes = by_block[min(by_block)]
    recs = by_block[max(by_block)]
    fresh = ShardWriter(io.BytesIO())
    stored = src_blob[notes[0].offset : notes[0].offset + notes[0].stored_size]
    with pytest.raises(ValueError, match="is not in the same block as 'note-0'"):
        fresh.copy_block([notes[0], recs[0]], stored)
    with pytest.raises(ValueError, match=r"block of 'note-0': got 3 stored bytes, the entry says"):
        fresh.copy_block(notes, b"abc")
    with pytest.raises(ValueError, match="copy_block takes live solid-block members, not 'note-1'"):
        fresh.copy_block([notes[0], replace(notes[1], deleted=True)], stored)
    photo = src.entry("photo.jpg")
    with pytest.raises(
        ValueError, match=re.escape("copy_block takes live solid-block members, not 'photo.jpg'")
    ):
        fresh.copy_block([photo], b"")


# ---- refusals ----


def test_refusals_name_the_right_call() -> None:
    block = prepare_block(NOTES)[0]
    assert isinstance(block, PreparedBlock)
    w = ShardWriter(io.BytesIO(), codec="zstd")
    with pytest.raises(
        ValueError, match=exact("'note-0' is a block member: add its block with add_block")
    ):
        w.add_prepared(block.members[0])
    entry = ShardReader(BytesSource(build(NOTES))).entry("note-1")
    with pytest.raises(
        ValueError, match=exact("'note-1' is in a solid block: copy it with copy_block")
    ):
        w.copy_stored(entry, b"x" * entry.stored_size)
    for data, name in ((text("x", 500), None), (b"", None), (text("x", 500), "x.jpg")):
        with pytest.raises(ValueError, match=exact("solid blocks are made by prepare_block")):
            prepare_payload("x", data, name=name, codec=Codec.ZSTD_BLOCK)
    with pytest.raises(ValueError, match=exact("solid blocks are made by prepare_block")):
        prepare_payload("x", b"big" * 10, codec=4, big_file_threshold=1)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="solid blocks are made by prepare_block and added with add_block"
    ):
        ShardWriter(io.BytesIO(), codec=Codec.ZSTD_BLOCK)
    big: Files = [
        ("a", b"a" * (MAX_BLOCK_SIZE // 2), {}),
        ("b", b"b" * (MAX_BLOCK_SIZE // 2 + 1), {}),
    ]
    with pytest.raises(
        ValueError,
        match=exact(
            f"a solid block holds at most {MAX_BLOCK_SIZE} bytes, got {MAX_BLOCK_SIZE + 1}"
        ),
    ):
        prepare_block(big)
    # add_block: nothing is added when a member is bad
    w.add("note-3", b"already here")
    from des_format import DuplicateUid

    with pytest.raises(DuplicateUid):
        w.add_block(block)
    w2 = ShardWriter(io.BytesIO())
    forged = PreparedBlock(block.stored, (block.members[1], block.members[0]))
    with pytest.raises(
        ValueError, match="'note-1' is not a member of this block as prepare_block makes"
    ):
        w2.add_block(forged)
    with pytest.raises(ValueError, match="not a solid block: 4 members of 2850 bytes in 0 stored"):
        w2.add_block(PreparedBlock(b"", block.members))
    with pytest.raises(
        ValueError, match=exact("not a solid block: 0 members of 0 bytes in 5 stored")
    ):
        w2.add_block(PreparedBlock(b"frame", ()))
    other = prepare_block(RECORDS)[0]
    assert isinstance(other, PreparedBlock)
    with pytest.raises(
        ValueError,
        match=exact("not a solid block: its frame declares 1000 bytes, its members hold 2850"),
    ):
        w2.add_block(PreparedBlock(other.stored, block.members))
    with pytest.raises(ValueError, match="its frame declares -1 bytes"):
        w2.add_block(PreparedBlock(zstd_frame(b"x" * 2850, content_size=False), block.members))
    assert w2.close().entry_count == 0


# ---- corruption ----


def _read_error(blob: bytes, uid: str) -> DesFormatError:
    with pytest.raises(DesFormatError) as info:
        ShardReader(BytesSource(blob)).read(uid)
    return info.value


def test_frame_declaring_fewer_bytes_than_the_member_needs() -> None:
    a, b = text("a", 500), text("b", 500)
    blob = shard_with_block(zstd_frame(a + b[:100]), [("a", a), ("b", b)])
    assert ShardReader(BytesSource(blob)).read("a") == a
    err = _read_error(blob, "b")
    assert type(err) is CorruptShard
    assert str(err) == "solid block of 'b' declares 600 bytes, the entry needs 1000"


def test_frame_declaring_more_than_the_limit_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = text("a", 500)
    huge = zstd_frame(a + bytes(MAX_BLOCK_SIZE))  # small stored, declares 4 MiB + 500
    blob = shard_with_block(huge, [("a", a), ("z", bytes(10))])
    import des_format._codecs as codecs

    def no_decoder() -> None:
        raise AssertionError("decoded a block over the limit")

    monkeypatch.setattr(codecs, "_zstd_decompressor", no_decoder)
    err = _read_error(blob, "a")
    assert type(err) is CorruptShard
    assert str(err) == (
        f"solid block of 'a' declares {MAX_BLOCK_SIZE + 500} bytes; the limit is {MAX_BLOCK_SIZE}"
    )


def test_frame_without_a_declared_size() -> None:
    a, b = text("a", 500), text("b", 500)
    frame = zstd_frame(a + b, content_size=False)
    blob = shard_with_block(frame, [("a", a), ("b", b)])
    err = _read_error(blob, "b")
    assert type(err) is CorruptShard
    assert str(err) == "solid block of 'b' does not declare its size"


def test_a_trailing_skippable_frame_is_ignored(tmp_path: Path) -> None:
    a, b = text("a", 700), text("b", 900)
    stored = zstd_frame(a + b) + skippable(40)
    blob = shard_with_block(stored, [("a", a), ("b", b)])
    reader = ShardReader(BytesSource(blob))
    assert reader.lookup("a").stored_size == len(stored)  # type: ignore[union-attr]
    assert (reader.read("a"), reader.read("b")) == (a, b)
    assert reader.verify(deep=True) == 2
    write(tmp_path, blob)
    store = LocalObjectStore(tmp_path)
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    assert r.read(KEY, "b") == b
    assert r.open(KEY, "a").read() == a
    assert dict(r.read_many(KEY, ["a", "b"])) == {"a": a, "b": b}
    assert all(c.ok for c in verify_files(store, KEY, ["a", "b"]).values())


def test_a_member_whose_bytes_changed_in_the_block_fails_its_crc() -> None:
    a, b = text("a", 700), text("b", 900)
    blob = shard_with_block(zstd_frame(a + b"B" + b[1:]), [("a", a), ("b", b)])
    assert ShardReader(BytesSource(blob)).read("a") == a
    err = _read_error(blob, "b")
    assert type(err) is ChecksumMismatch


def test_bit_flips_anywhere_never_return_wrong_bytes() -> None:
    blob = build(NOTES, RECORDS, ALONE)
    want = datas(NOTES, RECORDS, ALONE)
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 1 << (pos % 8)
        try:
            reader = ShardReader(BytesSource(bytes(bad)))
        except DesFormatError:
            continue
        for uid, data in want.items():
            try:
                got = reader.read(uid)
            except DesFormatError:
                continue
            assert got == data, (pos, uid)
        with contextlib.suppress(DesFormatError):
            reader.verify(deep=True)


def _without_feature_bit(blob: bytes) -> bytes:
    footer = bytearray(blob[-48:])
    features = struct.unpack_from("<I", footer, 32)[0]
    struct.pack_into("<I", footer, 32, features & ~FEATURE_BLOCKS)
    struct.pack_into("<I", footer, 40, zlib.crc32(bytes(footer[:40])))
    return blob[:-48] + bytes(footer)


def test_a_block_member_without_the_feature_bit_is_corrupt() -> None:
    bad = _without_feature_bit(build(NOTES))
    index = read_index(BytesSource(bad))
    assert index.features == 0
    message = "entry 'note-0' is in a solid block, but the footer lacks the solid-block feature bit"
    with pytest.raises(CorruptShard, match=message):
        index.check()
    with pytest.raises(CorruptShard, match=message):
        ShardReader(BytesSource(bad)).verify(deep=False)


def test_old_readers_refuse_block_shards() -> None:
    """A reader that knows only the dictionary feature (des-format before solid blocks)
    refuses the whole shard rather than misreading codec 4 entries."""
    blob = build(NOTES)
    import des_format._layout as layout

    saved = layout.KNOWN_FEATURES
    layout.KNOWN_FEATURES = FEATURE_DICTIONARY
    try:
        with pytest.raises(UnsupportedFormatVersion, match="features 0x2 unknown to this reader"):
            read_index(BytesSource(blob))
    finally:
        layout.KNOWN_FEATURES = saved
    assert read_index(BytesSource(blob)).features == FEATURE_BLOCKS


def test_read_nowait_answers_a_member_from_memory(tmp_path: Path) -> None:
    from des_format._source import NOWAIT_READS

    write(tmp_path, build(NOTES, RECORDS))
    store = LocalObjectStore(tmp_path)
    if not NOWAIT_READS or not store.nowait_reads:
        pytest.skip("no reads without waiting here (platform or filesystem)")
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    assert r.read_nowait(KEY, "note-1") is None  # no index cached yet
    assert r.read(KEY, "note-0") == NOTES[0][1]  # caches the index, opens the shard
    for uid, data in datas(NOTES, RECORDS).items():
        got = r.read_nowait(KEY, uid)
        assert got is not None
        entry, answer = got
        assert entry.codec is Codec.ZSTD_BLOCK
        assert answer == data
    # a member whose block's stored bytes exceed max_bytes is left to read()
    assert r.read_nowait(KEY, "note-0", max_bytes=r.stat(KEY, "note-0").stored_size - 1) is None


def test_read_nowait_leaves_a_block_declaring_over_four_times_max_bytes_to_read(
    tmp_path: Path,
) -> None:
    """A read without waiting decompresses the whole block on the caller's thread (an event
    loop): a block whose frame declares more than 4 * max_bytes goes to read(), even when
    its stored bytes (repetitive text) are within max_bytes."""
    from des_format._source import NOWAIT_READS

    big = group("rep", [60_000] * 5)  # 300,000 bytes of text, compressing to a few KiB
    write(tmp_path, build(big))
    store = LocalObjectStore(tmp_path)
    if not NOWAIT_READS or not store.nowait_reads:
        pytest.skip("no reads without waiting here (platform or filesystem)")
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    assert r.read(KEY, "rep-0") == big[0][1]
    entry = r.stat(KEY, "rep-0")
    assert entry.codec is Codec.ZSTD_BLOCK
    assert entry.stored_size < 64 * 1024
    assert r.read_nowait(KEY, "rep-0", max_bytes=64 * 1024) is None  # 300,000 > 262,144
    got = r.read_nowait(KEY, "rep-0", max_bytes=75_000)  # 300,000 <= 4 * 75,000
    assert got is not None
    assert got[1] == big[0][1]


def test_deep_verify_reads_and_decodes_each_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Members of one block are spread over the buckets; verify groups them, so a block is
    fetched and decompressed once, not once per member (a deep verify over S3 would otherwise
    read every block as many times as it has members)."""
    import des_format._reader as reader_mod
    from des_format._codecs import decompress_block
    from des_format.testing import CountingSource

    groups = [group(f"b{i}", [300 + 10 * j for j in range(12)]) for i in range(3)]
    blob = build(*groups, ALONE)
    calls: list[int] = []

    def counting(data: bytes, need: int, *, uid: str = "") -> bytes:
        calls.append(need)
        return decompress_block(data, need, uid=uid)

    monkeypatch.setattr(reader_mod, "decompress_block", counting)
    src = CountingSource(BytesSource(blob))
    reader = ShardReader(src)
    index = reader.index
    block_ranges = {
        (e.offset, e.offset + e.stored_size)
        for e in index.iter_entries()
        if e.codec is Codec.ZSTD_BLOCK
    }
    assert len(block_ranges) == 3
    assert reader.verify(deep=True) == 38
    assert len(calls) == 3
    assert sorted(r for r in src.ranges if r in block_ranges) == sorted(block_ranges)
    # a corrupt block still names a member, as before
    bad = bytearray(blob)
    first = min(block_ranges)
    bad[first[0] + 10] ^= 0xFF
    with pytest.raises(CorruptShard, match="'b0-"):
        ShardReader(BytesSource(bytes(bad))).verify(deep=True)


def test_blocks_beside_a_shard_dictionary() -> None:
    """Both features: blocks are plain frames (no dictionary), small files alone use it."""
    dictionary = text("dict", 2048)
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd", dictionary=dictionary)
    add_all(w, NOTES)
    w.add("small", text("small", 300))
    w.close()
    reader = ShardReader(BytesSource(out.getvalue()))
    assert reader.index.features == FEATURE_DICTIONARY | FEATURE_BLOCKS
    assert reader.entry("small").codec is Codec.ZSTD_DICT
    assert reader.entry("note-1").codec is Codec.ZSTD_BLOCK
    assert reader.read("small") == text("small", 300)
    for uid, data in datas(NOTES).items():
        assert reader.read(uid) == data
    assert reader.verify(deep=True) == 5
    e = reader.entry("note-0")
    frame = out.getvalue()[e.offset : e.offset + e.stored_size]
    import zstandard

    assert zstandard.get_frame_parameters(frame).dict_id == 0
