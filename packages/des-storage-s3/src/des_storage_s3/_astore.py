"""S3 reads awaited on the event loop: an :class:`~des_format.AsyncObjectStore` over obstore.

obstore drives Rust's ``object_store`` (HTTP in native code, requests awaited as Python
awaitables): a 4 KiB ranged GET costs a fraction of boto3's CPU and needs no thread, so the
HTTP service awaits S3 reads directly (docs/BENCHMARKS.md measures both). boto3 stays the
client for writes (multipart uploads, copies, versioned deletes), which are rare next to reads.

Every answer is checked as :class:`S3ObjectStore` checks it (the range that came
back is the range asked for; a range past the end is ``S3RangeNotSatisfiable``), errors are
the same classes with the same messages (obstore's are turned into botocore's shape and sent
through the one :func:`translate_error`), and retries follow the same :class:`RetryPolicy`
(obstore's own retries are off, so each request counted on the wire is one decided here).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from des_format import ByteRange, ObjectInfo, TailRead

from ._errors import (
    S3ProtocolError,
    S3RangeNotSatisfiable,
    S3StoreError,
    S3Unavailable,
    translate_error,
)
from ._http import DEFAULT_CHUNK_SIZE
from ._retry import RetryPolicy, _spent, plan_retry
from ._store import S3Location, check_range_args
from ._zones import ZoneRouter, zone_of_key

if TYPE_CHECKING:
    from des_routing import DesSettings
    from obstore.store import S3Store

    from ._client import ClientSettings

T = TypeVar("T")

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def _as_botocore(exc: BaseException, operation: str) -> BaseException:
    """obstore's exception as the botocore exception the sync store would have seen, so one
    translation gives both stores the same error classes and messages."""
    from botocore.exceptions import ClientError

    text = str(exc)
    status_m = _STATUS.search(text)
    if isinstance(exc, FileNotFoundError):
        status, code = 404, "NoSuchKey"
    elif status_m is not None:
        status = int(status_m.group(1))
        code_m = _CODE.search(text)
        code = code_m.group(1) if code_m else str(status)
    else:
        first = text.splitlines()[0] if text else type(exc).__name__
        if "timed out" in text or "Timeout" in text or "timeout" in text:
            return TimeoutError(first)
        return ConnectionError(first)
    msg_m = _MESSAGE.search(text)
    response: Any = {
        "Error": {"Code": code, "Message": msg_m.group(1) if msg_m else ""},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


class AsyncS3ObjectStore(S3Location):
    """Objects in one bucket under an optional key prefix, read by byte ranges through an
    obstore ``S3Store`` (see :func:`make_obstore`), awaited without a thread."""

    def __init__(
        self,
        store: S3Store,
        bucket: str,
        prefix: str = "",
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        import obstore

        self._obs = obstore
        self.store = store
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._draw = draw

    def _translate(
        self, exc: BaseException, s3_key: str, br: ByteRange | None, op: str
    ) -> S3StoreError:
        if isinstance(exc, S3StoreError):
            return exc
        api = "HeadObject" if op == "HEAD" else "GetObject"
        return translate_error(
            _as_botocore(exc, api), bucket=self.bucket, key=s3_key, byte_range=br, operation=op
        )

    async def _call(
        self, fn: Callable[[], Awaitable[T]], s3_key: str, br: ByteRange | None, op: str
    ) -> T:
        attempt = 0
        slept = 0.0
        while True:
            attempt += 1
            try:
                return await fn()
            except Exception as exc:
                err = self._translate(exc, s3_key, br, op)
                delay = plan_retry(self.retry, attempt, err, slept, self._draw())
                if delay is None:
                    if err.retryable and attempt > 1:
                        raise _spent(err, attempt) from exc
                    if err is exc:
                        raise
                    raise err from exc
                await self._sleep(delay)
                slept += delay

    async def head(self, key: str) -> ObjectInfo:
        s3_key = self.s3_key(key)

        async def go() -> ObjectInfo:
            meta = await self._obs.head_async(self.store, s3_key)
            return ObjectInfo(int(meta["size"]), meta["e_tag"])

        return await self._call(go, s3_key, None, "HEAD")

    async def read_tail(self, key: str, n: int) -> TailRead:
        """One suffix GET (``Range: bytes=-n``): the last bytes, the size and the ETag."""
        s3_key = self.s3_key(key)
        if n < 1:
            info = await self.head(key)
            return TailRead(b"", info.size, info.etag)

        async def go() -> TailRead:
            try:
                resp = await self._obs.get_async(
                    self.store, s3_key, options={"range": {"suffix": n}}
                )
            except self._obs.exceptions.GenericError as exc:
                text = str(exc)
                unsatisfied = "status code: 416" in text
                if not unsatisfied and "NotPartial" not in text and "non-partial" not in text:
                    raise
                # An empty object: some servers refuse a suffix range on it (416), others
                # answer it whole (200). obstore shows neither the 416's Content-Range nor
                # the 200's body, so one HEAD tells the size; a whole answer is accepted
                # only when the whole object is what was asked for, as the sync store does.
                info = await self._obs.head_async(self.store, s3_key)
                if unsatisfied and int(info["size"]) != 0:
                    raise
                size = int(info["size"])
                if size > n:
                    raise S3ProtocolError(
                        f"the server ignored the suffix range bytes=-{n} for "
                        f"s3://{self.bucket}/{s3_key} and started sending all {size} bytes; "
                        "refusing to download the whole object (check proxies in between)",
                        bucket=self.bucket,
                        key=s3_key,
                        status=200,
                    ) from None
                if size == 0:
                    return TailRead(b"", 0, info["e_tag"])
                whole = await self._obs.get_async(self.store, s3_key)
                data = bytes(await whole.bytes_async())
                _check_length(data, size, self.bucket, s3_key, None)
                return TailRead(data, size, whole.meta["e_tag"])
            meta = resp.meta
            total = int(meta["size"])
            start, end = resp.range
            expected = ByteRange(max(0, total - n), total)
            if (start, end) != (expected.start, expected.end):
                raise S3ProtocolError(
                    f"asked for the last {n} bytes of s3://{self.bucket}/{s3_key} "
                    f"({total} bytes) but got bytes [{start}, {end})",
                    bucket=self.bucket,
                    key=s3_key,
                    byte_range=ByteRange(start, end),
                    status=206,
                )
            data = bytes(await resp.bytes_async())
            _check_length(data, expected.length, self.bucket, s3_key, expected)
            return TailRead(data, total, meta["e_tag"])

        return await self._call(go, s3_key, None, "GET tail")

    def _options(self, br: ByteRange, if_match: str | None) -> Any:
        options: dict[str, Any] = {"range": (br.start, br.end)}
        if if_match is not None:
            options["if_match"] = if_match
        return options

    def _check_range(self, s3_key: str, br: ByteRange, resp: Any) -> None:
        got: tuple[int, int] = resp.range
        if got == (br.start, br.end):
            return
        total = int(resp.meta["size"])  # built only when needed: a dict and a datetime
        if got[0] == br.start and got[1] < br.end:
            raise S3RangeNotSatisfiable(
                f"range [{br.start}, {br.end}) is outside s3://{self.bucket}/{s3_key} "
                f"({total} bytes)",
                bucket=self.bucket,
                key=s3_key,
                byte_range=br,
                status=206,
            )
        raise S3ProtocolError(
            f"asked for bytes [{br.start}, {br.end}) of s3://{self.bucket}/{s3_key} but the "
            f"answer holds bytes [{got[0]}, {got[1]})",
            bucket=self.bucket,
            key=s3_key,
            byte_range=br,
            status=206,
        )

    async def read_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        """One ranged GET for ``[start, end)``; with ``if_match`` a changed object raises
        :class:`S3PreconditionFailed` (412)."""
        s3_key = self.s3_key(key)
        check_range_args(self.bucket, s3_key, start, end)
        if end == start:
            return b""
        br = ByteRange(start, end)
        options = self._options(br, if_match)

        async def go() -> bytes:
            resp = await self._obs.get_async(self.store, s3_key, options=options)
            self._check_range(s3_key, br, resp)
            data = bytes(await resp.bytes_async())
            _check_length(data, br.length, self.bucket, s3_key, br)
            return data

        return await self._call(go, s3_key, br, "GET")

    async def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        """Stream ``[start, end)`` in chunks of at most ``chunk_size`` bytes. A connection cut
        mid-body resumes from the next unread byte (under the retry policy), pinned with
        If-Match to the ETag of the first answer so two versions are never spliced."""
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
                options: Any = self._options(br, pinned)
                resp = await self._obs.get_async(self.store, s3_key, options=options)
                self._check_range(s3_key, br, resp)
                if pinned is None:
                    pinned = resp.meta["e_tag"]
                async for raw in resp.stream(min_chunk_size=min(chunk_size, 1 << 16)):
                    view = memoryview(raw)
                    for i in range(0, len(view), chunk_size):
                        take = bytes(view[i : min(len(view), i + chunk_size, i + end - pos)])
                        if not take:
                            break
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
            except Exception as exc:
                # no operation in the message: the sync store's streamed reads name none
                err = self._translate(exc, s3_key, br, "")
                delay = plan_retry(self.retry, max(attempt, 1), err, slept, self._draw())
                if delay is None:
                    if err is exc:
                        raise
                    raise err from exc
                await self._sleep(delay)
                slept += delay


def _check_length(data: bytes, want: int, bucket: str, key: str, br: ByteRange | None) -> None:
    if len(data) != want:
        raise S3Unavailable(
            f"response body for s3://{bucket}/{key} has {len(data)} bytes, expected {want}",
            bucket=bucket,
            key=key,
            byte_range=br,
        )


class AsyncMultiZoneObjectStore(ZoneRouter[AsyncS3ObjectStore]):
    """An :class:`~des_format.AsyncObjectStore` that sends each key to its zone's store."""

    async def read_tail(self, key: str, n: int) -> TailRead:
        return await self.store_for(key).read_tail(key, n)

    async def read_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        return await self.store_for(key).read_range(key, start, end, if_match=if_match)

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        return self.store_for(key).iter_range(
            key, start, end, if_match=if_match, chunk_size=chunk_size
        )

    async def head(self, key: str) -> ObjectInfo:
        return await self.store_for(key).head(key)

    def describe(self, key: str = "") -> str:
        if key:
            zone = zone_of_key(self.zones, key)
            return f"{self.stores[zone.name].describe(key)} (zone {zone.name})"
        return "multi-zone S3: " + ", ".join(
            f"{z.name}[{z.start}..{z.end}]={self.stores[z.name].describe()}"
            for z in self.zones.zones
        )


