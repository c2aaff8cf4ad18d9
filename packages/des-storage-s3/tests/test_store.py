"""S3ObjectStore against the moto server over HTTP, counted at the HTTP level by the proxy."""

from __future__ import annotations

from typing import Any

import pytest
from des_format import (
    ListEntry,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    RangeNotSatisfiable,
    TailRead,
)
from des_storage_s3 import (
    RetryPolicy,
    S3ObjectNotFound,
    S3ObjectStore,
    S3PreconditionFailed,
    S3ProtocolError,
    S3RangeNotSatisfiable,
)
from des_testing import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DATA = bytes(range(256)) * 390 + bytes(range(160))  # 100,000 bytes


@pytest.fixture
def store(client: Any, bucket: str, direct: Any, fast_retry: RetryPolicy) -> S3ObjectStore:
    direct.put_object(Bucket=bucket, Key="pre/20240101/A7.des", Body=DATA)
    direct.put_object(Bucket=bucket, Key="pre/empty", Body=b"")
    return S3ObjectStore(client, bucket, "pre/", retry=fast_retry)


def test_is_an_object_store(store: S3ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.describe("20240101/A7.des") == f"s3://{store.bucket}/pre/20240101/A7.des"
    assert store.describe() == f"s3://{store.bucket}/pre"


def test_read_tail_is_one_suffix_get(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    tail = store.read_tail("20240101/A7.des", 4096)
    assert tail.data == DATA[-4096:]
    assert tail.object_size == len(DATA)
    assert tail.etag is not None
    assert tail.etag.startswith('"')
    reqs = proxy.snapshot()
    assert [(r.method, r.range, r.status) for r in reqs] == [("GET", "bytes=-4096", 206)]
    assert reqs[0].bytes_out == 4096


def test_read_tail_longer_than_object_returns_whole_object(
    store: S3ObjectStore, proxy: FaultProxy
) -> None:
    proxy.clear()
    tail = store.read_tail("20240101/A7.des", 1_000_000)
    assert tail == TailRead(DATA, len(DATA), tail.etag)
    assert proxy.count() == 1


def test_read_tail_of_empty_object(store: S3ObjectStore) -> None:
    tail = store.read_tail("empty", 65536)
    assert (tail.data, tail.object_size) == (b"", 0)


def test_read_range_exact_bytes_and_one_request(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    assert store.read_range("20240101/A7.des", 10, 20) == DATA[10:20]
    assert store.read_range("20240101/A7.des", 0, len(DATA)) == DATA
    assert store.read_range("20240101/A7.des", 5, 5) == b""
    assert [(r.range, r.status, r.bytes_out) for r in proxy.snapshot()] == [
        ("bytes=10-19", 206, 10),
        (f"bytes=0-{len(DATA) - 1}", 206, len(DATA)),
    ]


def test_iter_range_streams_in_chunks(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    chunks = list(store.iter_range("20240101/A7.des", 100, 50_100, chunk_size=8192))
    assert b"".join(chunks) == DATA[100:50_100]
    assert max(len(c) for c in chunks) <= 8192
    assert proxy.count() == 1


def test_head(store: S3ObjectStore) -> None:
    info = store.head("20240101/A7.des")
    assert info.size == len(DATA)
    assert info.etag == store.read_tail("20240101/A7.des", 1).etag


def test_missing_object_is_not_found_and_not_retried(
    store: S3ObjectStore, proxy: FaultProxy
) -> None:
    proxy.clear()
    with pytest.raises(S3ObjectNotFound) as info:
        store.read_tail("20240101/FF.des", 65536)
    assert isinstance(info.value, ObjectNotFound)
    assert str(info.value) == f"GET tail no such object: s3://{store.bucket}/pre/20240101/FF.des"
    assert info.value.bucket == store.bucket
    assert info.value.key == "pre/20240101/FF.des"
    with pytest.raises(S3ObjectNotFound):
        store.read_range("20240101/FF.des", 0, 10)
    with pytest.raises(S3ObjectNotFound):
        store.head("20240101/FF.des")
    assert proxy.count() == 3


def test_missing_bucket_is_not_found(client: Any) -> None:
    store = S3ObjectStore(client, "des-no-such-bucket")
    with pytest.raises(S3ObjectNotFound, match="no such bucket"):
        store.read_tail("20240101/A7.des", 10)


def test_range_outside_object(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    with pytest.raises(S3RangeNotSatisfiable) as info:
        store.read_range("20240101/A7.des", len(DATA) + 10, len(DATA) + 20)
    assert isinstance(info.value, RangeNotSatisfiable)
    # S3 clamps a range that starts inside but ends outside: detected from Content-Range.
    with pytest.raises(S3RangeNotSatisfiable, match=r"outside .* \(100000 bytes\)"):
        store.read_range("20240101/A7.des", len(DATA) - 10, len(DATA) + 10)
    with pytest.raises(S3RangeNotSatisfiable):
        store.read_range("20240101/A7.des", 10, 5)
    assert proxy.count() == 2


def test_if_match_mismatch_is_precondition_failed(
    store: S3ObjectStore, direct: Any, bucket: str
) -> None:
    etag = store.head("20240101/A7.des").etag
    assert store.read_range("20240101/A7.des", 0, 4, if_match=etag) == DATA[:4]
    direct.put_object(Bucket=bucket, Key="pre/20240101/A7.des", Body=DATA[::-1])
    with pytest.raises(S3PreconditionFailed) as info:
        store.read_range("20240101/A7.des", 0, 4, if_match=etag)
    assert isinstance(info.value, PreconditionFailed)
    with pytest.raises(S3PreconditionFailed):
        list(store.iter_range("20240101/A7.des", 0, 4, if_match=etag))


@pytest.mark.s3_servers(
    "moto",
    reason="the proxy drops the Range header the client signed: only a server that does not "
    "check signatures (moto) takes the altered request; SeaweedFS rightly answers 403",
)
def test_ignored_range_is_never_trusted(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.inject("ignore_range", times=2)
    with pytest.raises(S3ProtocolError, match="ignored the suffix range"):
        store.read_tail("20240101/A7.des", 100)
    with pytest.raises(S3ProtocolError, match=r"ignored the range \[10, 20\)"):
        store.read_range("20240101/A7.des", 10, 20)
    # A 200 is fine when the whole object is exactly what was asked for.
    proxy.inject("ignore_range", times=2)
    assert store.read_range("20240101/A7.des", 0, len(DATA)) == DATA
    assert store.read_tail("20240101/A7.des", len(DATA)).data == DATA
    assert [r.status for r in proxy.snapshot()] == [200, 200, 200, 200]


def test_prefixless_store(client: Any, bucket: str, direct: Any) -> None:
    direct.put_object(Bucket=bucket, Key="20240101/00.des", Body=b"abc")
    store = S3ObjectStore(client, bucket)
    assert store.read_range("20240101/00.des", 1, 3) == b"bc"
    assert store.describe() == f"s3://{bucket}"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_range_or_tail_returns_exact_bytes(store: S3ObjectStore, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(DATA) - 1))
    end = data.draw(st.integers(start, len(DATA)))
    assert store.read_range("20240101/A7.des", start, end) == DATA[start:end]
    n = data.draw(st.integers(1, len(DATA) + 100))
    tail = store.read_tail("20240101/A7.des", n)
    assert (tail.data, tail.object_size) == (DATA[-n:], len(DATA))


# ---- listing (ListObjectsV2, delimiter "/") ------------------------------------------------


def test_list_dir_lists_one_level_in_one_request(
    store: S3ObjectStore, proxy: FaultProxy, direct: Any, bucket: str
) -> None:
    direct.put_object(Bucket=bucket, Key="pre/20240101/_bigFiles/" + "ab" * 32, Body=b"x")
    proxy.clear()
    day = sorted(store.list_dir("20240101"), key=lambda e: e.name)
    assert day == [ListEntry("A7.des", False), ListEntry("_bigFiles", True)]
    reqs = proxy.snapshot()
    assert [(r.method, r.status) for r in reqs] == [("GET", 200)]
    query = reqs[0].query
    assert "list-type=2" in query
    assert "delimiter=%2F" in query
    assert "prefix=pre%2F20240101%2F" in query
    proxy.clear()
    # S3 lists in key order: "pre/20240101/" comes before "pre/empty".
    assert list(store.list_dir("", limit=1)) == [ListEntry("20240101", True)]
    reqs = proxy.snapshot()
    assert len(reqs) == 1
    assert "max-keys=1" in reqs[0].query


def test_list_dir_retries_a_server_error(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    proxy.inject("error500", method="GET")
    assert list(store.list_dir("20240101")) == [ListEntry("A7.des", False)]
    assert [r.status for r in proxy.snapshot()] == [500, 200]


def test_list_dir_of_a_missing_bucket_names_it(client: Any, fast_retry: RetryPolicy) -> None:
    store = S3ObjectStore(client, "des-no-such-bucket-here", retry=fast_retry)
    with pytest.raises(S3ObjectNotFound, match="no such bucket") as info:
        store.list_dir("20240101")
    assert info.value.code == "NoSuchBucket"
