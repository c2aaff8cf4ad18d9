"""An HTTP proxy on 127.0.0.1 that counts requests and bytes and injects faults.

Point a client's ``endpoint_url`` at :attr:`FaultProxy.url`; every request is forwarded to the
upstream server (e.g. the moto S3 server) and recorded (method, path, Range header, status,
bytes each way). Faults are queued with :meth:`FaultProxy.inject` and consumed by the next
matching requests, in order:

- ``"slowdown"``: answer 503 SlowDown without asking upstream;
- ``"error500"``: answer 500 InternalError without asking upstream;
- ``"reset"``: read the request, then reset the connection (no answer at all);
- ``"truncate"``: forward, then send the full headers but only part of the body and close;
- ``"lost_answer"``: forward (the server does the work), then reset the connection without
  answering (an answer lost on the way back: the client retries a request that succeeded);
- ``"slow"``: wait ``delay`` seconds before forwarding (client timeouts);
- ``"ignore_range"``: drop the Range header before forwarding (the answer is the whole
  object with status 200, as from a server or proxy that ignores ranges);
- ``"bad_content_range"``: forward, then answer the right body under a ``Content-Range``
  shifted by one byte (a broken cache or proxy in between);
- ``"no_etag"``: forward, then answer without the ``ETag`` header (a server or proxy that
  drops it);
- ``"garble"``: forward, then answer the same status with a body that is not XML (a server
  or proxy that answers something other than S3).

:meth:`FaultProxy.chaos` turns faults on at random for a share of all requests.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = (
    "slowdown",
    "error500",
    "reset",
    "truncate",
    "lost_answer",
    "slow",
    "ignore_range",
    "bad_content_range",
    "no_etag",
    "garble",
)

_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


class _QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-answer (timeouts, refused whole objects) are expected here."""

    def handle_error(self, request: object, client_address: object) -> None:
        return


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as seen on the wire between client and proxy."""

    method: str
    path: str
    query: str
    range: str | None
    headers: dict[str, str]
    status: int | None
    bytes_in: int
    bytes_out: int
    fault: str | None = None

    @property
    def key(self) -> str:
        """The path without its leading '/' (for path-style S3: ``bucket/key``)."""
        return urllib.parse.unquote(self.path.lstrip("/"))


Matcher = Callable[[str, str, dict[str, str]], bool]


@dataclass
class Fault:
    kind: str
    times: int = 1
    match: Matcher | None = None
    delay: float = 1.0
    keep_fraction: float = 0.5


@dataclass
class FaultProxy:
    """A threaded forwarding proxy; use as a context manager or call start()/stop()."""

    upstream: str
    requests: list[RecordedRequest] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        proxy = self
        up = urllib.parse.urlsplit(self.upstream)
        up_host, up_port = up.hostname or "127.0.0.1", up.port or 80

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        line = self.rfile.readline()
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length", "0") or "0")
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items()}
                fault = proxy._take_fault(self.command, self.path, headers)
                kind = fault.kind if fault else None
                split = urllib.parse.urlsplit(self.path)
                rng = self.headers.get("Range")

                def record(status: int | None, out: int) -> None:
                    with proxy._lock:
                        proxy.requests.append(
                            RecordedRequest(
                                self.command,
                                split.path,
                                split.query,
                                rng,
                                headers,
                                status,
                                len(body),
                                out,
                                kind,
                            )
                        )

                if kind in ("slowdown", "error500"):
                    status, code = (503, "SlowDown") if kind == "slowdown" else (500, "Internal")
                    code = code if kind == "slowdown" else "InternalError"
                    xml = (
                        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
                        f"{code}</Code><Message>injected by FaultProxy</Message></Error>"
                    ).encode()
                    record(status, len(xml))
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                if kind == "reset":
                    record(None, 0)
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind == "slow" and fault is not None:
                    record(None, 0)  # recorded on arrival: the client may give up waiting
                    time.sleep(fault.delay)
                fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP}
                if kind == "ignore_range":
                    fwd = {k: v for k, v in fwd.items() if k.lower() != "range"}
                fwd = {k: v for k, v in fwd.items() if k.lower() != "content-length"}
                if body or self.command in ("PUT", "POST"):
                    fwd["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(up_host, up_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=fwd)
                    resp = conn.getresponse()
                    data = resp.read()
                    resp_headers = resp.getheaders()
                    status = resp.status
                finally:
                    conn.close()
                if kind == "lost_answer":
                    record(None, 0)
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                out = data
                if self.command == "HEAD":
                    out = b""
                elif kind == "truncate" and fault is not None:
                    out = data[: int(len(data) * fault.keep_fraction)]
                elif kind == "garble":
                    data = out = b"<html>not what S3 answers</html"
                # Record before answering, so a client that got its answer sees the count.
                if kind != "slow":
                    record(status, len(out))
                self.send_response(status)
                length_sent = False
                for k, v in resp_headers:
                    if k.lower() in _HOP or (kind == "no_etag" and k.lower() == "etag"):
                        continue
                    if k.lower() == "content-range" and kind == "bad_content_range":
                        self.send_header(k, _shift_content_range(v))
                        continue
                    if k.lower() == "content-length":
                        if self.command == "HEAD":
                            self.send_header(k, v)
                            length_sent = True
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                elif not length_sent:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if out:
                    self.wfile.write(out)
                    self.wfile.flush()
                if kind == "truncate":
                    self.close_connection = True
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and counters -----------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        times: int = 1,
        match: Matcher | None = None,
        method: str | None = None,
        delay: float = 1.0,
        keep_fraction: float = 0.5,
    ) -> None:
        """Queue a fault for the next ``times`` requests that match (``method`` and/or
        ``match(method, path, headers)``).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; use one of {FAULT_KINDS}")
        user = match

        def matcher(m: str, p: str, h: dict[str, str]) -> bool:
            if method is not None and m != method:
                return False
            return user is None or user(m, p, h)

        with self._lock:
            self._faults.append(Fault(kind, times, matcher, delay, keep_fraction))

    def chaos(
        self,
        rate: float,
        kinds: tuple[str, ...] = ("slowdown", "error500", "reset", "truncate"),
        *,
        seed: int = 0,
        method: str | None = None,
        delay: float = 0.2,
    ) -> None:
        """From now on, fail a random ``rate`` share of the requests (that match ``method``)
        with a kind drawn uniformly from ``kinds`` (seeded: the same draws every run)."""
        import random

        rnd = random.Random(seed)
        lock = threading.Lock()
        chosen: list[str | None] = [None]

        def draw(m: str, p: str, h: dict[str, str]) -> bool:
            with lock:
                chosen[0] = rnd.choice(kinds) if rnd.random() < rate else None
            return False

        def pick(kind: str) -> Matcher:
            return lambda m, p, h: chosen[0] == kind

        # The first (never matching) fault draws once per request; the others take the draw.
        with self._lock:
            self._faults.append(Fault("slowdown", 1 << 62, _and_method(method, draw)))
            for kind in kinds:
                self._faults.append(
                    Fault(kind, 1 << 62, _and_method(method, pick(kind)), delay=delay)
                )

    def _take_fault(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.times > 0 and (f.match is None or f.match(method, path, headers)):
                    f.times -= 1
                    if f.times == 0:
                        self._faults.remove(f)
                    return f
        return None

    def clear(self) -> None:
        """Forget recorded requests and pending faults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def count(self, method: str | None = None) -> int:
        return sum(1 for r in self.snapshot() if method is None or r.method == method)

    def bytes_out(self) -> int:
        return sum(r.bytes_out for r in self.snapshot())

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.times for f in self._faults)


def _and_method(method: str | None, match: Matcher) -> Matcher:
    def matcher(m: str, p: str, h: dict[str, str]) -> bool:
        return (method is None or m == method) and match(m, p, h)

    return matcher


def _shift_content_range(value: str) -> str:
    """``bytes a-b/n`` -> ``bytes a+1-b+1/n`` (unparseable values are returned unchanged)."""
    unit, _, rest = value.partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    if not (first.isdigit() and last.isdigit()):
        return value
    return f"{unit} {int(first) + 1}-{int(last) + 1}/{total}"
