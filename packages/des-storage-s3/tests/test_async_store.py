"""AsyncS3ObjectStore (obstore) and des_format.AsyncShardRetriever against moto over HTTP:
the ObjectStore conformance suite, the same errors and messages as the boto3 store, retries,
and request counts (counted by the proxy at the HTTP level) equal to the sync retriever's.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from des_format import (
    AsyncShardRetriever,
    EntryNotFound,
    IndexCache,
    ObjectInfo,
    ObjectStore,
    ObjectStoreBase,
    ShardRetriever,
    ShardWriter,
    TailRead,
    bigfile_key,
)
from des_format.testing import ObjectStoreConformance
from des_routing import DesSettings, Zone, ZoneMap, ZoneS3
from des_storage_s3 import (
    AsyncMultiZoneObjectStore,
    AsyncS3ObjectStore,
    ClientSettings,
    RetryPolicy,
    S3ObjectStore,
    S3ShardStore,
    S3StoreError,
    S3Unavailable,
    make_obstore,
    open_async_store,
)
from des_testing import FaultProxy, S3Server
from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY

T = TypeVar("T")
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005, budget_seconds=5)


def settings_for(url: str) -> ClientSettings:
    return ClientSettings(
        region_name=REGION,
        endpoint_url=url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        read_timeout=2.0,
        connect_timeout=2.0,
    )


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()


class SyncView(ObjectStoreBase):
    """The async store behind the blocking ObjectStore methods (to run the sync suite)."""

    def __init__(self, store: AsyncS3ObjectStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop

    def _run(self, aw: Awaitable[T]) -> T:
        return self.loop.run_until_complete(aw)

    def read_tail(self, key: str, n: int) -> TailRead:
        return self._run(self.store.read_tail(key, n))

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        return self._run(self.store.read_range(key, start, end, if_match=if_match))

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = 1 << 20,
    ) -> Iterator[bytes]:
        async def collect() -> list[bytes]:
            it = self.store.iter_range(key, start, end, if_match=if_match, chunk_size=chunk_size)
            return [c async for c in it]

        return iter(self._run(collect()))

    def head(self, key: str) -> ObjectInfo:
        return self._run(self.store.head(key))

    def describe(self, key: str = "") -> str:
        return self.store.describe(key)


class TestAsyncS3ObjectStore(ObjectStoreConformance):
    @pytest.fixture(autouse=True)
    def _s3(self, proxy: FaultProxy, direct: Any, bucket: str, loop: Any) -> None:
        self.proxy = proxy
        self.direct = direct
        self.bucket = bucket
        self.loop = loop

    def make_store(self) -> tuple[ObjectStore, Any]:
        def put(key: str, data: bytes) -> None:
            self.direct.put_object(Bucket=self.bucket, Key=f"conf/{key}", Body=data)

        store = AsyncS3ObjectStore(
            make_obstore(self.bucket, settings_for(self.proxy.url)), self.bucket, "conf"
        )
        return SyncView(store, self.loop), put


def test_errors_match_the_sync_store(
    client: Any, direct: Any, bucket: str, proxy: FaultProxy, loop: Any
) -> None:
    """Same exception classes and the same messages as S3ObjectStore, request for request
    (on each S3 server of the session: moto and SeaweedFS)."""
    _compare_errors(client, direct, bucket, settings_for(proxy.url), loop)


def _compare_errors(client: Any, direct: Any, bucket: str, cs: ClientSettings, loop: Any) -> None:
    direct.put_object(Bucket=bucket, Key="p/a.des", Body=b"0123456789")
    etag = direct.head_object(Bucket=bucket, Key="p/a.des")["ETag"]
    sync = S3ObjectStore(client, bucket, "p")
    view = SyncView(AsyncS3ObjectStore(make_obstore(bucket, cs), bucket, "p"), loop)
    cases: list[Callable[[Any], Any]] = [
        lambda s: s.read_range("missing.des", 0, 4),
        lambda s: s.read_tail("missing.des", 64),
        lambda s: s.head("missing.des"),
        lambda s: s.read_range("a.des", 20, 30),
        lambda s: s.read_range("a.des", 5, 30),
        lambda s: s.read_range("a.des", 0, 4, if_match='"0000"'),
        lambda s: list(s.iter_range("a.des", 0, 4, if_match='"0000"')),
    ]
    for case in cases:
        got: list[tuple[type[BaseException], str]] = []
        for s in (sync, view):
            with pytest.raises(S3StoreError) as info:
                case(s)
            got.append((type(info.value), str(info.value)))
        assert got[0] == got[1]
    assert view.read_range("a.des", 2, 5, if_match=etag) == b"234"


def test_retries_server_errors_then_gives_up_with_the_count(
    direct: Any, bucket: str, proxy: FaultProxy, loop: Any
) -> None:
    direct.put_object(Bucket=bucket, Key="a.des", Body=b"0123456789")
    store = AsyncS3ObjectStore(
        make_obstore(bucket, settings_for(proxy.url)), bucket, retry=FAST_RETRY
    )
    proxy.clear()
    proxy.inject("error500", times=2)
    assert loop.run_until_complete(store.read_range("a.des", 1, 4)) == b"123"
    assert [r.status for r in proxy.snapshot()] == [500, 500, 206]
    proxy.clear()
    proxy.inject("slowdown", times=10)
    with pytest.raises(S3Unavailable, match="gave up after 4 attempts"):
        loop.run_until_complete(store.read_range("a.des", 1, 4))
    assert proxy.count() == 4


def payload(i: int) -> bytes:
    return f"file-{i}-".encode() * (1 + i % 3)


class MemorySink:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_bytes(self, sha256: str, data: bytes) -> None:
        self.files[sha256] = data

    def put_file(self, sha256: str, path: Any) -> None:
        self.files[sha256] = Path(path).read_bytes()


KEY_10 = "20240101/01.des"
KEY_10K = "20240101/02.des"
KEY_BIG = "20240101/04.des"


@pytest.fixture(scope="module")
def shards(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ashards")
    paths = {KEY_10: tmp / "10.des", KEY_10K: tmp / "10k.des", KEY_BIG: tmp / "big.des"}
    for key, n in ((KEY_10, 10), (KEY_10K, 10_000)):
        with paths[key].open("wb") as out:
            w = ShardWriter(out, codec="zstd")
            for i in range(n):
                w.add(f"u{i:07d}", payload(i))
            w.close()
    big = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB
    sink = MemorySink()
    with paths[KEY_BIG].open("wb") as out:
        w = ShardWriter(out, big_file_threshold=100_000, bigfile_sink=sink)
        w.add("small", b"small file")
        w.add("large", big)
        w.close()
    bucket = f"des-aret-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    up = S3ShardStore(client, bucket, "p")
    for key, path in paths.items():
        up.put_shard(path, key)
    (sha,) = sink.files
    (tmp / "bigfile").write_bytes(sink.files[sha])
    assert up.put_bigfile(tmp / "bigfile", bigfile_key(KEY_BIG, sha)) is True
    return {"bucket": bucket, "paths": paths, "big": big, "sha": sha}


@pytest.fixture
def astore(shards: dict[str, Any], proxy: FaultProxy) -> AsyncS3ObjectStore:
    bucket = shards["bucket"]
    return AsyncS3ObjectStore(make_obstore(bucket, settings_for(proxy.url)), bucket, "p")


def wire(proxy: FaultProxy) -> list[tuple[str, str | None, int | None, str | None]]:
    """(path, Range, status, If-Match) per request (header names compared in lower case:
    obstore sends them so, boto3 capitalised)."""
    out = []
    for r in proxy.snapshot():
        headers = {k.lower(): v for k, v in r.headers.items()}
        out.append((r.path, r.range, r.status, headers.get("if-match")))
    return out


def test_requests_equal_the_sync_retriever(
    shards: dict[str, Any], client: Any, astore: AsyncS3ObjectStore, proxy: FaultProxy, loop: Any
) -> None:
    """Cold 2 (small index) or 3 (large index) requests, warm 1 with If-Match, big files:
    the same requests, ranges and headers as ShardRetriever over boto3, and the same bytes."""
    sync = ShardRetriever(S3ObjectStore(client, shards["bucket"], "p"), cache=IndexCache(64 << 20))
    kinds: list[tuple[str, int]] = []
    ar = AsyncShardRetriever(
        astore, cache=IndexCache(64 << 20), observer=lambda k, n: kinds.append((k, n))
    )
    reads = [
        (KEY_10, "u0000007"),
        (KEY_10, "u0000003"),
        (KEY_10K, "u0005001"),
        (KEY_10K, "u0005001"),
        (KEY_BIG, "large"),
        (KEY_BIG, "large"),
        (KEY_BIG, "small"),
    ]
    for key, uid in reads:
        proxy.clear()
        want = sync.read(key, uid)
        sync_wire = wire(proxy)
        proxy.clear()
        got = loop.run_until_complete(ar.read(key, uid))
        assert got == want
        assert wire(proxy) == sync_wire
    assert [len(x) for x in (sync_wire,)] == [1]  # warm: the payload alone
    size_10 = shards["paths"][KEY_10].stat().st_size
    assert kinds[:2] == [("tail", size_10), ("payload", kinds[1][1])]
    assert [k for k, _ in kinds[2:4]] == ["payload", "tail"]
    assert [k for k, _ in kinds[4:7]] == ["tail", "index", "payload"] or [
        k for k, _ in kinds[3:7]
    ] == ["tail", "index", "payload", "payload"]


def test_stream_open_stat_and_read_many(
    shards: dict[str, Any], astore: AsyncS3ObjectStore, proxy: FaultProxy, loop: Any
) -> None:
    ar = AsyncShardRetriever(astore, cache=IndexCache(64 << 20), chunk_size=256 * 1024)

    async def go() -> None:
        entry = await ar.stat(KEY_BIG, "large")
        assert entry.size == len(shards["big"])
        proxy.clear()
        opened = await ar.open(KEY_BIG, "large")
        # open returned after the first payload read: one request so far
        assert proxy.count() == 1
        chunks = [c async for c in opened.aiter_bytes()]
        assert b"".join(chunks) == shards["big"]
        assert max(len(c) for c in chunks) <= 256 * 1024
        assert len(chunks) > 1
        assert proxy.count() == 1
        await opened.aclose()
        small = await ar.open(KEY_10, "u0000004")
        assert [c async for c in small.aiter_bytes()] == [payload(4)]
        uids = [f"u{i:07d}" for i in range(100, 140)] + ["nope"]
        proxy.clear()
        first = {u: v async for u, v in ar.read_many(KEY_10K, uids)}
        proxy.clear()
        got = {u: v async for u, v in ar.read_many(KEY_10K, uids)}
        # warm (buckets decoded by the first call): one coalesced payload read, and a HEAD
        # confirming "nope" is missing from the shard as it is now, not only from the cache
        assert [r.method for r in proxy.snapshot()] == ["GET", "HEAD"]
        assert set(first) == set(got)
        assert isinstance(got.pop("nope"), EntryNotFound)
        assert got == {f"u{i:07d}": payload(i) for i in range(100, 140)}
        with pytest.raises(EntryNotFound):
            await ar.stat(KEY_10, "absent")

    proxy.clear()
    loop.run_until_complete(ar.stat(KEY_10K, "u0000120"))  # warm the 10k index
    loop.run_until_complete(go())


def test_replaced_shard_under_warm_cache(
    direct: Any, bucket: str, proxy: FaultProxy, tmp_path: Path, loop: Any
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
    store = AsyncS3ObjectStore(make_obstore(bucket, settings_for(proxy.url)), bucket)
    ar = AsyncShardRetriever(store, cache=IndexCache(1 << 20))
    assert loop.run_until_complete(ar.read(key, "a")) == b"version one of a"
    direct.put_object(Bucket=bucket, Key=key, Body=v2.read_bytes())
    proxy.clear()
    assert loop.run_until_complete(ar.read(key, "a")) == b"version two of a, longer"
    assert [(x.range is not None, x.status) for x in proxy.snapshot()] == [
        (True, 412),  # payload with the cached ETag: refused
        (True, 206),  # tail, cold
        (True, 206),  # payload of the new version
    ]
    # a uid deleted in the new version: a HEAD confirms the cached index is stale
    direct.put_object(Bucket=bucket, Key=key, Body=v1.read_bytes())
    proxy.clear()

    async def opened() -> bytes:
        f = await ar.open(key, "a")
        return b"".join([c async for c in f.aiter_bytes()])

    assert loop.run_until_complete(opened()) == b"version one of a"
    assert [x.status for x in proxy.snapshot()] == [412, 206, 206]
    with pytest.raises(EntryNotFound):
        loop.run_until_complete(ar.read(key, "z-first"))


def test_multi_zone_store_sends_each_key_to_its_zone(
    direct: Any, proxy: FaultProxy, loop: Any, tmp_path: Path
) -> None:
    buckets = [f"des-z{i}-{uuid.uuid4().hex[:8]}" for i in range(2)]
    for b in buckets:
        direct.create_bucket(Bucket=b)
    zones = ZoneMap(
        n_bits=8,
        zones=(
            Zone(
                "a", 0, 127, ZoneS3(bucket=buckets[0], endpoint_url=proxy.url, region_name=REGION)
            ),
            Zone(
                "b", 128, 255, ZoneS3(bucket=buckets[1], endpoint_url=proxy.url, region_name=REGION)
            ),
        ),
    )
    path = tmp_path / "s.des"
    with path.open("wb") as out:
        w = ShardWriter(out)
        w.add("x", b"in zone b")
        w.close()
    direct.put_object(Bucket=buckets[1], Key="20240101/A7.des", Body=path.read_bytes())
    stores = {
        z.name: AsyncS3ObjectStore(make_obstore(b, settings_for(proxy.url)), b)
        for z, b in zip(zones.zones, buckets, strict=True)
    }
    ar = AsyncShardRetriever(AsyncMultiZoneObjectStore(zones, stores))
    proxy.clear()
    assert loop.run_until_complete(ar.read("20240101/A7.des", "x")) == b"in zone b"
    assert {r.path.split("/")[1] for r in proxy.snapshot()} == {buckets[1]}
    with pytest.raises(EntryNotFound, match=r"zone b"):
        loop.run_until_complete(ar.read("20240101/A7.des", "y"))


def test_open_async_store_from_settings(
    proxy: FaultProxy, direct: Any, bucket: str, loop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    direct.put_object(Bucket=bucket, Key="pre/k", Body=b"abc")
    s = DesSettings(
        backend="s3", s3_bucket=bucket, s3_prefix="pre", s3_endpoint_url=proxy.url, s3_region=REGION
    )
    store = open_async_store(s)
    assert isinstance(store, AsyncS3ObjectStore)
    assert loop.run_until_complete(store.read_range("k", 0, 3)) == b"abc"
    assert store.describe("k") == f"s3://{bucket}/pre/k"


async def _drain(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])
