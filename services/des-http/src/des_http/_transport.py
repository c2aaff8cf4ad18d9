"""uvicorn's httptools protocol, with the writes of one turn of the event loop sent together.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``; uvloop sends each
write at once, so a small answer costs two ``send`` system calls (and two segments, two
wake-ups of the client). Here the connection's transport is wrapped so that writes made
before the event loop turns are joined and sent in one call at the end of that turn (or at
once when 64 KiB are waiting): the same bytes in the same order, one system call per answer.
Used by the ``des-http`` command.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Bytes held before they are sent without waiting for the end of the turn.
FLUSH_BYTES = 64 * 1024


class CoalescingTransport:
    """A transport whose ``write`` calls are joined until the event loop's next turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
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
