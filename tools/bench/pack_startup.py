#!/usr/bin/env python3
"""des-pack's serial start-up: the work done before the first file is read, old trees against
this one, alternated run by run.

Two measures per tree, each a whole process:

- ``dry``: ``des-pack --input-json M --dry-run`` (imports, options, manifest, plan, the plan
  printed);
- ``first``: a real run (``--no-fsync``, a fresh output directory) stopped by an audit hook
  at the first ``open`` of a file under the data set's ``input/`` directory, i.e. up to the
  moment the packing pipeline starts reading.

The main figure is CPU (user + system of the child, from ``RUSAGE_CHILDREN``): on a shared
machine it moves far less than wall time. Each tree runs with its ``packages/des-packer``,
``des-format`` and ``des-routing`` ``src`` directories first on ``PYTHONPATH``, e.g.::

    git archive 2228ef1 | tar -x -C /tmp/pack-old
    uv run python tools/bench/pack_startup.py --data /tmp/des-bench/ds --tree before=/tmp/pack-old
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("des-packer", "des-format", "des-routing")

DRY = "import sys; from des_packer.cli import pack_main; sys.argv[0] = 'des-pack'; pack_main()"
FIRST = """\
import os, sys
INPUT = {input!r}
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(INPUT):
        os._exit(0)
sys.addaudithook(hook)
from des_packer.cli import pack_main
sys.argv[0] = "des-pack"
pack_main()
"""


def run(
    tree: Path, mode: str, manifest: Path, input_dir: str, scratch: Path
) -> tuple[float, float]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(tree / "packages" / p / "src") for p in PACKAGES),
    }
    out = scratch / "out"
    if mode == "dry":
        argv = [sys.executable, "-c", DRY, "--input-json", str(manifest), "--dry-run"]
    else:
        shutil.rmtree(out, ignore_errors=True)
        argv = [
            sys.executable, "-c", FIRST.format(input=input_dir), "--input-json", str(manifest),
            "--output-dir", str(out), "--no-fsync", "--no-progress",
        ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0 or (mode == "dry" and "plan: " not in proc.stdout):
        raise SystemExit(f"{tree} {mode} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", type=Path, required=True, help="a tools/gen_dataset.py output directory"
    )
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an older tree to compare (repeatable); this checkout runs as 'this'",
    )
    ap.add_argument("--modes", default="dry,first")
    args = ap.parse_args()  # fmt: skip
    trees = {name: Path(d) for name, d in (t.split("=", 1) for t in args.tree)}
    trees["this"] = ROOT
    modes = args.modes.split(",")
    manifest = args.data / "manifests" / "to-pack.json"
    input_dir = str((args.data / "input").resolve()) + os.sep
    results: dict[tuple[str, str], list[tuple[float, float]]] = {
        (t, m): [] for t in trees for m in modes
    }
    with tempfile.TemporaryDirectory(prefix="pack-startup-") as scratch:
        for i in range(args.runs):
            order = list(trees) if i % 2 == 0 else list(trees)[::-1]
            for mode in modes:
                for name in order:
                    results[(name, mode)].append(
                        run(trees[name], mode, manifest, input_dir, Path(scratch))
                    )
    for mode in modes:
        first = statistics.median(c for c, _ in results[(next(iter(trees)), mode)])
        for name in trees:
            cpus = [c for c, _ in results[(name, mode)]]
            walls = [w for _, w in results[(name, mode)]]
            cpu, wall = statistics.median(cpus), statistics.median(walls)
            print(
                f"{mode:5} {name:10} CPU median {cpu:.3f} s "
                f"(min {min(cpus):.3f}, max {max(cpus):.3f})  wall median {wall:.3f} s  "
                f"CPU ratio {cpu / first:.3f}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
