"""Hostile clients against the real server process (``des-http``: granian, one worker).

Each test sends one kind of abuse and checks the answer (a 4xx or a closed connection), the
growth of the server's resident memory (read from /proc, the server and its worker summed)
within the issue's bounds, and that ``/health`` answers meanwhile. Time bounds are loose
(seconds): they only keep a broken server from hanging the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from des_format import LocalFileSource, read_index
from des_http_testkit import SampleFile, object_key, write_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "testing"))
from des_testing import free_port, stop_process

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

MiB = 1 << 20
TEXT_DAY = "2024-05-01T00:00:00Z"
BOMB_DAY = "2024-05-02T00:00:00Z"
HEADER_TIMEOUT = 2
BOMB_LINES = 32_000  # the bomb's entry: 32,000 lines of 65 bytes


def _text(n: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"line %08d: the quick brown fox jumps over the lazy dog %d\n" % (i, i * 7919)
        i += 1
    return bytes(out[:n])


def _forge_bomb(base: Path, uid: str) -> None:
    """Replace ``uid``'s stored bytes with a zstd frame that expands to 1 GiB (no size in its
    header), padded with a skippable frame to the entry's stored size."""
    import zstandard

    sample = SampleFile(uid, BOMB_DAY, b"")
    path = base / object_key(sample)
    entry = read_index(LocalFileSource(path)).lookup(uid)
    assert entry is not None
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    zeros = bytes(16 * MiB)
    bomb = b"".join([*(cobj.compress(zeros) for _ in range(64)), cobj.flush()])
    pad = entry.stored_size - len(bomb) - 8
    assert pad >= 0, (entry.stored_size, len(bomb))
    forged = bomb + b"\x50\x2a\x4d\x18" + pad.to_bytes(4, "little") + bytes(pad)
    with open(path, "r+b") as fh:
        fh.seek(entry.offset)
        fh.write(forged)


@pytest.fixture(scope="module")
def hostile_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    # 2 MiB of hex lines: compressible (stored with zstd), bigger than the bomb frame
    legit = b"".join(b"%064x\n" % (i * 2654435761) for i in range(BOMB_LINES))
    files = (
        SampleFile("big-text", TEXT_DAY, _text(10 * MiB), "big.txt"),
        SampleFile("small", TEXT_DAY, b"small file\n"),
        SampleFile("bomb", BOMB_DAY, legit, "bomb.txt"),
    )
    write_dataset(base, files)
    _forge_bomb(base, "bomb")
    return base


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def pids(self) -> list[int]:
        """The server and every process below it (granian's workers)."""
        found = [self.proc.pid]
        for pid in found:
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = (task / "children").read_text().split()
                found.extend(int(c) for c in children)
        return found

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def request(self, raw: bytes) -> bytes:
        """Send ``raw``, read the whole answer (the server closes, or Content-Length)."""
        with self.connect() as sock:
            sock.sendall(raw)
            return _read_answer(sock)

    def health(self) -> int:
        started = time.monotonic()
        answer = self.request(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert time.monotonic() - started < 10  # loose: it answers, not stalled behind abuse
        return _status(answer)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer[9:12])


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data


