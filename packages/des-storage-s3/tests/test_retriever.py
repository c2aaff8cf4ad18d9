"""des_format.ShardRetriever over S3ObjectStore, against moto over HTTP: request counts and
bytes per cold and warm read (counted by the proxy, at the HTTP level), exact bytes, replaced
shards under a warm cache, big files, routing from (uid, created_at).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    EntryNotFound,
    IndexCache,
    LocalFileSource,
    ShardRetriever,
    ShardWriter,
    bigfile_key,
    read_index,
)
from des_routing import DesSettings, locate_shard
from des_storage_s3 import (
    S3ObjectNotFound,
    S3ObjectStore,
    S3ProtocolError,
    S3ShardStore,
    S3Unavailable,
    open_retriever,
    range_call_observer,
)
from des_testing import FaultProxy, S3Server
from prometheus_client import CollectorRegistry

TAIL = 65536
FOOTER = 48
KEY_10 = "20240101/01.des"
KEY_10K = "20240101/02.des"
KEY_1M = "20240101/03.des"
KEY_BIG = "20240101/04.des"
UNSIGNED = (
    "the proxy drops the Range header the client signed: only a server that does not check "
    "signatures (moto) takes the altered request; SeaweedFS rightly answers 403"
)


def payload(i: int) -> bytes:
    return f"file-{i}-".encode() * (1 + i % 3)


@dataclass
class Shards:
    bucket: str
    paths: dict[str, Path]
    bigfile: bytes


class MemorySink:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_bytes(self, sha256: str, data: bytes) -> None:
        self.files[sha256] = data

    def put_file(self, sha256: str, path: Any) -> None:
        self.files[sha256] = Path(path).read_bytes()


def build(path: Path, n: int, codec: str = "zstd") -> None:
    with path.open("wb") as out:
        w = ShardWriter(out, codec=codec)
        for i in range(n):
            w.add(f"u{i:07d}", payload(i))
        w.close()


@dataclass
class ShardFiles:
    paths: dict[str, Path]
    bigfile: bytes
    bigfile_path: Path  # the big file's stored payload, as the writer handed it to its sink
    bigfile_sha: str


@pytest.fixture(scope="session")
def shard_files(tmp_path_factory: pytest.TempPathFactory) -> ShardFiles:
    """Shards of 10 and 10,000 entries and one with a big file, built once for every S3
    server."""
    tmp = tmp_path_factory.mktemp("s3shards")
    paths = {KEY_10: tmp / "10.des", KEY_10K: tmp / "10k.des"}
    build(paths[KEY_10], 10)
    build(paths[KEY_10K], 10_000)
    big = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB
    sink = MemorySink()
    paths[KEY_BIG] = tmp / "big.des"
    with paths[KEY_BIG].open("wb") as out:
        w = ShardWriter(out, big_file_threshold=100_000, bigfile_sink=sink)
        w.add("small", b"small file")
        w.add("large", big)
        w.close()
    (sha,) = sink.files
    (tmp / "bigfile").write_bytes(sink.files[sha])
    return ShardFiles(paths, big, tmp / "bigfile", sha)


@pytest.fixture(scope="session")
def shards(s3_server: S3Server, shard_files: ShardFiles) -> Shards:
    """The shards of ``shard_files`` in a bucket of this S3 server."""
    bucket = f"des-ret-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    up = S3ShardStore(client, bucket, "p")
    for key, path in shard_files.paths.items():
        up.put_shard(path, key)
    key = bigfile_key(KEY_BIG, shard_files.bigfile_sha)
    assert up.put_bigfile(shard_files.bigfile_path, key) is True
    return Shards(bucket, shard_files.paths, shard_files.bigfile)


@pytest.fixture(scope="session")
def million_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard of 1,000,000 entries (uncompressed), built once: ~10 s of CPU."""
    path = tmp_path_factory.mktemp("s3shard-1m") / "1m.des"
    build(path, 1_000_000, codec="none")
    return path


