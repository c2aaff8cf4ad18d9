"""The FastAPI application, built by :func:`create_app` (never at import time).

Requests enter through the edge (``_edge.Edge``: request id, limits, auth, access log);
``GET``/``HEAD /files/{uid}`` are answered by ``_files.FilesEndpoint``, everything else by
the FastAPI routes declared here (which also give the OpenAPI document its file endpoints).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from des_format import (
    DesFormatError,
    EntryDeleted,
    EntryNotFound,
    IndexCache,
    ObjectStore,
    ShardEditor,
)
from des_routing import DesSettings, RoutingError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ._auth import TokenTable, read_token_file
from ._cors import CorsPolicy
from ._edge import Edge
from ._files import FilesEndpoint, slice_chunks
from ._layout_watch import LayoutWatch
from ._metrics import ServiceMetrics
from ._openapi import BATCH_RESPONSES, FILE_RESPONSES, READY_RESPONSES, install_openapi
from ._params import CREATED_AT_DESCRIPTION, FILE_PARAMETERS, UID_DESCRIPTION
from ._problems import (
    BatchTooLarge,
    ServiceError,
    StoreLayoutChanged,
    describe_exception,
    plan_problem,
    problem_body,
    problem_response,
    status_of,
)
from ._readers import open_async_retriever
from ._retrieval import AsyncRetriever, FileEntry, Retriever, plan_object_key
from ._settings import HttpSettings
from ._threaded import ThreadedRetriever

log = logging.getLogger("des_http.errors")

T = TypeVar("T")


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


AUTH_OFF_WARNING = (
    "des-http: warning: authentication is off (DES_AUTH_TOKENS_FILE is not set): every "
    "endpoint is open to anyone who can reach the service, including DELETE /files/{uid}, "
    "which deletes files. Set DES_AUTH_TOKENS_FILE (see 'des-http hash-token') unless a "
    "proxy in front allows only GET and HEAD."
)


@dataclass(slots=True)
class _Service:
    settings: HttpSettings
    retriever: AsyncRetriever
    store: ObjectStore | None
    metrics: ServiceMetrics
    cache: IndexCache | None
    executor: ThreadPoolExecutor
    layout: LayoutWatch | None = None  # the layout record's watch (None: not watched)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (storage I/O, deletes, the metrics text) on the I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def n_bits(self) -> int:
        return self.settings.des.n_bits

    def check_layout(self) -> None:
        """Raise ``StoreLayoutChanged`` while the layout record disagrees (no file is then
        looked up, deleted or listed)."""
        if self.layout is not None and self.layout.fault is not None:
            raise StoreLayoutChanged(self.layout.fault)

    def sync_cache(self) -> None:
        """After a request: fold the index cache's counters into the metrics now when the
        metrics cannot do it themselves at collection (multiprocess mode)."""
        if self.cache is not None and self.metrics.sync_each_request:
            self.metrics.sync_cache(self.cache.stats())

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


class _DesApp(FastAPI):
    """The FastAPI app behind the edge: every HTTP request enters through ``edge`` (see
    ``_edge``), which hands what is not ``GET``/``HEAD /files`` back to FastAPI."""

    edge: Edge | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.edge
        if edge is not None and scope["type"] == "http":
            scope["app"] = self
            await edge(scope, receive, send)  # type: ignore[arg-type]
            return
        await super().__call__(scope, receive, send)

    async def fastapi_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling (routing, middleware, handlers)."""
        await super().__call__(scope, receive, send)


class _Delegate(Response):
    """The answer of the declared file routes: the files endpoint's own."""

    def __init__(self, endpoint: FilesEndpoint) -> None:
        self.endpoint = endpoint
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoint(scope, receive, send)  # type: ignore[arg-type]


