"""Faults injected between client and moto server: reads end with the right bytes or a clear
error once the retry budget is spent, never with wrong bytes.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from des_format import PreconditionFailed, StorageUnavailable
from des_storage_s3 import (
    RetryPolicy,
    S3ObjectNotFound,
    S3ObjectStore,
    S3PreconditionFailed,
    S3Unavailable,
    make_client,
)
from des_testing import FaultProxy

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

DATA = bytes((i * 7 + i // 256) % 256 for i in range(300_000))
KEY = "20240101/A7.des"


@pytest.fixture
def store(client: Any, bucket: str, direct: Any, fast_retry: RetryPolicy) -> S3ObjectStore:
    direct.put_object(Bucket=bucket, Key=KEY, Body=DATA)
    return S3ObjectStore(client, bucket, retry=fast_retry)


@pytest.mark.parametrize("kind", ["slowdown", "error500", "reset", "truncate"])
def test_transient_faults_are_retried_to_the_right_bytes(
    store: S3ObjectStore, proxy: FaultProxy, kind: str
) -> None:
    proxy.clear()
    proxy.inject(kind, times=2)
    assert store.read_range(KEY, 1000, 200_000) == DATA[1000:200_000]
    proxy.inject(kind, times=2)
    tail = store.read_tail(KEY, 65536)
    assert (tail.data, tail.object_size) == (DATA[-65536:], len(DATA))
    reqs = proxy.snapshot()
    assert [r.fault for r in reqs] == [kind, kind, None, kind, kind, None]
    assert [r.range for r in reqs] == ["bytes=1000-199999"] * 3 + ["bytes=-65536"] * 3


def test_slow_response_times_out_and_is_retried(
    proxy: FaultProxy, bucket: str, direct: Any, client_settings: Any, fast_retry: RetryPolicy
) -> None:
    direct.put_object(Bucket=bucket, Key=KEY, Body=DATA)
    client = make_client(client_settings(proxy.url, read_timeout=0.3))
    store = S3ObjectStore(client, bucket, retry=fast_retry)
    proxy.inject("slow", delay=1.0)
    assert store.read_range(KEY, 0, 10) == DATA[:10]
    assert [r.fault for r in proxy.snapshot()][-1] is None
    assert proxy.count() == 2


def test_budget_spent_gives_a_clear_error(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    proxy.inject("slowdown", times=10)
    with pytest.raises(S3Unavailable) as info:
        store.read_range(KEY, 0, 10)
    err = info.value
    assert isinstance(err, StorageUnavailable)
    assert str(err) == (
        f"GET S3 is throttling requests (SlowDown) for s3://{store.bucket}/{KEY} bytes [0, 10); "
        "retry later or spread the load over more prefixes (gave up after 4 attempts)"
    )
    assert (err.bucket, err.key, err.code, err.status) == (store.bucket, KEY, "SlowDown", 503)
    assert proxy.count() == 4  # exactly max_attempts: botocore adds no retries of its own


def test_time_budget_limits_retries(
    client: Any, bucket: str, direct: Any, proxy: FaultProxy
) -> None:
    direct.put_object(Bucket=bucket, Key=KEY, Body=DATA)
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=50, base_delay=1.0, max_delay=1.0, budget_seconds=2.5)
    store = S3ObjectStore(client, bucket, retry=policy, sleep=slept.append, draw=lambda: 0.9)
    proxy.inject("error500", times=50)
    with pytest.raises(S3Unavailable, match=r"gave up after 3 attempts"):
        store.read_range(KEY, 0, 10)
    assert slept == [0.9, 0.9]
    assert proxy.count() == 3


def test_not_found_is_not_retried(store: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.clear()
    with pytest.raises(S3ObjectNotFound):
        store.read_range("20240101/00.des", 0, 10)
    assert proxy.count() == 1


def test_streamed_read_resumes_after_a_cut_pinned_to_the_etag(
    store: S3ObjectStore, proxy: FaultProxy
) -> None:
    proxy.clear()
    proxy.inject("truncate", keep_fraction=0.5)
    data = b"".join(store.iter_range(KEY, 0, 200_000, chunk_size=16384))
    assert data == DATA[:200_000]
    reqs = proxy.snapshot()
    assert len(reqs) == 2
    assert reqs[0].range == "bytes=0-199999"
    assert reqs[0].fault == "truncate"
    # The second request starts exactly where the first body stopped, with If-Match.
    resumed_at = reqs[0].bytes_out
    assert resumed_at == 100_000
    assert reqs[1].range == f"bytes={resumed_at}-199999"
    assert "If-Match" in reqs[1].headers


def test_streamed_read_never_splices_two_versions(
    store: S3ObjectStore, proxy: FaultProxy, direct: Any
) -> None:
    proxy.clear()

    def replace_before_resume(method: str, path: str, headers: dict[str, str]) -> bool:
        if headers.get("Range", "").startswith("bytes=100000-"):
            direct.put_object(Bucket=store.bucket, Key=KEY, Body=DATA[::-1])
        return False

    proxy.inject("truncate", keep_fraction=0.5)
    proxy.inject("slowdown", match=replace_before_resume)
    got = bytearray()

    def consume() -> None:
        for chunk in store.iter_range(KEY, 0, 200_000, chunk_size=16384):
            got.extend(chunk)

    with pytest.raises(S3PreconditionFailed) as info:
        consume()
    assert isinstance(info.value, PreconditionFailed)
    # What arrived before the cut is the old version's; the resume is refused (412).
    assert bytes(got) == DATA[:100_000]
    assert [r.status for r in proxy.snapshot()] == [206, 412]


FAULT_MIXES = list(itertools.product(["slowdown", "error500", "reset", "truncate", None], repeat=2))


@pytest.mark.parametrize("faults", FAULT_MIXES[::2])
def test_any_fault_mix_ends_in_right_bytes_or_clear_error(
    store: S3ObjectStore, proxy: FaultProxy, faults: tuple[str | None, ...]
) -> None:
    proxy.clear()
    for kind in faults:
        if kind is not None:
            proxy.inject(kind, times=2)
    # Each injected kind fails two tries; four tries are allowed.
    if sum(1 for k in faults if k) * 2 >= 4:
        with pytest.raises(S3Unavailable, match="gave up after 4 attempts"):
            store.read_range(KEY, 5, 250_000)
    else:
        assert store.read_range(KEY, 5, 250_000) == DATA[5:250_000]
