"""verify_files: every file of a batch read back and checked, in as few requests as possible."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zlib
from pathlib import Path

import pytest
from des_format import (
    DEFAULT_VERIFY_WINDOW,
    BytesSource,
    ChecksumMismatch,
    Codec,
    CorruptShard,
    EntryDeleted,
    EntryNotFound,
    LocalBigFileSink,
    LocalObjectStore,
    ObjectNotFound,
    ShardRetriever,
    ShardWriter,
    StorageUnavailable,
    TailRead,
    codec_available,
    part_key,
    read_index,
    train_dictionary,
    verify_files,
)
from des_format.testing import CountingStore, MemoryObjectStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEY = "20240101/A7.des"


def body(i: int, size: int | None = None) -> bytes:
    seed = hashlib.sha256(str(i).encode()).hexdigest().encode()
    n = 100 + (i * 37) % 900 if size is None else size
    return (seed * (n // len(seed) + 1))[:n]


def shard_bytes(files: dict[str, bytes], codec: str = "none", **kw: object) -> bytes:
    buf = io.BytesIO()
    w = ShardWriter(buf, codec=codec, **kw)  # type: ignore[arg-type]
    for uid, data in files.items():
        w.add(uid, data)
    w.close()
    return buf.getvalue()


def mem_store(blob: bytes, key: str = KEY) -> tuple[MemoryObjectStore, CountingStore]:
    inner = MemoryObjectStore()
    inner.put(key, blob)
    return inner, CountingStore(inner)


def test_a_fresh_shard_is_checked_with_one_request(codec_name: str) -> None:
    files = {f"u{i:04d}": body(i) for i in range(200)}
    _inner, store = mem_store(shard_bytes(files, codec=codec_name))
    uids = list(reversed(files))
    got = verify_files(store, KEY, uids, digest="sha256")
    assert list(got) == uids
    for uid, check in got.items():
        assert check.ok
        assert check.error is None
        assert check.entry is not None
        assert check.entry.size == len(files[uid])
        assert check.crc32 == zlib.crc32(files[uid])
        assert check.digest == hashlib.sha256(files[uid]).hexdigest()
    assert [(q.method, q.key) for q in store.requests] == [("read_tail", KEY)]
    assert store.requests[0].nbytes == len(_inner.objects[KEY][0])


def test_digests_crc32_none_and_other_algorithms() -> None:
    files = {"a": b"hello world", "b": b""}
    _inner, store = mem_store(shard_bytes(files))
    plain = verify_files(store, KEY, files)
    assert [(c.crc32, c.digest) for c in plain.values()] == [
        (zlib.crc32(b"hello world"), None),
        (0, None),
    ]
    crc = verify_files(store, KEY, files, digest="crc32")
    assert [c.digest for c in crc.values()] == [f"{zlib.crc32(b'hello world'):08x}", "00000000"]
    md5 = verify_files(store, KEY, files, digest="md5")
    assert [c.digest for c in md5.values()] == [hashlib.md5(v).hexdigest() for v in files.values()]
    with pytest.raises(ValueError, match="unsupported hash type"):
        verify_files(store, KEY, files, digest="no-such-hash")
    with pytest.raises(ValueError, match="at least 64 bytes"):
        verify_files(store, KEY, files, window=10)


def test_missing_deleted_and_corrupt_files_are_reported_one_by_one() -> None:
    files = {f"u{i}": body(i, 300) for i in range(5)}
    buf = io.BytesIO()
    w = ShardWriter(buf, codec="none")
    for uid, data in files.items():
        w.add(uid, data)
    w.delete("u4")
    w.close()
    blob = bytearray(buf.getvalue())
    index = read_index(BytesSource(bytes(blob)))
    e2 = index.lookup("u2")
    assert e2 is not None
    blob[e2.offset + 7] ^= 0x01
    _inner, store = mem_store(bytes(blob))
    got = verify_files(store, KEY, ["u0", "u2", "nope", "u4", "u3"])
    assert [c.ok for c in got.values()] == [True, False, False, False, True]
    assert isinstance(got["u2"].error, ChecksumMismatch)
    assert str(got["u2"].error) == "checksum mismatch for 'u2'"
    assert isinstance(got["nope"].error, EntryNotFound)
    assert got["nope"].entry is None
    assert isinstance(got["u4"].error, EntryDeleted)
    assert got["u4"].entry is not None
    assert got["u2"].crc32 is None
    assert got["u2"].digest is None


def test_a_compressed_payload_that_does_not_decompress_is_reported(
    compressing_codec_name: str,
) -> None:
    codec_name = compressing_codec_name
    files = {"a": body(1, 500), "b": body(2, 500)}
    blob = bytearray(shard_bytes(files, codec=codec_name))
    index = read_index(BytesSource(bytes(blob)))
    entry = index.lookup("b")
    assert entry is not None
    assert entry.stored_size < 500
    blob[entry.offset : entry.offset + entry.stored_size] = b"\x00" * entry.stored_size
    _inner, store = mem_store(bytes(blob))
    got = verify_files(store, KEY, ["a", "b"])
    assert got["a"].ok
    assert isinstance(got["b"].error, CorruptShard)
    assert "'b'" in str(got["b"].error)


def test_shard_level_problems_raise() -> None:
    store = MemoryObjectStore()
    with pytest.raises(ObjectNotFound):
        verify_files(store, KEY, ["a"])
    store.put(KEY, b"not a shard at all, just bytes" * 10)
    with pytest.raises(CorruptShard, match="not a DES shard"):
        verify_files(store, KEY, ["a"])


def test_a_shard_larger_than_the_window() -> None:
    files = {f"u{i:04d}": body(i, 2000) for i in range(300)}
    blob = shard_bytes(files, codec="none")
    _inner, store = mem_store(blob)
    index = read_index(BytesSource(blob))
    window = 64 * 1024
    assert index.index_length < window < len(blob)
    want = ["u0000", "u0001", "u0150", "u0299"]
    got = verify_files(store, KEY, want, window=window, coalesce_gap=0)
    assert all(c.ok for c in got.values())
    assert [c.crc32 for c in got.values()] == [zlib.crc32(files[u]) for u in want]
    tail_start = len(blob) - window
    entries = {u: index.lookup(u) for u in want}
    outside = sorted(
        (e.offset, e.offset + e.stored_size)
        for e in entries.values()
        if e is not None and e.offset < tail_start
    )
    # u0000 and u0001 are adjacent: one read; u0150 alone; u0299 sits inside the window
    assert [(q.method, q.start, q.end) for q in store.requests] == [
        ("read_tail", None, None),
        ("read_range", outside[0][0], outside[1][1]),
        ("read_range", outside[2][0], outside[2][1]),
    ]
    assert all(q.if_match == _inner.objects[KEY][1] for q in store.requests[1:])


def test_an_index_larger_than_the_window_costs_one_more_read() -> None:
    files = {f"uid-with-a-long-name-{i:06d}": body(i, 10) for i in range(4000)}
    blob = shard_bytes(files, codec="none")
    _inner, store = mem_store(blob)
    index = read_index(BytesSource(blob))
    assert index.bucket_count > 1
    assert index.index_length > 64 * 1024
    uids = list(files)
    got = verify_files(store, KEY, uids, window=64 * 1024)
    assert all(c.ok for c in got.values())
    # the tail, then the rest of the index and (before it, coalesced) the payloads
    methods = [(q.method, q.start) for q in store.requests]
    assert methods[0] == ("read_tail", None)
    assert methods[1] == ("read_range", index.index_offset)
    assert len(methods) == 3
    assert methods[2][1] == 16


def test_a_shard_replaced_during_the_check_is_checked_again() -> None:
    files = {f"u{i:04d}": body(i, 2000) for i in range(100)}
    first = shard_bytes(files, codec="none")
    files2 = dict(files, late=b"appended")
    second = shard_bytes(files2, codec="none")
    inner = MemoryObjectStore()
    inner.put(KEY, first)

    class ReplacingStore(CountingStore):
        replaced = False

        def read_tail(self, key: str, n: int) -> TailRead:
            tail = super().read_tail(key, n)
            if not self.replaced:
                self.replaced = True
                inner.put(KEY, second)
            return tail

    store = ReplacingStore(inner)
    got = verify_files(store, KEY, ["u0000", "late"], window=64 * 1024)
    assert got["u0000"].ok
    assert got["late"].ok
    assert got["late"].crc32 == zlib.crc32(b"appended")
    assert [q.method for q in store.requests][:2] == ["read_tail", "read_range"]
    assert store.requests[1].if_match is not None  # failed with 412: started over
    assert [q.method for q in store.requests].count("read_tail") == 2


def test_outages_raise() -> None:
    files = {f"u{i:04d}": body(i, 2000) for i in range(100)}
    inner, _ = mem_store(shard_bytes(files, codec="none"))

    class FlakyStore(MemoryObjectStore):
        def read_range(
            self, key: str, start: int, end: int, *, if_match: str | None = None
        ) -> bytes:
            raise StorageUnavailable("storage is down", key=key)

    flaky = FlakyStore()
    flaky.objects = inner.objects
    with pytest.raises(StorageUnavailable):
        verify_files(flaky, KEY, ["u0000"], window=64 * 1024)
    assert verify_files(flaky, KEY, ["u0099"], window=64 * 1024)["u0099"].ok


def test_big_files_and_continuation_parts(tmp_path: Path) -> None:
    key = "20240102/0C.des"
    shard_dir = tmp_path / "20240102"
    shard_dir.mkdir()
    big = os.urandom(50_000)
    opened: list[io.BufferedWriter] = []

    def open_part(n: int) -> io.BufferedWriter:
        fh = (tmp_path / part_key(key, n)).open("wb")
        opened.append(fh)
        return fh

    small = {f"p{i}": bytes([i]) * 400 for i in range(6)}
    with (tmp_path / key).open("wb") as fh:
        w = ShardWriter(
            fh,
            codec="none",
            max_size=1000,
            open_part=open_part,
            big_file_threshold=10_000,
            bigfile_sink=LocalBigFileSink(shard_dir),
        )
        for uid, data in small.items():
            w.add(uid, data)
        w.add("big", big)
        summary = w.close()
    for part in opened:
        part.close()
    assert summary.parts == (1, 2)
    store = CountingStore(LocalObjectStore(tmp_path))
    got = verify_files(store, key, [*small, "big"], digest="sha256")
    assert all(c.ok for c in got.values())
    assert got["big"].digest == hashlib.sha256(big).hexdigest()
    assert got["big"].crc32 == zlib.crc32(big)
    assert {uid: c.digest for uid, c in got.items() if uid != "big"} == {
        uid: hashlib.sha256(d).hexdigest() for uid, d in small.items()
    }
    keys = [q.key for q in store.requests]
    assert keys.count(key) == 1  # the head object: one read
    assert part_key(key, 1) in keys
    assert part_key(key, 2) in keys
    sha = hashlib.sha256(big).hexdigest()
    (shard_dir / "_bigFiles" / sha).write_bytes(big[:-1] + b"!")
    (tmp_path / part_key(key, 2)).unlink()
    got = verify_files(LocalObjectStore(tmp_path), key, [*small, "big"])
    assert isinstance(got["big"].error, ChecksumMismatch)
    in_part_2 = [u for u in small if _part_of(tmp_path, key, u) == 2]
    assert in_part_2
    assert sorted(uid for uid, c in got.items() if not c.ok) == sorted(["big", *in_part_2])
    assert all(isinstance(got[u].error, ObjectNotFound) for u in in_part_2)


def _part_of(base: Path, key: str, uid: str) -> int:
    r = ShardRetriever(LocalObjectStore(base))
    return r.stat(key, uid).part


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=60),
    codec=st.sampled_from(
        [c for c in ("none", "zstd", "lz4") if codec_available(Codec[c.upper()])]
    ),
    window=st.sampled_from([64, 1000, 4096, 65536, DEFAULT_VERIFY_WINDOW]),
    pick=st.integers(min_value=0, max_value=2**32),
)
def test_agrees_with_the_retriever(sizes: list[int], codec: str, window: int, pick: int) -> None:
    rng = random.Random(pick)
    files = {f"f{i:03d}": rng.randbytes(n // 2) + b"a" * (n - n // 2) for i, n in enumerate(sizes)}
    _inner, store = mem_store(shard_bytes(files, codec=codec))
    uids = [u for i, u in enumerate(files) if (pick >> (i % 32)) & 1] or list(files)
    got = verify_files(store, KEY, [*uids, "absent"], digest="sha1", window=window)
    retriever = ShardRetriever(store)
    for uid in uids:
        data = retriever.read(KEY, uid)
        assert got[uid].ok
        assert got[uid].crc32 == zlib.crc32(data)
        assert got[uid].digest == hashlib.sha1(data).hexdigest()
    assert isinstance(got["absent"].error, EntryNotFound)


needs_zstd = pytest.mark.skipif(
    not codec_available(Codec.ZSTD), reason="zstandard is not installed"
)


@needs_zstd
def test_one_bad_frame_among_many_fails_only_its_file() -> None:
    files = {f"u{i:03d}": body(i, 2000) for i in range(60)}
    blob = bytearray(shard_bytes(files, codec="zstd"))
    index = read_index(BytesSource(bytes(blob)))
    bad = index.lookup("u030")
    assert bad is not None
    assert bad.codec is Codec.ZSTD
    blob[bad.offset + bad.stored_size // 2] ^= 0xFF  # inside the frame's compressed data
    _inner, store = mem_store(bytes(blob))
    got = verify_files(store, KEY, files, digest="sha256")
    assert [uid for uid, c in got.items() if not c.ok] == ["u030"]
    assert isinstance(got["u030"].error, CorruptShard)
    assert "'u030'" in str(got["u030"].error)
    for uid, check in got.items():
        if uid != "u030":
            assert check.digest == hashlib.sha256(files[uid]).hexdigest()


@needs_zstd
def test_a_frame_that_decodes_to_other_bytes_is_a_checksum_mismatch() -> None:
    files = {f"u{i:03d}": body(i, 700) for i in range(20)}
    files["u007"] = b"a" * 700
    shard = bytearray(shard_bytes(files, codec="zstd"))
    other = shard_bytes(dict(files, u007=b"b" * 700), codec="zstd")
    e, o = (
        read_index(BytesSource(bytes(shard))).lookup("u007"),
        read_index(BytesSource(other)).lookup("u007"),
    )
    assert e is not None
    assert o is not None
    assert (e.offset, e.stored_size) == (o.offset, o.stored_size)
    # the index keeps the CRC-32 of b"a" * 700; the frame now expands to b"b" * 700
    shard[e.offset : e.offset + e.stored_size] = other[o.offset : o.offset + o.stored_size]
    _inner, store = mem_store(bytes(shard))
    got = verify_files(store, KEY, files)
    assert [uid for uid, c in got.items() if not c.ok] == ["u007"]
    assert isinstance(got["u007"].error, ChecksumMismatch)
    assert str(got["u007"].error) == "checksum mismatch for 'u007'"


@needs_zstd
def test_dictionary_shards_and_groups_larger_than_one_bulk_call() -> None:
    import des_format._verify as verify_module

    files = {f"r{i:04d}": body(i, 300 + i % 200) for i in range(400)}
    dictionary = train_dictionary(list(files.values()), 4096)
    assert dictionary is not None
    blob = shard_bytes(files, codec="zstd", dictionary=dictionary)
    index = read_index(BytesSource(blob))
    assert index.dictionary == dictionary
    first = index.lookup("r0000")
    assert first is not None
    assert first.codec is Codec.ZSTD_DICT
    _inner, store = mem_store(blob)
    old = verify_module._BULK_BYTES
    verify_module._BULK_BYTES = 5000  # many small groups
    try:
        got = verify_files(store, KEY, files, digest="md5")
    finally:
        verify_module._BULK_BYTES = old
    assert all(c.ok for c in got.values())
    assert {u: c.digest for u, c in got.items()} == {
        u: hashlib.md5(d).hexdigest() for u, d in files.items()
    }
