"""Per-shard zstd dictionaries: layout, determinism, request budgets, appends, refusals."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from des_format import (
    DEFAULT_TAIL_SIZE,
    FEATURE_DICTIONARY,
    MAX_DICTIONARY_SIZE,
    BytesSource,
    ChecksumMismatch,
    Codec,
    CorruptShard,
    IndexCache,
    LocalObjectStore,
    ShardReader,
    ShardRetriever,
    ShardWriter,
    UnsupportedFormatVersion,
    codec_available,
    parse_footer,
    prepare_payload,
    read_index,
    train_dictionary,
)
from des_format.testing import CountingStore
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(
    not codec_available(Codec.ZSTD), reason="zstandard is not installed"
)

KEY = "20240101/A7.des"
WORDS = ["".join(random.Random(i).choices("abcdefghijklmnop", k=1 + i % 9)) for i in range(400)]


def record(i: int) -> bytes:
    """A small JSON record, different per i, sharing structure (what dictionaries are for)."""
    rnd = random.Random(i)
    obj = {
        "id": i,
        "user": rnd.choice(WORDS),
        "event": rnd.choice(["login", "logout", "purchase", "view", "search"]),
        "message": " ".join(rnd.choices(WORDS, k=rnd.randint(5, 30))),
        "tags": rnd.sample(WORDS[:40], 3),
    }
    return json.dumps(obj, sort_keys=True).encode()


FILES = {f"uid-{i:05d}": record(i) for i in range(300)}


@pytest.fixture(scope="module")
def dictionary() -> bytes:
    trained = train_dictionary(list(FILES.values()), 8192)
    assert trained is not None
    return trained


def build(files: dict[str, bytes], dictionary: bytes | None, **kw: object) -> bytes:
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd", dictionary=dictionary, **kw)  # type: ignore[arg-type]
    for uid, data in files.items():
        w.add(uid, data)
    w.close()
    return out.getvalue()


def test_training_is_deterministic_and_capped() -> None:
    samples = list(FILES.values())
    a = train_dictionary(samples, 8192)
    b = train_dictionary(list(samples), 8192)
    assert a is not None
    assert a == b
    assert len(a) <= 8192
    # in another process too (nothing per-process, e.g. hash seeds or thread timing)
    code = (
        "import sys,json;from des_format import train_dictionary;"
        "s=[bytes.fromhex(x) for x in json.load(sys.stdin)];"
        "print(train_dictionary(s, 8192).hex())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([s.hex() for s in samples]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert bytes.fromhex(other) == a
    assert train_dictionary(samples[:63]) is None  # fewer than 64 samples: no dictionary
    # default size: 1/32 of the sample bytes, within 1..16 KiB
    auto = train_dictionary(samples)
    assert auto is not None
    assert len(auto) <= max(1024, sum(map(len, samples)) // 32) < 16384
    assert len(auto) > 512
    with pytest.raises(ValueError, match=r"dictionary size must be 256\.\.16384 bytes, got 16385"):
        train_dictionary(samples, MAX_DICTIONARY_SIZE + 1)


def test_shard_with_dictionary_layout_and_roundtrip(dictionary: bytes) -> None:
    blob = build(FILES, dictionary)
    footer = parse_footer(blob[-48:])
    assert footer.features == FEATURE_DICTIONARY
    assert footer.dictionary_size == len(dictionary)
    dir_start = len(blob) - 48 - 8 * footer.bucket_count
    block = blob[dir_start - len(dictionary) - 4 : dir_start]
    assert block == dictionary + struct.pack("<I", zlib.crc32(dictionary))
    reader = ShardReader(BytesSource(blob))
    assert reader.index.dictionary == dictionary
    assert reader.verify(deep=True) == len(FILES)
    for uid, data in FILES.items():
        assert reader.lookup(uid).codec is Codec.ZSTD_DICT  # type: ignore[union-attr]
        assert reader.read(uid) == data
    # same input, same bytes (R5)
    assert build(FILES, dictionary) == blob
    # and smaller than per-file zstd
    assert len(blob) < len(build(FILES, None))


def test_without_dictionary_nothing_changes() -> None:
    blob = build(FILES, None)
    footer = parse_footer(blob[-48:])
    assert (footer.features, footer.dictionary_size) == (0, 0)
    assert blob[-12:-8] == b"\0\0\0\0"  # the reserved field stays 0
    assert read_index(BytesSource(blob)).dictionary is None


def test_only_small_files_use_the_dictionary(dictionary: bytes) -> None:
    big = b"".join(record(i) for i in range(1000, 1040))
    files = {**dict(list(FILES.items())[:10]), "uid-big": big}
    blob = build(files, dictionary, dict_max_file_size=4096)
    reader = ShardReader(BytesSource(blob))
    assert reader.lookup("uid-big").codec is Codec.ZSTD  # type: ignore[union-attr]
    assert reader.lookup("uid-00000").codec is Codec.ZSTD_DICT  # type: ignore[union-attr]
    assert reader.read("uid-big") == big
    # a precompressed file stays raw even with a dictionary
    p = prepare_payload("x", record(1), name="a.jpg", dictionary=dictionary)
    assert p.codec is Codec.NONE


def test_cold_and_warm_request_budgets(tmp_path: Path, dictionary: bytes) -> None:
    path = tmp_path / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(build(FILES, dictionary))
    store = CountingStore(LocalObjectStore(tmp_path))
    cache = IndexCache(1 << 20)
    r = ShardRetriever(store, cache=cache)
    assert r.read(KEY, "uid-00042") == FILES["uid-00042"]
    assert [q.method for q in store.requests] == ["read_tail", "read_range"]
    assert store.requests[0].nbytes == min(DEFAULT_TAIL_SIZE, path.stat().st_size)
    _etag, index, _ = r.index(KEY)
    assert index.dictionary == dictionary
    assert cache.stats().bytes >= len(dictionary)  # the dictionary is accounted in the cache
    store.reset()
    assert r.read(KEY, "uid-00043") == FILES["uid-00043"]
    assert [q.method for q in store.requests] == ["read_range"]
    store.reset()
    assert r.open(KEY, "uid-00044").read() == FILES["uid-00044"]
    got = dict(r.read_many(KEY, ["uid-00001", "uid-00002"]))
    assert got == {"uid-00001": FILES["uid-00001"], "uid-00002": FILES["uid-00002"]}
    assert [q.method for q in store.requests] == ["iter_range", "read_range"]


def test_cold_read_of_a_large_shard_is_still_three_requests(
    tmp_path: Path, dictionary: bytes
) -> None:
    files = {f"uid-{i:06d}": record(i % 300) + str(i).encode() for i in range(6000)}
    path = tmp_path / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(build(files, dictionary))
    store = CountingStore(LocalObjectStore(tmp_path))
    r = ShardRetriever(store, cache=IndexCache(64 << 20))
    assert r.read(KEY, "uid-004242") == files["uid-004242"]
    methods = [q.method for q in store.requests]
    assert methods == ["read_tail", "read_range", "read_range"]  # tail, bucket, payload
    assert store.requests[0].nbytes == DEFAULT_TAIL_SIZE
    # a tail read too small for the dictionary + directory reads them with one more request
    store.reset()
    small = ShardRetriever(store, tail_size=1024)
    assert small.read(KEY, "uid-000007") == files["uid-000007"]
    assert [q.method for q in store.requests] == [
        "read_tail",
        "read_range",  # dictionary + directory
        "read_range",  # bucket
        "read_range",  # payload
    ]


def test_append_keeps_the_dictionary(dictionary: bytes) -> None:
    first = dict(list(FILES.items())[:200])
    blob = build(first, dictionary)
    index = read_index(BytesSource(blob))
    tail = io.BytesIO()
    w = ShardWriter(tail, base_offset=len(blob), existing=index)
    assert w.dictionary == dictionary
    for uid, data in list(FILES.items())[200:]:
        w.add(uid, data)
    w.close()
    appended = blob + tail.getvalue()
    reader = ShardReader(BytesSource(appended))
    assert reader.index.dictionary == dictionary
    for uid, data in FILES.items():
        assert reader.read(uid) == data
    assert reader.lookup("uid-00250").codec is Codec.ZSTD_DICT  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="the shard already has a dictionary; an append keeps"):
        ShardWriter(io.BytesIO(), base_offset=len(blob), existing=index, dictionary=b"x" * 300)


def test_writer_refusals(dictionary: bytes) -> None:
    with pytest.raises(ValueError, match=r"a shard dictionary must be 1\.\.16384 bytes, got 16385"):
        ShardWriter(io.BytesIO(), dictionary=b"d" * (MAX_DICTIONARY_SIZE + 1))
    other = train_dictionary([record(i) + b"!" for i in range(500, 700)], 4096)
    assert other is not None
    assert other != dictionary
    prepared = prepare_payload("u1", record(1), dictionary=other)
    assert prepared.codec is Codec.ZSTD_DICT
    w = ShardWriter(io.BytesIO(), dictionary=dictionary)
    with pytest.raises(ValueError, match="'u1' was compressed with another dictionary"):
        w.add_prepared(prepared)
    plain = ShardWriter(io.BytesIO())
    with pytest.raises(ValueError, match="'u1' was compressed with another dictionary"):
        plain.add_prepared(prepared)
    blob = build({"u1": record(1)}, dictionary)
    entry = read_index(BytesSource(blob)).lookup("u1")
    assert entry is not None
    stored = blob[entry.offset : entry.offset + entry.stored_size]
    with pytest.raises(ValueError, match="give this writer the same dictionary"):
        ShardWriter(io.BytesIO()).copy_stored(entry, stored)
    copy = ShardWriter(out := io.BytesIO(), dictionary=dictionary)
    copy.copy_stored(entry, stored)
    copy.close()
    assert ShardReader(BytesSource(out.getvalue())).read("u1") == record(1)


def test_corrupt_dictionary_is_detected(dictionary: bytes) -> None:
    blob = bytearray(build(FILES, dictionary))
    footer = parse_footer(bytes(blob[-48:]))
    dir_start = len(blob) - 48 - 8 * footer.bucket_count
    blob[dir_start - len(dictionary) - 4 + 100] ^= 0x01
    with pytest.raises(ChecksumMismatch, match="shard dictionary checksum mismatch"):
        read_index(BytesSource(bytes(blob)))


def test_old_readers_refuse_dictionary_shards(dictionary: bytes) -> None:
    """A reader without the feature (KNOWN_FEATURES = 0, as in des-format before it) raises
    UnsupportedFormatVersion rather than misreading the dictionary as index bytes."""
    blob = build(FILES, dictionary)
    import des_format._layout as layout

    saved = layout.KNOWN_FEATURES
    layout.KNOWN_FEATURES = 0
    try:
        with pytest.raises(UnsupportedFormatVersion, match="features 0x1 unknown to this reader"):
            read_index(BytesSource(blob))
    finally:
        layout.KNOWN_FEATURES = saved


def test_dictionary_entry_without_dictionary_is_corrupt(dictionary: bytes) -> None:
    """An entry claiming codec 3 in a shard with no dictionary fails clearly."""
    blob = build({"u1": record(1)}, dictionary)
    entry = read_index(BytesSource(blob)).lookup("u1")
    assert entry is not None
    from des_format._reader import decode_payload

    stored = blob[entry.offset : entry.offset + entry.stored_size]
    with pytest.raises(CorruptShard, match="compressed with the shard dictionary, but the shard"):
        decode_payload(entry, stored, None)


_DICT_FOR_PROPERTIES = (
    train_dictionary(list(FILES.values()), 4096) if codec_available(Codec.ZSTD) else None
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=5000),
            st.integers(0, 299).map(record),
            st.integers(0, 299).map(lambda i: record(i)[: i * 7]),
        ),
        max_size=25,
    )
)
def test_any_files_roundtrip_with_a_dictionary(datas: list[bytes]) -> None:
    assert _DICT_FOR_PROPERTIES is not None
    files = {f"p{i:03d}": d for i, d in enumerate(datas)}
    blob = build(files, _DICT_FOR_PROPERTIES, dict_max_file_size=4096)
    reader = ShardReader(BytesSource(blob))
    assert reader.verify(deep=True) == len(files)
    for uid, data in files.items():
        entry = reader.lookup(uid)
        assert entry is not None
        assert reader.read(uid) == data
        if len(data) > 4096:
            assert entry.codec in (Codec.ZSTD, Codec.NONE)
        else:
            assert entry.codec in (Codec.ZSTD_DICT, Codec.NONE)
        if entry.codec is not Codec.NONE:
            assert entry.stored_size < entry.size
