"""Structured access logs: one JSON line per request, tagged with a request id that is echoed
in ``X-Request-ID`` (written by the edge, ``_edge``).

Request headers are never logged (bearer tokens never reach a log), and query parameters
that look like secrets (``access_token``, signatures, keys) are logged as ``REDACTED``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = "des_http.access"
REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Query parameters whose values are secrets (tokens, signatures, keys): logged as REDACTED.
_SECRET_PARAMETER = re.compile(
    rb"(token|sig|signature|secret|password|passwd|credential|key|auth|session)", re.IGNORECASE
)
REDACTED = "REDACTED"

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


def redact_query(query: bytes) -> str:
    """The query string for the access log, each secret-looking parameter's value replaced
    by ``REDACTED`` (``?access_token=...``, ``X-Amz-Signature``, ``sig``...)."""
    if b"=" not in query or _SECRET_PARAMETER.search(query) is None:
        return query.decode("latin-1")
    parts = []
    for part in query.split(b"&"):
        name, eq, _value = part.partition(b"=")
        if eq and _SECRET_PARAMETER.search(name) is not None:
            parts.append(name.decode("latin-1") + "=" + REDACTED)
        else:
            parts.append(part.decode("latin-1"))
    return "&".join(parts)


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
    scope: MutableMapping[str, Any],
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
        "query": redact_query(scope.get("query_string", b"")),
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
