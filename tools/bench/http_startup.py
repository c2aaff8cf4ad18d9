#!/usr/bin/env python3
"""des-http's start-up: from ``des-http --workers 1`` started to the first answered request
(``GET /health``), trees alternated run by run.

Each tree is the path of a ``des-http`` executable (its virtual environment's ``bin``), e.g.
the workspace's and an old checkout's::

    git worktree add --detach /tmp/old main && (cd /tmp/old && uv sync --all-packages)
    uv run python tools/bench/http_startup.py --runs 15 \\
        --tree old=/tmp/old/.venv/bin/des-http --tree new=.venv/bin/des-http

Per run: wall seconds to the first 200 from ``/health`` (the command parses its options,
checks the settings, builds the app once, then granian forks the worker, which builds it
again), and the CPU seconds of the command and its worker by then (``/proc``). The server is
local (``DES_BACKEND=local``, an empty shard directory) on a free port of 127.0.0.1 and is
stopped with SIGTERM after each run. Prints the median, min and max of each and the ratio of
each tree's median to the first tree's.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its direct children (granian's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


def _health_answers(port: int) -> bool:
    """One ``GET /health`` on a plain socket (a light probe: polling with urllib every few
    milliseconds took enough CPU from the starting server to slow it down on 2 cores)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def one_run(executable: str, base_dir: str, timeout: float = 60.0) -> tuple[float, float]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DES_")}
    env.update({"DES_BACKEND": "local", "DES_BASE_DIR": base_dir})
    start = time.monotonic()
    proc = subprocess.Popen(
        [executable, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not _health_answers(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{executable} exited with code {proc.returncode}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{executable} did not answer in {timeout} s")
            time.sleep(0.01)
        wall = time.monotonic() - start
        cpu = _cpu_seconds(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=DES_HTTP")
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="des-http-startup-") as base_dir:
        for _name, exe in trees:  # warm-up, not counted
            one_run(exe, base_dir)
        for _ in range(args.runs):
            for name, exe in trees:
                results[name].append(one_run(exe, base_dir))
    first = trees[0][0]
    base_wall = statistics.median(w for w, _ in results[first])
    base_cpu = statistics.median(c for _, c in results[first])
    print(f"{args.runs} runs per tree, alternated; load {os.getloadavg()[0]:.2f}")
    for name, _ in trees:
        walls = [w for w, _ in results[name]]
        cpus = [c for _, c in results[name]]
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(
            f"{name:>8}: first answer {wall:.3f} s (min {min(walls):.3f}, max {max(walls):.3f}; "
            f"{wall / base_wall:.2f}x {first}), CPU {cpu:.2f} s (min {min(cpus):.2f}, max "
            f"{max(cpus):.2f}; {cpu / base_cpu:.2f}x {first})"
        )


if __name__ == "__main__":
    main()