def create_app(
    settings: HttpSettings | DesSettings,
    *,
    retriever: Retriever | None = None,
    registry: CollectorRegistry | None = None,
    store: ObjectStore | None = None,
    tokens: TokenTable | None = None,
    editor: ShardEditor | None = None,
    async_retriever: AsyncRetriever | None = None,
    tracer_provider: Any = None,
) -> FastAPI:
    """Build the service.

    ``async_retriever``: what the file endpoints await (default:
    ``open_async_retriever(settings)``). ``retriever``: a sync retrieval pipeline to drive
    from threads instead (default: a ``des_format.ShardRetriever`` over ``store`` with an
    index cache of ``DES_INDEX_CACHE_BYTES``). ``store``: the object store (default:
    ``des_storage_s3.open_store(settings)``), also what ``/ready`` asks. ``registry``: where
    the metrics are registered (default: a fresh registry, so several apps can live in one
    process). ``tokens``: the bearer tokens (default: read from ``DES_AUTH_TOKENS_FILE`` when
    set). ``editor``: what ``DELETE /files/{uid}`` writes through (default:
    ``des_storage_s3.open_editor(settings)``, built on the first delete).
    ``tracer_provider``: OpenTelemetry's provider of the spans when ``settings.otel`` is on
    (default: the global one).
    """
    if isinstance(settings, DesSettings):
        settings = HttpSettings(des=settings)
    des = settings.des
    metrics = ServiceMetrics(str(des.backend), registry)
    # Idle threads cost nothing; the pool lives as long as the app (lifespan events may come
    # and go several times, e.g. one per TestClient).
    executor = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="des-io")
    cache: IndexCache | None = None
    tracing = None
    watch: LayoutWatch | None = None
    if settings.otel:  # tracing: nothing of it is imported or run otherwise
        from ._tracing import Tracing

        tracing = Tracing(tracer_provider)
        traced_observer = tracing.observer(metrics.observe_store_request)
    if async_retriever is None:
        # A store given by the caller is what files are read from; one opened here (boto3)
        # serves /ready and deletes, and reads on S3 go through the async driver instead.
        given_store = store
        if retriever is None:
            from des_format import IndexCache

            if store is None:
                from des_storage_s3 import open_store

                from ._store_layout import settings_after_layout

                store = open_store(des)
                settings, records = settings_after_layout(settings, store)  # once, at start
                des = settings.des
                if settings.layout_check_seconds > 0:  # then re-checked in the background
                    watch = LayoutWatch(
                        records,
                        n_bits=des.n_bits,
                        bigfiles_prefix=des.bigfiles_prefix,
                        on_fault=metrics.observe_layout_fault,
                    )
            cache = IndexCache(des.index_cache_bytes) if des.index_cache_bytes > 0 else None
        async_retriever = open_async_retriever(
            settings,
            observer=metrics.observe_store_request if tracing is None else traced_observer,
            store=given_store if des.backend != "local" else store,
            cache=cache,
            executor=executor if tracing is None else tracing.executor(executor),
            retriever=retriever,
        )
    if cache is None:
        cache = async_retriever.cache
    if isinstance(async_retriever, ThreadedRetriever) and async_retriever.on_nowait is None:
        async_retriever.on_nowait = metrics.observe_nowait
    if tokens is None and settings.auth_tokens_file is not None:
        tokens = read_token_file(settings.auth_tokens_file)

    service = _Service(settings, async_retriever, store, metrics, cache, executor, watch)
    metrics.watch_cache(cache)

    app = _DesApp(
        title="DES retrieval service",
        version=_version(),
        summary="Serves files packed into DES shards, from (uid, created_at) alone.",
        docs_url="/docs",
        redoc_url=None,
        redirect_slashes=False,  # no redirect built from the client's Host header
        # While the server runs (its lifespan): the layout record's checks, if watched.
        lifespan=None
        if watch is None
        else watch.lifespan(settings.layout_check_seconds, service.in_thread),
    )
    app.state.des = service
    edge_ref: list[Edge] = []

    async def send_problem(scope: Any, send: Any, exc: BaseException) -> None:
        await edge_ref[0].send_problem(scope, send, exc)

    endpoint = FilesEndpoint if tracing is None else tracing.endpoint
    files = endpoint(async_retriever, settings, metrics, send_problem, service.sync_cache)
    files.layout = watch
    _install_error_handlers(app, service)
    _install_routes(app, service, files)
    from ._delete import install_delete_route

    def make_editor() -> ShardEditor:
        if editor is not None:
            return editor
        from des_storage_s3 import open_editor

        opened: ShardEditor = open_editor(des)
        return opened

    install_delete_route(app, service, make_editor)
    install_openapi(app, auth=tokens is not None, max_batch_items=settings.max_batch_items)
    edge = Edge(
        files=files,
        general=app.fastapi_call,  # type: ignore[arg-type]
        tokens=tokens,
        retry_after=settings.retry_after_seconds,
        max_url_bytes=settings.max_url_bytes,
        max_body_bytes=settings.max_batch_body_bytes,
        server_header=settings.server_header,
        link_key=settings.link_key,
        cors=CorsPolicy.parse(settings.cors_origins),
    )
    edge_ref.append(edge)
    app.edge = edge
    return app


