"""S3SourceReader against moto over HTTP: retries, no retry on 404, metrics."""

from __future__ import annotations

from typing import Any

import pytest
from des_storage_s3 import (
    RetryPolicy,
    S3ObjectNotFound,
    S3SourceReader,
    S3Unavailable,
    S3Uri,
    parse_s3_uri,
)
from des_testing import FaultProxy
from prometheus_client import CollectorRegistry

DATA = bytes(range(256)) * 1000  # 256,000 bytes


@pytest.fixture
def reader(client: Any, fast_retry: RetryPolicy) -> tuple[S3SourceReader, CollectorRegistry]:
    reg = CollectorRegistry()
    return S3SourceReader(client, retry=fast_retry, registry=reg), reg


@pytest.fixture
def uri(direct: Any, bucket: str) -> str:
    direct.put_object(Bucket=bucket, Key="in/file.bin", Body=DATA)
    return f"s3://{bucket}/in/file.bin"


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/k/x.bin") == S3Uri("b", "k/x.bin")
    assert str(S3Uri("b", "k")) == "s3://b/k"
    for bad in ["/local/path", "s3://", "s3://bucket", "s3://bucket/", "s3:///key"]:
        with pytest.raises(ValueError, match="s3://bucket/key"):
            parse_s3_uri(bad)


def test_read_with_throttling_retried(
    reader: tuple[S3SourceReader, CollectorRegistry], uri: str, proxy: FaultProxy
) -> None:
    r, reg = reader
    proxy.clear()
    proxy.inject("slowdown", times=2)
    proxy.inject("reset", times=1)
    assert r.read(uri) == DATA
    assert [x.fault for x in proxy.snapshot()] == ["slowdown", "slowdown", "reset", None]
    assert sample(reg, "des_s3_source_reads_total", status="ok") == 1
    assert sample(reg, "des_s3_source_bytes_downloaded_total") == len(DATA)
    assert sample(reg, "des_s3_source_read_seconds_count", status="ok") == 1
    assert r.size(uri) == len(DATA)


def test_not_found_is_not_retried(
    reader: tuple[S3SourceReader, CollectorRegistry], bucket: str, proxy: FaultProxy
) -> None:
    r, reg = reader
    proxy.clear()
    with pytest.raises(S3ObjectNotFound, match=f"no such object: s3://{bucket}/in/missing"):
        r.read(f"s3://{bucket}/in/missing")
    assert proxy.count() == 1
    assert sample(reg, "des_s3_source_reads_total", status="not_found") == 1


def test_budget_spent(
    reader: tuple[S3SourceReader, CollectorRegistry], uri: str, proxy: FaultProxy
) -> None:
    r, reg = reader
    proxy.inject("error500", times=10)
    with pytest.raises(S3Unavailable, match="gave up after 4 attempts"):
        r.read(uri)
    assert sample(reg, "des_s3_source_reads_total", status="error") == 1
    assert sample(reg, "des_s3_source_bytes_downloaded_total") == 0


def test_iter_read_resumes_after_cut(
    reader: tuple[S3SourceReader, CollectorRegistry], uri: str, proxy: FaultProxy
) -> None:
    r, reg = reader
    proxy.clear()
    proxy.inject("truncate", keep_fraction=0.25)
    proxy.inject("slowdown")
    assert b"".join(r.iter_read(uri, chunk_size=10_000)) == DATA
    reqs = proxy.snapshot()
    assert [(x.range, x.fault) for x in reqs] == [
        (None, "truncate"),
        ("bytes=64000-", "slowdown"),
        ("bytes=64000-", None),
    ]
    assert reqs[2].headers["If-Match"]
    assert sample(reg, "des_s3_source_reads_total", status="ok") == 1
    assert sample(reg, "des_s3_source_bytes_downloaded_total") == len(DATA)


def test_iter_read_missing(reader: tuple[S3SourceReader, CollectorRegistry], bucket: str) -> None:
    r, reg = reader
    with pytest.raises(S3ObjectNotFound):
        list(r.iter_read(f"s3://{bucket}/nope"))
    assert sample(reg, "des_s3_source_reads_total", status="not_found") == 1
