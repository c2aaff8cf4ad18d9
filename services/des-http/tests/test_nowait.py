"""GET/HEAD /files answered on the event loop when nothing has to wait for I/O (a cached index,
a small payload in the page cache of a local shard), with answers and metrics identical to the
trip through the I/O threads; everything else still takes that trip."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    Codec,
    LocalObjectStore,
    ShardWriter,
    codec_available,
)
from des_format._source import NOWAIT_READS
from des_format.testing import append_local
from des_http import HttpSettings, create_app
from des_http_testkit import (
    DAY,
    N_BITS,
    SAMPLES,
    RecordingStore,
    files_url,
    object_key,
    sample,
    write_dataset,
)
from des_routing import DesSettings, locate_shard
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.skipif(
    not NOWAIT_READS, reason="no preadv2 with RWF_NOWAIT on this platform"
)


class CountingExecutor(ThreadPoolExecutor):
    """The service's I/O threads, counting every job handed to them."""

    def __init__(self) -> None:
        super().__init__(4, thread_name_prefix="des-io")
        self.submitted = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count_lock:
            self.submitted += 1
        return super().submit(fn, *args, **kwargs)


class NowaitRecordingStore(RecordingStore):
    """RecordingStore that also forwards (and records) the non-blocking reads, and notes the
    thread of every call."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.calls_by_thread: list[tuple[str, str]] = []

    @property
    def supports_nowait_reads(self) -> bool:
        return bool(self.inner.supports_nowait_reads)

    def _note(self, op: str, key: str) -> None:
        self.calls_by_thread.append((op, threading.current_thread().name))
        super()._note(op, key)

    def read_range_nowait(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes | None:
        self._note("read_range_nowait", key)
        found: bytes | None = self.inner.read_range_nowait(key, start, end, if_match=if_match)
        return found


class NoMemoryStore(LocalObjectStore):
    """A local store whose non-blocking reads always find the bytes missing (EAGAIN)."""

    asked = 0

    def read_range_nowait(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes | None:
        self.asked += 1
        return None


@dataclass
class App:
    client: TestClient
    executor: CountingExecutor
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"backend": "local", **labels})
        return 0.0 if value is None else value

    def served(self) -> float:
        return self.metric("des_nowait_lookups_total", result="served")

    def fallbacks(self) -> float:
        return self.metric("des_nowait_lookups_total", result="fallback")

    def counters(self) -> dict[str, float]:
        """Every metric a request moves, except the ones about the event loop itself."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            if family.name == "des_nowait_lookups" or family.type == "histogram":
                continue
            for s in family.samples:
                if not s.name.endswith("_created"):
                    out[s.name + repr(sorted(s.labels.items()))] = s.value
        out["latency_count"] = self.metric("des_retrieval_seconds_count")
        return out


def make_app(base: Path, store: Any = None, **http: Any) -> App:
    des = DesSettings(backend="local", base_dir=base, n_bits=N_BITS)
    registry = CollectorRegistry()
    app = create_app(
        HttpSettings(des=des, **http),
        store=store if store is not None else LocalObjectStore(base),
        registry=registry,
    )
    executor = CountingExecutor()
    app.state.des.executor = executor
    app.state.des.retriever.executor = executor  # the thread-driven retriever's pool
    return App(TestClient(app, raise_server_exceptions=False), executor, registry)


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for a in made:
        a.client.close()
        a.executor.shutdown()


def strip(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "x-request-id"}


