"""``GET``/``HEAD /files/{uid}?created_at=...``: the one implementation, as plain ASGI.

Every backend answers through the same :class:`~des_http._retrieval.AsyncRetriever`; the edge
(``_edge``) has already given the request its id, checked its token and will write its
access-log line. Here: the parameters, the shard key, the lookup, the conditional and range
decisions, the answer, the metrics.

A 200 or 206 starts only once the retriever has read the file's first bytes (``open``
returns after the first payload read succeeded): a file deleted or unreadable meanwhile
gets its 410 or 503 problem, never a 200 followed by nothing. A streamed file is sent one
bounded chunk at a time, each ``send`` waiting for the server to take it, so a client that
reads slowly holds one chunk, not the file.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from des_format import CorruptShard
from des_routing import InvalidUid

from ._layout_watch import LayoutWatch
from ._metrics import ServiceMetrics
from ._problems import BadRequest, RangeNotSatisfiableForFile, StoreLayoutChanged, status_of
from ._ranges import RangeKind, if_range_holds, none_match, plan_range, serialize_content_range
from ._retrieval import AsyncOpenedFile, AsyncRetriever, FileEntry, media_type_of, plan_object_key
from ._settings import HttpSettings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# Answers an error as a problem (the edge's): (scope, send, exc) -> None.
SendProblem = Callable[[Scope, Send, BaseException], Awaitable[None]]

FILES_PREFIX = "/files/"
# Bytes per body message of a streamed answer: the server holds a few messages per
# connection whatever their size, so small ones bound what a slow client pins.
SEND_BYTES = 64 << 10
# Larger than any object S3 (5 TiB) or a shard can hold: an index entry declaring more is
# damaged or forged, and its size never reaches a Content-Length.
MAX_FILE_BYTES = 5 << 40


def checked_entry(entry: FileEntry) -> FileEntry:
    """``entry``, unless its size is one no stored file can have (``CorruptShard``)."""
    if not 0 <= entry.size <= MAX_FILE_BYTES:
        raise CorruptShard(
            f"the index entry of {entry.uid!r} declares {entry.size} bytes, more than any "
            "stored file can hold"
        )
    return entry


_CREATED_AT = b"created_at="
# Header names (lower case, as ASGI servers pass them) the file endpoints read.
_READ_HEADERS = {b"range": 0, b"if-none-match": 1, b"if-range": 2}
_ACCEPT_RANGES = (b"accept-ranges", b"bytes")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
MISSING_CREATED_AT = (
    "the query parameter created_at is required: the file's creation time as "
    "ISO 8601, e.g. ?created_at=2024-01-01T00:00:00Z"
)


def is_file_request(scope: Scope) -> bool:
    """``GET``/``HEAD /files/{uid}`` (the uid is everything after ``/files/``, slashes
    included; ``POST /files/batch`` is not one)."""
    path: str = scope["path"]
    return scope["method"] in ("GET", "HEAD") and len(path) > 7 and path.startswith(FILES_PREFIX)


def created_at_of(query: bytes) -> str | None:
    """The last ``created_at`` of a query string, decoded as Starlette's ``query_params``
    decodes it (``+`` is a space, percent-escapes UTF-8 with invalid sequences replaced),
    or None; the usual single plain ``created_at=...`` without the general parser."""
    if query.startswith(_CREATED_AT) and b"&" not in query and b"+" not in query:
        value = query[len(_CREATED_AT) :].decode("latin-1")
        if "%" not in value:
            return value
    found: str | None = None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "created_at":
            found = value
    return found


def uid_of(scope: Scope) -> str:
    """The uid: the path after ``/files/``, refused if its percent-decoded bytes are not
    UTF-8 (servers decode with replacement characters, which would name another uid)."""
    uid: str = scope["path"][len(FILES_PREFIX) :]
    if "\ufffd" in uid:
        raw = scope.get("raw_path")
        if isinstance(raw, bytes):
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidUid(
                    "uid is not valid UTF-8 once percent-decoded; uids are UTF-8 text "
                    "(percent-encode its UTF-8 bytes)"
                ) from None
    return uid


def file_params(scope: Scope) -> tuple[str, str, str | None, str | None, str | None]:
    """uid, created_at, Range, If-None-Match, If-Range (the first of each header)."""
    created_at = created_at_of(scope.get("query_string", b""))
    if created_at is None:
        raise BadRequest(MISSING_CREATED_AT)
    found: list[str | None] = [None, None, None]
    for name, value in scope["headers"]:
        slot = _READ_HEADERS.get(name)
        if slot is not None and found[slot] is None:
            found[slot] = value.decode("latin-1")
    return uid_of(scope), created_at, found[0], found[1], found[2]


class FilesEndpoint:
    """The GET/HEAD handler (see the module's docs). ``send_problem`` answers errors."""

    locate = staticmethod(plan_object_key)  # (uid, created_at, n_bits) -> shard key
    # The layout record's watch (``_layout_watch``): while it reports a fault, no file is
    # looked up (set by ``create_app``; None: not watched).
    layout: LayoutWatch | None = None

    def __init__(
        self,
        retriever: AsyncRetriever,
        settings: HttpSettings,
        metrics: ServiceMetrics,
        send_problem: SendProblem,
        after_request: Callable[[], None],
    ) -> None:
        self.retriever = retriever
        self.settings = settings
        self.metrics = metrics
        self.send_problem = send_problem
        self.after_request = after_request
        self.n_bits = settings.des.n_bits
        self.stream_threshold = settings.stream_threshold_bytes
        self.cache_control = (b"cache-control", settings.cache_control.encode("latin-1"))
        self._content_types: dict[tuple[Any, Any, Any], tuple[bytes, bytes]] = {}

    def headers_of(self, entry: FileEntry) -> list[tuple[bytes, bytes]]:
        meta = entry.meta or {}
        # Content-Type depends on the stored type and name only: kept per (type, name).
        key = (entry.content_type, meta.get("name"), meta.get("filename"))
        content_type = self._content_types.get(key)
        if content_type is None:
            if len(self._content_types) >= 4096:
                self._content_types.clear()
            content_type = (b"content-type", media_type_of(entry).encode("latin-1"))
            self._content_types[key] = content_type
        headers = [_ACCEPT_RANGES, self.cache_control, content_type, _NOSNIFF]
        etag = entry.etag
        if etag:
            headers.append((b"etag", etag.encode("latin-1")))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        streaming: list[int] = []  # the status of a streamed answer once its headers left
        tries = self.metrics.file_request()  # its nowait lookups: one request
        try:
            status = await self._answer(scope, send, streaming)
        except Exception as exc:
            if streaming:  # too late for a problem: the server cuts the connection short
                status = streaming[0]
                raise
            status = status_of(exc)
            await self.send_problem(scope, send, exc)
        finally:
            self.metrics.file_request_done(tries)
            self.metrics.observe_retrieval(status, time.perf_counter() - started)
            self.after_request()

    async def _answer(self, scope: Scope, send: Send, streaming: list[int]) -> int:
        layout = self.layout
        if layout is not None and layout.fault is not None:
            raise StoreLayoutChanged(layout.fault)
        uid, created_at, range_header, if_none_match, if_range = file_params(scope)
        key = self.locate(uid, created_at, self.n_bits)
        head = scope["method"] == "HEAD"
        # Room for CORS and signed links (issue 21): checks that need only the request come
        # here, before any lookup; their answer headers join ``headers`` below.
        opened: AsyncOpenedFile | None = None
        if head or if_none_match is not None or range_header is not None:
            # From the index alone: a 304 or 416 reads no payload.
            entry = checked_entry(await self.retriever.stat(key, uid))
            etag = entry.etag
            if if_none_match is not None and none_match(if_none_match, etag):
                not_modified = [self.cache_control]
                if etag:
                    not_modified.insert(0, (b"etag", etag.encode("latin-1")))
                await send({"type": "http.response.start", "status": 304, "headers": not_modified})
                await send({"type": "http.response.body", "body": b""})
                return 304
            if (
                range_header is not None
                and if_range_holds(if_range, etag)
                and plan_range(range_header, entry.size).kind is RangeKind.UNSATISFIABLE
            ):
                raise RangeNotSatisfiableForFile(entry.size)
        if not head:
            opened = await self.retriever.open(key, uid)  # the first bytes are read
            entry = opened.entry
            if entry.size > MAX_FILE_BYTES:
                await opened.aclose()
                checked_entry(entry)
        try:
            size = entry.size
            headers = self.headers_of(entry)
            start, end, status = 0, size, 200
            if range_header is not None and if_range_holds(if_range, entry.etag):
                plan = plan_range(range_header, size)
                if plan.kind is RangeKind.UNSATISFIABLE:  # the file changed since the stat
                    raise RangeNotSatisfiableForFile(size)
                if plan.byte_range is not None:
                    start, end, status = plan.byte_range.start, plan.byte_range.end, 206
                    headers.append(
                        (
                            b"content-range",
                            serialize_content_range(plan.byte_range, size).encode("ascii"),
                        )
                    )
            headers.append((b"content-length", b"%d" % (end - start)))
            if opened is None:  # HEAD
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return status
            if size <= self.stream_threshold:
                whole = opened.whole  # a file already in memory
                if whole is not None:
                    data = whole
                else:
                    data = b"".join([chunk async for chunk in opened.aiter_bytes()])
                body = data if (start, end) == (0, len(data)) else data[start:end]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                self.metrics.add_bytes_served(len(body))
                return status
            streaming.append(status)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for piece in slice_chunks(opened.aiter_bytes(), start, end):
                view = memoryview(piece)
                for at in range(0, len(view), SEND_BYTES):  # the server buffers few sends
                    part = bytes(view[at : at + SEND_BYTES])
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                self.metrics.add_bytes_served(len(piece))
            await send({"type": "http.response.body", "body": b""})
            return status
        finally:
            if opened is not None:
                await opened.aclose()


async def slice_chunks(chunks: AsyncIterator[bytes], start: int, end: int) -> AsyncIterator[bytes]:
    """The bytes ``[start, end)`` of a stream of chunks.

    The stream is drained to its end (the retriever checks the checksum there) and the last
    piece is held back until then: when the check fails, the exception aborts the answer
    before its last bytes, and the client sees a short body, never a complete wrong one.
    """
    pending: bytes | None = None
    pos = 0
    async for chunk in chunks:
        nxt = pos + len(chunk)
        if nxt > start and pos < end:
            if pending is not None:
                yield pending
            pending = chunk[max(0, start - pos) : min(len(chunk), end - pos)]
        pos = nxt
    if pending is not None:
        yield pending
