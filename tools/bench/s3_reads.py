"""Requests, bytes and latency per cold and warm DES read on S3, beside the floor.

Run by hand (never in tests), from the workspace root:

    uv run python tools/bench/s3_reads.py                  # 10, 10,000 and 1,000,000 entries
    uv run python tools/bench/s3_reads.py --sizes 10 10000 --samples 100

It starts a moto S3 server on 127.0.0.1 and the counting proxy (des_testing.FaultProxy) in
front of it; every client request goes through the proxy, which counts requests and response
bytes at the HTTP level. For each shard size it measures, over the same sampled uids:

- cold: a fresh ShardRetriever (no index cache) per read;
- warm: one retriever whose cache already holds the uid's index bucket;
- floor: the same file stored as its own S3 object, one whole-object GET.

The floor objects are only the sampled files (a per-read cost does not depend on how many other
objects the bucket holds). A big file (2 MiB, in ``_bigFiles/``) is measured the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from des_format import IndexCache, ShardRetriever, ShardWriter, bigfile_key
from des_storage_s3 import ClientSettings, S3ObjectStore, S3ShardStore, make_client
from des_testing import FaultProxy, start_s3_server
from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY

KEY = "20240101/{:02X}.des"


def payload(i: int) -> bytes:
    return (f"file {i} of the benchmark; " * (4 + i % 8)).encode()


class Sink:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_bytes(self, sha256: str, data: bytes) -> None:
        self.files[sha256] = data

    def put_file(self, sha256: str, path: Any) -> None:
        self.files[sha256] = Path(path).read_bytes()


def measure(proxy: FaultProxy, fn: Callable[[], bytes], expect: bytes) -> tuple[int, int, float]:
    proxy.clear()
    t0 = time.perf_counter()
    got = fn()
    dt = time.perf_counter() - t0
    if got != expect:
        raise SystemExit("wrong bytes: the benchmark found a bug")
    reqs = proxy.snapshot()
    return len(reqs), sum(r.bytes_out for r in reqs), dt


def row(name: str, results: list[tuple[int, int, float]]) -> dict[str, Any]:
    reqs = [r[0] for r in results]
    nbytes = [r[1] for r in results]
    lat = sorted(r[2] for r in results)
    return {
        "name": name,
        "req_mean": statistics.mean(reqs),
        "req_max": max(reqs),
        "bytes_mean": statistics.mean(nbytes),
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p95_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.95))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 10_000, 1_000_000])
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()

    server = start_s3_server()
    try:
        with FaultProxy(server.endpoint_url) as proxy, tempfile.TemporaryDirectory() as tmp:
            run(server, proxy, Path(tmp), args.sizes, args.samples)
    finally:
        server.stop()


def run(server: Any, proxy: FaultProxy, tmp: Path, sizes: list[int], samples: int) -> None:
    client = make_client(
        ClientSettings(
            region_name=REGION,
            endpoint_url=proxy.url,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
    )
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    store = S3ObjectStore(client, bucket, "des")
    up = S3ShardStore(client, bucket, "des")
    rows: list[dict[str, Any]] = []
    for n_i, n in enumerate(sizes):
        key = KEY.format(n_i)
        path = tmp / f"{n}.des"
        t0 = time.perf_counter()
        with path.open("wb") as out:
            w = ShardWriter(out, codec="zstd" if n <= 100_000 else "none")
            for i in range(n):
                w.add(f"u{i:08d}", payload(i) if n <= 100_000 else payload(i)[:24])
            w.close()
        up.put_shard(path, key)
        print(
            f"built {n:,}-entry shard ({path.stat().st_size:,} bytes) in "
            f"{time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        step = max(1, n // samples)
        uids = [
            (f"u{i:08d}", payload(i) if n <= 100_000 else payload(i)[:24])
            for i in range(0, n, step)
        ][:samples]
        for uid, data in uids:
            client.put_object(Bucket=bucket, Key=f"floor/{n}/{uid}", Body=data)
        cold = [
            measure(proxy, lambda u=uid, k=key: ShardRetriever(store).read(k, u), data)
            for uid, data in uids
        ]
        warm_r = ShardRetriever(store, cache=IndexCache(256 << 20))
        for uid, _ in uids:
            warm_r.read(key, uid)
        warm = [
            measure(proxy, lambda u=uid, k=key, r=warm_r: r.read(k, u), data) for uid, data in uids
        ]
        floor = [
            measure(
                proxy,
                lambda u=uid, n=n: client.get_object(Bucket=bucket, Key=f"floor/{n}/{u}")[
                    "Body"
                ].read(),
                data,
            )
            for uid, data in uids
        ]
        # The server's own cost of one ranged GET on this shard object (moto reads the whole
        # object for every GET, so this grows with the object, not with DES).
        ranged = []
        for uid, _ in uids:
            e = warm_r.stat(key, uid)
            want = store.read_range(key, e.offset, e.offset + e.stored_size)
            hdr = f"bytes={e.offset}-{e.offset + e.stored_size - 1}"
            ranged.append(
                measure(
                    proxy,
                    lambda h=hdr, k=key: client.get_object(Bucket=bucket, Key=f"des/{k}", Range=h)[
                        "Body"
                    ].read(),
                    want,
                )
            )
        rows += [
            row(f"{n:,} entries, cold", cold),
            row(f"{n:,} entries, warm", warm),
            row(f"{n:,} entries, floor (one object per file)", floor),
            row(f"{n:,} entries, one raw ranged GET on the shard", ranged),
        ]

    # a big file
    big = bytes(range(256)) * 8192  # 2 MiB
    sink = Sink()
    key = KEY.format(0xB0)
    path = tmp / "big.des"
    with path.open("wb") as out:
        w = ShardWriter(out, big_file_threshold=1 << 20, bigfile_sink=sink)
        w.add("big", big)
        w.add("small", b"small")
        w.close()
    up.put_shard(path, key)
    ((sha, data),) = sink.files.items()
    (tmp / "bf").write_bytes(data)
    up.put_bigfile(tmp / "bf", bigfile_key(key, sha))
    client.put_object(Bucket=bucket, Key="floor/big", Body=big)
    reps = 20
    cold = [
        measure(proxy, lambda: ShardRetriever(store).read(key, "big"), big) for _ in range(reps)
    ]
    warm_r = ShardRetriever(store, cache=IndexCache(1 << 20))
    warm_r.read(key, "big")
    warm = [measure(proxy, lambda: warm_r.read(key, "big"), big) for _ in range(reps)]
    floor = [
        measure(
            proxy,
            lambda: client.get_object(Bucket=bucket, Key="floor/big")["Body"].read(),  # noqa: PLW0108
            big,
        )
        for _ in range(reps)
    ]
    bkey = f"des/{bigfile_key(key, sha)}"
    raw = [
        measure(proxy, lambda: client.get_object(Bucket=bucket, Key=bkey)["Body"].read(), big)  # noqa: PLW0108
        for _ in range(reps)
    ]
    rows += [
        row("2 MiB big file, cold", cold),
        row("2 MiB big file, warm", warm),
        row("2 MiB big file, floor", floor),
        row("2 MiB big file, one raw GET of its _bigFiles object", raw),
    ]

    print("| read | requests (mean / max) | bytes (mean) | p50 ms | p95 ms | p50 / floor p50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i in range(0, len(rows), 4):
        floor_p50 = rows[i + 2]["p50_ms"]
        for r in rows[i : i + 4]:
            print(
                f"| {r['name']} | {r['req_mean']:.2f} / {r['req_max']} | {r['bytes_mean']:,.0f} "
                f"| {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p50_ms'] / floor_p50:.2f} |"
            )


if __name__ == "__main__":
    main()
