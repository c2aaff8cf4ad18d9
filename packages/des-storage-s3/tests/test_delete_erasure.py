"""A delete on S3 (moto's server over HTTP, bucket versioning on): the tombstone, then the
deleted bytes overwritten in their continuation part (a new version built from server-side
copies around the range) and big files no live file shares removed with every version. A
second replica keeps its own warm index cache and answers ``EntryDeleted`` without a
request more than before; a delete interrupted between the tombstone and the overwrite is
finished by running it again."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    Codec,
    EntryDeleted,
    IndexCache,
    IndexEntry,
    LocalBigFileSink,
    PreparedBlock,
    ShardRetriever,
    ShardWriter,
    bigfile_key,
    codec_available,
    delete_entries,
    fill_byte,
    part_key,
    payload_overwritten,
    prepare_block,
    read_shard_index,
)
from des_storage_s3 import (
    MIN_PART_SIZE,
    RetryPolicy,
    S3ObjectStore,
    S3ShardEditor,
    S3ShardStore,
    S3Unavailable,
    make_client,
)
from des_storage_s3._edit import plan_overwrite
from des_storage_s3._plan import MAX_PART_SIZE
from des_testing import FaultProxy, S3Server
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

MiB = 1024 * 1024
KEY = "20240101/07.des"
PREFIX = "des"


# ---- the plan ------------------------------------------------------------------------------


def test_plan_overwrite_small_object_is_one_put() -> None:
    window, plan = plan_overwrite(3 * MiB, 100, 200, 5 * MiB)
    assert (window.start, window.end, plan.multipart) == (0, 3 * MiB, False)


def test_plan_overwrite_copies_around_the_range() -> None:
    window, plan = plan_overwrite(20 * MiB, 8 * MiB, 8 * MiB + 10, 5 * MiB)
    assert (window.start, window.end) == (8 * MiB, 13 * MiB)
    assert [(p.copy, p.local) for p in plan.parts] == [
        (window.__class__(0, 8 * MiB), None),
        (None, window.__class__(0, 5 * MiB)),
        (window.__class__(13 * MiB, 20 * MiB), None),
    ]


@given(
    st.integers(1, 12 * 1024**3),
    st.integers(0, 1 << 62),
    st.integers(0, 1 << 62),
    st.integers(5, 64),
)
def test_plan_overwrite_covers_the_object_within_s3_limits(
    size: int, x: int, y: int, part_mib: int
) -> None:
    start, end = sorted((x % (size + 1), y % (size + 1)))
    window, plan = plan_overwrite(size, start, end, part_mib * MiB)
    assert window.start <= start <= end <= window.end <= size
    if not plan.multipart:  # one PUT of the whole object, which is at most one part
        assert (window.start, window.end) == (0, size)
        assert size <= part_mib * MiB
        return
    # at most 5 MiB of old bytes on each side of the range are downloaded and sent again
    assert start - window.start <= MIN_PART_SIZE
    assert window.end - end <= MIN_PART_SIZE
    pos = 0
    for i, part in enumerate(plan.parts):
        assert part.number == i + 1
        rng = part.copy if part.copy is not None else part.local
        assert rng is not None
        assert part.old is None
        begin = rng.start if part.copy is not None else window.start + rng.start
        assert begin == pos
        if part.copy is not None:  # copied ranges never touch the window
            assert rng.end <= window.start or rng.start >= window.end
        pos = begin + rng.length
        assert 0 < rng.length <= MAX_PART_SIZE
        if i < len(plan.parts) - 1:
            assert rng.length >= MIN_PART_SIZE
    assert pos == size


# ---- against the server --------------------------------------------------------------------


@dataclass
class Packed:
    files: dict[str, bytes]
    entries: dict[str, IndexEntry]


@pytest.fixture
def versioned(direct: Any, bucket: str) -> str:
    direct.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture
def editor(client: Any, versioned: str, fast_retry: RetryPolicy, tmp_path: Path) -> S3ShardEditor:
    """The replica that deletes: every request through the counting, fault-injecting proxy."""
    return S3ShardEditor(
        S3ObjectStore(client, versioned, PREFIX, retry=fast_retry),
        S3ShardStore(client, versioned, PREFIX, part_size=MIN_PART_SIZE, retry=fast_retry),
        scratch=tmp_path / "scratch",
        bigfile_grace_seconds=0,
    )


@pytest.fixture
def reader_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as p:
        yield p


@pytest.fixture
def replica(
    reader_proxy: FaultProxy, versioned: str, client_settings: Any, fast_retry: RetryPolicy
) -> ShardRetriever:
    """Another replica, with its own index cache; its requests go through its own proxy."""
    c = make_client(client_settings(reader_proxy.url))
    return ShardRetriever(
        S3ObjectStore(c, versioned, PREFIX, retry=fast_retry), cache=IndexCache(1 << 24)
    )


def upload(editor: S3ShardEditor, tmp_path: Path, files: dict[str, bytes], **writer: Any) -> Packed:
    """Write the shard locally (parts, big files) and publish it: big files, parts, head."""
    work = tmp_path / "build"
    work.mkdir(exist_ok=True)
    parts: dict[int, Any] = {}

    def open_part(n: int) -> Any:
        parts[n] = (work / f"p{n}").open("wb")
        return parts[n]

    sink = LocalBigFileSink(work)
    entries: dict[str, IndexEntry] = {}
    with (work / "head").open("wb") as fh:
        w = ShardWriter(fh, open_part=open_part, bigfile_sink=sink, **writer)
        for uid, data in files.items():
            entries[uid] = w.add(uid, data)
        w.close()
    shards = editor.shard_store
    assert isinstance(shards, S3ShardStore)
    for big in sorted(sink.directory.glob("*")) if sink.directory.exists() else []:
        shards.put_bigfile(big, bigfile_key(KEY, big.name))
    for n, fh in parts.items():
        fh.close()
        shards.put_shard(work / f"p{n}", part_key(KEY, n))
    shards.put_shard(work / "head", KEY)
    return Packed(files, entries)


def every_version(direct: Any, bucket: str) -> bytes:
    blobs: list[bytes] = []
    for page in direct.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            body = direct.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            blobs.append(body["Body"].read())
    return b"\x00".join(blobs)


def stored_bytes(direct: Any, bucket: str, e: IndexEntry) -> bytes:
    okey = f"{PREFIX}/{KEY if e.part == 0 else part_key(KEY, e.part)}"
    body = direct.get_object(
        Bucket=bucket, Key=okey, Range=f"bytes={e.offset}-{e.offset + e.stored_size - 1}"
    )
    data: bytes = body["Body"].read()
    return data


def gets(proxy: FaultProxy) -> list[str]:
    return [r.key for r in proxy.snapshot() if r.method == "GET"]


def small_files() -> dict[str, bytes]:
    rnd = random.Random(5)
    files = {
        f"f{i:02d}": (f"text {i} " * 80).encode() if i % 2 else rnd.randbytes(400 + i)
        for i in range(20)
    }
    files["big-a"] = rnd.randbytes(7000)
    return files


def test_two_replicas_part_file_and_big_file(
    editor: S3ShardEditor,
    replica: ShardRetriever,
    reader_proxy: FaultProxy,
    direct: Any,
    versioned: str,
    tmp_path: Path,
) -> None:
    codec = Codec.ZSTD if codec_available(Codec.ZSTD) else Codec.NONE
    packed = upload(
        editor, tmp_path, small_files(), codec=codec, max_size=1500, big_file_threshold=5000
    )
    victim = next(
        u for u, e in packed.entries.items() if e.part and not e.is_bigfile and e.codec is codec
    )
    live = next(u for u, e in packed.entries.items() if e.part and u != victim and not e.is_bigfile)
    stored = {victim: stored_bytes(direct, versioned, packed.entries[victim])}
    for uid in packed.files:
        replica.stat(KEY, uid)  # every bucket of the index cached
    reader_proxy.clear()
    assert replica.read(KEY, live) == packed.files[live]
    before = gets(reader_proxy)
    assert before == [f"{versioned}/{PREFIX}/{part_key(KEY, packed.entries[live].part)}"]

    res = delete_entries(editor, KEY, [victim, "big-a"])
    big_key = bigfile_key(KEY, packed.entries["big-a"].bigfile_hash or "")
    assert (res.gone, res.kept) == ((victim, "big-a"), ())
    assert res.bigfiles_removed == (big_key,)

    reader_proxy.clear()
    with pytest.raises(EntryDeleted):
        replica.read(KEY, victim)
    first = gets(reader_proxy)
    assert first[0] == f"{versioned}/{PREFIX}/{part_key(KEY, packed.entries[victim].part)}"
    assert all(k == f"{versioned}/{PREFIX}/{KEY}" for k in first[1:])  # the index, cold
    with pytest.raises(EntryDeleted):
        replica.read(KEY, "big-a")
    for uid, data in packed.files.items():
        if uid not in (victim, "big-a"):
            assert replica.read(KEY, uid) == data, uid
    reader_proxy.clear()
    assert replica.read(KEY, live) == packed.files[live]
    assert gets(reader_proxy) == before  # a warm read of a part payload: still one request

    blob = every_version(direct, versioned)
    for uid in (victim, "big-a"):
        assert packed.files[uid] not in blob, uid
    assert stored[victim] not in blob
    e = read_shard_index(editor.store, KEY)[0].lookup(victim)
    assert e is not None
    assert payload_overwritten(editor.store, KEY, e)
    assert editor.old_versions(part_key(KEY, e.part)) == 0


def test_a_large_part_is_rebuilt_from_copies_around_the_range(
    editor: S3ShardEditor, proxy: FaultProxy, direct: Any, versioned: str, tmp_path: Path
) -> None:
    rnd = random.Random(2)
    files = {f"m{i:02d}": rnd.randbytes(MiB) for i in range(26)}
    packed = upload(editor, tmp_path, files, codec="none", max_size=12 * MiB)
    # the first file of part 1 past 5 MiB: old bytes on both sides are copied server-side
    victim = min(
        (e.offset, u)
        for u, e in packed.entries.items()
        if e.part == 1 and e.offset >= MIN_PART_SIZE
    )[1]
    e = packed.entries[victim]
    okey = part_key(KEY, 1)
    old = direct.get_object(Bucket=versioned, Key=f"{PREFIX}/{okey}")["Body"].read()
    assert len(old) > 11 * MiB
    proxy.clear()
    res = delete_entries(editor, KEY, [victim])
    assert res.overwritten == (okey,)
    reqs = [r for r in proxy.snapshot() if r.key.endswith(okey)]  # not the head's append
    copies = [
        r
        for r in reqs
        if r.method == "PUT" and "x-amz-copy-source" in {k.lower() for k in r.headers}
    ]
    uploads = [r for r in reqs if r.method == "PUT" and r not in copies]
    assert len(copies) == 2  # the bytes before and after the window, copied server-side
    assert sum(r.bytes_in for r in uploads) == MIN_PART_SIZE  # only the window is sent
    new = direct.get_object(Bucket=versioned, Key=f"{PREFIX}/{okey}")["Body"].read()
    start, end = e.offset, e.offset + e.stored_size
    assert new[:start] == old[:start]
    assert new[end:] == old[end:]
    assert new[start:end] == bytes([fill_byte(e)]) * (end - start)
    assert files[victim] not in every_version(direct, versioned)
    fresh = ShardRetriever(editor.store)
    for uid, data in files.items():
        if uid != victim:
            assert fresh.read(KEY, uid) == data


def test_refused_when_the_head_changed(
    editor: S3ShardEditor, proxy: FaultProxy, direct: Any, versioned: str, tmp_path: Path
) -> None:
    packed = upload(editor, tmp_path, small_files(), codec="none", max_size=1500)
    victim = next(u for u, e in packed.entries.items() if e.part and not e.is_bigfile)
    e = packed.entries[victim]
    _index, etag = read_shard_index(editor.store, KEY)
    delete_entries(editor, KEY, ["f00"])  # another writer: the head has a new ETag
    proxy.clear()
    okey = part_key(KEY, e.part)
    ok = editor.overwrite_range(
        okey, e.offset, e.offset + e.stored_size, 0, shard_key=KEY, shard_etag=etag
    )
    assert ok is False
    assert [r.method for r in proxy.snapshot()] == ["HEAD", "HEAD"]  # nothing written
    assert stored_bytes(direct, versioned, e) == packed.files[victim]


def test_a_delete_cut_off_before_the_overwrite_is_finished_by_running_it_again(
    editor: S3ShardEditor, proxy: FaultProxy, direct: Any, versioned: str, tmp_path: Path
) -> None:
    packed = upload(editor, tmp_path, small_files(), codec="none", max_size=1500)
    victim = next(u for u, e in packed.entries.items() if e.part and not e.is_bigfile)
    e = packed.entries[victim]
    okey = f"{PREFIX}/{part_key(KEY, e.part)}"
    # the store fails every write of the part: the process gives up after its retries
    proxy.inject(
        "error500", times=50, method="PUT", match=lambda m, p, h: p.split("?")[0].endswith(okey)
    )
    with pytest.raises(S3Unavailable):
        delete_entries(editor, KEY, [victim])
    index, _ = read_shard_index(editor.store, KEY)
    tomb = index.lookup(victim)
    assert tomb is not None
    assert tomb.deleted  # the tombstone is durable
    assert not payload_overwritten(editor.store, KEY, tomb)
    assert stored_bytes(direct, versioned, e) == packed.files[victim]
    proxy.clear()
    again = delete_entries(editor, KEY, [victim])
    assert (again.deleted, again.already, again.gone) == ((), (victim,), (victim,))
    assert payload_overwritten(editor.store, KEY, tomb)
    assert packed.files[victim] not in every_version(direct, versioned)
    fresh = ShardRetriever(editor.store)
    with pytest.raises(EntryDeleted):
        fresh.read(KEY, victim)
    for uid, data in packed.files.items():
        if uid != victim:
            assert fresh.read(KEY, uid) == data


# ---- solid blocks --------------------------------------------------------------------------


def upload_blocks(editor: S3ShardEditor, tmp_path: Path) -> tuple[Packed, list[list[str]]]:
    """A shard of three solid blocks of four members (each block then a raw file) that roll
    over into continuation parts; returns it and the uids of each block."""
    work = tmp_path / "build-blocks"
    work.mkdir(exist_ok=True)
    parts: dict[int, Any] = {}

    def open_part(n: int) -> Any:
        parts[n] = (work / f"p{n}").open("wb")
        return parts[n]

    rnd = random.Random(11)
    files: dict[str, bytes] = {}
    entries: dict[str, IndexEntry] = {}
    blocks: list[list[str]] = []
    with (work / "head").open("wb") as fh:
        w = ShardWriter(fh, codec=Codec.NONE, open_part=open_part, max_size=2000)
        for b in range(3):
            group: list[tuple[str, bytes, dict[str, Any]]] = []
            for m in range(4):
                uid = f"b{b}m{m}"
                words = [rnd.choice([b"red", b"green", b"blue", b"cyan"]) for _ in range(200)]
                files[uid] = f"<<secret of {uid}>>".encode() + b" ".join(words)
                group.append((uid, files[uid], {}))
            (block,) = prepare_block(group)
            assert isinstance(block, PreparedBlock)
            for e in w.add_block(block):
                entries[e.uid] = e
            blocks.append([u for u, _, _ in group])
            files[f"raw{b}"] = rnd.randbytes(900)
            entries[f"raw{b}"] = w.add(f"raw{b}", files[f"raw{b}"])
        w.close()
    shards = editor.shard_store
    assert isinstance(shards, S3ShardStore)
    for n, part in parts.items():
        part.close()
        shards.put_shard(work / f"p{n}", part_key(KEY, n))
    shards.put_shard(work / "head", KEY)
    return Packed(files, entries), blocks


@pytest.mark.skipif(not codec_available(Codec.ZSTD), reason="zstd missing")
def test_a_block_member_in_a_part_is_erased_and_its_block_mates_stay(
    editor: S3ShardEditor,
    replica: ShardRetriever,
    reader_proxy: FaultProxy,
    direct: Any,
    versioned: str,
    tmp_path: Path,
) -> None:
    packed, blocks = upload_blocks(editor, tmp_path)
    mates = blocks[1]
    victim = mates[2]
    e = packed.entries[victim]
    assert e.part >= 1
    assert e.codec is Codec.ZSTD_BLOCK
    old_block = stored_bytes(direct, versioned, e)
    for uid in packed.files:
        replica.stat(KEY, uid)  # every bucket of the index cached
    assert replica.read(KEY, mates[0]) == packed.files[mates[0]]

    res = delete_entries(editor, KEY, [victim])
    assert (res.gone, res.kept, res.overwritten) == ((victim,), (), (part_key(KEY, e.part),))
    new_block = stored_bytes(direct, versioned, e)
    assert len(new_block) == len(old_block)
    assert new_block != old_block

    # the stale replica: the block's other members read byte-exact without a reload ...
    reader_proxy.clear()
    for uid in mates:
        if uid != victim:
            assert replica.read(KEY, uid) == packed.files[uid], uid
    assert len(gets(reader_proxy)) == len(mates) - 1  # one request each, no index read
    # ... and the erased member fails its check: the index is read again, cold
    with pytest.raises(EntryDeleted):
        replica.read(KEY, victim)
    for uid, data in packed.files.items():
        if uid != victim:
            assert replica.read(KEY, uid) == data, uid

    # no version of any object holds the old block (the part's old version was purged)
    blob = every_version(direct, versioned)
    assert old_block not in blob
    tomb = read_shard_index(editor.store, KEY)[0].lookup(victim)
    assert tomb is not None
    assert tomb.deleted
    assert payload_overwritten(editor.store, KEY, tomb)
    # a second member of the same block: the first erasure stays
    assert delete_entries(editor, KEY, [mates[0]]).gone == (mates[0],)
    for uid in (mates[1], mates[3]):
        assert replica.read(KEY, uid) == packed.files[uid]
    for uid in (victim, mates[0]):
        with pytest.raises(EntryDeleted):
            replica.read(KEY, uid)
        tomb = read_shard_index(editor.store, KEY)[0].lookup(uid)
        assert tomb is not None
        assert payload_overwritten(editor.store, KEY, tomb)
