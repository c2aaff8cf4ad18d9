"""Pure parts: range headers, retry decisions, upload plans, the error adapter."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
)
from des_format import (
    ByteRange,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from des_storage_s3 import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    ContentRange,
    PartSpec,
    RetryPolicy,
    S3AccessDenied,
    S3ObjectNotFound,
    S3PreconditionFailed,
    S3RangeNotSatisfiable,
    S3RequestError,
    S3StoreError,
    S3Unavailable,
    call_with_retry,
    is_retryable,
    join_key,
    parse_content_range,
    plan_append,
    plan_retry,
    plan_retry_delay,
    plan_upload,
    serialize_range,
    serialize_suffix_range,
    translate_error,
)
from hypothesis import given
from hypothesis import strategies as st

MiB = 1024 * 1024


# -- range headers ---------------------------------------------------------------------------


def test_range_headers() -> None:
    assert serialize_range(0, 1) == "bytes=0-0"
    assert serialize_range(10, 20) == "bytes=10-19"
    assert serialize_suffix_range(65536) == "bytes=-65536"
    with pytest.raises(ValueError, match="empty or invalid"):
        serialize_range(5, 5)
    with pytest.raises(ValueError, match="n >= 1"):
        serialize_suffix_range(0)


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 10-19/100") == ContentRange(ByteRange(10, 20), 100)
    assert parse_content_range("bytes 0-0/*") == ContentRange(ByteRange(0, 1), None)
    for bad in [None, "", "bytes */100", "bytes 20-10/100", "bytes 0-100/100", "items 0-1/2"]:
        assert parse_content_range(bad) is None


@given(st.integers(0, 2**40), st.integers(1, 2**30), st.integers(0, 2**30))
def test_range_round_trip(start: int, length: int, extra: int) -> None:
    end = start + length
    header = serialize_range(start, end)
    total = end + extra
    cr = parse_content_range(header.replace("bytes=", "bytes ") + f"/{total}")
    assert cr == ContentRange(ByteRange(start, end), total)


def test_join_key() -> None:
    assert join_key("", "a/b.des") == "a/b.des"
    assert join_key("des/", "a/b.des") == "des/a/b.des"
    assert join_key("/x/y/", "a") == "x/y/a"


# -- retry decisions ---------------------------------------------------------------------------


def err(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


def tr(exc: BaseException) -> Any:
    return translate_error(exc, bucket="b", key="k", byte_range=ByteRange(0, 10), operation="GET")


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (err("NoSuchKey", 404), S3ObjectNotFound, False),
        (err("404", 404), S3ObjectNotFound, False),
        (err("NoSuchBucket", 404), S3ObjectNotFound, False),
        (err("InvalidRange", 416), S3RangeNotSatisfiable, False),
        (err("PreconditionFailed", 412), S3PreconditionFailed, False),
        (err("SlowDown", 503), S3Unavailable, True),
        (err("ServiceUnavailable", 503), S3Unavailable, True),
        (err("InternalError", 500), S3Unavailable, True),
        (err("RequestTimeout", 400), S3Unavailable, True),
        (err("BadGateway", 502), S3Unavailable, True),
        (err("AccessDenied", 403), S3AccessDenied, False),
        (err("403", 403), S3AccessDenied, False),
        (err("InvalidBucketName", 400), S3RequestError, False),
        (EndpointConnectionError(endpoint_url="http://x"), S3Unavailable, True),
        (ConnectTimeoutError(endpoint_url="http://x"), S3Unavailable, True),
        (ReadTimeoutError(endpoint_url="http://x"), S3Unavailable, True),
        (IncompleteReadError(actual_bytes=1, expected_bytes=2), S3Unavailable, True),
        (ConnectionResetError(104, "reset"), S3Unavailable, True),
        (NoCredentialsError(), S3AccessDenied, False),
    ],
)
def test_error_adapter(exc: BaseException, kind: type[S3StoreError], retryable: bool) -> None:
    out: S3StoreError = tr(exc)
    assert type(out) is kind
    assert is_retryable(out) is retryable
    assert (out.bucket, out.key, out.byte_range) == ("b", "k", ByteRange(0, 10))
    assert out.location == "s3://b/k"


def test_adapter_messages_and_base_classes() -> None:
    nf = tr(err("NoSuchKey", 404))
    assert str(nf) == "GET no such object: s3://b/k bytes [0, 10)"
    assert isinstance(nf, ObjectNotFound)
    assert isinstance(nf, LookupError)
    assert isinstance(tr(err("InvalidRange", 416)), RangeNotSatisfiable)
    assert isinstance(tr(err("PreconditionFailed", 412)), PreconditionFailed)
    slow: S3StoreError = tr(err("SlowDown", 503))
    assert (slow.code, slow.status) == ("SlowDown", 503)
    assert isinstance(slow, StorageUnavailable)
    assert str(tr(err("AccessDenied", 403))) == (
        "GET access denied to s3://b/k bytes [0, 10) (AccessDenied): check the credentials and "
        "the bucket policy"
    )
    assert tr(slow) is slow  # already translated: unchanged


def test_plan_retry_delay_exponential_full_jitter() -> None:
    p = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0, budget_seconds=100)
    assert [plan_retry_delay(p, a, 1.0) for a in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert plan_retry_delay(p, 3, 0.5) == 0.2
    assert plan_retry_delay(p, 3, 0.0) == 0.0
    with pytest.raises(ValueError, match="1-based"):
        plan_retry_delay(p, 0, 0.5)


def test_plan_retry_decisions() -> None:
    p = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=8.0, budget_seconds=2.5)
    slow = tr(err("SlowDown", 503))
    assert plan_retry(p, 1, slow, 0.0, 0.5) == 0.5
    assert plan_retry(p, 2, slow, 0.5, 0.5) == 1.0
    assert plan_retry(p, 3, slow, 1.5, 0.5) is None  # attempts spent
    assert plan_retry(p, 2, slow, 2.0, 0.9) is None  # 2.0 + 1.8 > budget 2.5
    assert plan_retry(p, 1, tr(err("NoSuchKey", 404)), 0.0, 0.5) is None
    assert plan_retry(p, 1, tr(err("AccessDenied", 403)), 0.0, 0.5) is None
    assert plan_retry(p, 1, ValueError("not ours"), 0.0, 0.5) is None


@given(
    st.integers(1, 20),
    st.floats(0, 5),
    st.floats(0, 30),
    st.integers(1, 60),
    st.floats(0, 1, exclude_max=True),
)
def test_retry_delay_bounds(
    attempts: int, base: float, cap: float, attempt: int, draw: float
) -> None:
    p = RetryPolicy(max_attempts=attempts, base_delay=base, max_delay=cap, budget_seconds=60)
    d = plan_retry_delay(p, attempt, draw)
    assert 0.0 <= d <= min(cap, base * 2 ** (attempt - 1)) + 1e-12


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match=">= 0"):
        RetryPolicy(base_delay=-1)


def test_call_with_retry_counts_and_sleeps() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise err("SlowDown", 503)
        return "ok"

    p = RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=1.0)
    assert call_with_retry(flaky, p, translate=tr, sleep=slept.append, draw=lambda: 1.0) == "ok"
    assert (len(calls), slept) == (3, [0.1, 0.2])

    def missing() -> str:
        calls.append(1)
        raise err("NoSuchKey", 404)

    calls.clear()
    with pytest.raises(S3ObjectNotFound):
        call_with_retry(missing, p, translate=tr, sleep=slept.append)
    assert len(calls) == 1


# -- upload plans ------------------------------------------------------------------------------


def test_plan_upload() -> None:
    assert plan_upload(0, MIN_PART_SIZE).multipart is False
    assert plan_upload(MIN_PART_SIZE, MIN_PART_SIZE).multipart is False
    plan = plan_upload(11 * MiB, 5 * MiB)
    assert plan.parts == (
        PartSpec(1, local=ByteRange(0, 5 * MiB)),
        PartSpec(2, local=ByteRange(5 * MiB, 10 * MiB)),
        PartSpec(3, local=ByteRange(10 * MiB, 11 * MiB)),
    )
    with pytest.raises(ValueError, match="part_size must be within"):
        plan_upload(10, 1024)
    with pytest.raises(ValueError, match="more than S3's 10000"):
        plan_upload(10_001 * 5 * MiB, 5 * MiB)


def test_plan_append_small_old_object() -> None:
    assert plan_append(100, 200, 5 * MiB).parts == ()
    assert plan_append(100, 200, 5 * MiB).old == ByteRange(0, 100)
    plan = plan_append(1 * MiB, 10 * MiB, 5 * MiB)
    assert plan.parts == (
        PartSpec(1, old=ByteRange(0, MiB), local=ByteRange(0, 4 * MiB)),
        PartSpec(2, local=ByteRange(4 * MiB, 9 * MiB)),
        PartSpec(3, local=ByteRange(9 * MiB, 10 * MiB)),
    )


def test_plan_append_copies_large_old_object() -> None:
    plan = plan_append(6 * MiB, 100, 5 * MiB)
    assert plan.parts == (
        PartSpec(1, copy=ByteRange(0, 6 * MiB)),
        PartSpec(2, local=ByteRange(0, 100)),
    )
    # a copied remainder under 5 MiB is balanced with the range before it
    old = MAX_PART_SIZE + MiB
    plan = plan_append(old, 10, 5 * MiB)
    copies = [p.copy for p in plan.parts if p.copy is not None]
    assert copies == [ByteRange(0, old // 2), ByteRange(old // 2, old)]


@given(st.integers(0, 12 * 1024**3), st.integers(0, 200 * MiB), st.integers(5, 64))
def test_plan_append_covers_everything_within_s3_limits(old: int, tail: int, part_mib: int) -> None:
    part_size = part_mib * MiB
    plan = plan_append(old, tail, part_size)
    if not plan.multipart:
        assert plan.old == ByteRange(0, old)
        assert old + tail <= part_size
        return
    assert [p.number for p in plan.parts] == list(range(1, len(plan.parts) + 1))
    old_pos = tail_pos = 0
    for i, p in enumerate(plan.parts):
        for r in (p.copy, p.old):
            if r is not None:
                assert r.start == old_pos
                old_pos = r.end
        if p.local is not None:
            assert p.local.start == tail_pos
            tail_pos = p.local.end
        assert p.size <= MAX_PART_SIZE
        if i < len(plan.parts) - 1:
            assert p.size >= MIN_PART_SIZE
        if p.copy is not None:
            assert p.old is None
            assert p.local is None
    assert (old_pos, tail_pos) == (old, tail)
