"""The one adapter from botocore's errors to this package's own.

Every S3 call in the package goes through :func:`translate_error`; nothing else looks at
botocore error codes. The errors subclass des-format's store errors, so the retrieval pipeline
reacts to S3 exactly as it does to a local directory, and they carry bucket, key and range so
a message always says where.
"""

from __future__ import annotations

from typing import Any

from des_format import (
    ByteRange,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StorageUnavailable,
    StoreError,
)


class S3StoreError(StoreError):
    """Base class of every error raised by des-storage-s3.

    ``retryable`` says whether trying the same request again may succeed (throttling, server
    errors, timeouts, dropped connections); the retry policy reads nothing else.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        bucket: str = "",
        key: str = "",
        byte_range: ByteRange | None = None,
        code: str = "",
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        location = f"s3://{bucket}/{key}" if bucket else key
        super().__init__(message, key=key, location=location)
        self.bucket = bucket
        self.byte_range = byte_range
        self.code = code  # S3's error code (StoreError.code)
        self.status = status
        if retryable is not None:
            self.retryable = retryable


class S3ObjectNotFound(S3StoreError, ObjectNotFound):
    """The object (or its bucket) does not exist."""


class S3RangeNotSatisfiable(S3StoreError, RangeNotSatisfiable):
    """The requested range lies outside the object, or the server answered another range."""


class S3PreconditionFailed(S3StoreError, PreconditionFailed):
    """A conditional request failed: the object is not the version the caller expected."""


class ShardExists(S3PreconditionFailed):
    """A create-only write found an object already published under the key."""


class S3Unavailable(S3StoreError, StorageUnavailable):
    """S3 could not be reached or kept failing; ``retryable`` tells whether to try again."""

    retryable = True


class S3AccessDenied(S3StoreError):
    """The credentials may not do this (403). Not retried: fix the credentials or policy."""


class S3RequestError(S3StoreError):
    """Any other error answered by S3 (bad request, invalid bucket name...). Not retried."""


class S3ProtocolError(S3StoreError):
    """The server's answer is not one DES understands: it does not fit the request (wrong
    ``Content-Range``, a whole object sent for a range), lacks a field S3 always sends (an
    ETag), or cannot be parsed. Not retried: the server, or a proxy in between, does not speak
    S3 as DES needs it (docs/S3-COMPATIBILITY.md).
    """


_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchUpload"}
_RANGE = {"InvalidRange", "416", "RequestedRangeNotSatisfiable"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_THROTTLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "503",
    "429",
}
_TRANSIENT = {
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "500",
    "502",
    "504",
    "BadGateway",
    "GatewayTimeout",
}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _where(bucket: str, key: str, byte_range: ByteRange | None) -> str:
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if byte_range is not None:
        where += f" bytes [{byte_range.start}, {byte_range.end})"
    return where


def translate_error(
    exc: BaseException,
    *,
    bucket: str,
    key: str = "",
    byte_range: ByteRange | None = None,
    operation: str = "",
) -> S3StoreError:
    """Map a botocore/urllib3 exception (or one of ours) to this package's error type.

    Already-translated errors pass through unchanged.
    """
    if isinstance(exc, S3StoreError):
        return exc
    from botocore.exceptions import BotoCoreError, ClientError

    where = _where(bucket, key, byte_range)
    op = f"{operation} " if operation else ""
    common: dict[str, Any] = {"bucket": bucket, "key": key, "byte_range": byte_range}
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "") or "")
        status_raw = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = int(status_raw) if status_raw is not None else None
        text = str(err.get("Message", "") or code or status)
        codes = {code, str(status)}
        if codes & _NOT_FOUND:
            what = "bucket" if code == "NoSuchBucket" else "object"
            if code == "NoSuchUpload":
                what = "multipart upload"
            return S3ObjectNotFound(
                f"{op}no such {what}: {where}", code=code, status=status, **common
            )
        if codes & _RANGE:
            return S3RangeNotSatisfiable(
                f"{op}range not satisfiable: {where} ({text})", code=code, status=status, **common
            )
        if codes & _PRECONDITION:
            return S3PreconditionFailed(
                f"{op}{where} is not the expected version ({code or status}): it was written "
                "or replaced by someone else",
                code=code,
                status=status,
                **common,
            )
        if codes & _THROTTLE:
            return S3Unavailable(
                f"{op}S3 is throttling requests ({code or status}) for {where}; retry later "
                "or spread the load over more prefixes",
                code=code,
                status=status,
                **common,
            )
        if codes & _TRANSIENT or (status is not None and status >= 500):
            return S3Unavailable(
                f"{op}S3 server error {code or status} for {where}: {text}",
                code=code,
                status=status,
                **common,
            )
        if codes & _DENIED:
            return S3AccessDenied(
                f"{op}access denied to {where} ({code}): check the credentials and the bucket "
                "policy",
                code=code,
                status=status,
                **common,
            )
        return S3RequestError(
            f"{op}S3 rejected the request for {where}: {code or status} {text}",
            code=code,
            status=status,
            **common,
        )
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ResponseParserError):
        return _not_understood(f"an answer that cannot be parsed ({exc})", op, where, common)
    if isinstance(exc, BotoCoreError | ConnectionError | TimeoutError | OSError):
        return _translate_transport(exc, op, where, common)
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover - urllib3 always comes with botocore
        Urllib3Error = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, Urllib3Error):
        return _translate_transport(exc, op, where, common)
    if isinstance(exc, KeyError):
        return _not_understood(
            f"an answer without {exc.args[0] if exc.args else 'a field'!s}, which S3 always sends",
            op,
            where,
            common,
        )
    return _not_understood(
        f"an answer DES does not understand ({type(exc).__name__}: {exc})", op, where, common
    )


def _not_understood(what: str, op: str, where: str, common: dict[str, Any]) -> S3ProtocolError:
    return S3ProtocolError(
        f"{op}{where}: the server sent {what}; check that the endpoint is an S3-compatible "
        "server DES supports (docs/S3-COMPATIBILITY.md) and that no proxy in between alters "
        "answers",
        **common,
    )


def _translate_transport(
    exc: BaseException, op: str, where: str, common: dict[str, Any]
) -> S3StoreError:
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from botocore.exceptions import (
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return S3AccessDenied(
            f"{op}no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or the zone's credentials)",
            retryable=False,
            **common,
        )
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        reason = "timed out"
    elif isinstance(exc, IncompleteReadError | ResponseStreamingError):
        reason = "response body was cut short"
    elif isinstance(exc, BotoConnectionError | HTTPClientError | ConnectionError):
        reason = "connection failed"
    else:
        reason = "transport error"
    return S3Unavailable(f"{op}S3 {reason} for {where}: {exc}", **common)
