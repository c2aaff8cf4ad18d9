#!/usr/bin/env python3
"""Peak memory (RSS) of des-pack against manifest size: --dry-run (manifest parsing + plan)
for several entry counts, and a real run of the smaller ones. Entries are tiny files
(``gen_dataset.py --tiny``), JSON Lines, so the manifest itself is streamed.

    python tools/bench/pack_memory.py --counts 100000 1000000 --real 100000
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def peak_rss(cmd: list[str]) -> tuple[int, float]:
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"failed: {cmd}\n{proc.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    parts = [float(x) for x in wall.group(1).split(":")] if wall else [0.0]
    secs = sum(v * 60**i for i, v in enumerate(reversed(parts)))
    return rss, secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--real", type=int, nargs="*", default=[100_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/des-bench/mem"))
    args = ap.parse_args()
    des_pack = str(Path(sys.executable).parent / "des-pack")
    results = []
    for n in sorted(set(args.counts) | set(args.real)):
        manifest = args.work / "manifests" / f"tiny-{n}.jsonl"
        if not manifest.exists():
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "tools" / "gen_dataset.py"),
                    "--out",
                    str(args.work),
                    "--tiny",
                    str(n),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if n in args.counts:
            rss, secs = peak_rss(
                [des_pack, "--input-json", str(manifest), "--dry-run", "--json", "--n-bits", "8"]
            )
            results.append(("dry-run", n, rss, secs))
            print(
                f"dry-run {n:>9} entries: peak RSS {rss / 1024:8.1f} MiB  {secs:6.1f} s", flush=True
            )
        if n in args.real:
            out = args.work / f"out-{n}"
            shutil.rmtree(out, ignore_errors=True)
            rss, secs = peak_rss(
                [
                    des_pack,
                    "--input-json",
                    str(manifest),
                    "--output-dir",
                    str(out),
                    "--n-bits",
                    "8",
                    "--no-progress",
                    "--json",
                ]
            )
            results.append(("real", n, rss, secs))
            print(
                f"real    {n:>9} entries: peak RSS {rss / 1024:8.1f} MiB  {secs:6.1f} s", flush=True
            )
            shutil.rmtree(out, ignore_errors=True)
    dry = sorted((n, rss) for kind, n, rss, _ in results if kind == "dry-run")
    if len(dry) >= 2:
        (n0, r0), (n1, r1) = dry[0], dry[-1]
        print(f"slope (dry-run): {(r1 - r0) * 1024 / (n1 - n0):.0f} bytes per manifest entry")


if __name__ == "__main__":
    main()
