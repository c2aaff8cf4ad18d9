"""Optional OpenTelemetry spans for ``GET``/``HEAD /files/{uid}`` (``des-http[otel]``).

This module is imported only when tracing is on (``HttpSettings.otel``, from ``DES_OTEL``;
see ``_settings``): with tracing off, :func:`des_http.create_app` builds the plain files
endpoint and nothing here runs or is loaded. With it on, ``create_app`` builds
:class:`Tracing` and takes from it the store-request observer, the executor of the I/O
threads and the files endpoint; everything else stays as it is.

One trace per request, continued from the caller's W3C ``traceparent`` (the globally set
propagator, by default W3C trace context and baggage):

``GET /files/{uid}`` (or ``HEAD``; kind SERVER)
    ``http.request.method``, ``http.route``, ``http.response.status_code``; status ERROR for
    a 5xx or an answer cut short after its headers.
``des.locate``
    uid and created_at to the shard key (``des.shard_key``).
``des.index``
    the file's index entry, from the index cache or from the store (``des.shard_key``).
``des.payload``
    the file's bytes, from the first read to the last byte sent (``des.shard_key``,
    ``des.file.size``).
``des.store`` (kind CLIENT), children of ``des.index`` or ``des.payload``
    one per request the retriever sends to the object store, as it reports them
    (``des.store.kind``: tail, index, payload or bigfile; ``des.store.bytes``). The retriever
    reports a request once it is done; its span starts where the previous step of its parent
    ended (the parent's start or the previous store request) and ends at the report.

A plain GET looks its index entry up in ``des.index`` and reads it in ``des.payload``: the
second lookup is answered from memory, so the store sees the same requests as without
tracing (the index cache counts one more hit per such GET). Without an index cache
(``DES_INDEX_CACHE_BYTES=0``) the lookup stays inside ``des.payload``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from ._files import FilesEndpoint, Receive, Scope, Send
from ._retrieval import AsyncOpenedFile, AsyncRetriever, FileEntry, Observer, plan_object_key

TRACER_NAME = "des_http"
ROUTE = "/files/{uid}"


class _Request:
    """What the spans of one request share: the step store requests belong to."""

    __slots__ = ("indexed", "mark", "step")

    def __init__(self) -> None:
        self.indexed = False  # des.index was recorded
        self.step: Span | None = None  # des.index or des.payload while it runs
        self.mark = 0  # where the next store request's span starts (ns since the epoch)


# The request being traced, for the retriever's wrapper and the store observer (which may
# run on an I/O thread: the executor below carries the context there).
_current: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "des_http_trace", default=None
)


def _failed(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


class Tracing:
    """Builds the traced parts of the service over ``tracer_provider`` (default: the global)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    def observer(self, inner: Observer) -> Observer:
        """``inner`` (the metrics), then a ``des.store`` span under the running step."""
        tracer = self.tracer

        def observe(kind: str, nbytes: int) -> None:
            inner(kind, nbytes)
            request = _current.get()
            if request is None or request.step is None:
                return  # not a traced file request (a batch, /ready)
            end = time.time_ns()
            start, request.mark = min(request.mark, end), end
            span = tracer.start_span(
                "des.store",
                context=trace.set_span_in_context(request.step),
                kind=SpanKind.CLIENT,
                start_time=start,
                attributes={"des.store.kind": kind, "des.store.bytes": nbytes},
            )
            span.end(end_time=end)

        return observe

    def executor(self, inner: Executor) -> Executor:
        """``inner``, running each call in a copy of the caller's context."""
        return _ContextExecutor(inner)

    def endpoint(
        self,
        retriever: AsyncRetriever,
        *args: Any,
    ) -> FilesEndpoint:
        """The files endpoint (``FilesEndpoint``'s arguments) with its spans."""
        return TracedFilesEndpoint(self.tracer, TracedRetriever(retriever, self.tracer), *args)


class _ContextExecutor(Executor):
    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.inner.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait, cancel_futures=cancel_futures)


class TracedRetriever:
    """An :class:`AsyncRetriever` recording ``des.index`` and ``des.payload`` for a traced
    request (anything else passes through)."""

    def __init__(self, inner: AsyncRetriever, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer
        self.cache = inner.cache

    def _start(self, request: _Request, name: str, key: str) -> Span:
        now = time.time_ns()
        span = self.tracer.start_span(name, start_time=now, attributes={"des.shard_key": key})
        request.step, request.mark = span, now
        return span

    async def _index(self, request: _Request, key: str, uid: str) -> FileEntry:
        span = self._start(request, "des.index", key)
        try:
            entry = await self.inner.stat(key, uid)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            request.step = None
            span.end()
        request.indexed = True
        return entry

    async def stat(self, key: str, uid: str) -> FileEntry:
        request = _current.get()
        if request is None:
            return await self.inner.stat(key, uid)
        return await self._index(request, key, uid)

    async def open(self, key: str, uid: str) -> AsyncOpenedFile:
        request = _current.get()
        if request is None:
            return await self.inner.open(key, uid)
        if not request.indexed and self.cache is not None:
            await self._index(request, key, uid)
        span = self._start(request, "des.payload", key)
        try:
            opened = await self.inner.open(key, uid)
        except BaseException as exc:
            request.step = None
            _failed(span, exc)
            span.end()
            raise
        span.set_attribute("des.file.size", opened.entry.size)
        return _TracedFile(opened, span, request)

    def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | BaseException]]:
        return self.inner.read_many(key, uids)


class _TracedFile:
    """An opened file whose ``des.payload`` span ends when it is closed."""

    def __init__(self, inner: AsyncOpenedFile, span: Span, request: _Request) -> None:
        self.inner = inner
        self.span: Span | None = span
        self.request = request

    @property
    def entry(self) -> FileEntry:
        return self.inner.entry

    @property
    def whole(self) -> bytes | None:
        return self.inner.whole

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner.aiter_bytes():
                yield chunk
        except BaseException as exc:
            if self.span is not None:
                _failed(self.span, exc)
            raise

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            span, self.span = self.span, None
            if span is not None:
                if self.request.step is span:
                    self.request.step = None
                span.end()


class TracedFilesEndpoint(FilesEndpoint):
    """:class:`FilesEndpoint` inside a SERVER span, with a ``des.locate`` span."""

    def __init__(self, tracer: Tracer, *args: Any) -> None:
        super().__init__(*args)
        self.tracer = tracer

    def locate(self, uid: str, created_at: str, n_bits: int) -> str:
        with self.tracer.start_as_current_span("des.locate") as span:
            key = plan_object_key(uid, created_at, n_bits)
            span.set_attribute("des.shard_key", key)
            return key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        status = 0

        async def send_traced(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = _current.set(_Request())
        try:
            with self.tracer.start_as_current_span(
                f"{method} {ROUTE}",
                context=propagate.extract(carrier),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": ROUTE},
            ) as span:
                try:
                    await super().__call__(scope, receive, send_traced)
                finally:
                    if status:
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            span.set_status(Status(StatusCode.ERROR))
        finally:
            _current.reset(token)
