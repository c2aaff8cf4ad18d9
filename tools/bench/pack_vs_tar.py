#!/usr/bin/env python3
"""des-pack (zstd level 3) against ``tar -cf - DIR | zstd -3 -T0`` on the same files, same run.

    python tools/gen_dataset.py --out /tmp/des-bench/ds --count 20000 --seed 1
    python tools/bench/pack_vs_tar.py --data /tmp/des-bench/ds --rounds 3
    python tools/bench/pack_vs_tar.py --data /tmp/des-bench/ds --rounds 3 --baseline /tmp/old
    python tools/bench/pack_vs_tar.py --data /tmp/des-bench/ds --rounds 3 --blocks
    python tools/bench/pack_vs_tar.py --data /tmp/des-bench/ds --des-args "--block-size 65536"

Both commands are timed as whole processes (wall clock, interpreter start-up included for
des-pack) and alternate round by round, after one untimed read of every file so both find the
page cache equally warm. Output bytes: the .tar.zst file against every object des-pack wrote
(shards, continuation parts, big files). CPU is user + system time of the whole process tree
(tar, zstd and its threads; des-pack and its threads); on a shared machine it is the number to
compare, as wall time follows whoever else is running (the load average is printed per round).
Peak RSS comes from /usr/bin/time -v when present. des-pack runs with cached bytecode, as
an installed package has it (``--no-bytecode``: compile every module on every run, as this
machine's PYTHONDONTWRITEBYTECODE=1 would otherwise make it).

``--strace`` adds, after the timed rounds, one untimed run of each variant under ``strace -c -f``
and prints the system calls per input file (all processes and threads; the kinds that make up
most of them listed). The small-file sets of issue 18 (``tools/gen_dataset.py --profile small``
and ``--profile mixed``) are timed with ``--n-bits 6``:

    python tools/bench/pack_vs_tar.py --data /tmp/des-bench/small --n-bits 6 --rounds 3 --strace

``--des-args "FLAGS"`` (repeatable) adds a contender: des-pack (fsync) with these extra flags,
timed in the same rounds, alternating with the others; ``--blocks`` is
``--des-args "--block-size 131072"`` (solid blocks of 128 KiB).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
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


def timed(
    cmd: list[str] | str, *, shell: bool = False, env: dict[str, str] | None = None
) -> tuple[float, int, float, float]:
    """(wall seconds, peak RSS KiB or 0, user and system CPU seconds) of one process tree.

    CPU comes from the kernel's accounting of the waited-for children (``RUSAGE_CHILDREN``:
    every process of the tree, every thread), so it needs no /usr/bin/time."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    if not shell and isinstance(cmd, str):
        argv = [cmd]
    full = [gnu_time, "-v", *argv] if gnu_time else argv
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {cmd}\n{proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return wall, int(m.group(1)) if m else 0, user, system


def syscalls(cmd: list[str] | str, env: dict[str, str] | None) -> tuple[int, list[tuple[str, int]]]:
    """Total system calls of one run of ``cmd`` (every process and thread) and the most
    frequent kinds, from ``strace -c -f``."""
    report = Path("/tmp/des-bench-strace.txt")
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    subprocess.run(
        ["strace", "-c", "-f", "-o", str(report), *argv], capture_output=True, check=True, env=env
    )
    rows: list[tuple[str, int]] = []
    total = 0
    for line in report.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            rows.append((parts[-1], calls))
        elif parts and parts[-1] == "total" and len(parts) >= 4:
            total = int(parts[3])
    rows.sort(key=lambda r: -r[1])
    return total, rows[:6]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="gen_dataset.py output directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/des-bench/work"))
    ap.add_argument("--n-bits", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also time des-pack (fsync) from this tree (e.g. `git archive OLD | tar -x -C DIR`),"
        " its packages/*/src put first on PYTHONPATH: before/after in the same run",
    )
    ap.add_argument(
        "--no-bytecode",
        action="store_true",
        help="run des-pack as the environment says (PYTHONDONTWRITEBYTECODE kept): every run "
        "compiles its modules again. By default des-pack runs with cached bytecode, as an "
        "installed package has it (pip and the Docker images compile it at install time)",
    )
    ap.add_argument(
        "--des-args",
        action="append",
        default=[],
        metavar="FLAGS",
        help="also time des-pack (fsync) with these extra flags (one string, split like a "
        "shell would; repeatable), e.g. --des-args '--block-size 131072'",
    )
    ap.add_argument(
        "--blocks",
        action="store_true",
        help="shorthand for --des-args '--block-size 131072' (solid blocks of 128 KiB)",
    )
    ap.add_argument(
        "--strace",
        action="store_true",
        help="after the rounds, run each variant once under strace -c -f: system calls per file",
    )
    args = ap.parse_args()
    extra_args: list[str] = list(args.des_args)
    if args.blocks:
        extra_args.append("--block-size 131072")
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
    extra_names: list[str] = []
    for flags in extra_args:
        name = f"des-pack (fsync) {flags}"
        variants[name] = ([*des_cmd, *shlex.split(flags)], False)
        extra_names.append(name)
    env: dict[str, dict[str, str]] = {}
    des_env: dict[str, str] | None = None
    if not args.no_bytecode:
        # Cached bytecode, as an installed package has: allow writing it, and write it now
        # with one untimed dry run (this machine sets PYTHONDONTWRITEBYTECODE=1).
        des_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([*des_cmd, "--dry-run"], env=des_env, capture_output=True, check=True)
        for name in variants:
            if name.startswith("des-pack"):
                env[name] = des_env
    if args.baseline is not None:
        srcs = sorted(str(p) for p in (args.baseline / "packages").glob("*/src"))
        if not srcs:
            sys.exit(f"--baseline {args.baseline}: no packages/*/src in it")
        name = "des-pack (fsync), baseline"
        launcher = (
            "import sys; from des_packer.cli import pack_main; sys.argv[0] = 'des-pack'; "
            "pack_main()"
        )
        variants[name] = ([sys.executable, "-c", launcher, *des_cmd[1:]], False)
        env[name] = {**(des_env or os.environ), "PYTHONPATH": os.pathsep.join(srcs)}
        if des_env is not None:
            subprocess.run(
                [*variants[name][0], "--dry-run"], env=env[name], capture_output=True, check=True
            )
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    users: dict[str, list[float]] = {k: [] for k in variants}
    systems: dict[str, list[float]] = {k: [] for k in variants}
    rss: dict[str, int] = dict.fromkeys(variants, 0)
    sizes: dict[str, int] = {}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            shutil.rmtree(args.work, ignore_errors=True)
            args.work.mkdir(parents=True)
            subprocess.run(["sync"], check=True)  # no dirty pages left from the previous run
            cmd, shell = variants[name]
            t, peak, user, system = timed(cmd, shell=shell, env=env.get(name))
            times[name].append(t)
            cpus[name].append(user + system)
            users[name].append(user)
            systems[name].append(system)
            rss[name] = max(rss[name], peak)
            sizes[name] = out_zst.stat().st_size if name.startswith("tar") else tree_size(out_dir)
        print(
            f"round {r + 1} (load average {os.getloadavg()[0]:.1f}): "
            + ", ".join(f"{k} {v[-1]:.2f} s / CPU {cpus[k][-1]:.2f} s" for k, v in times.items()),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    if args.strace:
        if not shutil.which("strace"):
            sys.exit("strace is not installed (apt-get install strace)")
        print()
        for name, (cmd, _shell) in variants.items():
            shutil.rmtree(args.work, ignore_errors=True)
            args.work.mkdir(parents=True)
            total, top = syscalls(cmd, env.get(name))
            kinds = ", ".join(f"{k} {c / n_files:.2f}" for k, c in top)
            print(f"syscalls {name:<32} {total / n_files:6.2f} per file ({total} in all; {kinds})")
    print()
    print(
        f"files: {n_files}, input bytes: {bytes_in} ({bytes_in / 2**20:.1f} MiB), cpus: "
        f"{os.cpu_count()}"
    )
    for name in variants:
        print(
            f"{name:<32} median {med[name]:6.2f} s (all: "
            f"{', '.join(f'{x:.2f}' for x in times[name])})  CPU median "
            f"{statistics.median(cpus[name]):.2f} s (user {statistics.median(users[name]):.2f}, "
            f"sys {statistics.median(systems[name]):.2f}; all: "
            f"{', '.join(f'{x:.2f}' for x in cpus[name])})  out {sizes[name]} bytes  "
            f"peak RSS {rss[name]} KiB"
        )
    tar, tar_sync = "tar | zstd -3 -T0", "tar | zstd -3 -T0 ; sync FILE"
    des, des_nf = "des-pack (fsync, default)", "des-pack --no-fsync"
    print(f"time ratio des-pack(fsync) / tar|zstd+sync : {med[des] / med[tar_sync]:.3f}")
    print(f"time ratio des-pack --no-fsync / tar|zstd  : {med[des_nf] / med[tar]:.3f}")
    cm = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"CPU ratio des-pack(fsync) / tar|zstd        : {cm[des] / cm[tar]:.3f}")
    print(f"CPU ratio des-pack --no-fsync / tar|zstd    : {cm[des_nf] / cm[tar]:.3f}")
    if args.baseline is not None:
        base = "des-pack (fsync), baseline"
        print(f"CPU ratio des-pack(fsync) / baseline         : {cm[des] / cm[base]:.3f}")
        print(f"time ratio des-pack(fsync) / baseline        : {med[des] / med[base]:.3f}")
        print(f"CPU ratio baseline / tar|zstd                : {cm[base] / cm[tar]:.3f}")
        if sizes[base] != sizes[des]:
            print(f"output bytes differ: baseline {sizes[base]}, des-pack {sizes[des]}")
    for name in extra_names:
        flags = name.removeprefix("des-pack (fsync) ")
        print(f"with {flags}:")
        print(f"  CPU ratio / tar|zstd                       : {cm[name] / cm[tar]:.3f}")
        print(f"  CPU ratio / des-pack(fsync)                : {cm[name] / cm[des]:.3f}")
        print(f"  time ratio / tar|zstd+sync                 : {med[name] / med[tar_sync]:.3f}")
        print(
            f"  size ratio / tar.zst: {sizes[name] / sizes[tar]:.4f}   compression "
            f"{bytes_in / sizes[name]:.3f}x; bytes {sizes[name]} against {sizes[des]} "
            f"without ({sizes[name] - sizes[des]:+d})"
        )
    print(
        f"size ratio des-pack / tar.zst: {sizes[des] / sizes[tar]:.4f}   compression: "
        f"tar {bytes_in / sizes[tar]:.3f}x, des {bytes_in / sizes[des]:.3f}x"
    )


if __name__ == "__main__":
    main()