def test_warm_small_reads_skip_the_thread_hop(dataset_dir: Path, apps: list[App]) -> None:
    a = make_app(dataset_dir)
    apps.append(a)
    s = sample("1001")
    first = a.client.get(files_url("1001"))
    assert (first.status_code, first.content) == (200, s.data)
    assert a.executor.submitted == 1  # cold: the index is read in a thread
    again = a.client.get(files_url("1001"))
    assert (again.status_code, again.content) == (200, s.data)
    assert strip(again.headers) == strip(first.headers)
    assert a.executor.submitted == 1
    other = sample("1257")  # the same shard: its index is cached now
    r = a.client.get(files_url("1257"))
    assert (r.status_code, r.content) == (200, other.data)
    head = a.client.head(files_url("1513"))
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == "3000"
    assert a.executor.submitted == 1
    assert (a.served(), a.fallbacks()) == (3, 1)
    assert a.metric("des_retrievals_total", status="200") == 4
    assert a.metric("des_s3_range_calls_total", type="payload") == 3


def test_counters_equal_those_of_the_thread_path(dataset_dir: Path, apps: list[App]) -> None:
    fast, slow = make_app(dataset_dir), make_app(dataset_dir, nowait_reads=False)
    apps += [fast, slow]
    etag = fast.client.head(files_url("1001")).headers["etag"]
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", files_url("1001"), {}),
        ("GET", files_url("1001"), {}),
        ("GET", files_url("1257"), {"Range": "bytes=10-99"}),
        ("GET", files_url("1001"), {"If-None-Match": etag}),
        ("GET", files_url("1769"), {}),  # empty
        ("HEAD", files_url("1513"), {}),
        ("GET", files_url("2025"), {}),  # 200 KB: over the 64 KiB cap
        ("GET", files_url("2281"), {}),  # deleted
        ("GET", files_url("4242"), {}),  # never stored
        ("GET", files_url("doc-\u00e9t\u00e9"), {"Range": "bytes=-5"}),
    ]
    slow.client.head(files_url("1001"))
    for method, url, conditions in requests:
        headers = {"X-Request-ID": "same-id", **conditions}  # problem bodies carry it
        rf = fast.client.request(method, url, headers=headers)
        rs = slow.client.request(method, url, headers=headers)
        assert (rf.status_code, strip(rf.headers), rf.content) == (
            rs.status_code,
            strip(rs.headers),
            rs.content,
        ), (method, url, conditions)
    assert fast.counters() == slow.counters()
    # one trip each, two for each ranged GET (the index entry first: a 416 reads no payload)
    assert slow.executor.submitted == len(requests) + 1 + 2
    assert slow.served() == slow.fallbacks() == 0
    # Thread trips left: the first HEAD (cold), 2025 (too big), 2281 and 4242 (errors that
    # need a look at storage), and doc-été's entry, whose shard is cold. Each request is
    # counted once: a ranged GET looks up its entry, then its payload; doc-été's is a
    # fallback (its entry went to a thread, its payload did not).
    assert fast.executor.submitted == 5
    assert fast.served() == 6
    assert fast.fallbacks() == 5
    assert fast.served() + fast.fallbacks() == len(requests) + 1


def test_a_read_that_would_wait_goes_to_a_thread(dataset_dir: Path, apps: list[App]) -> None:
    store = NoMemoryStore(dataset_dir)
    a = make_app(dataset_dir, store=store)
    apps.append(a)
    for _ in range(3):
        r = a.client.get(files_url("1257"))
        assert (r.status_code, r.content) == (200, sample("1257").data)
    assert store.asked == 2  # not on the cold read: no index cached
    assert a.executor.submitted == 3
    assert (a.served(), a.fallbacks()) == (0, 3)
    assert a.metric("des_s3_range_calls_total", type="payload") == 3


def test_settings_turn_it_off_or_cap_it(dataset_dir: Path, apps: list[App]) -> None:
    off = make_app(dataset_dir, nowait_reads=False)
    capped = make_app(dataset_dir, nowait_max_bytes=4000)  # 1257 is 5000 bytes
    under_stream = make_app(dataset_dir, nowait_max_bytes=1 << 20, stream_threshold_bytes=1024)
    apps += [off, capped, under_stream]
    for a in (off, capped, under_stream):
        for _ in range(3):
            r = a.client.get(files_url("1257"))
            assert (r.status_code, r.content) == (200, sample("1257").data)
        assert a.executor.submitted == 3
    assert off.fallbacks() == 0  # not even tried
    r = capped.client.get(files_url("1513"))  # 3000 bytes: under the cap
    assert (r.status_code, r.content) == (200, sample("1513").data)
    assert capped.executor.submitted == 3