@pytest.fixture(scope="session")
def million(s3_server: S3Server, shards: Shards, million_file: Path) -> Path:
    """``million_file`` at ``KEY_1M`` in the bucket of ``shards`` on this S3 server."""
    S3ShardStore(s3_server.client(), shards.bucket, "p").put_shard(million_file, KEY_1M)
    return million_file


@pytest.fixture
def store(client: Any, shards: Shards) -> S3ObjectStore:
    return S3ObjectStore(client, shards.bucket, "p")


def entry_of(path: Path, uid: str) -> Any:
    with LocalFileSource(path) as src:
        idx = read_index(src)
        entry = idx.lookup(uid)
        return idx, entry


def ranges(proxy: FaultProxy) -> list[tuple[str | None, int]]:
    return [(r.range, r.bytes_out) for r in proxy.snapshot()]


def test_cold_read_small_shard_is_two_requests(
    store: S3ObjectStore, shards: Shards, proxy: FaultProxy
) -> None:
    kinds: list[tuple[str, int]] = []
    r = ShardRetriever(store, cache=IndexCache(1 << 20), observer=lambda k, n: kinds.append((k, n)))
    size = shards.paths[KEY_10].stat().st_size
    _idx, entry = entry_of(shards.paths[KEY_10], "u0000007")
    proxy.clear()
    assert r.read(KEY_10, "u0000007") == payload(7)
    end = entry.offset + entry.stored_size - 1
    assert ranges(proxy) == [
        ("bytes=-65536", size),
        (f"bytes={entry.offset}-{end}", entry.stored_size),
    ]
    assert kinds == [("tail", size), ("payload", entry.stored_size)]
    # warm: exactly the payload range, sent with If-Match
    proxy.clear()
    assert r.read(KEY_10, "u0000003") == payload(3)
    reqs = proxy.snapshot()
    assert len(reqs) == 1
    assert reqs[0].headers["If-Match"] == store.head(KEY_10).etag