def _start_server(data: Path, log: Path, **extra: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DES_")}
    env.update(
        DES_BACKEND="local",
        DES_BASE_DIR=str(data),
        DES_N_BITS="8",
        DES_HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        DES_LOG_LEVEL="WARNING",
        **extra,
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["des-http", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    srv = Server(proc, port, log)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if srv.health() == 200:
                return srv
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _stop(srv: Server) -> None:
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def server(hostile_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start_server(hostile_data, tmp_path_factory.mktemp("hostile-log") / "server.log")
    yield srv
    _stop(srv)


def _url(uid: str, created_at: str) -> bytes:
    return f"/files/{quote(uid, safe='')}?created_at={quote(created_at, safe='')}".encode()


def test_huge_headers_are_refused_before_the_app_reads_them(server: Server) -> None:
    before = server.rss()
    header = b"X-Junk: " + b"a" * (16 * MiB) + b"\r\n"
    socks = []
    answers = []
    for _ in range(10):
        sock = server.connect()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        socks.append(sock)
    for sock in socks:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(header + b"\r\n")  # may be refused while sending: closed
        answers.append(_read_answer(sock))
        assert server.health() == 200
    for sock in socks:
        sock.close()
    for answer in answers:  # 431, or the connection closed without an answer
        assert answer == b"" or _status(answer) == 431, answer[:80]
    assert server.rss() - before < 64 * MiB


def test_long_request_lines_are_414(server: Server) -> None:
    # past the server's buffer (DES_HTTP_MAX_HEADER_BYTES, 64 KiB: the request line counts
    # too), refused by the server itself; past DES_HTTP_MAX_URL_BYTES (8 KiB) but within the
    # buffer, by the edge with a problem JSON
    answer = server.request(b"GET /files/" + b"u" * 200_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _status(answer) in (414, 431), answer[:200]
    answer = server.request(b"GET /files/" + b"u" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _status(answer) == 414, answer[:200]
    answer = server.request(
        b"GET /files/x?created_at=" + b"1" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert _status(answer) == 414
    assert b'"type":"urn:des:problem:uri-too-long"' in answer
    assert server.health() == 200


def test_half_sent_and_idle_connections_are_closed(server: Server) -> None:
    half = server.connect()
    half.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # never finished
    idle = server.connect()
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    first = idle.recv(65536)
    assert _status(first) == 200
    started = time.monotonic()
    for sock in (half, idle):
        rest = _read_answer(sock)  # returns when the server closes the connection
        assert rest == b""
    # closed after DES_HTTP_HEADER_TIMEOUT_SECONDS (2 s here), loosely
    assert time.monotonic() - started < HEADER_TIMEOUT + 20
    half.close()
    idle.close()


def test_a_200_mb_batch_body_is_refused_before_it_is_read(server: Server) -> None:
    before = server.rss()
    with server.connect() as sock:
        sock.sendall(
            b"POST /files/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n" + b'{"items": [' + b" " * 65536
        )
        answer = _read_answer(sock)
    assert _status(answer) == 413
    assert b'"type":"urn:des:problem:request-too-large"' in answer
    # without a length: counted as it arrives, refused once past the limit
    with server.connect() as sock:
        sock.sendall(
            b"POST /files/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (MiB, b" " * MiB)
        sent = 0
        try:
            while sent < 200:
                sock.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_answer(sock)
    assert answer == b"" or _status(answer) == 413
    assert sent < 200 or _status(answer) == 413
    assert server.health() == 200
    assert server.rss() - before < 64 * MiB


def test_the_forged_frame_bomb_stays_within_bounds(server: Server) -> None:
    before = server.rss()
    for _ in range(3):
        answer = server.request(b"GET " + _url("bomb", BOMB_DAY) + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        # the file is streamed (~2 MiB, over DES_STREAM_THRESHOLD_BYTES). Its frame declares
        # no size, so it is decompressed 256 bytes at a time and stopped once it passes the
        # entry's size: before the first piece leaves (the first read is checked before any
        # header: a 500 problem naming the damage), or later (a short body, the connection
        # cut). Never a complete body, never the whole expansion in memory.
        if _status(answer) == 500:
            assert b"the shard holding the file is damaged" in body
        else:
            assert _status(answer) == 200
            assert b"content-length: %d" % (BOMB_LINES * 65) in head
            assert len(body) < BOMB_LINES * 65
        assert server.health() == 200
    assert server.rss() - before < 64 * MiB


def test_forty_clients_that_never_read_hold_bounded_memory(server: Server) -> None:
    # warm once (the index cached), then 40 connections ask for the 10 MiB text and stall
    answer = server.request(
        b"GET " + _url("big-text", TEXT_DAY) + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert _status(answer) == 200
    assert answer.endswith(_text(10 * MiB)[-1000:])
    before = server.rss()
    socks = []
    for _ in range(40):
        sock = server.connect(rcvbuf=4096)
        sock.sendall(b"GET " + _url("big-text", TEXT_DAY) + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        socks.append(sock)
    time.sleep(3)
    grown = server.rss() - before
    print(f"40 stalled clients of a 10 MiB file: RSS +{grown / MiB:.1f} MiB")
    assert server.health() == 200
    for sock in socks:
        sock.close()
    assert grown < 256 * MiB


def test_padded_created_at_values_do_not_grow_memory(server: Server) -> None:
    before = server.rss()
    with server.connect() as sock:
        for k in range(2000):
            # the same instant, spelled 2,000 ways (trailing spaces, up to ~6 KiB each)
            padded = quote(TEXT_DAY + " " * (3 * k + 1), safe="")
            sock.sendall(
                f"HEAD /files/small?created_at={padded} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                got = sock.recv(65536)
                assert got
                head += got
            status = _status(head)
            assert status in (200, 414), head[:80]
    assert server.health() == 200
    assert server.rss() - before < 32 * MiB


def test_operations_answer_head_and_no_redirects(server: Server) -> None:
    for path in (b"/health", b"/ready", b"/metrics"):
        answer = server.request(
            b"HEAD " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert _status(answer) == 200, path
        assert answer.endswith(b"\r\n\r\n")  # headers only
    answer = server.request(
        b"GET /health/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    assert _status(answer) == 404
    assert b"evil.example" not in answer
    assert b"location:" not in answer.lower()


def test_secrets_and_paths_stay_out_of_answers_and_logs(server: Server, hostile_data: Path) -> None:
    answer = server.request(b"GET /ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert _status(answer) == 200
    assert str(hostile_data).encode() not in answer
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body == {"status": "ready", "backend": "local"}


def test_requests_over_the_in_flight_limit_wait_their_turn(
    hostile_data: Path, tmp_path: Path
) -> None:
    srv = _start_server(hostile_data, tmp_path / "server.log", DES_HTTP_MAX_IN_FLIGHT="2")
    try:
        stalled = []
        for _ in range(2):  # two answers in flight, their clients not reading
            sock = srv.connect(rcvbuf=4096)
            sock.sendall(b"GET " + _url("big-text", TEXT_DAY) + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            stalled.append(sock)
        time.sleep(1)
        waiting = srv.connect()
        waiting.settimeout(3)
        waiting.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        with pytest.raises(TimeoutError):  # not refused, not answered: it waits
            waiting.recv(100)
        for sock in stalled:
            sock.close()
        waiting.settimeout(30)
        assert _status(_read_answer(waiting)) == 200  # served once a slot is free
        waiting.close()
    finally:
        _stop(srv)
