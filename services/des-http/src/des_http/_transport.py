"""uvicorn's httptools protocol, with the writes of one turn of the event loop sent together
and warm file answers sent straight from the parser's callback.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``; uvloop sends each
write at once, so a small answer costs two ``send`` system calls (and two segments, two
wake-ups of the client). Here the connection's transport is wrapped so that writes made
before the event loop turns are joined and sent in one call at the end of that turn (or at
once when 64 KiB are waiting): the same bytes in the same order, one system call per answer.

:class:`DesHttpToolsProtocol` goes one step further for the hottest request: when the parser
has read the headers of a ``GET``/``HEAD /files/{uid}`` on an idle keep-alive connection, it
asks the app's quick path (``_WarmFront.now``) for the answer. When that answer is a plain
200 from memory, its bytes join the connection's writes of this turn at once, without the
asyncio task, the ASGI messages and the per-header work uvicorn spends on every answer;
anything else (and any request the quick path declines) goes to uvicorn's ordinary path,
unchanged. Used by the ``des-http`` command.

The writes of a turn are sent by one callback for all the connections that have some (not
one per connection), after every request the turn read was answered: the client side then
wakes once for a burst of answers, which costs the server less system time than one send per
request the moment it is answered.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    HttpToolsProtocol,
)

# Bytes held before they are sent without waiting for the end of the turn.
FLUSH_BYTES = 64 * 1024


class _Flusher:
    """Flushes, once per turn of one event loop, every transport that has writes waiting
    (one callback for all the connections a turn answered, not one each)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[CoalescingTransport] = []

    def add(self, transport: CoalescingTransport) -> None:
        if not self._waiting:
            self._loop.call_soon(self._run)
        self._waiting.append(transport)

    def _run(self) -> None:
        waiting = self._waiting
        self._waiting = []
        for transport in waiting:
            try:
                transport.flush()
            except Exception as exc:  # noqa: BLE001 - one connection's failure, not the others'
                self._loop.call_exception_handler(
                    {"message": "des-http: a write failed", "exception": exc}
                )


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher_of(loop: asyncio.AbstractEventLoop) -> _Flusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


class CoalescingTransport:
    """A transport whose ``write`` calls are joined until the event loop's next turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._flusher = _flusher_of(loop)
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._flusher.add(self)
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is waiting (in one write); dropped if the connection closed meanwhile
        (as uvicorn writes nothing once it is told the client has gone)."""
        pending = self._pending
        if not pending:
            return
        if self._transport.is_closing():
            self._pending = []
            self._size = 0
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._size = 0
        self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)


# (headers, body) of a 200 answer, or None to let the request take the ordinary path.
QuickAnswer = Callable[[MutableMapping[str, Any]], "tuple[list[tuple[bytes, bytes]], bytes] | None"]

_STATUS_200 = b"HTTP/1.1 200 OK\r\n"


def quick_answer_of(app: Any) -> QuickAnswer | None:
    """The quick path of the app uvicorn runs (``quick_answer`` of des-http's app), seen
    through uvicorn's proxy-headers middleware; None behind any other wrapper (the message
    logger of trace logging, say), whose work the quick path would skip."""
    for _ in range(4):
        quick = getattr(app, "quick_answer", None)
        if quick is not None:
            return quick  # type: ignore[no-any-return]
        if not isinstance(app, ProxyHeadersMiddleware):
            return None
        app = app.app
    return None


def _encode_defaults(defaults: list[tuple[bytes, bytes]]) -> bytes | None:
    """uvicorn's default headers (``date``, ``server``, ``--header`` ones) as its ``send``
    writes them (names in lower case); None if one is a header uvicorn refuses."""
    out = []
    for name, value in defaults:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            return None
        out.append(b"%s: %s\r\n" % (name.lower(), value))
    return b"".join(out)


class DesHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """``CoalescingHttpToolsProtocol`` that answers warm file requests in the parser's callback.

    Taken only when uvicorn's own path would do nothing the quick one does not: an HTTP/1.1
    keep-alive ``GET``/``HEAD`` whose path starts with ``/files/``, no answer in progress or
    queued on the connection, writes not paused, no ``Expect``/``Upgrade``/body, no
    concurrency limit, root path or uvicorn access log. The app's quick path declines
    anything but a plain 200 from memory, and requests that carry proxy headers (which
    uvicorn's middleware would apply to the client address). The answer's bytes are those
    uvicorn would write: its status line, its default headers (``date``, ``server``), the
    app's headers, the body (none for ``HEAD``), sent with the turn's other writes (see the
    module's docstring); the request is counted in
    ``server_state.total_requests`` and the keep-alive timer armed, as when an answer ends.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quick = quick_answer_of(self.app)
        # uvicorn's access log writes a line per answer only when it has handlers and its
        # logger takes INFO (des-http turns it off: it writes its own).
        logs = self.access_log and self.access_logger.isEnabledFor(logging.INFO)
        if logs or self.limit_concurrency is not None or self.root_path:
            quick = None
        self.quick: QuickAnswer | None = quick
        self._quick_done = False  # the current request was answered by the quick path
        self._arm_keep_alive = False
        self._defaults_of: list[tuple[bytes, bytes]] | None = None
        self._defaults: bytes | None = b""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._arm_keep_alive:
            # As uvicorn does when an answer ends and nothing else waits on the connection.
            self._arm_keep_alive = False
            cycle = self.cycle
            if (
                (cycle is None or cycle.response_complete)
                and self.timeout_keep_alive_task is None
                and not self.transport.is_closing()
            ):
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def on_message_begin(self) -> None:
        self._quick_done = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self.quick is not None and self._answer_quickly():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._quick_done:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._quick_done:
            super().on_message_complete()

    def _answer_quickly(self) -> bool:
        """Answer the request whose headers were just read, if the quick path can."""
        cycle = self.cycle
        if (
            self.expect_100_continue
            or not (cycle is None or cycle.response_complete)
            or self.pipeline
            or self.flow.write_paused
            or not self.url.startswith(b"/files/")
        ):
            return False
        parser = self.parser
        method = parser.get_method()
        if (
            method not in (b"GET", b"HEAD")
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
        ):
            return False
        # The scope fields uvicorn's on_headers_complete would set (root_path is empty).
        parsed = httptools.parse_url(self.url)
        raw_path: bytes = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope: Any = self.scope
        scope["method"] = method.decode("ascii")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = parsed.query or b""
        defaults = self.server_state.default_headers
        if defaults is not self._defaults_of:  # a new list each second (the date)
            self._defaults = _encode_defaults(defaults)
            self._defaults_of = defaults
        encoded = self._defaults
        if encoded is None:
            return False  # the ordinary path reports them
        assert self.quick is not None
        try:
            answer = self.quick(scope)  # counted and logged once it is not None
        except Exception:  # noqa: BLE001 - the ordinary path answers (or reports) it
            return False
        if answer is None:
            return False
        headers, body = answer
        parts = [_STATUS_200, encoded]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        if body and method == b"GET":
            parts.append(body)
        self._quick_done = True
        self.transport.write(b"".join(parts))
        self.server_state.total_requests += 1
        self._arm_keep_alive = True
        return True
