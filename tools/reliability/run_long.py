"""The long version of the reliability suite (run by hand; figures go to docs/RELIABILITY.md).

    uv run python tools/reliability/run_long.py                 # everything, default sizes
    uv run python tools/reliability/run_long.py --only crash --trials 100
    uv run python tools/reliability/run_long.py --only fuzz --fuzz-inputs 1000000

Parts:
- crash: the SIGKILL tests run together, each with ``--trials`` trials (default 100): the
  packer on local disk (103 files per trial, fresh and append runs), the packer writing to S3
  (15 files per trial), repack (64 files per trial, when that test exists) and the migrator
  (tools/migrate_kill_test.py, ``--rows`` rows per trial). After every kill, every visible
  shard is read and checked; then a re-run must finish the job byte-identically.
- faults: tests-integration/test_reliability_s3.py with DES_RELIABILITY_SCALE (default 5):
  5x the files, rounds, pack attempts and migration cycles under 10%/50% S3 faults.
- fuzz: tools/reliability/fuzz_format.py with ``--fuzz-inputs`` inputs (default 1,000,000).

Prints one line per part (trials, files checked, seconds) and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

KILL_TESTS = [
    # (pytest node, files checked per trial)
    ("packages/des-packer/tests/test_fault_local.py", 103),
    ("packages/des-packer/tests/test_fault_s3.py", 15),
    ("packages/des-packer/tests/test_repack_kill.py", 64),
]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, float, str]:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return proc.returncode, time.monotonic() - started, proc.stdout + proc.stderr


def crash(trials: int, rows: int) -> bool:
    ok = True
    env = {
        **os.environ,
        "DES_KILL_TRIALS": str(trials),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    for test, files in KILL_TESTS:
        if not (ROOT / test).exists():
            print(f"crash  {test}: not present, skipped")
            continue
        code, secs, out = _run(
            [
                sys.executable,
                "-m",
                "pytest",
                test,
                "-q",
                "-p",
                "trials_plugin",
                "-p",
                "no:cacheprovider",
                "--timeout",
                "0",
            ],
            env,
        )
        last = out.strip().splitlines()[-1] if out.strip() else ""
        print(
            f"crash  {test}: {trials} trials, {trials * files} files checked after kills "
            f"(and again after each re-run), {secs:.0f} s: {last}"
        )
        if code != 0:
            ok = False
            print(out[-4000:])
    code, secs, out = _run(
        [sys.executable, "tools/migrate_kill_test.py", "--trials", str(trials), "--rows", str(rows)]
    )
    last = out.strip().splitlines()[-1] if out.strip() else ""
    print(
        f"crash  tools/migrate_kill_test.py: {trials} trials, {trials * rows} rows checked, "
        f"{secs:.0f} s: {last}"
    )
    if code != 0:
        ok = False
        print(out[-4000:])
    return ok


def faults(scale: int) -> bool:
    env = {**os.environ, "DES_RELIABILITY_SCALE": str(scale)}
    code, secs, out = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests-integration/test_reliability_s3.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "0",
        ],
        env,
    )
    last = out.strip().splitlines()[-1] if out.strip() else ""
    print(f"faults test_reliability_s3.py at scale {scale}: {secs:.0f} s: {last}")
    if code != 0:
        print(out[-4000:])
    return code == 0


def fuzz(inputs: int) -> bool:
    code, _secs, out = _run(
        [sys.executable, "tools/reliability/fuzz_format.py", "--inputs", str(inputs)]
    )
    print(f"fuzz   {out.strip().splitlines()[-1] if out.strip() else ''}")
    if code != 0:
        print(out[-4000:])
    return code == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["crash", "faults", "fuzz"], action="append")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--rows", type=int, default=80)
    p.add_argument("--scale", type=int, default=5)
    p.add_argument("--fuzz-inputs", type=int, default=1_000_000)
    args = p.parse_args(argv)
    parts = args.only or ["crash", "faults", "fuzz"]
    results = []
    if "crash" in parts:
        results.append(crash(args.trials, args.rows))
    if "faults" in parts:
        results.append(faults(args.scale))
    if "fuzz" in parts:
        results.append(fuzz(args.fuzz_inputs))
    print("run_long: all held" if all(results) else "run_long: FAILURES above")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
