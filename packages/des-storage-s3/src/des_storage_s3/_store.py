"""S3 as a des-format :class:`~des_format.ObjectStore`: ranged and suffix GETs, checked.

Every answer is checked before its bytes are used: a 206 must carry the ``Content-Range``
that was asked for, and a 200 (S3's answer to an ignored or unsatisfiable range) is only
accepted when the whole object is exactly what was asked for; otherwise the body is closed
unread, so a 1 GiB shard is never downloaded by accident.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from des_format import ByteRange, ListEntry, ObjectInfo, ObjectStoreBase, TailRead

from ._errors import (
    S3ProtocolError,
    S3RangeNotSatisfiable,
    S3StoreError,
    S3Unavailable,
    translate_error,
)
from ._http import (
    DEFAULT_CHUNK_SIZE,
    parse_content_range,
    parse_unsatisfied_size,
    serialize_range,
    serialize_suffix_range,
)
from ._retry import RetryPolicy, call_with_retry, plan_retry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def check_range_args(bucket: str, s3_key: str, start: int, end: int) -> None:
    """Refuse a range no read can ask for (``S3RangeNotSatisfiable``, before any request)."""
    if start < 0 or end < start:
        raise S3RangeNotSatisfiable(
            f"invalid range [{start}, {end}) for s3://{bucket}/{s3_key}",
            bucket=bucket,
            key=s3_key,
        )


def join_key(prefix: str, key: str) -> str:
    """``prefix`` + ``key`` with exactly one '/' between them (an empty prefix adds none)."""
    p = prefix.strip("/")
    return f"{p}/{key}" if p else key


class S3Location:
    """A bucket and a key prefix: the S3 key behind a store key and a place for messages
    (``s3://bucket/prefix/key``), shared by the blocking and the async store."""

    bucket: str
    prefix: str

    def s3_key(self, key: str) -> str:
        """The S3 object key behind store key ``key``."""
        return join_key(self.prefix, key)

    def describe(self, key: str = "") -> str:
        if key:
            return f"s3://{self.bucket}/{self.s3_key(key)}"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class S3ObjectStore(S3Location, ObjectStoreBase):
    """Objects in one bucket under an optional key prefix, read by byte ranges, and listed
    (``ListObjectsV2`` with a ``/`` delimiter).

    ``client`` is a boto3 S3 client (see :func:`make_client`); the store retries throttling,
    server errors, timeouts and cut connections under ``retry`` and nothing else.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._draw = draw

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], key: str, br: ByteRange | None, op: str) -> Any:
        def translate(exc: BaseException) -> S3StoreError:
            return translate_error(exc, bucket=self.bucket, key=key, byte_range=br, operation=op)

        return call_with_retry(
            fn, self.retry, translate=translate, sleep=self._sleep, draw=self._draw
        )

    # -- ObjectStore -----------------------------------------------------------------------

    @property
    def supports_listing(self) -> bool:
        return True

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        """Objects and common prefixes directly under ``prefix``: every page of a
        ``ListObjectsV2`` with delimiter ``/``, fetched (and retried as a whole) before the
        first entry is given; with ``limit``, one request for at most ``limit`` entries."""
        under = prefix.strip("/")
        full = join_key(self.prefix, under) if under else self.prefix
        full = f"{full}/" if full else ""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "Delimiter": "/"}

        def entries_of(page: Any) -> Iterator[ListEntry]:
            for obj in page.get("Contents", []):
                yield ListEntry(obj["Key"][len(full) :], False)
            for sub in page.get("CommonPrefixes", []):
                yield ListEntry(sub["Prefix"][len(full) :].rstrip("/"), True)

        def go() -> list[ListEntry]:
            if limit is not None:
                page = self.client.list_objects_v2(**args, MaxKeys=max(1, limit))
                return list(entries_of(page))[:limit]
            pages = self.client.get_paginator("list_objects_v2").paginate(**args)
            return [entry for page in pages for entry in entries_of(page)]

        entries: list[ListEntry] = self._call(go, full, None, "LIST")
        return iter(entries)

    def head(self, key: str) -> ObjectInfo:
        s3_key = self.s3_key(key)

        def go() -> ObjectInfo:
            resp = self.client.head_object(Bucket=self.bucket, Key=s3_key)
            return ObjectInfo(int(resp["ContentLength"]), resp.get("ETag"))

        result: ObjectInfo = self._call(go, s3_key, None, "HEAD")
        return result

    def read_tail(self, key: str, n: int) -> TailRead:
        """One suffix GET (``Range: bytes=-n``): the last bytes, the size and the ETag."""
        s3_key = self.s3_key(key)
        if n < 1:
            info = self.head(key)
            return TailRead(b"", info.size, info.etag)

        def go() -> TailRead:
            from botocore.exceptions import ClientError

            try:
                resp = self.client.get_object(
                    Bucket=self.bucket, Key=s3_key, Range=serialize_suffix_range(n)
                )
            except ClientError as exc:
                # An empty object cannot satisfy a suffix range on some servers (416 */0).
                headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                err = exc.response.get("Error", {})
                if err.get("Code") == "InvalidRange":
                    size = parse_unsatisfied_size(headers.get("content-range"))
                    if size is None and str(err.get("ActualObjectSize", "")) == "0":
                        size = 0
                    if size == 0:
                        return TailRead(b"", 0, headers.get("etag"))
                raise
            body = resp["Body"]
            etag = resp.get("ETag")
            status = resp["ResponseMetadata"]["HTTPStatusCode"]
            length = int(resp["ContentLength"])
            if status == 200:
                if length > n:
                    body.close()
                    raise S3ProtocolError(
                        f"the server ignored the suffix range bytes=-{n} for "
                        f"s3://{self.bucket}/{s3_key} and started sending all {length} bytes; "
                        "refusing to download the whole object (check proxies in between)",
                        bucket=self.bucket,
                        key=s3_key,
                        status=status,
                    )
                data = body.read()
                _check_length(data, length, self.bucket, s3_key, None)
                return TailRead(data, length, etag)
            cr = parse_content_range(resp.get("ContentRange"))
            if cr is None or cr.total is None:
                body.close()
                raise S3ProtocolError(
                    f"206 without a usable Content-Range ({resp.get('ContentRange')!r}) for "
                    f"s3://{self.bucket}/{s3_key}",
                    bucket=self.bucket,
                    key=s3_key,
                    status=status,
                )
            expected = ByteRange(max(0, cr.total - n), cr.total)
            if cr.byte_range != expected:
                body.close()
                raise S3ProtocolError(
                    f"asked for the last {n} bytes of s3://{self.bucket}/{s3_key} "
                    f"({cr.total} bytes) but got bytes [{cr.byte_range.start}, "
                    f"{cr.byte_range.end})",
                    bucket=self.bucket,
                    key=s3_key,
                    byte_range=cr.byte_range,
                    status=status,
                )
            data = body.read()
            _check_length(data, expected.length, self.bucket, s3_key, expected)
            return TailRead(data, cr.total, etag)

        result: TailRead = self._call(go, s3_key, None, "GET tail")
        return result

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        """One ranged GET for ``[start, end)``; with ``if_match`` a changed object raises
        :class:`S3PreconditionFailed` (412).
        """
        s3_key = self.s3_key(key)
        check_range_args(self.bucket, s3_key, start, end)
        if end == start:
            return b""
        br = ByteRange(start, end)

        def go() -> bytes:
            resp = self._get_range(s3_key, br, if_match)
            data: bytes = resp["Body"].read()
            _check_length(data, br.length, self.bucket, s3_key, br)
            return data

        result: bytes = self._call(go, s3_key, br, "GET")
        return result

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Stream ``[start, end)`` in chunks. A connection cut mid-body resumes from the next
        unread byte (under the retry policy), pinned with If-Match to the ETag of the first
        answer so two versions of an object are never spliced together.
        """
        s3_key = self.s3_key(key)
        check_range_args(self.bucket, s3_key, start, end)
        pos = start
        pinned = if_match
        attempt = 0
        slept = 0.0
        while pos < end:
            br = ByteRange(pos, end)
            attempt += 1
            try:
                resp = self._get_range(s3_key, br, pinned)
                if pinned is None:
                    pinned = resp.get("ETag")
                body = resp["Body"]
                try:
                    for chunk in body.iter_chunks(chunk_size):
                        if not chunk:
                            continue
                        take = chunk[: end - pos]
                        pos += len(take)
                        yield take
                        attempt = 0
                    if pos < end:
                        raise S3Unavailable(
                            f"response body for s3://{self.bucket}/{s3_key} ended at byte {pos}"
                            f" of [{start}, {end})",
                            bucket=self.bucket,
                            key=s3_key,
                            byte_range=br,
                        )
                finally:
                    body.close()
            except Exception as exc:
                err = translate_error(exc, bucket=self.bucket, key=s3_key, byte_range=br)
                delay = plan_retry(self.retry, max(attempt, 1), err, slept, self._draw())
                if delay is None:
                    if err is exc:
                        raise
                    raise err from exc
                self._sleep(delay)
                slept += delay

    # -- internals -------------------------------------------------------------------------

    def _get_range(self, s3_key: str, br: ByteRange, if_match: str | None) -> Any:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": s3_key,
            "Range": serialize_range(br.start, br.end),
        }
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        resp = self.client.get_object(**kwargs)
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        length = int(resp["ContentLength"])
        if status == 200:
            # The whole object came back: fine only if the whole object is what was asked.
            if br.start == 0 and length == br.end:
                return resp
            resp["Body"].close()
            if length < br.end:
                raise S3RangeNotSatisfiable(
                    f"range [{br.start}, {br.end}) is outside s3://{self.bucket}/{s3_key} "
                    f"({length} bytes)",
                    bucket=self.bucket,
                    key=s3_key,
                    byte_range=br,
                    status=status,
                )
            raise S3ProtocolError(
                f"the server ignored the range [{br.start}, {br.end}) for "
                f"s3://{self.bucket}/{s3_key} and started sending all {length} bytes",
                bucket=self.bucket,
                key=s3_key,
                byte_range=br,
                status=status,
            )
        cr = parse_content_range(resp.get("ContentRange"))
        if cr is None or cr.byte_range != br:
            resp["Body"].close()
            if cr is not None and cr.byte_range.start == br.start and cr.byte_range.end < br.end:
                raise S3RangeNotSatisfiable(
                    f"range [{br.start}, {br.end}) is outside s3://{self.bucket}/{s3_key} "
                    f"({cr.total} bytes)",
                    bucket=self.bucket,
                    key=s3_key,
                    byte_range=br,
                    status=status,
                )
            raise S3ProtocolError(
                f"asked for bytes [{br.start}, {br.end}) of s3://{self.bucket}/{s3_key} but the "
                f"answer's Content-Range is {resp.get('ContentRange')!r}",
                bucket=self.bucket,
                key=s3_key,
                byte_range=br,
                status=status,
            )
        return resp


def _check_length(data: bytes, want: int, bucket: str, key: str, br: ByteRange | None) -> None:
    if len(data) != want:
        raise S3Unavailable(
            f"response body for s3://{bucket}/{key} has {len(data)} bytes, expected {want}",
            bucket=bucket,
            key=key,
            byte_range=br,
        )