def test_the_event_loop_touches_storage_only_through_nowait_reads(
    dataset_dir: Path, apps: list[App]
) -> None:
    store = NowaitRecordingStore(LocalObjectStore(dataset_dir))
    a = make_app(dataset_dir, store=store, stream_threshold_bytes=4096)
    apps.append(a)
    for _ in range(2):
        a.client.get(files_url("1001"))
        a.client.head(files_url("1257"))
        a.client.get(files_url("2025"))  # streamed
        a.client.post("/files/batch", json={"items": [{"uid": "1513", "created_at": DAY}]})
    a.client.get("/ready")
    assert a.served() >= 1
    elsewhere = {
        op for op, t in store.calls_by_thread if not t.startswith(("des-io", "AnyIO worker thread"))
    }
    assert elsewhere == {"read_range_nowait"}


def test_a_replaced_shard_is_never_answered_from_the_old_file(
    tmp_path: Path, apps: list[App]
) -> None:
    write_dataset(tmp_path)
    a = make_app(tmp_path)
    apps.append(a)
    for uid in ("1001", "1257"):
        assert a.client.get(files_url(uid)).status_code == 200
    assert a.client.get(files_url("1257")).content == sample("1257").data
    served = a.served()
    # Deleted and appended by another process: the cached index and the open descriptor
    # still describe the old file, whose bytes are all in memory.
    key = object_key(sample("1001"))
    assert locate_shard("3049", DAY, N_BITS).object_key == key
    append_local(tmp_path / key, {"3049": b"late"}, delete=("1001",))
    submitted = a.executor.submitted
    r = a.client.get(files_url("1001"))
    assert r.status_code == 410
    assert (a.served(), a.executor.submitted) == (served, submitted + 1)  # index re-read
    # Under the fresh index (cached by that thread), from memory again.
    assert a.client.get(files_url("3049")).content == b"late"
    r = a.client.get(files_url("1257"))
    assert (r.status_code, r.content) == (200, sample("1257").data)
    assert (a.served(), a.executor.submitted) == (served + 2, submitted + 1)
    assert a.client.get(files_url("1001")).status_code == 410  # a tombstone: via a thread
    assert a.executor.submitted == submitted + 2


# ---- identical answers, fast path or thread (property) ----

CODECS = [c for c in ("none", "zstd", "lz4") if codec_available(Codec[c.upper()])]
TOKEN = "@etag"  # replaced by the requested file's ETag


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, App, App, Any]]:
    base = tmp_path_factory.mktemp("nowait-pairs")
    fast, slow = make_app(base), make_app(base, nowait_reads=False)
    yield base, fast, slow, itertools.count()
    for a in (fast, slow):
        a.client.close()
        a.executor.shutdown()


