#!/usr/bin/env python3
"""CPU per file, stage by stage, of packing a manifest the way des-pack does (issue 18).

    python tools/bench/pack_stages.py --data /tmp/des-bench/small --n-bits 6
    python tools/bench/pack_stages.py --data /tmp/des-bench/small --n-bits 6 --block-size 131072

One thread, in process, each stage timed with the thread's CPU clock (``time.thread_time``)
around the library calls des-pack makes for it, over every file of the manifest:

- ``plan``: reading the manifest and routing every entry to its shard (once, before any file);
- ``read``: opening and reading each source (des-packer's ``SourceReader``);
- ``checksum``: the CRC-32 of each file (des-format's ``crc32``);
- ``compress``: zstd at the given level, one frame per file, or one per solid block
  (``--block-size``, the packer's own grouping), with the precompressed files kept raw;
- ``index``: adding the entries to a ``ShardWriter`` and serializing the index at ``close``,
  less the time spent in ``write``;
- ``write``: the writer's ``write`` calls into the shard file;
- ``fsync``: one ``fsync`` per shard (``--no-fsync`` leaves it out).

The sum is what one core would spend; des-pack spreads read, checksum and compress over its
workers. Numbers are medians per file of ``--rounds`` passes (the page cache warmed by the
first pass).

The last line, ``des_packer.pack``, is the CPU per file of the packer's own library call on
the same manifest, median of as many passes (one process and one worker: the plan, the
pipeline and the shard writer run in this thread, the fsyncs and renames in the packer's
commit thread; process CPU time): the stages above plus what the packer spends around them.
With ``PYTHONPATH`` set to another tree's ``packages/*/src``, both measure that tree's code
(before/after in one run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from des_format import ShardWriter, build_meta, crc32, prepare_block, prepare_payload
from des_packer import plan_shards, read_manifest
from des_packer._blocks import Block, plan_work, source_name
from des_packer._sources import SourceReader

STAGES = ("plan", "read", "checksum", "compress", "index", "write", "fsync")


class _TimedFile:
    """A file whose ``write`` calls are timed (CPU of this thread)."""

    def __init__(self, fh: Any, clock: dict[str, float]) -> None:
        self._fh = fh
        self._clock = clock

    def write(self, data: bytes) -> int:
        t = time.thread_time()
        n: int = self._fh.write(data)
        self._clock["write"] += time.thread_time() - t
        return n


def one_pass(data: Path, n_bits: int, level: int, block_size: int, fsync: bool) -> dict[str, float]:
    clock = dict.fromkeys(STAGES, 0.0)
    t = time.thread_time()
    plan = plan_shards(read_manifest(data / "manifests" / "to-pack.json"), n_bits=n_bits)
    clock["plan"] = time.thread_time() - t
    sources = SourceReader()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        for si, shard in enumerate(plan.shards):
            path = Path(tmp) / f"{si}.des"
            with path.open("wb") as raw:
                out = _TimedFile(raw, clock)
                writer = ShardWriter(out, codec="zstd", level=level)  # type: ignore[arg-type]
                items = plan_work(
                    shard.entries,
                    block_size=block_size,
                    member_max=64 * 1024,
                    big_file_threshold=10 << 20,
                )
                for item in items:
                    members = item.entries if isinstance(item, Block) else (item,)
                    files = []
                    for e in members:
                        t = time.thread_time()
                        body = sources.read(e)
                        t2 = time.thread_time()
                        crc32(body)
                        t3 = time.thread_time()
                        clock["read"] += t2 - t
                        clock["checksum"] += t3 - t2
                        meta = build_meta(None, source_name(e.source), e.content_type)
                        files.append((e.uid, body, meta))
                    t = time.thread_time()
                    if isinstance(item, Block):
                        prepared = prepare_block(files, level=level)
                    else:
                        uid, body, meta = files[0]
                        prepared = [prepare_payload(uid, body, meta=meta, level=level)]
                    # prepare_* checksum again: that share is already counted under checksum
                    clock["compress"] += time.thread_time() - t - _crc_cost(files)
                    t = time.thread_time()
                    w0 = clock["write"]
                    for p in prepared:
                        if hasattr(p, "members"):
                            writer.add_block(p)  # type: ignore[arg-type]
                        else:
                            writer.add_prepared(p)  # type: ignore[arg-type]
                    clock["index"] += time.thread_time() - t - (clock["write"] - w0)
                t = time.thread_time()
                w0 = clock["write"]
                writer.close()
                raw.flush()
                clock["index"] += time.thread_time() - t - (clock["write"] - w0)
                if fsync:
                    t = time.thread_time()
                    os.fsync(raw.fileno())
                    clock["fsync"] += time.thread_time() - t
    return clock


_CRC_PER_BYTE: list[float] = []


def _crc_cost(files: list[tuple[str, bytes, dict[str, Any]]]) -> float:
    """CPU the preparation spent on checksums (measured once per byte, then scaled)."""
    if not _CRC_PER_BYTE:
        blob = os.urandom(1 << 20)
        t = time.thread_time()
        for _ in range(64):
            crc32(blob)
        _CRC_PER_BYTE.append((time.thread_time() - t) / (64 << 20))
    return _CRC_PER_BYTE[0] * sum(len(b) for _, b, _ in files)


def whole_pass(data: Path, n_bits: int, level: int, block_size: int, fsync: bool) -> float:
    """CPU seconds of this process (all its threads: the commits run in one) for
    ``des_packer.pack`` of the manifest, one packing process."""
    from des_packer import PackOptions, pack

    opts = PackOptions(
        n_bits=n_bits,
        codec="zstd",
        level=level,
        processes=1,
        workers=1,
        fsync=fsync,
        block_size=block_size,
    )
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        t = time.process_time()
        pack(read_manifest(data / "manifests" / "to-pack.json"), tmp, opts)
        return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="gen_dataset.py output directory")
    ap.add_argument("--n-bits", type=int, default=6)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=0, help="solid blocks (0: one frame a file)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-fsync", action="store_true")
    args = ap.parse_args()
    files = sum(1 for _ in read_manifest(args.data / "manifests" / "to-pack.json"))
    passes = [
        one_pass(args.data, args.n_bits, args.level, args.block_size, not args.no_fsync)
        for _ in range(args.rounds + 1)
    ][1:]
    print(f"files: {files}, block size: {args.block_size}, load average {os.getloadavg()[0]:.1f}")
    total = 0.0
    for stage in STAGES:
        us = statistics.median(p[stage] for p in passes) / files * 1e6
        total += us
        print(f"  {stage:<9} {us:7.2f} us/file")
    print(f"  {'total':<9} {total:7.2f} us/file")
    fsync = not args.no_fsync
    whole = [
        whole_pass(args.data, args.n_bits, args.level, args.block_size, fsync)
        for _ in range(args.rounds + 1)
    ][1:]
    us = statistics.median(whole) / files * 1e6
    print(f"  des_packer.pack (one process, one worker): {us:7.2f} us/file")


if __name__ == "__main__":
    main()
