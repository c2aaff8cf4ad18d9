"""CPU per request of des-http's GET /files path, measured in-process (run by hand).

Packs N small files into local shards, builds the app (index cache on, access log off unless
--access-log), warms every file once, then drives the ASGI app directly with GET requests for
random uids (no sockets, no HTTP parsing) and reports the process CPU time (all threads) per
request. Usage, from the workspace root:

    uv run python tools/bench/http_cpu.py --files 2000 --requests 20000 [--profile out.prof]

``--otel``: with OpenTelemetry tracing on (``HttpSettings.otel``), spans made by an SDK tracer
provider and exported to an in-memory list that is cleared every 1,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from des_format import ShardWriter
from des_http import HttpSettings, create_app
from des_http._logging import configure_logging
from des_routing import DesSettings, locate_shard


def make_shards(base: Path, n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    day = datetime(2024, 1, 1, tzinfo=UTC)
    by_key: dict[str, list[tuple[str, bytes]]] = {}
    out: list[tuple[str, str]] = []
    for i in range(n):
        uid = f"file-{i:07d}"
        created = (day + timedelta(seconds=rng.randrange(86400))).strftime("%Y-%m-%dT%H:%M:%SZ")
        size = rng.randrange(1024, 8192)
        data = rng.randbytes(size) if i % 2 else (b"line of text %d\n" % i) * (size // 16)
        key = locate_shard(uid, datetime.fromisoformat(created), 8).object_key
        by_key.setdefault(key, []).append((uid, data))
        out.append((uid, created))
    for key, members in by_key.items():
        path = base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            w = ShardWriter(fh, codec="zstd")
            for uid, data in members:
                w.add(uid, data, name=uid + ".bin")
            w.close()
    return out


async def drive(
    app: Any, files: list[tuple[str, str]], count: int, seed: int, clear: Any = None
) -> int:
    rng = random.Random(seed)
    statuses = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal statuses
        if message["type"] == "http.response.start" and message["status"] != 200:
            statuses += 1

    for i in range(count):
        if clear is not None and i % 1000 == 0:
            clear()
        uid, created = files[rng.randrange(len(files))]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/files/{uid}",
            "raw_path": f"/files/{uid}".encode(),
            "query_string": f"created_at={created}".encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
    return statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--otel", action="store_true")
    args = ap.parse_args()
    configure_logging("INFO" if args.access_log else "WARNING")
    # Access-log lines are formatted as in production, then written to /dev/null.
    sink = logging.FileHandler(os.devnull)
    sink.setFormatter(logging.getLogger("des_http").handlers[0].formatter)
    logging.getLogger("des_http").handlers[:] = [sink]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        files = make_shards(base, args.files)
        des = DesSettings(backend="local", base_dir=base, n_bits=8)
        if args.otel:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            app = create_app(HttpSettings(des=des, otel=True), tracer_provider=provider)
            clear: Any = exporter.clear
        else:
            app = create_app(HttpSettings(des=des))
            clear = None
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run

        async def run() -> None:
            bad = await drive(app, files, len(files), 1, clear)  # warm: every index cached
            assert bad == 0, f"{bad} non-200 answers while warming"
            prof = cProfile.Profile() if args.profile else None
            c0, w0, t0 = time.process_time(), time.perf_counter(), time.thread_time()
            if prof:
                prof.enable()
            bad = await drive(app, files, args.requests, 2, clear)
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            loop_cpu = time.thread_time() - t0
            assert bad == 0, f"{bad} non-200 answers"
            print(
                f"requests={args.requests} cpu_us_per_request={cpu / args.requests * 1e6:.1f} "
                f"loop_thread_cpu_us_per_request={loop_cpu / args.requests * 1e6:.1f} "
                f"wall_us_per_request={wall / args.requests * 1e6:.1f}"
            )

        runner(run())


if __name__ == "__main__":
    main()
