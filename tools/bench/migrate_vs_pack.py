"""des-migrate against des-pack on the same files, in the same run (run by hand).

Builds N small files (500..4,000 bytes, spread over --days days), a PostgreSQL table listing
them, then:

  1. des-pack's library (``des_packer.pack``, what the des-pack command runs) packs every file
     into a fresh output directory;
  2. des-migrate (``MigrationOrchestrator.run_migration_cycle``) migrates the same files from
     PostgreSQL into another fresh output directory, once per --batch-size given (the table's
     archived flags are reset between runs).

Both run in this process with the same packer options (n_bits, codec, workers), so the ratio
compares what migration adds: SQL claims and marks, validation (a stat per file), the
"already packed?" index check, read-back verification (in des-migrate's verify worker process
for cycles this large), and appends when several batches hit one shard. CPU is this process's
and its exited children's (the verify worker), not PostgreSQL's.

    uv run python tools/bench/migrate_vs_pack.py --rows 100000 --batch-size 5000 25000 --rounds 3

``--data DIR`` takes the files of a ``tools/gen_dataset.py`` data set instead (the small-file
set of issue 18: ``--profile small``), and both sides then pack with the shipped defaults,
one process per CPU (``--processes 1`` for one process each). ``--gc-freeze`` runs each
migration cycle as ``des-migrate --gc-freeze`` does.

    uv run python tools/bench/migrate_vs_pack.py --data /tmp/des-bench/small --n-bits 6 \
        --batch-size 25000 100000 --rounds 2 --gc-freeze

Runs alternate (des-pack, then each batch size) for --rounds rounds; the summary gives medians
and the ratio of des-pack's median time to each migration's median time (files/s ratio).

The PostgreSQL database des_bench_migrate is created on --admin-url and dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_NAME = "des_bench_migrate"


def make_files(root: Path, n: int, days: int, seed: int) -> list[tuple[str, datetime, str, int]]:
    rng = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows: list[tuple[str, datetime, str, int]] = []
    words = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(64)]
    for i in range(n):
        sub = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        size = rng.randint(500, 4000)
        text = " ".join(rng.choice(words) for _ in range(size // 60 + 1)).encode()[:size]
        path = sub / f"f{i:07d}.txt"
        path.write_bytes(text)
        created = base + timedelta(seconds=rng.randrange(days * 86400))
        rows.append((f"doc-{i:07d}", created, str(path), len(text)))
    return rows


def rows_of(data: Path) -> list[tuple[str, datetime, str, int]]:
    """The files of a gen_dataset.py data set, as make_files returns them."""
    import json

    manifest = data / "manifests" / "to-pack.json"
    out = []
    for r in json.loads(manifest.read_text()):
        created = datetime.fromisoformat(r["created_at"].replace("Z", "+00:00"))
        path = str((manifest.parent / r["source_path"]).resolve())
        out.append((r["uid"], created, path, int(r["size_bytes"])))
    return out


def make_table(url: str, rows: list[tuple[str, datetime, str, int]]) -> None:
    engine = sa.create_engine(url)
    md = sa.MetaData()
    table = sa.Table(
        "files",
        md,
        sa.Column("uid", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("file_location", sa.String(500), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Index("ix_files_keyset", "created_at", "uid"),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(
                table.insert(),
                [
                    {"uid": u, "created_at": c, "file_location": p, "size_bytes": s}
                    for u, c, p, s in rows[i : i + 5000]
                ],
            )
        conn.execute(sa.text("ANALYZE files"))
    engine.dispose()


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) and of its children that have
    exited (des-migrate's verify worker), so far. PostgreSQL's own CPU is not included."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_pack(
    rows: list[tuple[str, datetime, str, int]], out: Path, opts: Any
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of des-pack's library call on every file."""
    from des_packer import ManifestEntry, pack

    entries = [ManifestEntry(u, c, s, p) for u, c, p, s in rows]
    t0 = time.perf_counter()
    c0 = cpu_seconds()
    report = pack(entries, str(out), opts)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    assert report.files == len(rows), report.to_json()
    return elapsed, cpu


