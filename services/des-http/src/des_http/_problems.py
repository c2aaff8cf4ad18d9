"""Errors as ``application/problem+json`` (RFC 9457), and the one table that maps exception
types to HTTP statuses.

Every error the service answers goes through :func:`plan_problem`: route handlers, the batch
stream (one status per item), the auth layer and the validation of requests. The table is
ordered from the most specific type to the most general; the first ``isinstance`` match wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from des_format import (
    ChecksumMismatch,
    CodecNotInstalled,
    CorruptShard,
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StorageUnavailable,
    StoreError,
    UnknownCodec,
    UnsupportedFormatVersion,
)
from des_routing import InvalidCreatedAt, InvalidUid, RoutingError
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:des:problem:"


class ServiceError(Exception):
    """Base class of the errors raised by des-http itself (not by the packages below it)."""


class ConfigError(ServiceError, ValueError):
    """A setting of des-http is missing or invalid; the message names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class BadRequest(ServiceError, ValueError):
    """The request is malformed (the message says what was expected)."""


class BatchTooLarge(ServiceError):
    """A batch request lists more items than ``DES_MAX_BATCH_ITEMS``."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"the batch lists {count} items but at most {limit} are accepted "
            "(DES_MAX_BATCH_ITEMS); split it into several requests"
        )
        self.count = count
        self.limit = limit


class RangeNotSatisfiableForFile(ServiceError):
    """The requested byte range lies outside the file."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range lies outside the file ({size} bytes)")
        self.size = size


class Unauthorized(ServiceError):
    """No bearer token, or one the service does not know."""

    def __init__(self, message: str, *, invalid_token: bool) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class Forbidden(ServiceError):
    """A known token whose scope does not cover the endpoint."""

    def __init__(self, message: str, *, needed_scope: str) -> None:
        super().__init__(message)
        self.needed_scope = needed_scope


class NotReady(ServiceError):
    """The storage backend did not answer the readiness probe."""


class StoreLayoutChanged(NotReady):
    """The store's layout record changed while the service ran and no longer agrees with
    the settings it serves with (``_layout_watch``): files are not served."""


class UriTooLong(ServiceError):
    """The request's path and query are longer than ``DES_HTTP_MAX_URL_BYTES``."""


