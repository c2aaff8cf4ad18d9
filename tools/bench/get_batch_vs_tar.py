#!/usr/bin/env python3
"""``des get --batch`` over every file of a data set against ``tar -xf`` of the same files'
``.tar.zst``, alternated in one run (issue 18).

    python tools/gen_dataset.py --profile small --out /tmp/des-bench/small
    python tools/bench/get_batch_vs_tar.py --data /tmp/des-bench/small --n-bits 6 --rounds 3

Set-up (untimed): the data set is packed with des-pack (its defaults, plus ``--des-args``)
and archived with ``tar -cf - | zstd -3 -T0``; a JSON Lines file lists every (uid,
created_at). Then each round runs, in alternating order, ``des get --batch LIST --out DIR``
(every file read back through the shard index, checksummed and written to DIR/<uid>) and
``zstd -dc X.tar.zst | tar -xf - -C DIR``, each into an empty directory, and reports files/s
(wall) and CPU (user + system of the process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_vs_tar import timed, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="gen_dataset.py output directory")
    ap.add_argument("--n-bits", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/des-bench/get"))
    ap.add_argument("--des-args", default="", help="extra des-pack flags for the set-up pack")
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    manifest = args.data / "manifests" / "to-pack.json"
    rows = json.loads(manifest.read_text())
    shutil.rmtree(args.work, ignore_errors=True)
    shards = args.work / "shards"
    archive = args.work / "all.tar.zst"
    listing = args.work / "batch.jsonl"
    args.work.mkdir(parents=True)
    subprocess.run(
        [str(bindir / "des-pack"), "--input-json", str(manifest), "--output-dir", str(shards),
         "--n-bits", str(args.n_bits), "--no-progress", *shlex.split(args.des_args)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        f"tar -cf - -C {args.data / 'input'} . | zstd -3 -T0 -q -f -o {archive}",
        shell=True,
        check=True,
    )
    listing.write_text(
        "".join(json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in rows)
    )
    warm(shards)
    warm(args.work)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = args.work / "out"
    variants: dict[str, list[str] | str] = {
        "des get --batch": [
            str(bindir / "des"), "--base-dir", str(shards), "--n-bits", str(args.n_bits),
            "get", "--batch", str(listing), "--out", str(out),
        ],
        "zstd -dc | tar -xf": f"zstd -dc {archive} | tar -xf - -C {out}",
    }  # fmt: skip
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            subprocess.run(["sync"], check=True)
            cmd = variants[name]
            wall, _rss, user, system = timed(cmd, shell=isinstance(cmd, str), env=env)
            got = sum(1 for _ in out.rglob("*") if _.is_file())
            if got != len(rows):
                sys.exit(f"{name}: {got} files written, expected {len(rows)}")
            walls[name].append(wall)
            cpus[name].append(user + system)
        print(
            f"round {r + 1} (load average {os.getloadavg()[0]:.1f}): "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()),
            flush=True,
        )
    n = len(rows)
    med = {k: statistics.median(v) for k, v in walls.items()}
    for name in variants:
        print(
            f"{name:<20} median {med[name]:6.2f} s  {n / med[name]:9.0f} files/s  CPU median "
            f"{statistics.median(cpus[name]):.2f} s  (all: "
            f"{', '.join(f'{x:.2f}' for x in walls[name])})"
        )
    des, tar = "des get --batch", "zstd -dc | tar -xf"
    print(f"files/s ratio des get --batch / tar -xf: {med[tar] / med[des]:.3f}")


if __name__ == "__main__":
    main()
