"""Reading packer input from ``s3://bucket/key`` URIs, with retries and metrics."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ._errors import (
    S3AccessDenied,
    S3ObjectNotFound,
    S3StoreError,
    S3Unavailable,
    translate_error,
)
from ._metrics import metrics_for
from ._retry import RetryPolicy, call_with_retry, plan_retry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True, slots=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Uri:
    """``s3://bucket/some/key`` -> ``S3Uri("bucket", "some/key")``; ValueError otherwise."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r} (expected s3://bucket/key)")
    rest = uri[len("s3://") :]
    bucket, sep, key = rest.partition("/")
    if not bucket or not sep or not key:
        raise ValueError(f"s3 URI {uri!r} needs a bucket and a key: s3://bucket/key")
    return S3Uri(bucket, key)


def _status_of(exc: S3StoreError) -> str:
    if isinstance(exc, S3ObjectNotFound):
        return "not_found"
    if isinstance(exc, S3AccessDenied):
        return "denied"
    return "error"


class S3SourceReader:
    """Reads whole source objects (the packer's inputs) from S3.

    One client serves every bucket it can reach. Throttling (503 SlowDown), 5xx, timeouts and
    connection resets are retried with
    exponential backoff and full jitter within the policy's attempts and time budget; 403
    and 404 are not. Metrics: ``des_s3_source_reads_total{status}``,
    ``des_s3_source_read_seconds{status}``, ``des_s3_source_bytes_downloaded``.
    """

    def __init__(
        self,
        client: S3Client,
        *,
        retry: RetryPolicy | None = None,
        registry: CollectorRegistry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.client = client
        self.retry = retry or RetryPolicy()
        self.metrics = metrics_for(registry)
        self._sleep = sleep
        self._draw = draw
        self._clock = clock

    def read(self, uri: str) -> bytes:
        """The whole object at ``uri``. Raises S3ObjectNotFound, S3AccessDenied,
        S3Unavailable (retries spent) or another S3StoreError.
        """
        loc = parse_s3_uri(uri)
        started = self._clock()

        def go() -> bytes:
            resp = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
            body = resp["Body"]
            data: bytes = body.read()
            expected = resp.get("ContentLength")
            if expected is not None and len(data) != int(expected):
                raise S3Unavailable(
                    f"response body for {loc} has {len(data)} bytes, expected {expected}",
                    bucket=loc.bucket,
                    key=loc.key,
                )
            return data

        try:
            data: bytes = call_with_retry(
                go,
                self.retry,
                translate=lambda e: translate_error(
                    e, bucket=loc.bucket, key=loc.key, operation="GET source"
                ),
                sleep=self._sleep,
                draw=self._draw,
            )
        except S3StoreError as exc:
            status = _status_of(exc)
            self.metrics.source_reads.labels(status=status).inc()
            self.metrics.source_read_seconds.labels(status=status).observe(self._clock() - started)
            raise
        self.metrics.source_reads.labels(status="ok").inc()
        self.metrics.source_read_seconds.labels(status="ok").observe(self._clock() - started)
        self.metrics.source_bytes.inc(len(data))
        return data

    def size(self, uri: str) -> int:
        """The object's size in bytes (one HEAD, retried like reads)."""
        loc = parse_s3_uri(uri)

        def go() -> int:
            return int(self.client.head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])

        result: int = call_with_retry(
            go,
            self.retry,
            translate=lambda e: translate_error(
                e, bucket=loc.bucket, key=loc.key, operation="HEAD source"
            ),
            sleep=self._sleep,
            draw=self._draw,
        )
        return result

    def iter_read(self, uri: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream a source object in chunks without holding it whole.

        A connection cut mid-body resumes from the next unread byte (a ranged GET pinned with
        If-Match to the first answer's ETag, so two versions are never spliced), under the
        same retry policy as :meth:`read`. Metrics are recorded once, when the stream ends.
        """
        loc = parse_s3_uri(uri)
        started = self._clock()
        status = "error"
        try:
            yield from self._stream(loc, chunk_size, _Progress())
            status = "ok"
        except GeneratorExit:
            status = "cancelled"
            raise
        except S3StoreError as exc:
            status = _status_of(exc)
            raise
        finally:
            self.metrics.source_reads.labels(status=status).inc()
            self.metrics.source_read_seconds.labels(status=status).observe(self._clock() - started)

    def _stream(self, loc: S3Uri, chunk_size: int, progress: _Progress) -> Iterator[bytes]:
        etag: str | None = None
        size: int | None = None
        attempt = 0
        slept = 0.0
        while size is None or progress.pos < size:
            attempt += 1
            try:
                kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
                if progress.pos:
                    kwargs["Range"] = f"bytes={progress.pos}-"
                if etag is not None:
                    kwargs["IfMatch"] = etag
                resp = self.client.get_object(**kwargs)
                if etag is None:
                    etag = resp.get("ETag")
                length = int(resp["ContentLength"])
                if size is None:
                    size = progress.pos + length
                body = resp["Body"]
                try:
                    for chunk in body.iter_chunks(chunk_size):
                        if chunk:
                            progress.pos += len(chunk)
                            self.metrics.source_bytes.inc(len(chunk))
                            attempt = 0
                            yield chunk
                finally:
                    body.close()
                if progress.pos < size:
                    raise S3Unavailable(
                        f"response body for {loc} ended at byte {progress.pos} of {size}",
                        bucket=loc.bucket,
                        key=loc.key,
                    )
            except Exception as exc:
                err = translate_error(exc, bucket=loc.bucket, key=loc.key, operation="GET source")
                delay = plan_retry(self.retry, max(attempt, 1), err, slept, self._draw())
                if delay is None:
                    if err is exc:
                        raise
                    raise err from exc
                self._sleep(delay)
                slept += delay


class _Progress:
    __slots__ = ("pos",)

    def __init__(self) -> None:
        self.pos = 0