@pytest.mark.parametrize(
    ("key", "n"),
    [
        (KEY_10K, 10_000),
        # A scale run (the shard takes ~10 s to build): left out of the quick run.
        pytest.param(KEY_1M, 1_000_000, marks=pytest.mark.slow),
    ],
)
def test_cold_read_large_index_is_three_bounded_requests(
    store: S3ObjectStore,
    shards: Shards,
    proxy: FaultProxy,
    key: str,
    n: int,
    request: pytest.FixtureRequest,
) -> None:
    path = request.getfixturevalue("million") if key == KEY_1M else shards.paths[key]
    size = path.stat().st_size
    uid = f"u{n // 2 + 1:07d}"
    idx, entry = entry_of(path, uid)
    assert idx.entry_count == n
    r = ShardRetriever(store, cache=IndexCache(64 << 20))
    proxy.clear()
    assert r.read(key, uid) == payload(n // 2 + 1)
    reqs = proxy.snapshot()
    assert len(reqs) == 3
    tail, bucket, pay = reqs
    assert (tail.range, tail.bytes_out) == ("bytes=-65536", TAIL)
    # one index bucket, inside the index area, a few KiB whatever the entry count
    assert bucket.range is not None
    first, last = (int(x) for x in bucket.range.removeprefix("bytes=").split("-"))
    dir_start = size - FOOTER - 8 * idx.bucket_count
    assert idx.index_offset <= first <= last < dir_start
    assert bucket.bytes_out == last - first + 1
    assert bucket.bytes_out < 16 * 1024
    end = entry.offset + entry.stored_size - 1
    assert (pay.range, pay.bytes_out) == (f"bytes={entry.offset}-{end}", entry.stored_size)
    # the metadata a cold read moved is bounded, not proportional to the entry count
    assert tail.bytes_out + bucket.bytes_out < 96 * 1024
    # warm, same bucket: 1 request; another bucket: index bucket + payload
    proxy.clear()
    assert r.read(key, uid) == payload(n // 2 + 1)
    assert [x.range for x in proxy.snapshot()] == [f"bytes={entry.offset}-{end}"]


def test_big_file_read_cold_and_warm(
    store: S3ObjectStore, shards: Shards, proxy: FaultProxy
) -> None:
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    _idx, entry = entry_of(shards.paths[KEY_BIG], "large")
    assert entry.is_bigfile
    bkey = f"/{shards.bucket}/p/{bigfile_key(KEY_BIG, entry.bigfile_hash)}"
    proxy.clear()
    assert r.read(KEY_BIG, "large") == shards.bigfile
    reqs = proxy.snapshot()
    assert [x.path for x in reqs] == [f"/{shards.bucket}/p/{KEY_BIG}", bkey]
    assert reqs[1].bytes_out == len(shards.bigfile)
    proxy.clear()
    assert r.read(KEY_BIG, "large") == shards.bigfile
    assert [x.path for x in proxy.snapshot()] == [bkey]
    # streamed: never held whole by the store, same bytes
    proxy.clear()
    opened = r.open(KEY_BIG, "large")
    chunks = list(opened.iter_bytes())
    assert b"".join(chunks) == shards.bigfile
    assert len(chunks) > 1 or len(shards.bigfile) <= r.chunk_size
    assert [x.path for x in proxy.snapshot()] == [bkey]


def test_replaced_shard_under_warm_cache_is_detected_and_reread(
    client: Any, direct: Any, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    v1, v2 = tmp_path / "v1.des", tmp_path / "v2.des"
    with v1.open("wb") as out:
        w = ShardWriter(out)
        w.add("a", b"version one of a")
        w.add("b", b"b")
        w.close()
    with v2.open("wb") as out:
        w = ShardWriter(out)
        w.add("z-first", b"shifts every offset" * 10)
        w.add("a", b"version two of a, longer")
        w.close()
    key = "20240101/A7.des"
    direct.put_object(Bucket=bucket, Key=key, Body=v1.read_bytes())
    r = ShardRetriever(S3ObjectStore(client, bucket), cache=IndexCache(1 << 20))
    assert r.read(key, "a") == b"version one of a"
    direct.put_object(Bucket=bucket, Key=key, Body=v2.read_bytes())
    proxy.clear()
    assert r.read(key, "a") == b"version two of a, longer"
    assert [(x.range is not None, x.status) for x in proxy.snapshot()] == [
        (True, 412),  # payload with the cached ETag: refused
        (True, 206),  # tail, cold
        (True, 206),  # payload of the new version
    ]


def test_missing_shard_and_uid_are_typed(store: S3ObjectStore, proxy: FaultProxy) -> None:
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    proxy.clear()
    with pytest.raises(S3ObjectNotFound):
        r.read("20240102/01.des", "u0000001")
    with pytest.raises(EntryNotFound):
        r.read(KEY_10, "nope")
    assert proxy.count() == 2  # no retries of not-found


def test_every_read_returns_exact_bytes(store: S3ObjectStore, proxy: FaultProxy) -> None:
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    for i in [*range(0, 10_000, 997), 9_999]:
        assert r.read(KEY_10K, f"u{i:07d}") == payload(i)
    got = dict(r.read_many(KEY_10K, [f"u{i:07d}" for i in range(100, 140)]))
    assert got == {f"u{i:07d}": payload(i) for i in range(100, 140)}


def test_range_call_metrics(store: S3ObjectStore) -> None:
    reg = CollectorRegistry()
    r = ShardRetriever(store, cache=IndexCache(1 << 20), observer=range_call_observer("s3", reg))
    r.read(KEY_10K, "u0000010")
    r.read(KEY_10K, "u0000010")

    def value(kind: str) -> float | None:
        return reg.get_sample_value("des_s3_range_calls_total", {"backend": "s3", "type": kind})

    assert (value("tail"), value("index"), value("payload"), value("bigfile")) == (1, 1, 2, 0)


@pytest.fixture
def routed(direct: Any, bucket: str, tmp_path: Path) -> tuple[dict[str, bytes], str]:
    """Files packed by routing (n_bits=8) into their shards under prefix 'des/'."""
    created = "2024-03-05T07:30:00Z"
    files = {f"doc-{i}": f"contents of doc {i}".encode() * (i + 1) for i in range(30)}
    by_key: dict[str, list[str]] = {}
    for uid in files:
        by_key.setdefault(locate_shard(uid, created, 8).object_key, []).append(uid)
    for key, uids in by_key.items():
        path = tmp_path / key.replace("/", "_")
        with path.open("wb") as out:
            w = ShardWriter(out)
            for uid in sorted(uids):
                w.add(uid, files[uid])
            w.close()
        direct.put_object(Bucket=bucket, Key=f"des/{key}", Body=path.read_bytes())
    return files, created


def test_open_retriever_from_settings(
    routed: tuple[dict[str, bytes], str], bucket: str, proxy: FaultProxy, monkeypatch: Any
) -> None:
    files, created = routed
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    settings = DesSettings.from_env(
        {
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": bucket,
            "DES_S3_REGION": "us-east-1",
            "DES_S3_ENDPOINT_URL": proxy.url,
            "DES_S3_PREFIX": "des/",
            "DES_N_BITS": "8",
            "DES_INDEX_CACHE_BYTES": "1MiB",
        }
    )
    reg = CollectorRegistry()
    ret = open_retriever(settings, registry=reg)
    for uid, data in files.items():
        assert ret.read(uid, created) == data
    assert ret.stat("doc-3", created).size == len(files["doc-3"])
    proxy.clear()
    assert ret.read("doc-7", created) == files["doc-7"]
    assert proxy.count() == 1  # warm
    assert proxy.snapshot()[0].path.startswith(f"/{bucket}/des/20240305/")
    written = {locate_shard(u, created, 8).object_key for u in files}
    candidates = [f"missing-{i}" for i in range(2000)]
    in_written = next(u for u in candidates if locate_shard(u, created, 8).object_key in written)
    elsewhere = next(u for u in candidates if locate_shard(u, created, 8).object_key not in written)
    with pytest.raises(EntryNotFound):
        ret.read(in_written, created)
    with pytest.raises(S3ObjectNotFound):
        ret.read(elsewhere, created)
    reg_value = reg.get_sample_value("des_s3_range_calls_total", {"backend": "s3", "type": "tail"})
    assert reg_value == len(written)  # one tail per shard; the refused one moved no bytes


@pytest.mark.parametrize(
    "kind",
    [
        "slowdown",
        "error500",
        "reset",
        "truncate",
        pytest.param("ignore_range", marks=pytest.mark.s3_servers("moto", reason=UNSIGNED)),
    ],
)
def test_faults_under_the_retriever_never_give_wrong_bytes(
    client: Any, shards: Shards, proxy: FaultProxy, kind: str, fast_retry: Any
) -> None:
    store = S3ObjectStore(client, shards.bucket, "p", retry=fast_retry)
    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    proxy.clear()
    proxy.inject(kind, times=1)  # the tail read
    proxy.inject(kind, times=1, match=lambda m, p, h: not h.get("Range", "").startswith("bytes=-"))
    if kind == "ignore_range":
        # A server that ignores ranges cannot serve DES: a clear error, no download.
        with pytest.raises(S3ProtocolError, match="ignored the suffix range"):
            r.read(KEY_10K, "u0004242")
        return
    assert r.read(KEY_10K, "u0004242") == payload(4242)
    assert [x.fault for x in proxy.snapshot()].count(kind) == 2
    # budget spent on the payload: a clear error, not bytes
    proxy.inject(kind, times=10)
    with pytest.raises(S3Unavailable, match="gave up after 4 attempts"):
        r.read(KEY_10K, "u0004242")


def test_concurrent_reads_share_one_store_and_cache(store: S3ObjectStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    r = ShardRetriever(store, cache=IndexCache(1 << 20))
    uids = [i * 37 % 10_000 for i in range(400)]

    def one(i: int) -> bool:
        return r.read(KEY_10K, f"u{i:07d}") == payload(i)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, uids))
