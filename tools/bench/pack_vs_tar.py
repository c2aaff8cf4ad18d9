#!/usr/bin/env python3
"""des-pack (zstd level 3) against ``tar -cf - DIR | zstd -3 -T0`` on the same files, same run.

    python tools/gen_dataset.py --out /tmp/des-bench/ds --count 20000 --seed 1
    python tools/bench/pack_vs_tar.py --data /tmp/des-bench/ds --rounds 3

Both commands are timed as whole processes (wall clock, interpreter start-up included for
des-pack) and alternate round by round, after one untimed read of every file so both find the
page cache equally warm. Output bytes: the .tar.zst file against every object des-pack wrote
(shards, continuation parts, big files). Peak RSS comes from /usr/bin/time -v when present.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def warm(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                while fh.read(1 << 20):
                    pass


def timed(cmd: list[str] | str, *, shell: bool = False) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB or 0) of one process (tree)."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if gnu_time:
        full = [gnu_time, "-v", "sh", "-c", cmd] if shell else [gnu_time, "-v", *cmd]
    else:
        full = ["sh", "-c", cmd] if shell else list(cmd)
    start = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {cmd}\n{proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, int(m.group(1)) if m else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="gen_dataset.py output directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/des-bench/work"))
    ap.add_argument("--n-bits", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    manifest = args.data / "manifests" / "to-pack.json"
    input_dir = args.data / "input"
    if not shutil.which("zstd"):
        sys.exit("zstd is not installed (apt-get install zstd)")
    des_pack = shutil.which("des-pack") or str(Path(sys.executable).parent / "des-pack")
    n_files = sum(1 for p in input_dir.rglob("*") if p.is_file())
    bytes_in = tree_size(input_dir)
    warm(input_dir)
    tar_times, des_times, tar_rss, des_rss = [], [], [], []
    tar_bytes = des_bytes = 0
    for r in range(args.rounds):
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
        out_zst = args.work / "all.tar.zst"
        t, rss = timed(f"tar -cf - -C {input_dir} . | zstd -3 -T0 -q -o {out_zst}", shell=True)
        tar_times.append(t)
        tar_rss.append(rss)
        tar_bytes = out_zst.stat().st_size
        out_dir = args.work / "des"
        cmd = [
            des_pack,
            "--input-json",
            str(manifest),
            "--output-dir",
            str(out_dir),
            "--codec",
            "zstd",
            "--level",
            "3",
            "--n-bits",
            str(args.n_bits),
            "--no-progress",
        ]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        t, rss = timed(cmd)
        des_times.append(t)
        des_rss.append(rss)
        des_bytes = tree_size(out_dir)
        print(
            f"round {r + 1}: tar|zstd {tar_times[-1]:.2f} s, des-pack {des_times[-1]:.2f} s",
            flush=True,
        )
    tm, dm = statistics.median(tar_times), statistics.median(des_times)
    print()
    print(
        f"files: {n_files}, input bytes: {bytes_in} ({bytes_in / 2**20:.1f} MiB), cpus: "
        f"{os.cpu_count()}"
    )
    print(
        f"tar -cf - | zstd -3 -T0 : median {tm:.2f} s  (all: "
        f"{', '.join(f'{x:.2f}' for x in tar_times)})  out {tar_bytes} bytes  "
        f"peak RSS {max(tar_rss)} KiB"
    )
    print(
        f"des-pack zstd -3        : median {dm:.2f} s  (all: "
        f"{', '.join(f'{x:.2f}' for x in des_times)})  out {des_bytes} bytes  "
        f"peak RSS {max(des_rss)} KiB"
    )
    print(
        f"time ratio des/tar: {dm / tm:.3f}   size ratio des/tar: {des_bytes / tar_bytes:.4f}"
        f"   compression: tar {bytes_in / tar_bytes:.3f}x, des {bytes_in / des_bytes:.3f}x"
    )


if __name__ == "__main__":
    main()
