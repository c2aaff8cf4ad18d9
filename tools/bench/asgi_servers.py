"""Which ASGI server des-http runs: the same raw ASGI app (4 KiB answer, no work) under uvicorn
(httptools, uvloop) and granian (ASGI, uvloop), one worker each, alternated, wrk at 16
connections. Run by hand (never in tests), from the workspace root:

    uv run python tools/bench/asgi_servers.py --duration 5 --rounds 3

Prints one JSON line per run and a markdown table (docs/bench/http.md). Nothing of DES runs:
this measures what each server itself costs per request, the floor under des-http.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from des_testing import free_port

ROOT = Path(__file__).resolve().parents[2]

APP = r"""
BODY = b"x" * 4096
HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"4096")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
"""


def start(kind: str, work: Path, port: int) -> subprocess.Popen[bytes]:
    bindir = Path(sys.executable).parent
    if kind == "uvicorn":
        cmd = [
            str(bindir / "uvicorn"), "rawapp:app", "--port", str(port), "--http", "httptools",
            "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        cmd = [
            str(bindir / "granian"), "rawapp:app", "--interface", "asgi", "--port", str(port),
            "--loop", "uvloop", "--http", "1", "--log-level", "warning",
        ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind} did not start") from None
            time.sleep(0.1)


def wrk(port: int, duration: int, connections: int) -> dict[str, float]:
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, float] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif parts[:1] == ["99%"]:
            value = parts[1]
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
            unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
            out["p99_ms"] = float(value[: -len(unit)]) * scale[unit]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="asgi-servers-") as tmp:
        work = Path(tmp)
        (work / "rawapp.py").write_text(APP)
        ports = {kind: free_port() for kind in ("uvicorn", "granian")}
        procs = [start(kind, work, port) for kind, port in ports.items()]
        rows = []
        try:
            for rnd in range(1, args.rounds + 1):
                for kind, port in ports.items():
                    r = {"round": rnd, "server": kind, **wrk(port, args.duration, args.connections)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    print("\n| round | server | requests/s | p99 ms |\n| --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['round']} | {r['server']} | {r['rps']:.0f} | {r.get('p99_ms', 0):.2f} |")


if __name__ == "__main__":
    main()
