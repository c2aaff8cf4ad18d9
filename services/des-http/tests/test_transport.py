"""The des-http command's uvicorn protocol: writes of one event-loop turn leave in one call,
same bytes in the same order as uvicorn's own protocol sends."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from des_format import LocalObjectStore
from des_http import HttpSettings, create_app
from des_http._transport import FLUSH_BYTES, CoalescingHttpToolsProtocol, CoalescingTransport
from des_http_testkit import DAY, N_BITS, files_url, sample
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


@pytest.fixture
def servers(dataset_dir: Path) -> Iterator[dict[str, int]]:
    """des-http under uvicorn's httptools protocol and under the coalescing one."""
    ports: dict[str, int] = {}
    running: list[tuple[uvicorn.Server, threading.Thread]] = []
    for name, protocol in (
        ("uvicorn", HttpToolsProtocol),
        ("coalescing", CoalescingHttpToolsProtocol),
    ):
        des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
        app = create_app(
            HttpSettings(des=des, stream_threshold_bytes=4096),
            store=LocalObjectStore(dataset_dir),
            registry=CollectorRegistry(),
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        ports[name] = sock.getsockname()[1]
        config = uvicorn.Config(app, http=protocol, access_log=False, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
    for server, _ in running:
        while not server.started:
            threading.Event().wait(0.01)
    yield ports
    for server, thread in running:
        server.should_exit = True
        thread.join(10)


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


def test_same_bytes_as_uvicorns_protocol(servers: dict[str, int]) -> None:
    def get(url: str, extra: str = "", close: bool = False) -> str:
        return (
            f"GET {url} HTTP/1.1\r\nhost: x\r\nx-request-id: same\r\n{extra}"
            + ("connection: close\r\n" if close else "")
            + "\r\n"
        )

    request = (
        get(files_url("1001"))
        + get(files_url("2025"))  # 200 KB, streamed (over stream_threshold_bytes)
        + get(files_url("1257"), "range: bytes=5-20\r\n")
        + get(files_url("4242"))  # 404 problem JSON
        + get(f"/files/1513?created_at={DAY}", close=True)
    ).encode()
    got = {
        name: re.sub(rb"date: [^\r]*\r\n", b"", _exchange(port, request, 5))
        for name, port in servers.items()
    }
    assert got["coalescing"] == got["uvicorn"]
    assert sample("2025").data in got["coalescing"]
