"""Per-shard zstd dictionary benchmark (run by hand): size gain on small text files and the
cold-read cost.

    uv run python tools/bench/pack_dict.py [--count 20000] [--reads 400] [--keep DIR]

Generates the data set with tools/gen_dataset.py (profile ``example``: text files of 200 B to
6 KiB, binaries of 0.5-4 KiB, one day), keeps its small-text part (text/json/csv files of at
most 4 KiB, the files --dict compresses with the dictionary) and packs it twice in the same
run, with and without --dict (n_bits 4: 16 shards). Reports, for both:
- shard bytes on disk and the payload bytes of the small files (sum of stored sizes);
- pack time (one worker, fsync off; includes training the dictionaries);
- store requests and bytes of a cold read (fresh retriever, no cache) and of a warm read, and
  the mean time of each over --reads random files.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from des_format import (
    Codec,
    IndexCache,
    LocalObjectStore,
    ShardReader,
    ShardRetriever,
)
from des_format.testing import CountingStore
from des_packer import PackOptions, pack, read_manifest
from des_routing import locate_shard

N_BITS = 4
TEXT_TYPES = ("text/plain", "application/json", "text/csv")


def small_text_manifest(root: Path, count: int) -> tuple[Path, list[dict[str, Any]]]:
    gen = Path(__file__).resolve().parents[1] / "gen_dataset.py"
    subprocess.run(
        [
            sys.executable,
            str(gen),
            "--out",
            str(root),
            "--profile",
            "example",
            "--count",
            str(count),
            "--days",
            "1",
            "--seed",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    rows = json.loads((root / "manifests" / "to-pack.json").read_text())
    keep = [r for r in rows if r["content_type"] in TEXT_TYPES and r["size_bytes"] <= 4096]
    path = root / "manifests" / "small-text.json"
    path.write_text(json.dumps(keep))
    return path, keep


def pack_once(manifest: Path, out: Path, dictionary: bool) -> tuple[float, int]:
    opts = PackOptions(n_bits=N_BITS, workers=1, fsync=False, dictionary=dictionary)
    t0 = time.perf_counter()
    report = pack(read_manifest(manifest), str(out), opts)
    return time.perf_counter() - t0, report.bytes_out


def stored_bytes(out: Path) -> tuple[int, int, int]:
    """(payload bytes, dictionary bytes, entries using the dictionary) over all shards."""
    payload = dict_bytes = with_dict = 0
    for p in sorted(out.rglob("*.des")):
        with ShardReader.open_path(p) as reader:
            if reader.index.dictionary is not None:
                dict_bytes += len(reader.index.dictionary)
            for e in reader.iter_entries():
                payload += e.stored_size
                with_dict += e.codec is Codec.ZSTD_DICT
    return payload, dict_bytes, with_dict


def read_cost(out: Path, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean requests, bytes and seconds of a cold read and of a warm read."""
    cold_n = cold_b = warm_n = warm_b = 0
    cold_t = warm_t = 0.0
    for row in rows:
        key = locate_shard(row["uid"], row["created_at"], N_BITS).object_key
        store = CountingStore(LocalObjectStore(out))
        r = ShardRetriever(store, cache=IndexCache(64 << 20))
        t0 = time.perf_counter()
        r.read(key, row["uid"])
        cold_t += time.perf_counter() - t0
        cold_n += store.count
        cold_b += store.nbytes
        store.reset()
        t0 = time.perf_counter()
        r.read(key, row["uid"])
        warm_t += time.perf_counter() - t0
        warm_n += store.count
        warm_b += store.nbytes
    n = len(rows)
    return {
        "cold_requests": cold_n / n,
        "cold_bytes": cold_b / n,
        "cold_ms": cold_t / n * 1000,
        "warm_requests": warm_n / n,
        "warm_bytes": warm_b / n,
        "warm_ms": warm_t / n * 1000,
    }


def dict_load(out: Path) -> None:
    """What loading a dictionary costs a cold read whose decompressor is not cached: build
    the zstd dictionary + decompressor and decompress one file, against the cached path."""
    import zstandard

    path = sorted(out.rglob("*.des"))[0]
    with ShardReader.open_path(path) as reader:
        d = reader.index.dictionary
        assert d is not None
        e = next(x for x in reader.iter_entries() if x.codec is Codec.ZSTD_DICT)
        stored = path.read_bytes()[e.offset : e.offset + e.stored_size]
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        dec = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(d))
        dec.decompress(stored, max_output_size=e.size)
    fresh = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        dec.decompress(stored, max_output_size=e.size)
    cached = (time.perf_counter() - t0) / n
    print(
        f"dictionary of {len(d)} B: decompress {e.size} B with a fresh dictionary"
        f" {fresh * 1e6:.0f} us, cached {cached * 1e6:.0f} us"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="files generated (all kinds)")
    ap.add_argument("--reads", type=int, default=400)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-dict."))
    try:
        manifest, rows = small_text_manifest(work / "data", args.count)
        raw = sum(r["size_bytes"] for r in rows)
        print(f"small-text part: {len(rows)} files, {raw} bytes (mean {raw / len(rows):.0f} B)")
        results = {}
        for label, flag in (("zstd", False), ("zstd+dict", True)):
            out = work / label
            shutil.rmtree(out, ignore_errors=True)
            secs, total = pack_once(manifest, out, flag)
            payload, dict_bytes, with_dict = stored_bytes(out)
            results[label] = (secs, total, payload, dict_bytes, with_dict)
            print(
                f"{label:10s} pack {secs:6.2f} s  shards {total:>10} B  payloads {payload:>10} B"
                f"  dictionaries {dict_bytes:>7} B  files using one {with_dict}"
            )
        sample = random.Random(7).sample(rows, min(args.reads, len(rows)))
        costs: dict[str, dict[str, float]] = {}
        for _round in range(2):  # alternate; the second round is reported (caches warm)
            for label in results:
                costs[label] = read_cost(work / label, sample)
        for label, c in costs.items():
            print(
                f"{label:10s} cold {c['cold_requests']:.2f} req {c['cold_bytes']:8.0f} B"
                f" {c['cold_ms']:.3f} ms | warm {c['warm_requests']:.2f} req"
                f" {c['warm_bytes']:6.0f} B {c['warm_ms']:.3f} ms"
            )
        (s0, t0, p0, _, _), (s1, t1, p1, _, _) = results["zstd"], results["zstd+dict"]
        c0, c1 = costs["zstd"], costs["zstd+dict"]
        print("ratios (dict / plain):")
        print(
            f"  shard bytes   {t1 / t0:.3f}"
            f"   (raw / shard: plain {raw / t0:.2f}x, dict {raw / t1:.2f}x)"
        )
        print(f"  payload bytes {p1 / p0:.3f}")
        print(f"  pack time     {s1 / s0:.2f}")
        print(
            f"  cold requests {c1['cold_requests'] / c0['cold_requests']:.2f}"
            f"  cold bytes {c1['cold_bytes'] / c0['cold_bytes']:.2f}"
            f"  cold time {c1['cold_ms'] / c0['cold_ms']:.2f}"
        )
        print(
            f"  warm requests {c1['warm_requests'] / c0['warm_requests']:.2f}"
            f"  warm bytes {c1['warm_bytes'] / c0['warm_bytes']:.2f}"
            f"  warm time {c1['warm_ms'] / c0['warm_ms']:.2f}"
        )
        dict_load(work / "zstd+dict")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