def run_migrate(
    url: str,
    out: Path,
    batch_size: int,
    n_bits: int,
    workers: int | None,
    processes: int | None = None,
    gc_freeze: bool = False,
) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, step times) of one migration cycle of every row."""
    import contextlib

    from des_migrate import MigrationOrchestrator, parse_config
    from des_migrate.cli import older_objects_frozen

    packer: dict[str, Any] = {"output_dir": str(out), "n_bits": n_bits, "workers": workers}
    if processes is not None:
        packer["processes"] = processes
    cfg = parse_config(
        {
            "database": {"url": url},
            "migration": {"cutoff": "2030-01-01T00:00:00Z", "batch_size": batch_size},
            "packer": packer,
        }
    )
    orch = MigrationOrchestrator(cfg)
    t0 = time.perf_counter()
    c0 = cpu_seconds()
    with older_objects_frozen() if gc_freeze else contextlib.nullcontext():
        report = orch.run_migration_cycle()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    assert report.status == "success", report.to_json()
    orch.db.engine.dispose()
    steps = " ".join(f"{k}={v:.1f}" for k, v in report.step_seconds)
    return elapsed, cpu, steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--n-bits", type=int, default=8)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--batch-size", type=int, nargs="+", default=[20_000])
    p.add_argument("--admin-url", default=ADMIN_URL)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--data", type=Path, default=None, help="a gen_dataset.py data set")
    p.add_argument("--processes", type=int, default=None, help="packing processes (default: CPUs)")
    p.add_argument("--gc-freeze", action="store_true", help="as des-migrate --gc-freeze")
    args = p.parse_args()

    from des_packer import PackOptions

    work = args.workdir or Path(tempfile.mkdtemp(prefix="des-bench-migrate-"))
    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    url = args.admin_url.rsplit("/", 1)[0] + f"/{DB_NAME}"
    try:
        t0 = time.perf_counter()
        if args.data is not None:
            rows = rows_of(args.data)
        else:
            rows = make_files(work / "src", args.rows, args.days, args.seed)
        make_table(url, rows)
        print(
            f"setup: {len(rows)} files, {sum(r[3] for r in rows)} bytes, "
            f"{time.perf_counter() - t0:.1f} s; cpus={os.cpu_count()}"
        )
        opts = PackOptions(
            n_bits=args.n_bits,
            codec="zstd",
            level=3,
            workers=args.workers,
            processes=args.processes,  # None: one per CPU, as des-pack runs
        )
        engine = sa.create_engine(url)
        times: dict[str, list[float]] = {"des-pack": []}
        cpus: dict[str, list[float]] = {"des-pack": []}
        ratios: dict[str, list[float]] = {}
        for bs in args.batch_size:
            times[f"des-migrate batch {bs}"] = []
            cpus[f"des-migrate batch {bs}"] = []
            ratios[f"des-migrate batch {bs}"] = []
        # alternate the runs, round after round: the machine is shared, so a ratio is only
        # meaningful between runs made close together
        for rnd in range(args.rounds):
            out = work / "out-pack"
            t_pack, c_pack = run_pack(rows, out, opts)
            shutil.rmtree(out, ignore_errors=True)
            times["des-pack"].append(t_pack)
            cpus["des-pack"].append(c_pack)
            print(
                f"round {rnd}: des-pack                  {t_pack:7.2f} s "
                f"{len(rows) / t_pack:8.0f} files/s  CPU {c_pack:5.1f} s  "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            for bs in args.batch_size:
                with engine.begin() as conn:
                    conn.execute(sa.text("UPDATE files SET archived = false"))
                out = work / f"out-migrate-{bs}"
                t, c, steps = run_migrate(
                    url, out, bs, args.n_bits, args.workers, args.processes, args.gc_freeze
                )
                shutil.rmtree(out, ignore_errors=True)
                name = f"des-migrate batch {bs}"
                times[name].append(t)
                cpus[name].append(c)
                ratios[name].append(t_pack / t)
                print(
                    f"round {rnd}: des-migrate batch {bs:>7} {t:7.2f} s "
                    f"{len(rows) / t:8.0f} files/s  CPU {c:5.1f} s  ratio to this round's "
                    f"des-pack {t_pack / t:.2f}  [{steps}]",
                    flush=True,
                )
        engine.dispose()
        print()
        print("CPU: this process and its exited children (the verify worker); not PostgreSQL's")
        print(
            f"{'run':28} {'median s':>9} {'files/s':>9} {'CPU s':>7} "
            f"{'ratio of medians':>17} {'median of round ratios':>23}"
        )
        base = statistics.median(times["des-pack"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rr = f"{statistics.median(ratios[name]):23.2f}" if name in ratios else " " * 23
            print(
                f"{name:28} {med:9.2f} {len(rows) / med:9.0f} "
                f"{statistics.median(cpus[name]):7.1f} {base / med:17.2f} {rr}"
            )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        admin.dispose()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
