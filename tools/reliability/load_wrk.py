"""Load test: des-http under wrk, 64 connections, local and S3 backends (run by hand).

    uv run python tools/reliability/load_wrk.py --duration 600       # the 10-minute run
    uv run python tools/reliability/load_wrk.py --duration 120       # a shorter one

For each backend: packs ``--files`` files (two days, n_bits 8: up to 512 shards) with
des-pack, starts des-http (one worker, a real process on 127.0.0.1) with an index
cache bound (``--cache-bytes``, smaller than all the indexes together so it must evict), runs
wrk with 64 connections on random uids for ``--duration`` seconds while sampling the server's
RSS every 5 s, and reports: requests, errors (connect, read, timeout, non-2xx), p50/p99/max
latency, RSS at start / at the end / highest, and the index cache's bytes against its bound.
Fails (exit 1) on any error or if the cache exceeds its bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from des_testing import free_port, start_s3_server  # noqa: E402
from http_wrk import (  # noqa: E402
    des_pack,
    make_files,
    metric_sum,
    run_wrk,
    start_des,
    stop,
)


def rss_kib(pid: int) -> int:
    """Resident KiB of ``pid`` and every process below it (des-http's granian workers)."""
    pids = [pid]
    total = 0
    for p in pids:
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _mean_mib(values: list[int]) -> float:
    return round(sum(values) / len(values) / 1024, 1) if values else 0.0


def load(env: dict[str, str], work: Path, rows: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    port = free_port()
    proc = start_des(env, port, work / "des-http.log")
    base = f"http://127.0.0.1:{port}"
    paths = [
        f"/files/{quote(r['uid'], safe='')}?created_at={quote(r['created_at'], safe='')}"
        for r in rows
    ]
    paths_file = work / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    samples: list[int] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(5.0):
            samples.append(rss_kib(proc.pid))

    try:
        run_wrk(base + "/health", paths_file, 5, 8)  # warm-up (imports, first indexes)
        start_rss = rss_kib(proc.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_wrk(base + "/health", paths_file, args.duration, args.connections)
        stop_sampling.set()
        sampler.join()
        end_rss = rss_kib(proc.pid)
        cache_bytes = metric_sum(base, "des_index_cache_bytes")
        evictions = metric_sum(base, "des_index_cache_evictions_total") or metric_sum(
            base, "des_index_cache_evictions"
        )
    finally:
        stop(proc)
    errors = sum(
        result[k] for k in ("errors_status", "errors_connect", "errors_read", "errors_timeout")
    )
    return {
        "requests": result["requests"],
        "rps": round(result["rps"]),
        "errors": errors,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        "rss_start_mib": round(start_rss / 1024, 1),
        "rss_end_mib": round(end_rss / 1024, 1),
        "rss_max_mib": round(max([start_rss, end_rss, *samples]) / 1024, 1),
        # flatness: mean RSS of the first and of the last fifth of the run
        "rss_first_fifth_mib": _mean_mib(samples[: max(1, len(samples) // 5)]),
        "rss_last_fifth_mib": _mean_mib(samples[-max(1, len(samples) // 5) :]),
        "rss_samples": len(samples),
        "cache_bytes": int(cache_bytes),
        "cache_bound": args.cache_bytes,
        "cache_evictions": int(evictions),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=600)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--cache-bytes", type=int, default=512 << 10)
    p.add_argument("--backend", choices=["local", "s3"], action="append")
    args = p.parse_args()
    backends = args.backend or ["local", "s3"]
    work = Path(tempfile.mkdtemp(prefix="des-load-"))
    rows = make_files(work, args.files)
    for r in rows[1::2]:  # two days, so twice the shards
        r["created_at"] = r["created_at"].replace("2024-06-01", "2024-06-02")
    (work / "manifest.json").write_text(json.dumps(rows))
    common = {
        **os.environ,
        "DES_N_BITS": "8",
        "DES_INDEX_CACHE_BYTES": str(args.cache_bytes),
        "DES_LOG_LEVEL": "WARNING",
    }
    results: dict[str, Any] = {}
    ok = True
    for backend in backends:
        if backend == "local":
            des_pack(work, str(work / "des"), common)
            env = {**common, "DES_BACKEND": "local", "DES_BASE_DIR": str(work / "des")}
            results["local"] = load(env, work, rows, args)
        else:
            s3 = start_s3_server()
            try:
                s3.client().create_bucket(Bucket="des-load")
                env = {
                    **common,
                    **s3.env(),
                    "DES_BACKEND": "s3",
                    "DES_S3_BUCKET": "des-load",
                    "DES_S3_REGION": "us-east-1",
                    "DES_S3_ENDPOINT_URL": s3.endpoint_url,
                }
                des_pack(work, "s3://des-load/", env)
                results["s3"] = load(env, work, rows, args)
            finally:
                s3.stop()
        r = results[backend]
        ok = ok and r["errors"] == 0 and r["cache_bytes"] <= r["cache_bound"]
        print(f"{backend}: {json.dumps(r)}", flush=True)
    print(
        json.dumps(
            {
                "duration_s": args.duration,
                "connections": args.connections,
                "files": args.files,
                **results,
            },
            indent=2,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
