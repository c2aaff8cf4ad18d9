"""des-http throughput and latency against nginx serving the same files as plain files.

Run by hand (never in tests), from the workspace root:

    uv run python tools/bench/http_wrk.py --files 20000 --duration 30 --rounds 2

What it does:

1. writes ``--files`` small files (1-8 KiB, text and binary) and a manifest, packs them with
   ``des-pack`` (local, n_bits 8, zstd) and also lays them out as plain files for nginx;
2. starts des-http (one worker, local backend) and nginx (one worker process), each on
   127.0.0.1, and warms both up (one pass over every file, so the index cache is warm);
3. runs wrk (16 connections, random uids from the whole set, ``--duration`` seconds) against
   des-http and nginx alternately, ``--rounds`` times, then each with one connection (latency
   without queueing), then des-http once more with its access log on;
   With ``--floor``, a third server joins each round: a raw ASGI app answering 8 bytes to any
   request, under the same uvicorn settings as des-http (one worker, httptools, uvloop,
   access log off): what uvicorn itself reaches with no work at all. With ``--baseline DIR``
   (a source tree, e.g. ``git archive <commit> | tar -x -C DIR``), des-http from DIR's
   sources joins each round too, over the same shards: old and new code in the same run;
4. S3 backend: packs ``--s3-files`` files into a moto S3 server, and counts the store requests
   per served file (from des-http's own metrics) on a cold pass and a warm pass.

Prints a JSON summary and a markdown table (paste it into docs/bench/http.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from des_testing import free_port, start_s3_server

ROOT = Path(__file__).resolve().parents[2]

WRK_SCRIPT = r"""
local paths = {}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "bytes": %d}',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, summary.bytes)
  io.stderr:write("WRKJSON " .. out .. "\n")
end
"""


def make_files(root: Path, n: int, seed: int = 11) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    src = root / "in"
    plain = root / "plain"
    src.mkdir(parents=True)
    plain.mkdir()
    rows: list[dict[str, Any]] = []
    words = [b"alpha ", b"beta ", b"gamma ", b"delta ", b"des ", b"shard "]
    for i in range(n):
        size = rnd.randint(1024, 8192)
        if i % 2:
            data = rnd.randbytes(size)
        else:
            data = b"".join(rnd.choice(words) for _ in range(size // 5))[:size]
        uid = f"u{i:07d}"
        (src / uid).write_bytes(data)
        (plain / uid).write_bytes(data)
        rows.append(
            {
                "uid": uid,
                "created_at": f"2024-06-01T{i % 24:02d}:00:00Z",
                "size_bytes": len(data),
                "source_path": f"in/{uid}",
            }
        )
    (root / "manifest.json").write_text(json.dumps(rows))
    return rows


def des_pack(root: Path, output: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "des-pack",
            "--input-json",
            str(root / "manifest.json"),
            "--output-dir",
            output,
            "--n-bits",
            "8",
            "--no-progress",
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SRC_DIRS = ("packages", "services")


def baseline_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    """``env`` with every package source of the tree ``tree`` first on the import path."""
    srcs = sorted(str(p) for p in tree.glob("*/*/src") if p.parent.parent.name in SRC_DIRS)
    if not srcs:
        sys.exit(f"--baseline {tree}: no packages/*/src or services/*/src in it")
    return {**env, "PYTHONPATH": os.pathsep.join(srcs)}


def start_des(
    env: dict[str, str], port: int, log: Path, *, python_m: bool = False
) -> subprocess.Popen[bytes]:
    """des-http's command on ``port``; ``python_m``: as ``python -m des_http.cli`` (so that
    a ``PYTHONPATH`` in ``env`` decides which sources run)."""
    command = [sys.executable, "-m", "des_http.cli"] if python_m else ["des-http"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


FLOOR_APP = r"""
import sys

import uvicorn


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"8")],
        }
    )
    await send({"type": "http.response.body", "body": b"8 bytes\n"})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""


