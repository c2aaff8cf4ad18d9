"""Structured access logs: one JSON line per request, tagged with a request id that is echoed
in ``X-Request-ID`` (written by the edge, ``_edge``).

Request headers are never logged (bearer tokens never reach a log), and query parameters
that look like secrets (``access_token``, signatures, keys) are logged as ``REDACTED``.

Under the service's own logging (:func:`configure_logging`: the CLI, ``des_http:app``) the
access lines bypass the ``logging`` machinery: each line is rendered straight to JSON (the
same text :class:`JsonFormatter` makes of the record) and the lines of one event-loop turn
leave at its end, in writes of whole lines of at most ``PIPE_BUF`` bytes (docs/bench/http.md
measures the CPU it saves); a line is held at most until the loop next runs its ready
callbacks, and whatever is pending at exit is written then. An app embedded elsewhere (no
``configure_logging``) logs through ``logging.getLogger("des_http.access")`` as before.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

ACCESS_LOGGER = "des_http.access"
REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Query parameters whose values are secrets (tokens, signatures, keys): logged as REDACTED.
_SECRET_PARAMETER = re.compile(
    rb"(token|sig|signature|secret|password|passwd|credential|key|auth|session)", re.IGNORECASE
)
REDACTED = "REDACTED"

access_log = logging.getLogger(ACCESS_LOGGER)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
# one value as _encode writes it inside an object (a str: a JSON string)
_quote = json.JSONEncoder(ensure_ascii=False, default=str).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), default=str).encode


class _Timestamps:
    """``2024-01-01T00:00:00.123+00:00`` (what ``datetime.isoformat(timespec=
    "milliseconds")`` writes in UTC) for a ``time.time()`` value or, cheaper
    (:meth:`of_ns`, the part up to the second made once per second), a ``time.time_ns()``
    one."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def _prefix_of(self, second: int) -> str:
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return self._prefix

    def __call__(self, created: float) -> str:
        return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")

    def of_ns(self, ns: int) -> str:
        second, rest = divmod(ns, 1_000_000_000)
        return f"{self._prefix_of(second)}.{rest // 1_000_000:03d}+00:00"


format_ts = _Timestamps()


class JsonFormatter(logging.Formatter):
    """Renders a record as one JSON object; ``record.fields`` (a dict) is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": format_ts(record.created),
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
        return _encode(out)


class AccessSink:
    """Where the access lines go under :func:`configure_logging`: rendered here, gathered
    for the current event-loop turn and written to ``stream`` in one write when the turn
    ends (at once when no loop runs); see the module's docs."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []

    def append(self, line: str) -> None:
        """Add one rendered line (a JSON object without its ``ts``, which is put first)."""
        lines = self._lines
        lines.append(f'{{"ts":"{format_ts.of_ns(time.time_ns())}",{line[1:]}')
        if len(lines) > 1:
            return  # a flush is already due at the end of this turn
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop: write now
            self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            for chunk in whole_line_chunks(lines):
                try:
                    self.stream.write(chunk)
                except UnicodeEncodeError:  # a character the stream cannot encode: the
                    # lines again, every non-ASCII character as a JSON \u escape
                    again = [_encode_ascii(json.loads(line)) for line in chunk.splitlines()]
                    self.stream.write("\n".join(again) + "\n")
                self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout: as logging's handlers do
            pass


# What one write to a pipe may carry and still arrive whole (POSIX PIPE_BUF, 4096 on Linux):
# the workers of one service share the container's stdout pipe, and a longer write could
# interleave with another worker's in the middle of a line.
PIPE_BUF = 4096


def whole_line_chunks(lines: list[str]) -> list[str]:
    """``lines`` (without their newlines) as texts of whole lines, each at most
    :data:`PIPE_BUF` bytes in UTF-8 (a longer line alone in its text, as it was written
    before lines were gathered)."""
    text = "\n".join(lines) + "\n"
    if len(text) <= PIPE_BUF and text.isascii():
        return [text]
    chunks: list[str] = []
    part: list[str] = []
    size = 0
    for line in lines:
        n = (len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))) + 1
        if part and size + n > PIPE_BUF:
            chunks.append("\n".join(part) + "\n")
            part, size = [], 0
        part.append(line)
        size += n
    if part:
        chunks.append("\n".join(part) + "\n")
    return chunks


class _Route:
    """The access lines' way out: ``sink`` once :func:`configure_logging` ran, else None
    (through ``logging``)."""

    sink: AccessSink | None = None


_route = _Route()


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send the service's logs to ``stream`` (stdout) as JSON lines (used by the CLI and
    ``des_http:app``); access lines through :class:`AccessSink`."""
    out = sys.stdout if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("des_http")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if _route.sink is not None:
        _route.sink.flush()
        atexit.unregister(_route.sink.flush)
    _route.sink = AccessSink(out)
    atexit.register(_route.sink.flush)  # the lines of the last loop turn
    # Our access log replaces uvicorn's plain-text one.
    logging.getLogger("uvicorn.access").disabled = True


def redact_query(query: bytes) -> str:
    """The query string for the access log, each secret-looking parameter's value replaced
    by ``REDACTED`` (``?access_token=...``, ``X-Amz-Signature``, ``sig``...)."""
    if (
        b"=" not in query
        or (query.startswith(b"created_at=") and b"&" not in query)  # the usual query
        or _SECRET_PARAMETER.search(query) is None
    ):
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
    query = redact_query(scope.get("query_string", b""))
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    client = (scope.get("client") or ("", 0))[0]
    principal = scope["state"].get("principal")
    sink = _route.sink
    if sink is not None:  # the line JsonFormatter would make of the record below, built here
        line = (
            f'{{"level":"info","logger":"{ACCESS_LOGGER}","event":"access",'
            f'"request_id":{_quote(request_id)},"method":{_quote(scope["method"])},'
            f'"path":{_quote(scope["path"])},"query":{_quote(query)},'
            f'"status":{status or 500},"bytes":{sent},"duration_ms":{duration_ms!r},'
            f'"client":{_quote(client)}'
        )
        if principal:
            line += f',"principal":{_quote(principal)}'
        if error is not None:
            line += f',"error":{_quote(type(error).__name__)}'
        sink.append(line + "}")
        return
    fields: dict[str, Any] = {
        "event": "access",
        "request_id": request_id,
        "method": scope["method"],
        "path": scope["path"],
        "query": query,
        "status": status or 500,
        "bytes": sent,
        "duration_ms": duration_ms,
        "client": client,
    }
    if principal:
        fields["principal"] = principal
    if error is not None:
        fields["error"] = type(error).__name__
    access_log.info("access", extra={"fields": fields})
