"""The FastAPI application, built by :func:`create_app` (never at import time)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote, unquote_to_bytes

from des_format import (
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    IndexEntry,
    ObjectNotFound,
    ObjectStore,
)
from des_routing import DesSettings, InvalidUid, RoutingError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ._auth import TokenTable, needed_scope, read_token_file
from ._cors import CorsPolicy, install_cors
from ._links import LinkGate, is_signed_link
from ._logging import AccessLogMiddleware, log_access, plan_request_id
from ._metrics import ServiceMetrics
from ._openapi import BATCH_RESPONSES, FILE_RESPONSES, READY_RESPONSES, install_openapi
from ._problems import (
    BadRequest,
    BatchTooLarge,
    NotReady,
    RangeNotSatisfiableForFile,
    ServiceError,
    describe_exception,
    plan_problem,
    problem_body,
    problem_response,
    status_of,
)
from ._ranges import (
    FULL,
    RangeKind,
    if_range_holds,
    none_match,
    plan_range,
    serialize_content_range,
)
from ._retrieval import (
    FileEntry,
    OpenedFile,
    Retriever,
    media_type_of,
    plan_object_key,
    suffix_of,
)
from ._settings import HttpSettings

log = logging.getLogger("des_http.errors")

T = TypeVar("T")

UID_DESCRIPTION = (
    "The file's uid, as given to the packer: printable text of at most 1,024 bytes of UTF-8."
)
UID_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
CREATED_AT_DESCRIPTION = (
    "The file's creation time, ISO 8601 in UTC, e.g. `2024-01-01T00:00:00Z` "
    "(with the packer's n_bits it names the shard holding the file)."
)


# The file endpoints read their parameters themselves (FastAPI's per-parameter resolution
# was half of the CPU time of a request); this is how the OpenAPI document describes them.
FILE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "uid",
        "in": "path",
        "required": True,
        "description": UID_DESCRIPTION,
        "schema": {"type": "string", "minLength": 1, "pattern": UID_PATTERN},
    },
    {
        "name": "created_at",
        "in": "query",
        "required": True,
        "description": CREATED_AT_DESCRIPTION,
        "schema": {"type": "string", "format": "date-time"},
        "example": "2024-01-01T00:00:00Z",
    },
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "One byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. "
        "Several ranges are answered with the whole file (200).",
        "schema": {"type": "string"},
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "ETags the client holds; a match is answered 304 Not Modified.",
        "schema": {"type": "string"},
    },
    {
        "name": "If-Range",
        "in": "header",
        "required": False,
        "description": "Honour Range only if the file's ETag is this (strong) one.",
        "schema": {"type": "string"},
    },
]


class _UidConvertor(Convertor[str]):
    """The uid path segment: anything, slashes and newlines included (validated later, so a
    uid with a control character gets a 400 that says so, not a 404 from the router)."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("des_uid", _UidConvertor())


# Header names (lower case, as ASGI servers pass them) the file endpoints read.
_FILE_HEADERS = {b"range": 0, b"if-none-match": 1, b"if-range": 2}
_CREATED_AT = b"created_at="


def _file_params(
    request: Request,
) -> tuple[str, str, str | None, str | None, str | None]:
    """uid, created_at, Range, If-None-Match, If-Range of a file request.

    Read straight from the ASGI scope (the same values Starlette's ``query_params`` and
    ``headers`` give: the last ``created_at``, the first of each header), without building
    those objects for the usual ``?created_at=<plain text>`` query.
    """
    scope = request.scope
    query: bytes = scope.get("query_string", b"")
    created_at: str | None
    if query.startswith(_CREATED_AT) and b"&" not in query and b"+" not in query:
        created_at = _created_at_of(query)
    else:
        created_at = request.query_params.get("created_at")
    if created_at is None:
        raise BadRequest(
            "the query parameter created_at is required: the file's creation time as "
            "ISO 8601, e.g. ?created_at=2024-01-01T00:00:00Z"
        )
    found: list[str | None] = [None, None, None]
    for name, value in scope["headers"]:
        slot = _FILE_HEADERS.get(name)
        if slot is not None and found[slot] is None:
            found[slot] = value.decode("latin-1")
    return checked_uid(request), created_at, found[0], found[1], found[2]


def _created_at_of(query: bytes) -> str:
    """The value of a query string that is one ``created_at=`` and holds no ``&`` or ``+``,
    decoded as Starlette's ``query_params`` decodes it (percent-escapes as UTF-8, invalid
    sequences replaced)."""
    value = query[len(_CREATED_AT) :].decode("latin-1")
    if "%" not in value:
        return value
    # ':' escaped as %3A (as clients and wrk's paths send it) is the usual escape here; the
    # same text unquote gives, without its general machinery.
    plain = value.replace("%3A", ":").replace("%3a", ":")
    return plain if "%" not in plain else unquote(value)