class BodyTooLarge(ServiceError):
    """The request's body is larger than the endpoint accepts."""


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One row of the table: how an exception type is answered."""

    status: int
    slug: str
    title: str
    detail: str | None = None  # fixed detail; None: the exception's own message is shown


_NOT_FOUND = "no file with this uid is stored for this created_at"

# THE table. Order matters: subclasses before their bases.
ERROR_TABLE: tuple[tuple[type[BaseException], ProblemKind], ...] = (
    (InvalidUid, ProblemKind(400, "invalid-uid", "Invalid uid")),
    (InvalidCreatedAt, ProblemKind(400, "invalid-created-at", "Invalid created_at")),
    (RoutingError, ProblemKind(400, "invalid-location", "Invalid file location")),
    (RequestValidationError, ProblemKind(400, "invalid-request", "Invalid request")),
    (BadRequest, ProblemKind(400, "invalid-request", "Invalid request")),
    (Unauthorized, ProblemKind(401, "unauthorized", "Authentication required")),
    (Forbidden, ProblemKind(403, "forbidden", "Insufficient scope")),
    (EntryNotFound, ProblemKind(404, "not-found", "File not found", _NOT_FOUND)),
    (ObjectNotFound, ProblemKind(404, "not-found", "File not found", _NOT_FOUND)),
    (
        EntryDeleted,
        ProblemKind(410, "deleted", "File deleted", "the file with this uid was deleted"),
    ),
    (BatchTooLarge, ProblemKind(413, "batch-too-large", "Batch too large")),
    (BodyTooLarge, ProblemKind(413, "request-too-large", "Request body too large")),
    (UriTooLong, ProblemKind(414, "uri-too-long", "URI too long")),
    (
        RangeNotSatisfiableForFile,
        ProblemKind(416, "range-not-satisfiable", "Range not satisfiable"),
    ),
    (
        StorageUnavailable,
        ProblemKind(
            503,
            "storage-unavailable",
            "Storage unavailable",
            "the storage backend could not be reached; retry after the delay in Retry-After",
        ),
    ),
    (
        PreconditionFailed,
        ProblemKind(
            503,
            "shard-changing",
            "Shard being rewritten",
            "the shard changed while it was read (an append or repack); retry shortly",
        ),
    ),
    (
        StoreLayoutChanged,
        ProblemKind(503, "store-layout-changed", "Store layout changed"),
    ),
    (
        NotReady,
        ProblemKind(503, "not-ready", "Not ready"),
    ),
    (
        ChecksumMismatch,
        ProblemKind(
            500,
            "checksum-mismatch",
            "Stored data failed verification",
            "the stored bytes do not match their checksum; the file was not served",
        ),
    ),
    (
        CodecNotInstalled,
        ProblemKind(
            500,
            "codec-not-installed",
            "Codec not installed",
            "the file is compressed with a codec this server has not installed",
        ),
    ),
    (
        CorruptShard,
        ProblemKind(500, "corrupt-shard", "Corrupt shard", "the shard holding the file is damaged"),
    ),
    (
        UnknownCodec,
        ProblemKind(
            500, "corrupt-shard", "Corrupt shard", "the shard names a codec DES does not know"
        ),
    ),
    (
        UnsupportedFormatVersion,
        ProblemKind(
            500,
            "unsupported-format",
            "Unsupported shard format",
            "the shard uses a format version this server cannot read; upgrade des-http",
        ),
    ),
    (
        RangeNotSatisfiable,
        ProblemKind(
            500, "corrupt-shard", "Corrupt shard", "the shard index points outside the shard"
        ),
    ),
    (
        StoreError,
        ProblemKind(
            502,
            "storage-error",
            "Bad answer from storage",
            "the storage backend answered in a way DES cannot use (for example a byte range it "
            "was not asked for); the file was not served",
        ),
    ),
    (
        DesFormatError,
        ProblemKind(500, "internal", "Internal error", "the file could not be read"),
    ),
)

INTERNAL = ProblemKind(500, "internal", "Internal error", "an unexpected error occurred")

_HTTP_TITLES: Mapping[int, tuple[str, str]] = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("request-too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def plan_problem(exc: BaseException) -> ProblemKind:
    """The table row for ``exc`` (the first whose type ``exc`` is an instance of)."""
    for exc_type, kind in ERROR_TABLE:
        if isinstance(exc, exc_type):
            return kind
    if isinstance(exc, StarletteHTTPException):
        slug, title = _HTTP_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
        return ProblemKind(exc.status_code, slug, title)
    return INTERNAL


def status_of(exc: BaseException) -> int:
    return plan_problem(exc).status


def describe_exception(exc: BaseException) -> str:
    """The detail shown to clients: the table's fixed text, or the exception's message."""
    kind = plan_problem(exc)
    if kind.detail is not None:
        return kind.detail
    if isinstance(exc, RequestValidationError):
        return _describe_validation(exc)
    if isinstance(exc, StarletteHTTPException):
        return str(exc.detail)
    return str(exc)


def _describe_validation(exc: RequestValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is invalid"


def problem_body(
    kind: ProblemKind, detail: str, *, instance: str | None = None, request_id: str | None = None
) -> bytes:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_PREFIX + kind.slug,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def problem_headers(exc: BaseException, *, retry_after: int) -> dict[str, str]:
    """Headers an error answer carries besides its body: never cached, plus per-type extras."""
    headers = {"Cache-Control": "no-store"}
    status = status_of(exc)
    if status == 503:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, RangeNotSatisfiableForFile):
        headers["Content-Range"] = f"bytes */{exc.size}"
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = (
            'Bearer realm="des", error="invalid_token"'
            if exc.invalid_token
            else 'Bearer realm="des"'
        )
    elif isinstance(exc, Forbidden):
        headers["WWW-Authenticate"] = (
            f'Bearer realm="des", error="insufficient_scope", scope="{exc.needed_scope}"'
        )
    elif isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)
    return headers


def problem_message(
    exc: BaseException,
    *,
    retry_after: int,
    instance: str | None = None,
    request_id: str | None = None,
    head: bool = False,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of the answer for ``exc``, as raw ASGI parts (the body empty
    for ``HEAD``; ``Content-Length`` that of the problem JSON either way)."""
    kind = plan_problem(exc)
    body = problem_body(kind, describe_exception(exc), instance=instance, request_id=request_id)
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode("ascii")),
        (b"content-length", b"%d" % len(body)),
    ]
    for name, value in problem_headers(exc, retry_after=retry_after).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return kind.status, headers, b"" if head else body


def problem_response(
    exc: BaseException,
    *,
    retry_after: int,
    instance: str | None = None,
    request_id: str | None = None,
    head: bool = False,
) -> Response:
    """The whole answer for ``exc``: status from the table, problem JSON, error headers."""
    kind = plan_problem(exc)
    body = problem_body(kind, describe_exception(exc), instance=instance, request_id=request_id)
    headers = problem_headers(exc, retry_after=retry_after)
    if head:
        headers["Content-Length"] = str(len(body))
        return Response(b"", kind.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
    return Response(body, kind.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
