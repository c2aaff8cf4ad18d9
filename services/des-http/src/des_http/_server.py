"""Running the service under granian (what the ``des-http`` command does).

granian was chosen by measurement (docs/bench/http.md): on this project's machines it serves
a raw ASGI answer at about twice uvicorn's rate (httptools, uvloop), and it enforces, in its
Rust HTTP layer and before any Python runs, the limits a public service needs: request line
and headers (431, 414), the time to send them and idle keep-alive time, and the number of
requests served at once per worker (``backpressure``: more wait in the accept queue).
"""

from __future__ import annotations

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels

from ._settings import HttpSettings


def _loop() -> Loops:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return Loops.auto
    return Loops.uvloop


def serve(settings: HttpSettings, *, host: str, port: int, workers: int) -> None:
    """Serve ``des_http:app`` (built in each worker from the environment) until stopped."""
    server = Granian(
        "des_http:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=_loop(),
        http=HTTPModes.http1,
        websockets=False,
        backpressure=settings.max_in_flight,
        http1_settings=HTTP1Settings(
            header_read_timeout=settings.header_timeout_seconds * 1000,
            keep_alive=True,
            max_buffer_size=settings.max_header_bytes,
        ),
        log_enabled=True,
        log_level=LogLevels(settings.log_level.lower()),
        log_access=False,
    )
    server.serve()
