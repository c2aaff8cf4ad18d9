"""R7 for des-migrate: SIGKILL a migrator at random instants and check nothing is lost.

Each trial builds a fresh source table (SQLite by default, or PostgreSQL with --pg-url) and
source files, runs ``des-migrate`` with ``delete_source_files: true`` in a child process, kills
it with SIGKILL after a random delay, and checks:

  1. every source file that is gone belongs to a row that is archived and whose packed copy
     reads back byte-exact (no source deleted before its copy was verified);
  2. every archived row reads back byte-exact from its shard;
  3. every shard object under the output reads (no half-written shard visible) and no uid is
     in a shard twice.

Then it re-runs the migrator to completion and checks that every row is archived exactly once,
every file reads back byte-exact and every source was deleted.

    uv run python tools/migrate_kill_test.py --trials 20
    uv run python tools/migrate_kill_test.py --trials 20 --pg-url postgresql+psycopg://...

Exit status 0 when every trial holds, 1 otherwise (the failures are printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

CUTOFF = "2024-02-01T00:00:00Z"
N_BITS = 4


def content_for(uid: str) -> bytes:
    seed = hashlib.sha256(uid.encode()).digest()
    size = 64 + seed[0] * 8 + seed[1]  # 64 .. 2359 bytes
    out = bytearray()
    while len(out) < size:
        out += seed + uid.encode()
    return bytes(out[:size])


@dataclass
class Setup:
    root: Path
    url: str
    config: Path
    out: Path
    src: Path
    rows: list[tuple[str, datetime]]


def build(root: Path, url: str, n_rows: int, batch_size: int, rng: random.Random) -> Setup:
    root.mkdir(parents=True, exist_ok=True)
    src = root / "src"
    src.mkdir()
    out = root / "out"
    engine = sa.create_engine(url)
    md = sa.MetaData()
    table = sa.Table(
        "files",
        md,
        sa.Column("uid", sa.String(100), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("file_location", sa.String(500), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("checksum", sa.String(64)),
        sa.Column("migration_error", sa.Text),
    )
    md.drop_all(engine)
    md.create_all(engine)
    base = datetime(2024, 1, 10)
    rows: list[tuple[str, datetime]] = []
    values: list[dict[str, Any]] = []
    for i in range(n_rows):
        uid = f"k{rng.randrange(1 << 40):010x}-{i}"
        created = base + timedelta(minutes=rng.randrange(3 * 24 * 60))
        data = content_for(uid)
        path = src / f"{uid}.bin"
        path.write_bytes(data)
        rows.append((uid, created.replace(tzinfo=UTC)))
        values.append(
            {
                "uid": uid,
                "created_at": created,
                "file_location": str(path),
                "size_bytes": len(data),
                "checksum": hashlib.sha256(data).hexdigest(),
            }
        )
    with engine.begin() as conn:
        conn.execute(table.insert(), values)
    engine.dispose()
    config = root / "migration.json"
    config.write_text(
        json.dumps(
            {
                "database": {
                    "url": url,
                    "checksum_column": "checksum",
                    "error_column": "migration_error",
                },
                "migration": {
                    "cutoff": CUTOFF,
                    "batch_size": batch_size,
                    "delete_source_files": True,
                    "state_dir": str(root / "state"),
                },
                "packer": {"output_dir": str(out), "n_bits": N_BITS, "workers": 1},
            }
        )
    )
    return Setup(root, url, config, out, src, rows)


def run_migrator(setup: Setup, kill_after: float | None) -> tuple[int | None, bool, float]:
    """Run des-migrate; with ``kill_after``, SIGKILL it that many seconds after it has started
    working (its first log line, once imports and config are done).

    Returns (exit code or None, was killed, seconds from ready to exit).
    """
    cmd = [sys.executable, "-m", "des_migrate.cli", "--config", str(setup.config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "source database" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    ready.wait(timeout=120)
    t_ready = time.monotonic()
    if kill_after is None:
        code = proc.wait(timeout=600)
        reader.join(timeout=10)
        return code, False, time.monotonic() - t_ready
    try:
        proc.wait(timeout=kill_after)
        reader.join(timeout=10)
        return proc.returncode, False, time.monotonic() - t_ready
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
        return None, True, time.monotonic() - t_ready


def archived(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = {r[0] for r in conn.execute(sa.text("SELECT uid FROM files WHERE archived"))}
    engine.dispose()
    return got


def check(setup: Setup, *, final: bool) -> list[str]:
    """The R7 invariants; returns a list of problems (empty when all hold)."""
    from des_format import (
        DesFormatError,
        LocalFileSource,
        LocalObjectStore,
        ShardRetriever,
        read_index,
    )
    from des_routing import locate_shard

    problems: list[str] = []
    done = archived(setup.url)
    retriever = ShardRetriever(LocalObjectStore(setup.out))
    seen: dict[str, str] = {}
    for path in sorted(setup.out.glob("*/*.des")) if setup.out.exists() else []:
        try:
            with LocalFileSource(path) as src:
                for e in read_index(src).iter_entries():
                    if e.uid in seen:
                        problems.append(f"uid {e.uid} in {seen[e.uid]} and again in {path}")
                    seen[e.uid] = str(path)
        except DesFormatError as exc:
            problems.append(f"shard {path} does not read: {exc}")
    for uid, created in setup.rows:
        source = setup.src / f"{uid}.bin"
        key = locate_shard(uid, created, N_BITS).object_key
        must_read = uid in done or not source.exists()
        if not source.exists() and uid not in done:
            problems.append(f"source of {uid} deleted but the row is not archived")
        if final and uid not in done:
            problems.append(f"{uid} not archived after the final run")
        if final and source.exists():
            problems.append(f"source of {uid} still there after the final run")
        if must_read:
            try:
                data = retriever.read(key, uid)
            except DesFormatError as exc:
                problems.append(f"{uid} archived or source deleted, but not readable: {exc}")
                continue
            if data != content_for(uid):
                problems.append(f"{uid} reads back different bytes")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--rows", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=9)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--pg-url", default=None, help="use this PostgreSQL database (tables replaced)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="des-migrate-kill-"))
    print(f"seed {seed}, work dir {work}")

    def url_for(d: Path) -> str:
        return args.pg_url or f"sqlite+pysqlite:///{d / 'source.db'}"

    # calibrate: how long does an unkilled run work (after start-up) on this machine?
    cal = build(work / "calibrate", url_for(work / "calibrate"), args.rows, args.batch_size, rng)
    code, _, work_time = run_migrator(cal, None)
    if code != 0 or check(cal, final=True):
        print(f"calibration run failed (exit {code}): {check(cal, final=True)[:5]}")
        return 1
    print(f"an unkilled run works for {work_time:.2f} s after start-up")
    shutil.rmtree(work / "calibrate", ignore_errors=True)

    failed = 0
    mid_run = 0
    for trial in range(args.trials):
        d = work / f"trial-{trial:03d}"
        setup = build(d, url_for(d), args.rows, args.batch_size, rng)
        delay = rng.uniform(0.0, work_time * 1.05)
        _, killed, _ = run_migrator(setup, delay)
        mid_run += killed
        problems = check(setup, final=False)
        partial = len(archived(setup.url))
        code, _, _ = run_migrator(setup, None)
        problems += check(setup, final=True)
        if code != 0:
            problems.append(f"the finishing run exited {code}")
        status = "ok" if not problems else "FAILED"
        print(
            f"trial {trial:3d}: kill {delay:5.2f} s in ({'mid-run' if killed else 'after exit'}), "
            f"{partial:3d}/{args.rows} archived at the kill, finished: {status}"
        )
        for problem in problems[:10]:
            print(f"    {problem}")
        failed += bool(problems)
        if not problems:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{args.trials - failed}/{args.trials} trials held ({mid_run} killed mid-run)")
    if args.workdir is None and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