def warn_if_auth_is_off(settings: HttpSettings) -> None:
    """The start-up warning of a service without tokens (DELETE is then open)."""
    if settings.auth_tokens_file is None:
        print(AUTH_OFF_WARNING, file=sys.stderr)


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


def _install_routes(app: FastAPI, service: _Service, files: FilesEndpoint) -> None:
    """Declare the routes (the file routes answer through ``files``, as the edge does)."""
    settings = service.settings
    metrics = service.metrics

    @app.post(
        "/files/batch",
        operation_id="get_files_batch",
        summary="Fetch many files in one request",
        description=(
            "Answers `multipart/mixed`, one part per item, each with `X-DES-Item` (the item's "
            "position in the request), `X-DES-Uid` (percent-encoded), `X-DES-Status` (the "
            "status a single GET would have had) and either the file's bytes or a problem "
            "JSON. Parts come grouped by shard, not in request order; files in one shard are "
            "read with coalesced range requests. The body may hold at most "
            "DES_MAX_BATCH_BODY_BYTES (413 otherwise, before it is read)."
        ),
        response_class=Response,
        responses=BATCH_RESPONSES,
        tags=["files"],
    )
    async def get_files_batch(request: Request, batch: BatchRequest) -> Response:
        try:
            service.check_layout()
        except StoreLayoutChanged as exc:
            return service.error(request, exc)
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
    async def get_file() -> Response:
        return _Delegate(files)

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
    async def head_file() -> Response:
        return _Delegate(files)

    @app.get(
        "/health",
        operation_id="health",
        summary="Liveness: the process answers (HEAD too)",
        response_model=Health,
        tags=["operations"],
    )
    async def health() -> Health:
        return Health(status="ok")

    @app.get(
        "/ready",
        operation_id="ready",
        summary="Readiness: the storage of every zone answers (HEAD too)",
        response_model=Ready,
        responses=READY_RESPONSES,
        tags=["operations"],
    )
    async def ready(request: Request) -> Response:
        from ._readiness import probe_store

        try:
            service.check_layout()
            await service.in_thread(probe_store, settings.des, service.store)
        except Exception as exc:  # noqa: BLE001 - any failure of the probe: not ready
            return service.error(request, exc)
        return JSONResponse(
            {"status": "ready", "backend": str(settings.des.backend)},
            headers={"Cache-Control": "no-store"},
        )

    @app.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics (HEAD too)",
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
            found = await _stat_all(service.retriever, key, list(by_uid))
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
                async for uid, result in service.retriever.read_many(key, small):
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
                    opened = await service.retriever.open(key, uid)
                    try:
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
                        async for chunk in slice_chunks(opened.aiter_bytes(), 0, size):
                            metrics.add_bytes_served(len(chunk))
                            yield chunk
                    finally:
                        await opened.aclose()
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


async def _stat_all(
    retriever: AsyncRetriever, key: str, uids: list[str]
) -> dict[str, FileEntry | DesFormatError]:
    """Index entries of ``uids`` in one shard; a missing or deleted uid maps to its error."""
    out: dict[str, FileEntry | DesFormatError] = {}
    for uid in uids:
        try:
            out[uid] = await retriever.stat(key, uid)
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
