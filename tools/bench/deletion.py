"""Deletion benchmark (run by hand): what tombstones cost readers, and what a repack costs.

    uv run python tools/bench/deletion.py [--files 20000] [--deleted 0.1]

One local shard of --files small files (zstd). Reports, in the same run:
- store requests and bytes of a cold and a warm read of a live file, before and after a
  share of the files is tombstoned (des delete), as ratios (1.00 = unchanged);
- the time to tombstone them (one append) and to repack the shard, against the time it took
  to write the shard in the first place.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from des_format import (
    IndexCache,
    LocalShardEditor,
    ShardRetriever,
    ShardWriter,
    delete_entries,
    prepare_payload,
)
from des_format.testing import CountingStore
from des_packer import RepackOptions, repack

KEY = "20240101/07.des"


def read_cost(base: Path, uids: list[str]) -> tuple[float, float, float, float]:
    """Mean (requests, bytes) of cold reads and of warm reads over ``uids``."""
    cold_n = cold_b = warm_n = warm_b = 0
    for uid in uids:
        store = CountingStore(LocalShardEditor(base).store)
        r = ShardRetriever(store, cache=IndexCache(64 << 20))
        r.read(KEY, uid)
        cold_n += store.count
        cold_b += store.nbytes
        store.reset()
        r.read(KEY, uid)
        warm_n += store.count
        warm_b += store.nbytes
    n = len(uids)
    return cold_n / n, cold_b / n, warm_n / n, warm_b / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--deleted", type=float, default=0.1)
    args = ap.parse_args()
    rnd = random.Random(7)
    base = Path(tempfile.mkdtemp(prefix="des-bench-del-"))
    try:
        uids = [f"doc-{i:07d}" for i in range(args.files)]
        texts = [(f"{u} line {rnd.random()} " * rnd.randint(20, 120)).encode() for u in uids]
        t0 = time.perf_counter()
        prepared = [prepare_payload(u, t, codec="zstd") for u, t in zip(uids, texts, strict=True)]
        compress_s = time.perf_counter() - t0
        path = base / KEY
        path.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        with path.open("wb") as fh:
            w = ShardWriter(fh)
            for p in prepared:
                w.add_prepared(p)
            w.close()
        write_s = time.perf_counter() - t0
        size_before = path.stat().st_size
        live = [u for u in rnd.sample(uids, 200)]
        victims = rnd.sample(uids, int(args.files * args.deleted))
        victim_set = set(victims)
        live = [u for u in live if u not in victim_set][:100]

        before = read_cost(base, live)
        editor = LocalShardEditor(base)
        t0 = time.perf_counter()
        delete_entries(editor, KEY, victims)
        delete_s = time.perf_counter() - t0
        after = read_cost(base, live)
        t0 = time.perf_counter()
        report = repack(editor, RepackOptions(bigfile_grace_seconds=0))
        repack_s = time.perf_counter() - t0
        erased = read_cost(base, live)
        size_after = path.stat().st_size

        print(f"files={args.files} deleted={len(victims)} shard={size_before} bytes")
        print(f"compress files     {compress_s:8.3f} s")
        print(f"write shard        {write_s:8.3f} s  (pack = compress + write)")
        pack_s = compress_s + write_s
        print(f"tombstone {len(victims):6d}   {delete_s:8.3f} s  ({delete_s / pack_s:.2f}x pack)")
        print(f"repack             {repack_s:8.3f} s  ({repack_s / pack_s:.2f}x pack)")
        print(f"shard after repack {size_after} bytes ({size_after / size_before:.3f}x)")
        print(f"erased             {sum(len(r.erased) for r in report.repacked)}")
        labels = ("cold requests", "cold bytes", "warm requests", "warm bytes")
        for i, label in enumerate(labels):
            print(
                f"{label:14s} before {before[i]:10.1f}  tombstoned {after[i]:10.1f}"
                f" ({after[i] / before[i]:.2f}x)  repacked {erased[i]:10.1f}"
                f" ({erased[i] / before[i]:.2f}x)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