def make_obstore(bucket: str, settings: ClientSettings | None = None) -> S3Store:
    """An obstore ``S3Store`` for ``bucket`` with the package's defaults: the timeouts of
    ``settings`` (connect, and read as a stall timeout), no retries of its own, idle
    connections kept without a count limit (a limit below the requests in flight would close
    and reopen a connection per request; idle ones close after 90 s), path-style
    addressing unless ``addressing_style="virtual"``, plain HTTP allowed for an ``http://``
    endpoint. Missing credentials come from the environment (as boto3's); a profile name is
    resolved through boto3."""
    from obstore.store import S3Store

    from ._client import ClientSettings

    s = settings or ClientSettings()
    config: dict[str, Any] = {
        "virtual_hosted_style_request": s.addressing_style == "virtual",
    }
    if s.region_name:
        config["region"] = s.region_name
    if s.endpoint_url:
        config["endpoint"] = s.endpoint_url
    if s.access_key_id is not None:
        config["access_key_id"] = s.access_key_id
        config["secret_access_key"] = s.secret_access_key or ""
        if s.session_token:
            config["session_token"] = s.session_token
    client_options: dict[str, Any] = {
        "connect_timeout": timedelta(seconds=s.connect_timeout),
        "read_timeout": timedelta(seconds=s.read_timeout),
        # a whole streamed big file may take longer than one read; stalls are cut by
        # read_timeout, and a cut stream resumes from its next byte
        "timeout": timedelta(hours=1),
        "allow_http": bool(s.endpoint_url and s.endpoint_url.startswith("http://")),
    }
    provider = None
    if s.profile_name and s.access_key_id is None:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider

        provider = Boto3CredentialProvider(boto3.session.Session(profile_name=s.profile_name))
    return S3Store(
        bucket,
        config=config,  # type: ignore[arg-type]
        client_options=client_options,  # type: ignore[arg-type]
        retry_config={"max_retries": 0},
        credential_provider=provider,
    )


