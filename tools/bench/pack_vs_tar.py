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


def timed(cmd: list[str] | str, *, shell: bool = False) -> tuple[float, int, float]:
    """(wall seconds, peak RSS KiB or 0, user+system CPU seconds or 0) of one process tree."""
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
    cpu = sum(
        float(x.group(1))
        for x in re.finditer(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
    )
    return wall, int(m.group(1)) if m else 0, cpu


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
    out_zst = args.work / "all.tar.zst"
    out_dir = args.work / "des"
    des_cmd = [
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
        des_cmd += ["--workers", str(args.workers)]
    tar_cmd = f"tar -cf - -C {input_dir} . | zstd -3 -T0 -q -f -o {out_zst}"
    variants: dict[str, tuple[list[str] | str, bool]] = {
        "tar | zstd -3 -T0": (tar_cmd, True),
        "tar | zstd -3 -T0 ; sync FILE": (f"{tar_cmd} && sync {out_zst}", True),
        "des-pack (fsync, default)": (des_cmd, False),
        "des-pack --no-fsync": ([*des_cmd, "--no-fsync"], False),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    rss: dict[str, int] = dict.fromkeys(variants, 0)
    sizes: dict[str, int] = {}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            shutil.rmtree(args.work, ignore_errors=True)
            args.work.mkdir(parents=True)
            subprocess.run(["sync"], check=True)  # no dirty pages left from the previous run
            cmd, shell = variants[name]
            t, peak, cpu = timed(cmd, shell=shell)
            times[name].append(t)
            cpus[name].append(cpu)
            rss[name] = max(rss[name], peak)
            sizes[name] = out_zst.stat().st_size if name.startswith("tar") else tree_size(out_dir)
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(
        f"files: {n_files}, input bytes: {bytes_in} ({bytes_in / 2**20:.1f} MiB), cpus: "
        f"{os.cpu_count()}"
    )
    for name in variants:
        print(
            f"{name:<32} median {med[name]:6.2f} s (all: "
            f"{', '.join(f'{x:.2f}' for x in times[name])})  CPU median "
            f"{statistics.median(cpus[name]):.2f} s  out {sizes[name]} bytes  "
            f"peak RSS {rss[name]} KiB"
        )
    tar, tar_sync = "tar | zstd -3 -T0", "tar | zstd -3 -T0 ; sync FILE"
    des, des_nf = "des-pack (fsync, default)", "des-pack --no-fsync"
    print(f"time ratio des-pack(fsync) / tar|zstd+sync : {med[des] / med[tar_sync]:.3f}")
    print(f"time ratio des-pack --no-fsync / tar|zstd  : {med[des_nf] / med[tar]:.3f}")
    cm = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"CPU ratio des-pack(fsync) / tar|zstd        : {cm[des] / cm[tar]:.3f}")
    print(
        f"size ratio des-pack / tar.zst: {sizes[des] / sizes[tar]:.4f}   compression: "
        f"tar {bytes_in / sizes[tar]:.3f}x, des {bytes_in / sizes[des]:.3f}x"
    )


if __name__ == "__main__":
    main()
