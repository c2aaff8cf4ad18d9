"""The edge every HTTP request passes, once: request id, limits, auth, dispatch, access log.

``GET``/``HEAD /files/{uid}`` go to :class:`~des_http._files.FilesEndpoint`; everything else
(batch, delete, health, readiness, metrics, the API document) to the FastAPI app. Either way
the request gets its id (echoed in ``X-Request-ID`` and in problem bodies), the same token
check, and one access-log line.

Limits checked here, before anything is read or looked up: the path and query
(``DES_HTTP_MAX_URL_BYTES``, 414) and a request body (``Content-Length`` above
``DES_MAX_BATCH_BODY_BYTES``: 413 without reading it; a body sent without a length is counted
as it arrives and refused once it passes the limit). The server (``des-http`` runs granian)
bounds the request line and headers (431), the time to send them and idle keep-alive time,
and the requests served at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from des_format import DesFormatError

from ._auth import TokenTable, needed_scope
from ._cors import CorsMiddleware, CorsPolicy
from ._files import FilesEndpoint, Receive, Scope, Send, is_file_request
from ._links import LinkGate, is_link, is_signed_link
from ._logging import log_access, plan_request_id
from ._problems import BodyTooLarge, ServiceError, UriTooLong, problem_message, status_of

log = logging.getLogger("des_http.errors")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Header names the edge reads, in one pass over the request's headers.
_EDGE_HEADERS = {
    b"x-request-id": 0,
    b"authorization": 1,
    b"content-length": 2,
    b"transfer-encoding": 3,
}
# Endpoints whose HEAD is their GET without the body.
_HEAD_AS_GET = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})


class ClientGone(ServiceError):
    """The client disconnected while its request body was read."""


class Edge:
    """See the module's docs. ``general``: the FastAPI app's own ASGI entry."""

    def __init__(
        self,
        *,
        files: FilesEndpoint,
        general: ASGIApp,
        tokens: TokenTable | None,
        retry_after: int,
        max_url_bytes: int,
        max_body_bytes: int,
        server_header: str | None = None,
        link_key: bytes | None = None,
        cors: CorsPolicy | None = None,
    ) -> None:
        self.files = files
        self.general = general
        self.tokens = tokens
        self.retry_after = retry_after
        self.max_url_bytes = max_url_bytes
        self.max_body_bytes = max_body_bytes
        self.extra_headers: tuple[tuple[bytes, bytes], ...] = (
            () if server_header is None else ((b"server", server_header.encode("ascii")),)
        )
        # Signed links (see _links) are checked after the request has its id (a refusal is
        # logged like any answer) and before the token check, which a valid link skips.
        # (_cors and _links type the ASGI callables as Starlette does, MutableMapping where
        # _files says dict: the same callables.)
        self.links = LinkGate(self._checked, link_key)  # type: ignore[arg-type]
        # CORS (see _cors) answers preflights before anything else and adds its headers to
        # every answer for an allowed origin; off (no wrapper) when DES_CORS_ORIGINS is unset.
        self._entry: ASGIApp = (
            self._serve if cors is None else CorsMiddleware(self._serve, cors)  # type: ignore[arg-type,assignment]
        )

    async def send_problem(self, scope: Scope, send: Send, exc: BaseException) -> None:
        """Answer ``exc`` as a problem (logged when it is a fault of the service itself)."""
        if status_of(exc) >= 500 and not isinstance(exc, (DesFormatError, ServiceError)):
            log.error(
                "unexpected error serving %s %s", scope["method"], scope["path"], exc_info=exc
            )
        status, headers, body = problem_message(
            exc,
            retry_after=self.retry_after,
            instance=scope["path"],
            request_id=scope["state"].get("request_id"),
            head=scope["method"] == "HEAD",
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.general(scope, receive, send)
            return
        started = time.perf_counter()
        found: list[bytes | None] = [None, None, None, None]
        for name, value in scope["headers"]:
            slot = _EDGE_HEADERS.get(name)
            if slot is not None and found[slot] is None:
                found[slot] = value
        incoming = found[0]
        request_id = plan_request_id(None if incoming is None else incoming.decode("latin-1"))
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        state["edge_headers"] = found
        added = ((b"x-request-id", request_id.encode("latin-1")), *self.extra_headers)
        status = 0
        sent = 0
        head_as_get = scope["method"] == "HEAD" and scope["path"] in _HEAD_AS_GET

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *added]
            elif message["type"] == "http.response.body":
                if head_as_get:
                    message = {**message, "body": b""}
                sent += len(message.get("body", b""))
            await send(message)

        error: BaseException | None = None
        try:
            if is_link(scope):
                await self.links(scope, receive, send_with_id)  # type: ignore[arg-type]
            else:
                await self._dispatch(scope, receive, send_with_id, found, head_as_get)
        except ClientGone:
            pass
        except BaseException as exc:
            error = exc
            raise
        finally:
            log_access(scope, request_id, status=status, sent=sent, started=started, error=error)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``_dispatch`` for a request the link gate let through (a valid link)."""
        found = scope["state"]["edge_headers"]
        await self._dispatch(scope, receive, send, found, head_as_get=False)

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        found: list[bytes | None],
        head_as_get: bool,
    ) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
        if len(raw_path) + len(scope.get("query_string", b"")) > self.max_url_bytes:
            await self.send_problem(
                scope,
                send,
                UriTooLong(
                    f"the path and query are longer than {self.max_url_bytes} bytes "
                    "(DES_HTTP_MAX_URL_BYTES)"
                ),
            )
            return
        length = found[2]
        if length is not None and not _length_within(length, self.max_body_bytes):
            await self.send_problem(scope, send, self._too_large())
            return
        tokens = self.tokens
        if tokens is not None:
            needed = needed_scope(scope["path"], scope["method"])
            if needed is not None and not is_signed_link(scope):
                authorization = found[1]
                try:
                    record = tokens.authorize(
                        None if authorization is None else authorization.decode("latin-1"),
                        needed,
                    )
                except ServiceError as exc:
                    await self.send_problem(scope, send, exc)
                    return
                scope["state"]["principal"] = record.name
        if is_file_request(scope):
            await self.files(scope, receive, send)
            return
        if length is not None or found[3] is not None:
            body = await self._read_body(receive)
            if body is None:
                await self.send_problem(scope, send, self._too_large())
                return
            receive = _replay(body, receive)
        if head_as_get:
            scope["method"] = "GET"
            try:
                await self.general(scope, receive, send)
            finally:
                scope["method"] = "HEAD"  # as the access log names it
            return
        await self.general(scope, receive, send)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"the request body is larger than {self.max_body_bytes} bytes "
            "(DES_MAX_BATCH_BODY_BYTES); split a batch into several requests"
        )

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is left unread)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _length_within(value: bytes, limit: int) -> bool:
    """Whether a ``Content-Length`` is at most ``limit`` (a malformed one is left to the
    server and the app, which refuse it)."""
    text = value.strip()
    if not text.isdigit():
        return True
    return len(text) <= 19 and int(text) <= limit


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then what the server says (disconnect)."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