def open_async_store(
    settings: DesSettings,
    *,
    client_settings: ClientSettings | None = None,
    retry: RetryPolicy | None = None,
) -> AsyncS3ObjectStore | AsyncMultiZoneObjectStore:
    """The :class:`~des_format.AsyncObjectStore` for ``s3`` or ``multi_s3`` settings (the
    same buckets, prefixes, endpoints and credentials as :func:`open_store`)."""
    from ._open import _overrides, _require_bucket, _require_zones, _s3_client_settings
    from ._zones import zone_client_settings

    if settings.backend == "s3":
        bucket = _require_bucket(settings)
        cs = _s3_client_settings(settings, client_settings)
        return AsyncS3ObjectStore(make_obstore(bucket, cs), bucket, settings.s3_prefix, retry=retry)
    if settings.backend == "multi_s3":
        zones = _require_zones(settings)
        overrides = _overrides(client_settings)
        return AsyncMultiZoneObjectStore(
            zones,
            {
                z.name: AsyncS3ObjectStore(
                    make_obstore(z.s3.bucket, zone_client_settings(z, **overrides)),
                    z.s3.bucket,
                    z.s3.prefix,
                    retry=retry,
                )
                for z in zones.zones
            },
        )
    raise ValueError(
        f"DES_BACKEND={settings.backend} has no asynchronous S3 store; use s3 or multi_s3"
    )
