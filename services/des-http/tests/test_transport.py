"""The des-http command's uvicorn protocols: writes of one event-loop turn leave in one call,
and warm file answers are written from the parser's callback; the same bytes in the same order
as uvicorn's own protocol sends, the same counters."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from des_format import LocalObjectStore
from des_http import HttpSettings, create_app, parse_token_file
from des_http._logging import JsonFormatter
from des_http._transport import (
    FLUSH_BYTES,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
    DesHttpToolsProtocol,
    _encode_defaults,
    quick_answer_of,
)
from des_http_testkit import DAY, N_BITS, counters, files_url, sample
from des_routing import DesSettings
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def test_writes_of_one_turn_leave_together() -> None:
    async def run() -> list[Any]:
        inner = FakeTransport()
        t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(bytearray(b"body"))
        assert inner.calls == []
        assert t.get_write_buffer_size() == 23
        assert t.is_closing() is False  # everything else is the transport's
        await asyncio.sleep(0)
        assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
        t.write(b"x" * (FLUSH_BYTES - 1))
        t.write(b"yz")  # 64 KiB waiting: sent at once
        assert inner.calls[1:] == [("write", b"x" * (FLUSH_BYTES - 1) + b"yz")]
        t.write(b"last")
        t.close()  # what waits is sent before the close
        t.write(b"dropped")
        t.abort()
        await asyncio.sleep(0)
        t.write(b"after the client left")
        inner.closing = True
        await asyncio.sleep(0)
        assert t.get_write_buffer_size() == 0
        return inner.calls[2:]

    assert asyncio.run(run()) == [("write", b"last"), "close", "abort"]


class CountingProtocol(DesHttpToolsProtocol):
    """``DesHttpToolsProtocol`` that counts the requests its quick path answered."""

    quick_answers = 0

    def _answer_quickly(self) -> bool:
        answered = super()._answer_quickly()
        if answered:
            type(self).quick_answers += 1
        return answered


def test_a_failing_write_does_not_hold_back_other_connections() -> None:
    """The turn's flush sends every connection's writes even when one transport's write
    raises (reported to the loop's exception handler)."""

    class Broken(FakeTransport):
        def write(self, data: bytes) -> None:
            raise ConnectionResetError("gone")

    async def run() -> tuple[list[Any], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        good = FakeTransport()
        first = CoalescingTransport(Broken(), loop)  # type: ignore[arg-type]
        second = CoalescingTransport(good, loop)  # type: ignore[arg-type]
        first.write(b"a")
        second.write(b"b")
        await asyncio.sleep(0)
        second.write(b"c")  # a later turn flushes again
        await asyncio.sleep(0)
        return good.calls, reported

    calls, reported = asyncio.run(run())
    assert calls == [("write", b"b"), ("write", b"c")]
    assert [type(c["exception"]) for c in reported] == [ConnectionResetError]


@dataclass
class Running:
    port: int
    server: uvicorn.Server
    registry: CollectorRegistry


PROTOCOLS: dict[str, Any] = {
    "uvicorn": HttpToolsProtocol,
    "coalescing": CoalescingHttpToolsProtocol,
    "des": CountingProtocol,
}


def _start(
    dataset_dir: Path, protocol: Any, tokens: str | None = None, **config: Any
) -> tuple[Running, threading.Thread]:
    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
    registry = CollectorRegistry()
    app = create_app(
        HttpSettings(des=des, stream_threshold_bytes=4096),
        store=LocalObjectStore(dataset_dir),
        registry=registry,
        tokens=None if tokens is None else parse_token_file(tokens),
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    options = {"access_log": False, "log_level": "warning", **config}
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    return Running(sock.getsockname()[1], server, registry), thread


@pytest.fixture
def running(dataset_dir: Path) -> Iterator[dict[str, Running]]:
    """des-http under uvicorn's httptools protocol, the coalescing one and des-http's own
    (the last counting its quick answers), each over its own app and metrics."""
    CountingProtocol.quick_answers = 0
    started = {name: _start(dataset_dir, protocol) for name, protocol in PROTOCOLS.items()}
    yield {name: r for name, (r, _) in started.items()}
    for r, thread in started.values():
        r.server.should_exit = True
        thread.join(10)


@pytest.fixture
def servers(running: dict[str, Running]) -> dict[str, int]:
    return {name: r.port for name, r in running.items()}


def _exchange(port: int, request: bytes, answers: int) -> bytes:
    """Send ``request`` (several pipelined requests) and read until ``answers`` responses have
    ended (the last one closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.count(b"HTTP/1.1 ") >= answers
    return out


def _normal(raw: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", raw)


def _get(url: str, extra: str = "", close: bool = False, method: str = "GET") -> str:
    return (
        f"{method} {url} HTTP/1.1\r\nhost: x\r\nx-request-id: same\r\n{extra}"
        + ("connection: close\r\n" if close else "")
        + "\r\n"
    )


def _warm_up(servers: dict[str, int]) -> None:
    """Every sample shard's index cached in every server (HEADs: the ordinary path, cold)."""
    request = "".join(_get(files_url(uid), method="HEAD") for uid in WARM_UIDS)
    request += _get("/health", close=True)
    for port in servers.values():
        _exchange(port, request.encode(), len(WARM_UIDS) + 1)


WARM_UIDS = ["1001", "1257", "1513", "1769", "2025", "doc-\u00e9t\u00e9"]
CLOSE = _get("/health", close=True)


def test_same_bytes_as_uvicorns_protocol(running: dict[str, Running]) -> None:
    servers = {name: r.port for name, r in running.items()}
    request = (
        _get(files_url("1001"))
        + _get(files_url("2025"))  # 200 KB, streamed (over stream_threshold_bytes)
        + _get(files_url("1257"), "range: bytes=5-20\r\n")
        + _get(files_url("4242"))  # 404 problem JSON
        + _get(f"/files/1513?created_at={DAY}", close=True)
    ).encode()
    for _ in range(2):  # cold, then warm: the quick path answers some the second time
        got = {name: _normal(_exchange(port, request, 5)) for name, port in servers.items()}
        assert got["coalescing"] == got["uvicorn"]
        assert got["des"] == got["uvicorn"]
    assert sample("2025").data in got["des"]
    assert CountingProtocol.quick_answers >= 1
    assert counters(running["des"].registry) == counters(running["uvicorn"].registry)


# (request, whether the quick path answers it), each sent on its own connection with warm
# indexes, then a request that closes the connection.
CASES: list[tuple[str, str, int]] = [
    ("plain GET", _get(files_url("1001")), 1),
    ("HEAD", _get(files_url("1257"), method="HEAD"), 1),
    ("empty file", _get(files_url("1769")), 1),
    ("created_at escaped", _get(f"/files/1513?created_at={quote(DAY, safe='')}"), 1),
    ("uid escaped", _get(files_url("doc-\u00e9t\u00e9")), 1),
    ("caller's request id", _get(files_url("1001"), "x-request-id: trace-7\r\n"), 1),
    ("streamed", _get(files_url("2025")), 0),
    ("HTTP/1.0", _get(files_url("1001")).replace("HTTP/1.1", "HTTP/1.0", 1), 0),
    ("connection: close", _get(files_url("1001"), close=True), 0),
    ("Range", _get(files_url("1001"), "range: bytes=0-4\r\n"), 0),
    ("If-None-Match", _get(files_url("1001"), 'if-none-match: "x"\r\n'), 0),
    ("proxy header", _get(files_url("1001"), "x-forwarded-for: 10.1.2.3\r\n"), 0),
    ("body", _get(files_url("1001"), "content-length: 3\r\n") + "abc", 0),
    ("chunked body", _get(files_url("1001"), "transfer-encoding: chunked\r\n") + "0\r\n\r\n", 0),
    ("expect", _get(files_url("1001"), "expect: 100-continue\r\n"), 0),
    ("absolute URL", _get(f"http://x{files_url('1001')}"), 0),
    ("not there", _get(files_url("4242")), 0),
    ("deleted", _get(files_url("2281")), 0),
    ("bad created_at", _get("/files/1001?created_at=yesterday"), 0),
    ("two parameters", _get(files_url("1001") + "&x=1"), 0),
    ("POST", _get(files_url("1001"), "content-length: 0\r\n", method="POST"), 0),
    ("other path", _get("/ready"), 0),
]


def test_quick_path_answers_only_plain_warm_requests(
    running: dict[str, Running], caplog: pytest.LogCaptureFixture
) -> None:
    """Each case: the same bytes, access-log lines and counters from all three protocols,
    and the quick path taken exactly when expected."""
    servers = {name: r.port for name, r in running.items()}
    _warm_up(servers)
    caplog.set_level(logging.INFO, logger="des_http.access")
    for label, request, quick in CASES:
        got: dict[str, tuple[bytes, list[dict[str, Any]]]] = {}
        for name, port in servers.items():
            before = CountingProtocol.quick_answers
            caplog.clear()
            raw = _normal(_exchange(port, (request + CLOSE).encode(), 1))
            lines = [
                json.loads(JsonFormatter().format(r))
                for r in caplog.records
                if r.name == "des_http.access"
            ]
            for line in lines:
                assert line.pop("duration_ms") >= 0
                line.pop("ts")
            got[name] = (raw, lines)
            taken = CountingProtocol.quick_answers - before
            assert taken == (quick if name == "des" else 0), label
        assert got["des"] == got["uvicorn"], label
        assert got["coalescing"] == got["uvicorn"], label
        assert got["des"][1], label  # the access log saw the request
    assert counters(running["des"].registry) == counters(running["uvicorn"].registry)
    stats = {name: r.server.server_state.total_requests for name, r in running.items()}
    assert stats["des"] == stats["uvicorn"]


def _read_answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return body


def test_keep_alive_timeout_after_quick_answers(dataset_dir: Path) -> None:
    """After a quick answer the connection stays open for more requests, and is closed once
    idle for timeout_keep_alive, as after any answer."""
    before = CountingProtocol.quick_answers
    r, thread = _start(dataset_dir, CountingProtocol, timeout_keep_alive=1)
    try:
        _warm_up({"des": r.port})
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(_get(files_url("1001")).encode())
                assert _read_answer(sock) == sample("1001").data
                time.sleep(0.4)  # under the timeout: still open
            idle = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server
            waited = time.monotonic() - idle
        assert 0.4 <= waited < 5
        assert CountingProtocol.quick_answers - before == 3
    finally:
        r.server.should_exit = True
        thread.join(10)


def test_quick_path_only_where_uvicorn_would_do_nothing_more(dataset_dir: Path) -> None:
    """The protocol finds the app's quick path through uvicorn's proxy-headers middleware,
    not through other wrappers, and leaves it off with uvicorn's access log, a concurrency
    limit or a root path."""
    from uvicorn.middleware.message_logger import MessageLoggerMiddleware
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
    app: Any = create_app(HttpSettings(des=des), registry=CollectorRegistry())
    assert app.quick_answer is not None
    assert quick_answer_of(app) == app.quick_answer
    assert quick_answer_of(ProxyHeadersMiddleware(app)) == app.quick_answer
    assert quick_answer_of(MessageLoggerMiddleware(app)) is None
    logged: Any = MessageLoggerMiddleware(app)
    assert quick_answer_of(ProxyHeadersMiddleware(logged)) is None
    no_nowait = create_app(HttpSettings(des=des, nowait_reads=False), registry=CollectorRegistry())
    assert quick_answer_of(no_nowait) is None

    def protocol(**options: Any) -> DesHttpToolsProtocol:
        config = uvicorn.Config(app, **{"log_level": "warning", **options})
        config.load()
        loop = asyncio.new_event_loop()
        try:
            return DesHttpToolsProtocol(
                config=config, server_state=uvicorn.server.ServerState(), app_state={}, _loop=loop
            )
        finally:
            loop.close()

    assert protocol(access_log=False).quick is not None
    assert protocol(access_log=False, proxy_headers=False).quick is not None
    assert protocol(access_log=True, log_level="info").quick is None
    assert protocol(access_log=True, log_level="warning").quick is not None  # writes nothing
    assert protocol(access_log=False, limit_concurrency=10).quick is None
    assert protocol(access_log=False, root_path="/des").quick is None


def test_configured_headers_as_uvicorn_writes_them(dataset_dir: Path) -> None:
    """uvicorn's own headers (``--header``, with a name in capitals) in a quick answer, as
    uvicorn's send writes them; a default header uvicorn would refuse sends the request to
    uvicorn's path."""
    assert _encode_defaults([(b"date", b"now"), (b"X-Served-By", b"des-1")]) == (
        b"date: now\r\nx-served-by: des-1\r\n"
    )
    assert _encode_defaults([(b"x-bad", b"a\nb")]) is None
    assert _encode_defaults([(b"bad name", b"x")]) is None
    # A refused default header: the quick path is not asked (nothing counted twice).
    asked: list[Any] = []

    class Probe(DesHttpToolsProtocol):
        def __init__(self) -> None:  # only what _answer_quickly reads
            self.quick = asked.append
            self.server_state = uvicorn.server.ServerState()
            self.server_state.default_headers = [(b"x-bad", b"a\nb")]
            self._defaults_of = None
            self._defaults = b""
            self.expect_100_continue = False
            self.cycle = None  # type: ignore[assignment]
            self.pipeline = deque()
            self.flow = type("F", (), {"write_paused": False})()
            self.url = files_url("1001").encode()
            self.scope = {"headers": []}  # type: ignore[typeddict-item]
            self.parser = type(
                "P",
                (),
                {
                    "get_method": lambda _self: b"GET",
                    "get_http_version": lambda _self: "1.1",
                    "should_keep_alive": lambda _self: True,
                    "should_upgrade": lambda _self: False,
                },
            )()

    assert Probe()._answer_quickly() is False
    assert asked == []
    before = CountingProtocol.quick_answers
    started = [
        _start(dataset_dir, protocol, headers=[("X-Served-By", "des-1")])
        for protocol in (HttpToolsProtocol, CountingProtocol)
    ]
    try:
        ports = {"uvicorn": started[0][0].port, "des": started[1][0].port}
        _warm_up(ports)
        request = (_get(files_url("1001")) + CLOSE).encode()
        got = {name: _normal(_exchange(port, request, 2)) for name, port in ports.items()}
        assert got["des"] == got["uvicorn"]
        assert b"\r\nx-served-by: des-1\r\n" in got["des"]
        assert CountingProtocol.quick_answers - before == 1
    finally:
        for r, thread in started:
            r.server.should_exit = True
            thread.join(10)


def test_a_miss_on_the_quick_path_is_not_looked_up_again(dataset_dir: Path) -> None:
    """A cold GET: the quick path's read without I/O finds nothing and marks the request, so
    the ordinary path goes straight to the I/O threads (one lookup without I/O, not two)."""
    r, thread = _start(dataset_dir, CountingProtocol)
    try:
        app: Any = r.server.config.app
        service = app.state.des
        calls: list[str] = []
        read_nowait = service.read_nowait

        def counted(key: str, uid: str, only_if: Any) -> Any:
            calls.append(uid)
            return read_nowait(key, uid, only_if)

        service.read_nowait = counted
        request = (_get(files_url("1513")) + CLOSE).encode()
        assert sample("1513").data in _exchange(r.port, request, 2)  # cold: the index is read
        assert calls == ["1513"]
        assert sample("1513").data in _exchange(r.port, request, 2)  # warm: quick
        assert calls == ["1513", "1513"]
    finally:
        r.server.should_exit = True
        thread.join(10)


def test_tokens_on_the_quick_path(dataset_dir: Path) -> None:
    """With bearer tokens on, a warm GET with a good read token is answered quickly; a missing,
    unknown or malformed token goes to uvicorn's path (401), with the same bytes as
    uvicorn's protocol gives."""
    import hashlib

    token, other = "transport-token", "wrong-token"
    table = f"read sha256:{hashlib.sha256(token.encode()).hexdigest()} app\n"
    before = CountingProtocol.quick_answers
    started = [
        _start(dataset_dir, protocol, tokens=table)
        for protocol in (HttpToolsProtocol, CountingProtocol)
    ]
    try:
        ports = {"uvicorn": started[0][0].port, "des": started[1][0].port}
        auth = f"authorization: Bearer {token}\r\n"
        warm = "".join(_get(files_url(uid), auth, method="HEAD") for uid in WARM_UIDS)
        for port in ports.values():
            _exchange(port, (warm + _get("/health", close=True)).encode(), len(WARM_UIDS))
        cases = [
            (_get(files_url("1001"), auth), 1),
            (_get(files_url("1001")), 0),
            (_get(files_url("1001"), f"authorization: Bearer {other}\r\n"), 0),
            (_get(files_url("1257"), "authorization: Basic eDp5\r\n", method="HEAD"), 0),
        ]
        for request, quick in cases:
            start = CountingProtocol.quick_answers
            got = {
                name: _normal(_exchange(port, (request + CLOSE).encode(), 1))
                for name, port in ports.items()
            }
            assert got["des"] == got["uvicorn"], request
            assert CountingProtocol.quick_answers - start == quick, request
        assert CountingProtocol.quick_answers - before == 1
    finally:
        for r, thread in started:
            r.server.should_exit = True
            thread.join(10)