def start_floor(root: Path, port: int) -> subprocess.Popen[bytes]:
    """The floor: uvicorn (as des-http runs it) serving 8 bytes from a raw ASGI app."""
    script = root / "floor_app.py"
    script.write_text(FLOOR_APP)
    with (root / "floor.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def start_nginx(root: Path, port: int) -> subprocess.Popen[bytes]:
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {root}/nginx-tmp;
    proxy_temp_path {root}/nginx-tmp;
    fastcgi_temp_path {root}/nginx-tmp;
    uwsgi_temp_path {root}/nginx-tmp;
    scgi_temp_path {root}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        location /plain/ {{ alias {root}/plain/; }}
        location = /health {{ return 200 "ok"; }}
    }}
}}
"""
    )
    (root / "nginx-tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(root), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def run_wrk(url: str, paths_file: Path, duration: int, connections: int) -> dict[str, Any]:
    threads = min(2, connections)
    script = paths_file.parent / "random.lua"
    script.write_text(WRK_SCRIPT)
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
            "--",
            str(paths_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stderr.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[8:])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(done.stdout + done.stderr)


def warm(base: str, paths: list[str]) -> None:
    for p in paths:
        urllib.request.urlopen(base + p, timeout=10).read()


def metric_sum(base: str, name: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric_lines(base: str, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


def s3_requests_per_file(
    work: Path, rows: list[dict[str, Any]], env: dict[str, str]
) -> dict[str, Any]:
    server = start_s3_server()
    try:
        server.client().create_bucket(Bucket="bench")
        senv = {**env, **server.env(), "DES_S3_ENDPOINT_URL": server.endpoint_url}
        (work / "s3set").mkdir()
        sub = rows
        s3root = work / "s3set"
        (s3root / "in").symlink_to(work / "in")
        (s3root / "manifest.json").write_text(json.dumps(sub))
        des_pack(s3root, "s3://bench/des/", senv)
        port = free_port()
        denv = {
            **senv,
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": "bench",
            "DES_S3_PREFIX": "des/",
            "DES_S3_REGION": "us-east-1",
            "DES_LOG_LEVEL": "WARNING",
        }
        proc = start_des(denv, port, work / "des-s3.log")
        base = f"http://127.0.0.1:{port}"
        try:
            out: dict[str, Any] = {"files": len(sub)}
            order = list(sub)
            random.Random(3).shuffle(order)
            for phase in ("cold", "warm"):
                before = metric_sum(base, "des_s3_range_calls_total")
                worst = 0.0
                started = time.perf_counter()
                for r in order:
                    one = metric_sum(base, "des_s3_range_calls_total") if phase == "cold" else 0
                    url = f"/files/{r['uid']}?created_at={quote(r['created_at'])}"
                    urllib.request.urlopen(base + url, timeout=30).read()
                    if phase == "cold":
                        worst = max(worst, metric_sum(base, "des_s3_range_calls_total") - one)
                elapsed = time.perf_counter() - started
                after = metric_sum(base, "des_s3_range_calls_total")
                per_file = (after - before) / len(order)
                out[phase] = {
                    "requests_per_file": per_file,
                    "max_requests_one_file": worst if phase == "cold" else None,
                    "seconds": elapsed,
                }
            out["by_type"] = metric_lines(base, "des_s3_range_calls_total")
            return out
        finally:
            stop(proc)
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--s3-files", type=int, default=1000)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also measure a raw ASGI app answering 8 bytes under the same uvicorn settings",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a source tree of an older commit: its des-http joins each round (same shards)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="des-http-bench-"))
    work.chmod(0o755)  # nginx's worker may run as another user
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "AWS_"))}
    result: dict[str, Any] = {"files": args.files, "duration_s": args.duration}
    try:
        rows = make_files(work, args.files)
        result["pack_seconds"] = des_pack(work, str(work / "shards"), env)
        des_paths = [f"/files/{r['uid']}?created_at={quote(r['created_at'])}" for r in rows]
        plain_paths = [f"/plain/{r['uid']}" for r in rows]
        (work / "des-paths.txt").write_text("\n".join(des_paths) + "\n")
        (work / "plain-paths.txt").write_text("\n".join(plain_paths) + "\n")

        des_port, nginx_port = free_port(), free_port()
        denv = {
            **env,
            "DES_BACKEND": "local",
            "DES_BASE_DIR": str(work / "shards"),
            "DES_N_BITS": "8",
            "DES_LOG_LEVEL": "WARNING",
        }
        des_url, nginx_url = f"http://127.0.0.1:{des_port}", f"http://127.0.0.1:{nginx_port}"
        servers = [
            ("des-http", des_url, work / "des-paths.txt"),
            ("nginx", nginx_url, work / "plain-paths.txt"),
        ]
        started: list[subprocess.Popen[bytes]] = []
        try:
            started.append(start_des(denv, des_port, work / "des.log"))
            started.append(start_nginx(work, nginx_port))
            if args.baseline is not None:
                base_port = free_port()
                started.append(
                    start_des(
                        baseline_env(denv, args.baseline.resolve()),
                        base_port,
                        work / "des-baseline.log",
                        python_m=True,
                    )
                )
                base_url = f"http://127.0.0.1:{base_port}"
                servers.insert(1, ("des-http (baseline)", base_url, work / "des-paths.txt"))
                warm(base_url, des_paths)
            if args.floor:
                floor_port = free_port()
                started.append(start_floor(work, floor_port))
                floor_url = f"http://127.0.0.1:{floor_port}"
                servers.append(("uvicorn floor (8 bytes)", floor_url, work / "des-paths.txt"))
            warm(des_url, des_paths)
            warm(nginx_url, plain_paths)
            runs: list[dict[str, Any]] = []
            for rnd in range(args.rounds):
                for name, url, paths in servers:
                    r = run_wrk(url, paths, args.duration, args.connections)
                    r.update(server=name, round=rnd + 1)
                    runs.append(r)
                    print(json.dumps(r), flush=True)
            # Latency without queueing: one connection, one request at a time.
            for name, url, paths in (
                ("des-http", des_url, work / "des-paths.txt"),
                ("nginx", nginx_url, work / "plain-paths.txt"),
            ):
                r = run_wrk(url, paths, max(5, args.duration // 3), 1)
                r.update(server=f"{name} (1 connection)", round=1)
                runs.append(r)
                print(json.dumps(r), flush=True)
            result["runs"] = runs
        finally:
            for proc in started:
                stop(proc)

        # des-http with its JSON access log on (the default), stdout to a file.
        des = start_des({**denv, "DES_LOG_LEVEL": "INFO"}, des_port, work / "des-logged.log")
        try:
            warm(des_url, des_paths[:2000])
            r = run_wrk(des_url, work / "des-paths.txt", args.duration, args.connections)
            r.update(server="des-http (access log on)", round=1)
            result["runs"].append(r)
            print(json.dumps(r), flush=True)
        finally:
            stop(des)

        if args.s3_files:
            result["s3"] = s3_requests_per_file(work, rows[: args.s3_files], env)
            print(json.dumps(result["s3"]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(json.dumps(result, indent=1))
    print()
    print("| run | server | requests/s | p50 ms | p90 ms | p99 ms | non-2xx |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in result["runs"]:
        print(
            f"| {r['round']} | {r['server']} | {r['rps']:.0f} | {r['p50_us'] / 1000:.2f} | "
            f"{r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['errors_status']} |"
        )


if __name__ == "__main__":
    main()