range_specs = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 90_000), st.integers(0, 90_000)).map(lambda t: f"bytes={t[0]}-{t[1]}"),
    st.integers(0, 90_000).map(lambda n: f"bytes={n}-"),
    st.integers(0, 90_000).map(lambda n: f"bytes=-{n}"),
    st.sampled_from(["bytes=0-0,5-9", "bytes=x-y", "items=0-1", "bytes=-0"]),
)
etag_specs = st.one_of(st.none(), st.sampled_from([TOKEN, "*", '"other"', f"W/{TOKEN}"]))
# At most 60,000 bytes: every file stays under the 64 KiB answered from memory, stored too
# (incompressible bytes grow a little under zstd and lz4).
contents = st.one_of(
    st.binary(max_size=3000),
    st.tuples(st.binary(min_size=1, max_size=40), st.integers(1, 3000)).map(
        lambda t: (t[0] * t[1])[:60_000]
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    files=st.lists(contents, min_size=1, max_size=3),
    pick=st.integers(0, 2),
    codec=st.sampled_from(CODECS),
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    range_header=range_specs,
    if_none_match=etag_specs,
    if_range=etag_specs,
)
def test_fast_path_and_thread_path_answer_identically(
    pair: tuple[Path, App, App, Any],
    files: list[bytes],
    pick: int,
    codec: str,
    method: str,
    range_header: str | None,
    if_none_match: str | None,
    if_range: str | None,
) -> None:
    base, fast, slow, counter = pair
    created = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=next(counter))
    created_at = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    uids = [f"f{i}" for i in range(len(files))]
    key = locate_shard(uids[0], created, N_BITS).object_key
    path = base / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:  # one new shard per example: a day of its own
        w = ShardWriter(fh, codec=codec)
        for uid, data in zip(uids, files, strict=True):
            if locate_shard(uid, created, N_BITS).object_key == key:
                w.add(uid, data)
        w.close()
    uid = uids[0] if pick >= len(files) else uids[pick]
    if locate_shard(uid, created, N_BITS).object_key != key:
        uid = uids[0]
    data = files[uids.index(uid)]
    url = files_url(uid, created_at)
    warm = [a.client.get(url) for a in (fast, slow)]  # the index cached in both
    assert [r.status_code for r in warm] == [200, 200]
    etag = warm[0].headers["etag"]
    headers = {
        name: value.replace(TOKEN, etag)
        for name, value in (
            ("Range", range_header),
            ("If-None-Match", if_none_match),
            ("If-Range", if_range),
        )
        if value is not None
    }
    headers["X-Request-ID"] = "same-id"
    served, fallbacks = fast.served(), fast.fallbacks()
    rf = fast.client.request(method, url, headers=headers)
    rs = slow.client.request(method, url, headers=headers)
    assert (rf.status_code, strip(rf.headers), rf.content) == (
        rs.status_code,
        strip(rs.headers),
        rs.content,
    )
    assert rf.status_code in (200, 206, 304, 416)
    if rf.status_code == 200 and method == "GET":
        assert rf.content == data
    # Answered from memory: a payload of at most 64 KiB, just written, so in the page cache.
    # A GET with Range or If-None-Match looks the entry up first, then (unless the answer is
    # a 304 or 416) the payload: one request, counted once.
    assert (fast.served(), fast.fallbacks()) == (served + 1, fallbacks)


def test_samples_cover_the_cases_above() -> None:
    # The data set the tests above lean on: 1001/1257/1513/1769/2025/2281 share one shard.
    keys = {object_key(sample(u)) for u in ("1001", "1257", "1513", "1769", "2025", "2281")}
    assert len(keys) == 1
    assert len(sample("2025").data) > 64 * 1024
    assert any(s.deleted for s in SAMPLES)


def test_conditional_answers_from_a_cached_index_need_no_nowait_store(
    dataset_dir: Path, apps: list[App]
) -> None:
    # A store without non-blocking reads (as S3's): only answers without a payload skip
    # the thread trip.
    store = RecordingStore(LocalObjectStore(dataset_dir))
    a = make_app(dataset_dir, store=store)
    apps.append(a)
    etag = a.client.get(files_url("1001")).headers["etag"]
    assert a.executor.submitted == 1
    r = a.client.get(files_url("1001"), headers={"If-None-Match": etag})
    assert (r.status_code, r.headers["etag"], r.content) == (304, etag, b"")
    r = a.client.get(files_url("1513"), headers={"Range": "bytes=3000-"})
    assert r.status_code == 416
    assert a.client.head(files_url("1257")).status_code == 200
    assert a.executor.submitted == 1
    assert a.client.get(files_url("1257")).content == sample("1257").data
    assert a.executor.submitted == 2
    assert (a.served(), a.fallbacks()) == (3, 2)
    assert a.metric("des_s3_range_calls_total", type="payload") == 2
