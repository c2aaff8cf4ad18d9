"""What solid blocks cost a read: des-pack's output with and without ``--block-size``.

Run by hand (never in tests), from the workspace root, on the data set of tools/gen_dataset.py:

    uv run python tools/bench/block_reads.py --data /tmp/des-bench/ds --block-size 131072

It packs the manifest twice into a scratch directory (one zstd frame per file, then solid
blocks), then reads the same files from both outputs, alternating round by round:

- output bytes of each layout (every object des-pack wrote);
- cold reads: a fresh ``ShardRetriever`` without an index cache per file, counting requests
  and the bytes they fetched (through a counting wrapper around ``LocalObjectStore``);
- warm reads: one retriever whose index cache already holds every shard, reading every file
  in random order; CPU time per read (``time.process_time``), which is where a block costs
  (it decompresses the whole block to cut one file out), split into text files (the ones
  blocks hold) and all files.

Numbers are ratios of the two layouts measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from des_format import IndexCache, LocalObjectStore, ShardRetriever
from des_routing import locate_shard

_PRECOMPRESSED = (".jpg", ".png", ".gz", ".zip")


class CountingStore:
    """A ``LocalObjectStore`` that counts the requests and bytes of ranged reads."""

    def __init__(self, base: Path) -> None:
        self.inner = LocalObjectStore(base)
        self.requests = 0
        self.bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_tail(self, key: str, n: int) -> Any:
        tail = self.inner.read_tail(key, n)
        self.requests += 1
        self.bytes += len(tail.data)
        return tail

    def read_range(self, key: str, start: int, end: int, **kw: Any) -> bytes:
        data: bytes = self.inner.read_range(key, start, end, **kw)
        self.requests += 1
        self.bytes += len(data)
        return data


def des_pack(manifest: Path, out: Path, extra: list[str]) -> None:
    exe = shutil.which("des-pack") or str(Path(sys.executable).parent / "des-pack")
    cmd = [exe, "--input-json", str(manifest), "--output-dir", str(out), "--n-bits", "8"]
    cmd += ["--codec", "zstd", "--level", "3", "--no-fsync", *extra]
    subprocess.run(cmd, check=True, capture_output=True)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/des-bench/ds"))
    ap.add_argument("--block-size", default="131072")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    manifest = args.data / "manifests" / "to-pack.json"
    entries = json.loads(manifest.read_text())
    files = []
    for e in entries:
        loc = locate_shard(e["uid"], e["created_at"], 8)
        text = not e["source_path"].endswith(_PRECOMPRESSED)
        files.append((loc.object_key, e["uid"], text))
    rng = random.Random(args.seed)
    rng.shuffle(files)

    scratch = Path(tempfile.mkdtemp(prefix="des-block-reads-"))
    try:
        layouts = {"per-file": [], "blocks": ["--block-size", args.block_size]}
        out: dict[str, Path] = {}
        for name, extra in layouts.items():
            out[name] = scratch / name
            des_pack(manifest, out[name], extra)
        sizes = {name: tree_bytes(path) for name, path in out.items()}
        print(
            f"output bytes: per-file {sizes['per-file']:,}, blocks {sizes['blocks']:,}"
            f" ({sizes['blocks'] / sizes['per-file']:.4f}x)"
        )

        # cold: fresh retriever per read, requests and bytes fetched
        sample = files[: args.cold_sample]
        for name, path in out.items():
            store = CountingStore(path)
            fetched_text: list[int] = []
            for key, uid, text in sample:
                store.requests = store.bytes = 0
                ShardRetriever(store).read(key, uid)  # type: ignore[arg-type]
                if text:
                    fetched_text.append(store.bytes)
                reqs = store.requests
                assert reqs <= 3, (name, key, uid, reqs)
            print(
                f"cold {name}: text files fetch a median of"
                f" {statistics.median(fetched_text):,.0f} bytes per read (tail + payload)"
            )

        # warm: CPU per read, alternating layouts round by round
        retrievers: dict[str, ShardRetriever] = {}
        for name, path in out.items():
            r = ShardRetriever(LocalObjectStore(path), cache=IndexCache(1 << 30))
            for key, uid, _text in files:
                r.read(key, uid)
            retrievers[name] = r
        cpu: dict[str, dict[str, list[float]]] = {n: {"text": [], "all": []} for n in out}
        for _ in range(args.rounds):
            for name, r in retrievers.items():
                text_cpu = 0.0
                t_all = time.process_time()
                for key, uid, text in files:
                    if text:
                        t0 = time.process_time()
                        r.read(key, uid)
                        text_cpu += time.process_time() - t0
                    else:
                        r.read(key, uid)
                all_cpu = time.process_time() - t_all
                n_text = sum(1 for f in files if f[2])
                cpu[name]["text"].append(text_cpu / n_text * 1e6)
                cpu[name]["all"].append(all_cpu / len(files) * 1e6)
        for kind in ("text", "all"):
            a = statistics.median(cpu["per-file"][kind])
            b = statistics.median(cpu["blocks"][kind])
            print(
                f"warm CPU per read ({kind} files): per-file {a:.1f} us, blocks {b:.1f} us"
                f" ({b / a:.2f}x)"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if os.environ.get("DES_BENCH_KEEP"):
        print(scratch)


if __name__ == "__main__":
    main()
