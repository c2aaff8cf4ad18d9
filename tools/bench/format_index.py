"""des-format index and read-path benchmark (run by hand, never in tests).

    uv run python tools/bench/format_index.py [--entries 1000000] [--files 2000] [--reads 20000]

Part 1, a shard of N entries (uids of 10 characters, sizes 100 B..16 KiB, zstd-sized stored
payloads, 4 shared content types): index bytes per entry; reads and bytes of a cold lookup
through a counting source; lookup time per uid (cold: tail parse + bucket; warm: decoded bucket)
beside a plain ``dict`` uid -> (offset, size) built in the same run. Payload bytes are not
kept (the source answers zeros for them): only the index is measured here.

Part 2, warm random reads of one file: ShardRetriever over LocalObjectStore with the index
cached, against open()+read() of the same files stored as loose files, same run.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from des_format import (
    Codec,
    IndexCache,
    LocalObjectStore,
    PreparedPayload,
    ShardRetriever,
    ShardWriter,
    TailRead,
    read_index,
)
from des_format.testing import CountingSource

CONTENT_TYPES = ["image/jpeg", "application/json", "text/plain", "application/pdf"]


class TailOnly(io.RawIOBase):
    """Discards payload bytes, keeps what is written after ``keep()`` (index + footer)."""

    def __init__(self) -> None:
        self.size = 0
        self.kept = bytearray()
        self.keeping = False

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        n = len(b)  # type: ignore[arg-type]
        if self.keeping:
            self.kept += bytes(b)  # type: ignore[call-overload]
        self.size += n
        return n

    def keep(self) -> None:
        self.keeping = True
        self.kept_from = self.size


class SparseSource:
    """A ByteSource for an object whose bytes before ``start`` are zeros."""

    def __init__(self, size: int, start: int, tail: bytes) -> None:
        self.size, self.start, self.tail = size, start, bytes(tail)

    def read_range(self, start: int, end: int) -> bytes:
        if start >= self.start:
            return self.tail[start - self.start : end - self.start]
        if end <= self.start:
            return bytes(end - start)
        return bytes(self.start - start) + self.tail[: end - self.start]

    def read_tail(self, n: int) -> TailRead:
        s = max(0, self.size - n)
        return TailRead(self.read_range(s, self.size), self.size, '"bench"')


def build_index_shard(
    n: int, seed: int = 42
) -> tuple[SparseSource, dict[str, tuple[int, int]], float, int]:
    rnd = random.Random(seed)
    zeros = bytes(16 * 1024)
    out = TailOnly()
    w = ShardWriter(out, codec="zstd")  # type: ignore[arg-type]
    plain: dict[str, tuple[int, int]] = {}
    t0 = time.perf_counter()
    for i in range(n):
        uid = f"{rnd.getrandbits(40):010x}"  # 10 hex characters
        while uid in plain:
            uid = f"{rnd.getrandbits(40):010x}"
        size = min(16 * 1024, max(100, int(rnd.lognormvariate(7.0, 0.8))))
        ct = CONTENT_TYPES[i % 4]
        compressible = ct in ("application/json", "text/plain")
        stored = int(size * 0.45) if compressible else size
        p = PreparedPayload(
            uid=uid,
            size=size,
            stored=zeros[:stored],
            codec=Codec.ZSTD if compressible else Codec.NONE,
            checksum=rnd.getrandbits(32),
            meta={"content_type": ct},
        )
        e = w.add_prepared(p)
        plain[uid] = (e.offset, e.stored_size)
    out.keep()
    summary = w.close()
    build = time.perf_counter() - t0
    source = SparseSource(out.size, out.kept_from, bytes(out.kept))
    return source, plain, build, summary.index_bytes


def part0(sizes: list[int]) -> None:
    print("## cold read of one file: requests and bytes by shard size\n")
    print("| entries | index bytes | B/entry | reads (max) | bytes read before the payload (max) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        source, plain, _build, index_bytes = build_index_shard(n)
        rnd = random.Random(3)
        worst_reads = worst_meta = 0
        for uid in rnd.sample(list(plain), min(200, n)):
            src = CountingSource(source)
            idx = read_index(src)
            entry = idx.lookup(uid)
            assert entry is not None
            meta_bytes = src.nbytes
            src.read_range(entry.offset, entry.offset + entry.stored_size)  # the payload
            worst_reads = max(worst_reads, src.reads)
            worst_meta = max(worst_meta, meta_bytes)
        print(
            f"| {n:,} | {index_bytes:,} | {index_bytes / n:.1f} | {worst_reads} | {worst_meta:,} |"
        )
    print()


def part1(n: int) -> None:
    print(f"## index of a {n:,}-entry shard\n")
    source, plain, build, index_bytes = build_index_shard(n)
    print(
        f"- build (writer, no payload I/O): {build:.1f} s; shard size {source.size / 2**30:.2f} GiB"
    )
    print(
        f"- index bytes (buckets + directory + footer): {index_bytes:,} = "
        f"**{index_bytes / n:.1f} B/entry** (CRC-32 per entry, metadata ids, 10-char uids)"
    )
    uids = list(plain)
    rnd = random.Random(7)
    sample = [rnd.choice(uids) for _ in range(2000)]

    reads, nbytes = [], []
    t0 = time.perf_counter()
    for uid in sample[:500]:
        src = CountingSource(source)
        idx = read_index(src)
        entry = idx.lookup(uid)
        assert entry is not None
        assert entry.offset == plain[uid][0]
        reads.append(src.reads)
        nbytes.append(src.nbytes)
    cold = (time.perf_counter() - t0) / 500
    print(
        f"- cold lookup (tail read + parse + one bucket): reads per lookup "
        f"{statistics.mean(reads):.2f} (max {max(reads)}), metadata bytes per lookup "
        f"{statistics.mean(nbytes) / 1024:.1f} KiB (max {max(nbytes) / 1024:.1f} KiB), "
        f"{cold * 1e6:.0f} µs per cold lookup"
    )

    idx = read_index(source)
    for uid in uids:  # decode every bucket: the warm state
        idx.lookup(uid)
    t0 = time.perf_counter()
    for _ in range(10):
        for uid in sample:
            idx.lookup(uid)
    warm = (time.perf_counter() - t0) / (10 * len(sample))
    t0 = time.perf_counter()
    for _ in range(10):
        for uid in sample:
            plain.get(uid)
    dict_t = (time.perf_counter() - t0) / (10 * len(sample))
    print(
        f"- warm lookup (bucket decoded): {warm * 1e6:.2f} µs; plain dict uid -> (offset, size): "
        f"{dict_t * 1e6:.3f} µs; ratio **{warm / dict_t:.1f}x**"
    )
    one_bucket = read_index(source)
    one_bucket.lookup(sample[0])
    print(
        f"- memory after one cold lookup: ShardIndex.nbytes = {one_bucket.nbytes / 1024:.0f} KiB "
        f"({one_bucket.decoded_buckets} of {one_bucket.bucket_count} buckets decoded)"
    )
    del idx
    gc.collect()
    tracemalloc.start()
    d = {u: v for u, v in plain.items()}
    cur, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del d
    print(
        f"- for scale: the plain dict of {n:,} uids -> (offset, size) holds "
        f"{cur / 2**20:.0f} MiB of Python objects; the encoded index is "
        f"{index_bytes / 2**20:.0f} MiB and a cold lookup reads "
        f"{statistics.mean(nbytes) / 1024:.0f} KiB of it\n"
    )


def part2(files: int, reads: int) -> None:
    print(
        f"## warm random read of one file: shard vs loose files"
        f" ({files:,} files, {reads:,} reads)\n"
    )
    rnd = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        loose = base / "loose"
        loose.mkdir()
        datas = {}
        for i in range(files):
            uid = f"{i:010d}"
            size = min(16 * 1024, max(100, int(rnd.lognormvariate(7.0, 0.8))))
            data = os.urandom(size // 2) + bytes(size - size // 2)
            datas[uid] = data
            (loose / uid).write_bytes(data)
        results = {}
        for codec in ("none", "zstd"):
            key = f"20240101/{codec}.des"
            (base / "20240101").mkdir(exist_ok=True)
            with open(base / key, "wb") as fh:
                w = ShardWriter(fh, codec=codec)
                for uid, data in datas.items():
                    w.add(uid, data)
                w.close()
            retriever = ShardRetriever(LocalObjectStore(base), cache=IndexCache(64 << 20))
            order = [rnd.choice(list(datas)) for _ in range(reads)]
            for uid, data in datas.items():
                assert retriever.read(key, uid) == data  # warm every bucket

            def shard_read(u: str, r: ShardRetriever = retriever, k: str = key) -> bytes:
                return r.read(k, u)

            def loose_read(u: str) -> bytes:
                with open(loose / u, "rb") as fh:
                    return fh.read()

            timings: dict[str, list[float]] = {"shard": [], "loose": []}
            for _round in range(5):  # interleave to share the machine's noise fairly
                for name, fn in (("loose", loose_read), ("shard", shard_read)):
                    t0 = time.perf_counter()
                    for u in order:
                        fn(u)
                    timings[name].append((time.perf_counter() - t0) / len(order))
            s, lo = min(timings["shard"]), min(timings["loose"])
            results[codec] = (s, lo)
            print(
                f"- codec {codec}: shard read {s * 1e6:.1f} µs, loose open+read {lo * 1e6:.1f} µs, "
                f"ratio **{s / lo:.2f}x** (best of 5 rounds)"
            )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--reads", type=int, default=20000)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    part0([10, 10_000, 100_000])
    part1(args.entries)
    part2(args.files, args.reads)


if __name__ == "__main__":
    main()
