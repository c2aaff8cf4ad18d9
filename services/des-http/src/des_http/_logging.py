"""Structured access logs: one JSON line per request, tagged with a request id that is echoed
in ``X-Request-ID``.

The middleware is plain ASGI (no per-request task or body buffering, so streamed files stay
streamed). It never logs request headers, so bearer tokens never reach a log.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "des_http.access"
REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

access_log = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    """Renders a record as one JSON object; ``record.fields`` (a dict) is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


def configure_logging(level: str) -> None:
    """Send the service's logs to stdout as JSON lines (used by the CLI and ``des_http:app``)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("des_http")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Our access log replaces uvicorn's plain-text one.
    logging.getLogger("uvicorn.access").disabled = True


def plan_request_id(incoming: str | None) -> str:
    """Keep a caller's well-formed ``X-Request-ID``; otherwise make a fresh one."""
    if incoming and _VALID_REQUEST_ID.match(incoming):
        return incoming
    return _fresh_request_id()


class _RequestIds:
    """Fresh request ids: 32 hex digits (as a uuid4's hex), a random per-process prefix and
    a counter, unique without a system call per request (a forked child draws a new
    prefix)."""

    def __init__(self) -> None:
        self._prefix = ""
        self._counter = itertools.count()
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_fresh_request_id = _RequestIds()


def log_access(
    scope: Scope,
    request_id: str,
    *,
    status: int,
    sent: int,
    started: float,
    error: BaseException | None,
) -> None:
    """Write the access-log line of one request (when the access log is on)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "event": "access",
        "request_id": request_id,
        "method": scope["method"],
        "path": scope["path"],
        "query": scope.get("query_string", b"").decode("latin-1"),
        "status": status or 500,
        "bytes": sent,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "client": (scope.get("client") or ("", 0))[0],
    }
    principal = scope["state"].get("principal")
    if principal:
        fields["principal"] = principal
    if error is not None:
        fields["error"] = type(error).__name__
    access_log.info("access", extra={"fields": fields})


class AccessLogMiddleware:
    """Outermost middleware: request id in, ``X-Request-ID`` out, one access-log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        await self.serve(scope, receive, send, plan_request_id(incoming), started)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, started: float
    ) -> None:
        """Run the app for an http request whose id is chosen, and log it."""
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        status = 0
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            log_access(scope, request_id, status=status, sent=sent, started=started, error=error)