def checked_uid(request: Request) -> str:
    """The ``{uid}`` path parameter, refused (InvalidUid) if its bytes are not UTF-8."""
    uid: str = request.path_params["uid"]
    if "\ufffd" in uid:
        # The server decodes the path with errors="replace": percent-encoded bytes that are
        # not UTF-8 would silently become U+FFFD and name another uid. Check the raw bytes.
        raw = request.scope.get("raw_path")
        if isinstance(raw, bytes):
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidUid(
                    "uid is not valid UTF-8 once percent-decoded; uids are UTF-8 text "
                    "(percent-encode its UTF-8 bytes)"
                ) from None
    return uid


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Not checked here: a malformed uid or created_at is reported in that item's own part
    # (status 400), so one bad row does not sink the whole batch.
    uid: str = Field(description=UID_DESCRIPTION, min_length=1, max_length=1024)
    created_at: str = Field(description=CREATED_AT_DESCRIPTION, min_length=1, max_length=64)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[BatchItem] = Field(
        description="The files to fetch (at most DES_MAX_BATCH_ITEMS).", min_length=1
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    status: str = Field(examples=["ready"])
    backend: str = Field(examples=["local"])


OnlyIf = Callable[[FileEntry], bool]
ReadNowait = Callable[[str, str, OnlyIf | None], tuple[FileEntry, bytes | None] | None]
StatNowait = Callable[[str, str], FileEntry | None]


@dataclass(slots=True)
class _Service:
    settings: HttpSettings
    retriever: Retriever
    store: ObjectStore | None
    metrics: ServiceMetrics
    cache: Any
    executor: ThreadPoolExecutor
    # Answers from memory on the event loop (None: off, or the retriever has none).
    read_nowait: ReadNowait | None = None
    stat_nowait: StatNowait | None = None

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (storage I/O, decompression) on the service's I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def n_bits(self) -> int:
        return self.settings.des.n_bits

    def sync_cache(self) -> None:
        """After a request: fold the index cache's counters into the metrics now when the
        metrics cannot do it themselves at collection (multiprocess mode)."""
        if self.cache is not None and self.metrics.sync_each_request:
            self.metrics.sync_cache(self.cache.stats())

    def base_headers(self, entry: FileEntry) -> dict[str, str]:
        headers = {
            "Accept-Ranges": "bytes",
            "Cache-Control": self.settings.cache_control,
            "Content-Type": media_type_of(entry),
            "X-Content-Type-Options": "nosniff",
        }
        etag = entry.etag
        if etag:
            headers["ETag"] = etag
        return headers

    def error(self, request: Request, exc: BaseException) -> Response:
        if status_of(exc) >= 500 and not isinstance(exc, (DesFormatError, ServiceError)):
            log.error("unexpected error serving %s", request.url.path, exc_info=exc)
        return problem_response(
            exc,
            retry_after=self.settings.retry_after_seconds,
            instance=request.url.path,
            request_id=_request_id(request),
            head=request.method == "HEAD",
        )


def _request_id(request: Request) -> str | None:
    state = request.scope.get("state") or {}
    rid = state.get("request_id")
    return rid if isinstance(rid, str) else None


def _read_all(opened: OpenedFile) -> bytes:
    return b"".join(opened.iter_bytes())


def _slice_chunks(chunks: Iterator[bytes], start: int, end: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a stream of chunks, for streamed answers.

    The retriever checks the checksum when its stream ends, so the stream is drained to its
    end and the last piece is held back until then: when the check fails, the exception aborts
    the answer before its last bytes, and the client sees a short body (Content-Length is not
    met), never a complete wrong one.
    """
    pending: bytes | None = None
    pos = 0
    for chunk in chunks:
        nxt = pos + len(chunk)
        if nxt > start and pos < end:
            if pending is not None:
                yield pending
            pending = chunk[max(0, start - pos) : min(len(chunk), end - pos)]
        pos = nxt
    if pending is not None:
        yield pending


class _AuthMiddleware:
    """Checks bearer tokens before any route runs (``/health`` is open)."""

    def __init__(self, app: ASGIApp, tokens: TokenTable, retry_after: int) -> None:
        self.app = app
        self.tokens = tokens
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = needed_scope(scope["path"], scope["method"])
        if needed is not None and not is_signed_link(scope):
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                record = self.tokens.authorize(authorization, needed)
            except ServiceError as exc:
                rid = (scope.get("state") or {}).get("request_id")
                response = problem_response(
                    exc,
                    retry_after=self.retry_after,
                    instance=scope["path"],
                    request_id=rid,
                    head=scope["method"] == "HEAD",
                )
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = record.name
        await self.app(scope, receive, send)


def create_app(
    settings: HttpSettings | DesSettings,
    *,
    retriever: Retriever | None = None,
    registry: CollectorRegistry | None = None,
    store: ObjectStore | None = None,
    tokens: TokenTable | None = None,
    editor: Any = None,
) -> FastAPI:
    """Build the service.

    ``retriever``: the retrieval pipeline (default: a ``des_format.ShardRetriever`` over
    ``store`` with an index cache of ``DES_INDEX_CACHE_BYTES``). ``store``: the object store
    (default: ``des_storage_s3.open_store(settings)``). ``registry``: where the metrics are
    registered (default: a fresh registry, so several apps can live in one process).
    ``tokens``: the bearer tokens (default: read from ``DES_AUTH_TOKENS_FILE`` when set).
    ``editor``: what ``DELETE /files/{uid}`` writes through (default:
    ``des_storage_s3.open_editor(settings)``, built on the first delete).
    """
    if isinstance(settings, DesSettings):
        settings = HttpSettings(des=settings)
    des = settings.des
    metrics = ServiceMetrics(str(des.backend), registry)
    cache: Any = None
    if retriever is None:
        from des_format import IndexCache, ShardRetriever

        if store is None:
            from des_storage_s3 import open_store

            from ._store_layout import settings_after_layout

            store = open_store(des)
            settings = settings_after_layout(settings, store)  # once, at start
            des = settings.des
        cache = IndexCache(des.index_cache_bytes) if des.index_cache_bytes > 0 else None
        retriever = ShardRetriever(
            store,
            cache=cache,
            tail_size=des.tail_read_bytes,
            bigfiles_prefix=des.bigfiles_prefix,
            observer=metrics.observe_store_request,
        )
    else:
        cache = getattr(retriever, "cache", None)
    if tokens is None and settings.auth_tokens_file is not None:
        tokens = read_token_file(settings.auth_tokens_file)

    # Idle threads cost nothing; the pool lives as long as the app (lifespan events may come
    # and go several times, e.g. one per TestClient).
    executor = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="des-io")
    service = _Service(settings, retriever, store, metrics, cache, executor)
    metrics.watch_cache(cache)
    if settings.nowait_reads:
        _install_nowait(service, retriever)

    app = _DesApp(
        title="DES retrieval service",
        version=_version(),
        summary="Serves files packed into DES shards, from (uid, created_at) alone.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.des = service

    _install_error_handlers(app, service)
    get_file, head_file = _install_routes(app, service)
    from ._delete import install_delete_route

    def make_editor() -> Any:
        if editor is not None:
            return editor
        from des_storage_s3 import open_editor

        return open_editor(des)

    install_delete_route(app, service, make_editor)
    install_openapi(app, auth=tokens is not None, max_batch_items=settings.max_batch_items)
    front: ASGIApp = _FilesFastPath(get_file=get_file, head_file=head_file)
    if tokens is not None:
        app.add_middleware(
            _AuthMiddleware,
            tokens=tokens,
            retry_after=settings.retry_after_seconds,
        )
        front = _AuthMiddleware(front, tokens=tokens, retry_after=settings.retry_after_seconds)
    app.add_middleware(LinkGate, key=settings.link_key)  # signed links, before the token check
    front = LinkGate(front, settings.link_key)
    app.add_middleware(AccessLogMiddleware)
    # GET/HEAD /files/{uid} take the same middleware (access log, auth) in front of their
    # handlers, past FastAPI's own stack; see _DesApp. Warm plain answers skip even those.
    general = AccessLogMiddleware(front)
    app.files_front = general
    if service.read_nowait is not None or service.stat_nowait is not None:
        warm = _WarmFront(service, general, tokens)
        app.files_front = warm
        app.quick_answer = warm.now
    install_cors(app, CorsPolicy.parse(settings.cors_origins))
    return app


def _install_nowait(service: _Service, retriever: Retriever) -> None:
    """Let GET/HEAD /files answer on the event loop when the retriever can do so without
    waiting for I/O (``des_format.ShardRetriever``: cached index, small payload in the page
    cache of a local shard); every other request keeps the trip to the I/O threads."""
    read = getattr(retriever, "read_nowait", None)
    stat = getattr(retriever, "stat_nowait", None)
    if callable(read):
        settings = service.settings
        # Only files answered whole from memory: never one that would be streamed.
        limit = min(settings.nowait_max_bytes, settings.stream_threshold_bytes)

        def read_nowait(
            key: str, uid: str, only_if: OnlyIf | None
        ) -> tuple[FileEntry, bytes | None] | None:
            found: tuple[FileEntry, bytes | None] | None = read(
                key, uid, max_bytes=limit, only_if=only_if
            )
            return found

        service.read_nowait = read_nowait
    if callable(stat):
        service.stat_nowait = stat


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("des-http")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def _install_error_handlers(app: FastAPI, service: _Service) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        return service.error(request, exc)

    for exc_type in (
        RequestValidationError,
        StarletteHTTPException,
        DesFormatError,
        RoutingError,
        ServiceError,
    ):
        app.add_exception_handler(exc_type, handle)


FileHandler = Callable[[Request], Awaitable[Response]]


def _install_routes(app: FastAPI, service: _Service) -> tuple[FileHandler, FileHandler]:
    """Declare the routes; returns the GET and HEAD file handlers for the fast path."""
    settings = service.settings
    metrics = service.metrics

    def conditional(
        entry: FileEntry,
        headers: dict[str, str],
        range_header: str | None,
        if_none_match: str | None,
        if_range: str | None,
    ) -> tuple[int, int, int] | Response:
        """(status, start, end) of the answer, or the 304 answer itself.

        ``headers`` are the ``base_headers`` of ``entry`` (its ETag is read from there).
        """
        etag = headers.get("ETag")
        if if_none_match is not None and none_match(if_none_match, etag):
            keep = {k: v for k, v in headers.items() if k in ("ETag", "Cache-Control")}
            return Response(status_code=304, headers=keep)
        plan = (
            plan_range(range_header, entry.size)
            if range_header is not None and if_range_holds(if_range, etag)
            else FULL
        )
        if plan.kind is RangeKind.UNSATISFIABLE:
            raise RangeNotSatisfiableForFile(entry.size)
        if plan.byte_range is not None:
            headers["Content-Range"] = serialize_content_range(plan.byte_range, entry.size)
            headers["Content-Length"] = str(plan.byte_range.length)
            return 206, plan.byte_range.start, plan.byte_range.end
        headers["Content-Length"] = str(entry.size)
        return 200, 0, entry.size

    def without_body(
        entry: FileEntry,
        range_header: str | None,
        if_none_match: str | None,
        if_range: str | None,
    ) -> bool:
        """Whether the answer is a 304 or a 416 (as ``conditional`` decides): no file bytes."""
        if if_none_match is not None and none_match(if_none_match, entry.etag):
            return True
        return (
            range_header is not None
            and if_range_holds(if_range, entry.etag)
            and plan_range(range_header, entry.size).kind is RangeKind.UNSATISFIABLE
        )

    def fetch_small(
        key: str,
        uid: str,
        range_header: str | None,
        if_none_match: str | None,
        if_range: str | None,
    ) -> tuple[OpenedFile, bytes | None]:
        """Open ``uid``; also read it when it is small and the answer will carry it."""
        opened = service.retriever.open(key, uid)
        entry = opened.entry
        if entry.size > settings.stream_threshold_bytes or without_body(
            entry, range_header, if_none_match, if_range
        ):
            return opened, None
        return opened, _read_all(opened)

    @app.post(
        "/files/batch",
        operation_id="get_files_batch",
        summary="Fetch many files in one request",
        description=(
            "Answers `multipart/mixed`, one part per item, each with `X-DES-Item` (the item's "
            "position in the request), `X-DES-Uid` (percent-encoded), `X-DES-Status` (the "
            "status a single GET would have had) and either the file's bytes or a problem "
            "JSON. Parts come grouped by shard, not in request order; files in one shard are "
            "read with coalesced range requests."
        ),
        response_class=Response,
        responses=BATCH_RESPONSES,
        tags=["files"],
    )
    async def get_files_batch(request: Request, batch: BatchRequest) -> Response:
        if len(batch.items) > settings.max_batch_items:
            return service.error(request, BatchTooLarge(len(batch.items), settings.max_batch_items))
        boundary = uuid.uuid4().hex
        return StreamingResponse(
            _batch_parts(service, batch.items, boundary),
            200,
            headers={"Cache-Control": "no-store"},
            media_type=f"multipart/mixed; boundary={boundary}",
        )

    @app.get(
        "/files/{uid:des_uid}",
        operation_id="get_file",
        summary="Fetch a file",
        description=(
            "Returns the file's original bytes, verified against their stored checksum. "
            "Supports If-None-Match (304), one byte range (206/416) with If-Range. "
            "Several ranges in one request are answered with the whole file (200)."
        ),
        response_class=Response,
        responses=FILE_RESPONSES,
        openapi_extra={"parameters": FILE_PARAMETERS},
        tags=["files"],
    )
    async def get_file(
        request: Request,
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            uid, created_at, range_header, if_none_match, if_range = _file_params(request)
            key = plan_object_key(uid, created_at, service.n_bits)
            opened: OpenedFile | None = None
            data: bytes | None = None
            found = None
            read_nowait = service.read_nowait
            if read_nowait is not None:
                # A small file whose index and bytes are in memory: answered right here
                # (its bytes not even read for a 304 or 416, as in fetch_small).
                only_if = (
                    None
                    if if_none_match is None and range_header is None
                    else lambda e: not without_body(e, range_header, if_none_match, if_range)
                )
                if not _nowait_missed(request.scope):
                    found = read_nowait(key, uid, only_if)
                metrics.observe_nowait(found is not None)
            if found is not None:
                entry, data = found
            else:
                # One trip to a worker thread: the index lookup and, for a small file that
                # will be sent, its payload too.
                fetched, data = await service.in_thread(
                    fetch_small, key, uid, range_header, if_none_match, if_range
                )
                entry, opened = fetched.entry, fetched
            headers = service.base_headers(entry)
            planned = conditional(entry, headers, range_header, if_none_match, if_range)
            if isinstance(planned, Response):
                status = planned.status_code
                return planned
            status, start, end = planned
            if entry.size <= settings.stream_threshold_bytes:
                if data is None:  # pragma: no cover - read above for every 200/206
                    if opened is None:
                        opened = await service.in_thread(service.retriever.open, key, uid)
                    data = await service.in_thread(_read_all, opened)
                body = data if (start, end) == (0, len(data)) else data[start:end]
                metrics.add_bytes_served(len(body))
                return Response(body, status, headers=headers)
            assert opened is not None  # read_nowait answers only files that are not streamed
            chunks = _slice_chunks(opened.iter_bytes(), start, end)
            return StreamingResponse(_count_served(chunks, metrics), status, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every error becomes a problem answer
            status = status_of(exc)
            return service.error(request, exc)
        finally:
            metrics.observe_retrieval(status, time.perf_counter() - started)
            service.sync_cache()

    @app.head(
        "/files/{uid:des_uid}",
        operation_id="head_file",
        summary="Describe a file (from the index alone)",
        description=(
            "The headers GET would send, read from the shard index alone: "
            "the payload is never fetched."
        ),
        response_class=Response,
        responses=FILE_RESPONSES,
        openapi_extra={"parameters": FILE_PARAMETERS},
        tags=["files"],
    )
    async def head_file(
        request: Request,
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            uid, created_at, range_header, if_none_match, if_range = _file_params(request)
            key = plan_object_key(uid, created_at, service.n_bits)
            stat_nowait = service.stat_nowait
            head_entry = None
            if stat_nowait is not None:
                if not _nowait_missed(request.scope):
                    head_entry = stat_nowait(key, uid)  # the shard's index cached: no I/O
                metrics.observe_nowait(head_entry is not None)
            if head_entry is not None:
                entry = head_entry
            else:
                entry = await service.in_thread(service.retriever.stat, key, uid)
            headers = service.base_headers(entry)
            planned = conditional(entry, headers, range_header, if_none_match, if_range)
            if isinstance(planned, Response):
                status = planned.status_code
                return planned
            status = planned[0]
            return Response(b"", status, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every error becomes a problem answer
            status = status_of(exc)
            return service.error(request, exc)
        finally:
            metrics.observe_retrieval(status, time.perf_counter() - started)
            service.sync_cache()

    @app.get(
        "/health",
        operation_id="health",
        summary="Liveness: the process answers",
        response_model=Health,
        tags=["operations"],
    )
    async def health() -> Health:
        return Health(status="ok")

    @app.get(
        "/ready",
        operation_id="ready",
        summary="Readiness: the storage backend answers",
        response_model=Ready,
        responses=READY_RESPONSES,
        tags=["operations"],
    )
    async def ready(request: Request) -> Response:
        try:
            await service.in_thread(_probe, service)
        except Exception as exc:  # noqa: BLE001 - any failure of the probe: not ready
            return service.error(request, exc)
        return JSONResponse(
            {"status": "ready", "backend": str(settings.des.backend)},
            headers={"Cache-Control": "no-store"},
        )

    @app.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        tags=["operations"],
    )
    async def metrics_endpoint() -> Response:
        # The index cache's counters are brought up to date by the collection itself.
        body, content_type = await service.in_thread(metrics.render)
        return Response(body, headers={"Cache-Control": "no-store"}, media_type=content_type)

    return get_file, head_file


def _is_file_request(scope: Scope) -> bool:
    """``GET``/``HEAD /files/{uid}``: the uid is everything after ``/files/``, slashes
    included, as the route's convertor takes it (``POST /files/batch`` is not one)."""
    path: str = scope["path"]
    return scope["method"] in ("GET", "HEAD") and len(path) > 7 and path.startswith("/files/")


class _FilesFastPath:
    """Sends ``GET``/``HEAD /files/{uid}`` straight to their handlers.

    The handlers read their own parameters and turn every error into a problem answer, so
    FastAPI's router, exception and dependency layers add nothing for them but time.
    """

    def __init__(self, get_file: FileHandler, head_file: FileHandler) -> None:
        self.handlers = {"GET": get_file, "HEAD": head_file}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["path_params"] = {"uid": scope["path"][7:]}
        response = await self.handlers[scope["method"]](Request(scope, receive))
        await response(scope, receive, send)


# Set in the request's state by _WarmFront when its read without I/O found nothing: the
# handler counts the fallback and goes to the I/O threads without asking a second time.
_NOWAIT_MISSED = "des_nowait_missed"


def _nowait_missed(scope: Scope) -> bool:
    state = scope.get("state")
    return state is not None and _NOWAIT_MISSED in state


# Header names _WarmFront reads: X-Request-ID, Authorization, and the two that make an
# answer other than a plain 200 (If-Range alone changes nothing without Range).
_WARM_HEADERS = {b"x-request-id": 0, b"authorization": 1, b"range": 2, b"if-none-match": 3}
_ACCEPT_RANGES = (b"accept-ranges", b"bytes")
_WarmAnswer = tuple[list[tuple[bytes, bytes]], bytes]
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# Header names _WarmFront.now reads: those above, and those that make it decline a request
# uvicorn would treat otherwise (a body, Expect, Upgrade) or whose client address uvicorn's
# proxy-headers middleware would rewrite.
_NOW_HEADERS = {
    **_WARM_HEADERS,
    b"content-length": 4,
    b"transfer-encoding": 4,
    b"expect": 4,
    b"upgrade": 4,
    b"x-forwarded-for": 4,
    b"x-forwarded-proto": 4,
}
# What uvicorn refuses in a header value (its HEADER_VALUE_RE).
_BAD_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


class _WarmFront:
    """``GET``/``HEAD /files/{uid}`` whose answer is a plain 200 from memory, sent as raw
    ASGI messages; every other request goes to ``general`` (the access log, auth and the
    handlers) unchanged.

    It does, in one pass and without Starlette's request and response objects, what the
    access log, auth and the handlers do for such a request: the request id and
    ``X-Request-ID``, the token check, ``created_at`` from the query, the shard key, the read
    without I/O (``_Service.read_nowait``/``stat_nowait``), the same headers in the same order
    (``_Service.base_headers`` plus ``Content-Length``), the same metrics and access-log line.
    It takes a request only when that answer is sure before anything is counted: no
    ``Range`` or ``If-None-Match``, a token that passes, a query that is a single
    ``created_at`` without ``&`` or ``+``, a uid and time that route. When the read finds
    nothing, the request is marked (``_NOWAIT_MISSED``) and handed over, so the handler counts
    the fallback and does not ask again.
    """

    def __init__(
        self, service: _Service, general: AccessLogMiddleware, tokens: TokenTable | None
    ) -> None:
        self.service = service
        self.general = general
        self.tokens = tokens
        self.cache_control = (b"cache-control", service.settings.cache_control.encode("latin-1"))
        # The quick path writes its headers unchecked: only values uvicorn would accept.
        self.quick_ok = _BAD_HEADER_VALUE.search(self.cache_control[1]) is None
        self.content_types: dict[str, tuple[bytes, bytes]] = {}
        # Content-Type headers by the stored name's suffix (entries without a stored type).
        self.by_suffix: dict[str, tuple[bytes, bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        found: list[bytes | None] = [None, None, None, None]
        for name, value in scope["headers"]:
            slot = _WARM_HEADERS.get(name)
            if slot is not None and found[slot] is None:
                found[slot] = value
        incoming = found[0]
        request_id = plan_request_id(None if incoming is None else incoming.decode("latin-1"))
        answer: _WarmAnswer | Literal[False] | None = None
        if found[2] is None and found[3] is None and not _nowait_missed(scope):
            answer = self.answer(scope, found[1], started)
        if answer is None or answer is False:
            if answer is False:
                scope.setdefault("state", {})[_NOWAIT_MISSED] = True
            await self.general.serve(scope, receive, send, request_id, started)
            return
        headers, body = answer
        scope.setdefault("state", {})["request_id"] = request_id
        headers.append((b"x-request-id", request_id.encode("latin-1")))
        status = 0
        sent = 0
        error: BaseException | None = None
        try:
            status = 200
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            sent = len(body)
            await send({"type": "http.response.body", "body": body})
        except BaseException as exc:
            error = exc
            raise
        finally:
            log_access(scope, request_id, status=status, sent=sent, started=started, error=error)

    def now(self, scope: Scope) -> _WarmAnswer | None:
        """The whole 200 answer (headers with ``X-Request-ID``, body), counted and logged,
        for the protocol to write itself (``_transport.DesHttpToolsProtocol``); None when
        the request is to take the ordinary path (and then nothing is counted or logged).
        A read without I/O that found nothing is marked, as by ``__call__``, so the ordinary
        path does not ask again."""
        if not self.quick_ok:
            return None
        started = time.perf_counter()
        found: list[bytes | None] = [None, None, None, None, None]
        for name, value in scope["headers"]:
            slot = _NOW_HEADERS.get(name)
            if slot is not None and found[slot] is None:
                found[slot] = value
        if found[2] is not None or found[3] is not None or found[4] is not None:
            return None
        answer = self.answer(scope, found[1], started)
        if answer is None:
            return None
        if answer is False:
            scope["state"][_NOWAIT_MISSED] = True
            return None
        headers, body = answer
        incoming = found[0]
        request_id = plan_request_id(None if incoming is None else incoming.decode("latin-1"))
        scope["state"]["request_id"] = request_id
        headers.append((b"x-request-id", request_id.encode("latin-1")))
        log_access(scope, request_id, status=200, sent=len(body), started=started, error=None)
        return headers, body

    def answer(
        self, scope: Scope, authorization: bytes | None, started: float
    ) -> _WarmAnswer | Literal[False] | None:
        """(headers but X-Request-ID, body) of the 200 answer, counted in the metrics; None
        when the request is not one to answer here, False when the read without I/O found
        nothing (then nothing is counted)."""
        tokens = self.tokens
        method: str = scope["method"]
        if tokens is not None:
            needed = needed_scope(scope["path"], method)
            if needed is not None:
                try:
                    record = tokens.authorize(
                        None if authorization is None else authorization.decode("latin-1"),
                        needed,
                    )
                except ServiceError:
                    return None
                scope.setdefault("state", {})["principal"] = record.name
        query: bytes = scope.get("query_string", b"")
        if not query.startswith(_CREATED_AT) or b"&" in query or b"+" in query:
            return None
        uid: str = scope["path"][7:]
        if "\ufffd" in uid:
            return None
        service = self.service
        try:
            key = plan_object_key(uid, _created_at_of(query), service.n_bits)
        except Exception:  # noqa: BLE001 - the handler answers the error
            return None
        body = b""
        if method == "GET":
            read_nowait = service.read_nowait
            if read_nowait is None:
                return None
            got = read_nowait(key, uid, None)
            if got is None:
                return False
            entry, data = got
            assert data is not None  # read whenever only_if is None
            size = entry.size
            body = data if len(data) == size else data[:size]
        else:
            stat_nowait = service.stat_nowait
            if stat_nowait is None:
                return None
            head_entry = stat_nowait(key, uid)
            if head_entry is None:
                return False
            entry = head_entry
        headers = self.headers_of(entry)
        if headers is None:
            return None
        service.metrics.observe_warm_answer(len(body), time.perf_counter() - started)
        service.sync_cache()
        return headers, body

    def headers_of(self, entry: FileEntry) -> list[tuple[bytes, bytes]] | None:
        """``base_headers(entry)`` and ``Content-Length``, as Starlette would encode them;
        None if the entry's stored ETag holds a byte no header may carry (the ordinary path
        then answers)."""
        content_type = None
        suffix = None
        is_index_entry = type(entry) is IndexEntry
        if is_index_entry:
            # No stored type, a stored name: media_type_of depends on the name's suffix only.
            meta = entry.meta
            if "content_type" not in meta:
                name = meta.get("name") or meta.get("filename")
                if type(name) is str and name:
                    suffix = suffix_of(name)
                    content_type = self.by_suffix.get(suffix)
        if content_type is None:
            media = media_type_of(entry)
            content_type = self.content_types.get(media)
            if content_type is None:
                if len(self.content_types) >= 1024:
                    self.content_types.clear()
                content_type = (b"content-type", media.encode("latin-1"))
                self.content_types[media] = content_type
            if suffix is not None:
                if len(self.by_suffix) >= 1024:
                    self.by_suffix.clear()
                self.by_suffix[suffix] = content_type
        headers = [_ACCEPT_RANGES, self.cache_control, content_type, _NOSNIFF]
        checksum = entry.checksum if type(entry) is IndexEntry else None
        if checksum is not None:
            # IndexEntry.etag's first form, formatted straight to bytes.
            headers.append((b"etag", b'"des-%08x-%x"' % (checksum, entry.size)))
        else:
            etag = entry.etag
            if etag:
                value = etag.encode("latin-1")
                if _BAD_HEADER_VALUE.search(value) is not None:
                    return None
                headers.append((b"etag", value))
        headers.append((b"content-length", b"%d" % entry.size))
        return headers


class _DesApp(FastAPI):
    """The FastAPI app, with a front door for the hot path.

    ``GET``/``HEAD /files/{uid}`` go to ``files_front`` (``_WarmFront`` when reads without
    I/O are on, which hands what it does not answer itself to the access log and auth
    middleware, then the handlers) at the top of the ASGI app, past Starlette's and
    FastAPI's middleware stack (server-error, telemetry, body-limit layers) and router:
    together about a third of a warm request's CPU. The routes stay declared, so the OpenAPI
    document is unchanged, and every other request (``DELETE``, ``POST /files/batch``, other
    paths, websockets, lifespan) goes through FastAPI as usual.
    """

    files_front: ASGIApp | None = None
    # The same answers for the des-http command's protocol to write from its parser callback
    # (``_transport.DesHttpToolsProtocol``), when reads without I/O are on.
    quick_answer: Callable[[Scope], _WarmAnswer | None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.files_front
        if front is not None and scope["type"] == "http" and _is_file_request(scope):
            scope["app"] = self
            if self.root_path:
                scope["root_path"] = self.root_path
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _count_served(chunks: Iterator[bytes], metrics: ServiceMetrics) -> Iterator[bytes]:
    for chunk in chunks:
        metrics.add_bytes_served(len(chunk))
        yield chunk


def _probe(service: _Service) -> None:
    """Ask the backend about an object that does not exist: 'not found' means it answered."""
    des = service.settings.des
    if str(des.backend) == "local" and not Path(des.base_dir).is_dir():
        raise NotReady(f"the shard directory DES_BASE_DIR={des.base_dir} does not exist")
    store = service.store
    if store is None:
        return
    from ._readiness import plan_probe_keys

    for key in plan_probe_keys(des):
        try:
            store.head(key)
        except ObjectNotFound:
            continue


async def _batch_parts(
    service: _Service, items: list[BatchItem], boundary: str
) -> AsyncIterator[bytes]:
    metrics = service.metrics
    groups: dict[str, dict[str, list[int]]] = {}
    for idx, item in enumerate(items):
        try:
            key = plan_object_key(item.uid, item.created_at, service.n_bits)
        except RoutingError as exc:
            metrics.observe_retrieval(status_of(exc), None)
            yield _error_part(boundary, idx, item.uid, exc)
            continue
        groups.setdefault(key, {}).setdefault(item.uid, []).append(idx)
    limit = service.settings.stream_threshold_bytes
    for key, by_uid in groups.items():
        pending = dict(by_uid)
        in_part = False  # inside a streamed part: a failure can only abort the answer
        try:
            found = await service.in_thread(_stat_all, service.retriever, key, list(by_uid))
            large: list[str] = []
            for uid, entry in found.items():
                if isinstance(entry, BaseException):
                    for idx in pending.pop(uid, ()):
                        metrics.observe_retrieval(status_of(entry), None)
                        yield _error_part(boundary, idx, uid, entry)
                elif entry.size > limit:
                    large.append(uid)
            small = [uid for uid in pending if uid not in large]
            if small:
                results = iterate_in_threadpool(service.retriever.read_many(key, small))
                async for uid, result in results:
                    for idx in pending.pop(uid, ()):
                        if isinstance(result, BaseException):
                            metrics.observe_retrieval(status_of(result), None)
                            yield _error_part(boundary, idx, uid, result)
                        else:
                            metrics.observe_retrieval(200, None)
                            metrics.add_bytes_served(len(result))
                            yield _file_part(boundary, idx, uid, result)
            for uid in large:  # streamed, never held whole
                for idx in list(pending.get(uid, ())):
                    opened = await service.in_thread(service.retriever.open, key, uid)
                    size = opened.entry.size
                    in_part = True
                    yield _part_head(
                        boundary,
                        idx,
                        uid,
                        status=200,
                        media="application/octet-stream",
                        length=size,
                    )
                    chunks = _slice_chunks(opened.iter_bytes(), 0, size)
                    async for chunk in iterate_in_threadpool(chunks):
                        metrics.add_bytes_served(len(chunk))
                        yield chunk
                    yield b"\r\n"
                    in_part = False
                    metrics.observe_retrieval(200, None)
                    pending[uid].remove(idx)
                pending.pop(uid, None)
        except Exception as exc:
            if in_part:
                raise
            if status_of(exc) >= 500 and not isinstance(exc, DesFormatError):
                log.error("unexpected error in a batch read of %s", key, exc_info=exc)
            for uid, indexes in pending.items():
                for idx in indexes:
                    metrics.observe_retrieval(status_of(exc), None)
                    yield _error_part(boundary, idx, uid, exc)
        service.sync_cache()
    yield f"--{boundary}--\r\n".encode("ascii")


def _stat_all(
    retriever: Retriever, key: str, uids: list[str]
) -> dict[str, FileEntry | DesFormatError]:
    """Index entries of ``uids`` in one shard; a missing or deleted uid maps to its error."""
    out: dict[str, FileEntry | DesFormatError] = {}
    for uid in uids:
        try:
            out[uid] = retriever.stat(key, uid)
        except (EntryNotFound, EntryDeleted) as exc:
            out[uid] = exc
    return out


def _part_head(boundary: str, idx: int, uid: str, *, status: int, media: str, length: int) -> bytes:
    return (
        f"--{boundary}\r\n"
        f"Content-Type: {media}\r\n"
        f"Content-Length: {length}\r\n"
        f"X-DES-Item: {idx}\r\n"
        f"X-DES-Uid: {quote(uid, safe='')}\r\n"
        f"X-DES-Status: {status}\r\n\r\n"
    ).encode("ascii")


def _file_part(boundary: str, idx: int, uid: str, data: bytes) -> bytes:
    head = _part_head(
        boundary, idx, uid, status=200, media="application/octet-stream", length=len(data)
    )
    return head + data + b"\r\n"


def _error_part(boundary: str, idx: int, uid: str, exc: BaseException) -> bytes:
    kind = plan_problem(exc)
    body = problem_body(kind, describe_exception(exc))
    head = _part_head(
        boundary, idx, uid, status=kind.status, media="application/problem+json", length=len(body)
    )
    return head + body + b"\r\n"
