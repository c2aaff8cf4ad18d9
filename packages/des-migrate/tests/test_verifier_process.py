"""The verify step in a worker process (cycles whose first batch is large enough)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from des_format import LocalObjectStore, ShardWriter
from des_migrate import MigrationOrchestrator, MigrationTuning
from des_migrate._verify_worker import check_shard
from des_packer import pack
from des_routing import locate_shard


@pytest.fixture
def in_a_process() -> MigrationTuning:
    """Read back in the verify worker process whatever the batch size."""
    return MigrationTuning(process_verify_min_rows=1)


def _setup(url: str, tmp_path: Path, h: type, n: int = 10) -> tuple[sa.Engine, sa.Table, list[Any]]:
    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(
            f"file-{i:03d}", base + timedelta(hours=5 * i), h.content_for(f"file-{i:03d}", 90 + i)
        )
        for i in range(n)
    ]
    engine, table = h.source_table(url, tmp_path / "src", rows)
    return engine, table, rows


def test_a_whole_cycle_verified_by_a_worker_process(
    db_url: str, tmp_path: Path, h: type, in_a_process: MigrationTuning
) -> None:
    engine, table, rows = _setup(db_url, tmp_path, h)
    out = tmp_path / "out"
    pids: list[int | None] = []
    orch: MigrationOrchestrator

    def observe(step: str) -> None:
        if step == "mark":
            assert orch._verifier is not None
            pids.append(orch._verifier.pid)

    cfg = h.migration_config(db_url, out, migration={"batch_size": 4})
    orch = MigrationOrchestrator(cfg, fault=observe, tuning=in_a_process)
    report = orch.run_migration_cycle()
    assert report.status == "success"
    assert report.migrated == 10
    assert report.batches >= 3
    # one worker process for the whole cycle, gone (and reaped) once the cycle is over
    assert len(pids) == report.batches
    assert len(set(pids)) == 1
    assert pids[0] is not None
    assert pids[0] != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert h.archived_uids(engine, table) == {r.uid for r in rows}
    for r in rows:
        assert h.read_back(out, r.uid, r.created_at) == r.data


def test_a_damaged_file_is_refused_by_the_worker(
    sqlite_url: str, tmp_path: Path, h: type, in_a_process: MigrationTuning
) -> None:
    engine, table, rows = _setup(sqlite_url, tmp_path, h, 6)
    out = tmp_path / "out"
    victim = rows[2]
    key = locate_shard(victim.uid, victim.created_at, 4).object_key

    cfg = h.migration_config(sqlite_url, out)
    corrupting_pack = h.corrupting_pack(out, key, victim.uid)
    report = MigrationOrchestrator(
        cfg, pack_fn=corrupting_pack, tuning=in_a_process
    ).run_migration_cycle()
    assert report.status == "partial"
    assert report.migrated == 5
    assert [(f.uid, f.step) for f in report.failures] == [(victim.uid, "verify")]
    reason = report.failures[0].reason
    assert reason.startswith(f"reading back from {key}: ")
    assert f"'{victim.uid}'" in reason
    assert victim.uid not in h.archived_uids(engine, table)


def test_a_shard_gone_after_publishing_fails_the_batch(
    sqlite_url: str, tmp_path: Path, h: type, in_a_process: MigrationTuning
) -> None:
    engine, table, rows = _setup(sqlite_url, tmp_path, h, 3)
    out = tmp_path / "out"
    key = locate_shard(rows[0].uid, rows[0].created_at, 4).object_key

    def losing_pack(entries: Any, output: str, options: Any) -> Any:
        report = pack(entries, output, dataclasses.replace(options, progress=None))
        (out / key).unlink()
        return report

    cfg = h.migration_config(sqlite_url, out)
    report = MigrationOrchestrator(
        cfg, pack_fn=losing_pack, tuning=in_a_process
    ).run_migration_cycle()
    assert report.status == "failure"
    assert report.error is not None
    assert report.error.startswith("verify failed: ObjectNotFound: ")
    assert h.archived_uids(engine, table) == set()


def test_the_worker_answers_only_for_files_that_need_attention(tmp_path: Path) -> None:
    key = "20240101/3.des"
    (tmp_path / "20240101").mkdir()
    alpha = b"alpha" * 100
    with (tmp_path / key).open("wb") as fh:
        w = ShardWriter(fh, codec="zstd")
        w.add("a", alpha)
        w.add("b", b"")
        w.add("c", b"gamma")
        w.close()
    store = LocalObjectStore(tmp_path)
    sha = hashlib.sha256
    items = [
        ("a", 500, sha(alpha).hexdigest(), False),  # checks out: no answer
        ("b", 0, None, True),  # checks out, CRC-32 asked for
        ("c", 9, None, False),  # wrong size in the table
        ("d", 1, "00", False),  # not in the shard
        ("a", 500, "ff" * 32, False),  # wrong checksum in the table
    ]
    error, answers = check_shard(store, key, items, "sha256")
    assert error is None
    assert json.loads(json.dumps(answers)) == [list(a) for a in answers]  # plain values
    assert answers[0] == ("b", None, zlib.crc32(b""))
    assert answers[1] == ("c", "packed copy has 5 bytes, the table says 9", zlib.crc32(b"gamma"))
    assert answers[2][0] == "d"
    assert answers[2][1] is not None
    assert answers[2][1].startswith(f"reading back from {key}: EntryNotFound: ")
    assert answers[3] == (
        "a",
        f"packed copy has sha256 {sha(alpha).hexdigest()}, the table says {'ff' * 32}",
        zlib.crc32(alpha),
    )
    assert len(answers) == 4
    gone, nothing = check_shard(store, "20240101/4.des", [("a", 1, None, False)], None)
    assert gone is not None
    assert gone.startswith("ObjectNotFound: ")
    assert nothing == []


def test_a_worker_killed_mid_batch_fails_the_batch_and_the_next_cycle_finishes(
    sqlite_url: str, tmp_path: Path, h: type, in_a_process: MigrationTuning
) -> None:
    engine, table, _rows = _setup(sqlite_url, tmp_path, h, 6)
    out = tmp_path / "out"
    orch: MigrationOrchestrator

    def kill_worker(step: str) -> None:
        if step == "pack":
            assert orch._verifier is not None
            pid = orch._verifier.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

    cfg = h.migration_config(sqlite_url, out)
    orch = MigrationOrchestrator(cfg, fault=kill_worker, tuning=in_a_process)
    report = orch.run_migration_cycle()
    assert report.status == "failure"
    assert report.error == (
        "verify failed: VerifyWorkerError: the verify worker exited with status -9"
    )
    assert h.archived_uids(engine, table) == set()
    again = MigrationOrchestrator(cfg).run_migration_cycle()
    assert (again.status, again.migrated, again.already_packed) == ("success", 6, 6)


_KILLED_SCRIPT = """
import sys, time
from pathlib import Path
from des_migrate import MigrationOrchestrator, MigrationTuning, parse_config
cfg = parse_config({cfg!r})
orch = None

def hang_in_verify(step):
    if step == "verify":
        Path({pid_file!r}).write_text(str(orch._verifier.pid))
        time.sleep(3600)

orch = MigrationOrchestrator(
    cfg, fault=hang_in_verify, tuning=MigrationTuning(process_verify_min_rows=1)
)
orch.run_migration_cycle()
"""


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc (Linux)")
def test_a_killed_migrator_leaves_no_worker_behind(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    engine, table, _rows = _setup(sqlite_url, tmp_path, h, 4)
    doc = {
        "database": {"url": sqlite_url},
        "migration": {"cutoff": "2024-02-01T00:00:00Z", "state_dir": str(tmp_path / "st")},
        "packer": {"output_dir": str(tmp_path / "out"), "n_bits": 4},
    }
    pid_file = tmp_path / "worker.pid"
    script = _KILLED_SCRIPT.format(cfg=doc, pid_file=str(pid_file))
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):  # the migrator writes the file once it waits in verify
            if pid_file.exists() and pid_file.read_text():
                break
            assert proc.poll() is None, "the migrator exited early"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert (Path("/proc") / str(worker)).exists()
        proc.kill()
        proc.wait()
        # the worker's stdin closed with its parent: it exits at once (reaped by init)
        for _ in range(600):
            if not _alive(worker):
                break
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert h.archived_uids(engine, table) == set()


def _alive(pid: int) -> bool:
    stat = Path("/proc") / str(pid) / "stat"
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"  # a zombie has exited


def test_rows_already_in_their_shard_are_marked_and_deleted_ones_refused(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    """The "already packed?" check: a uid in its shard is verified and marked, not packed
    again; a uid whose shard holds a deletion marker for it is refused; the others are
    packed (into shards that exist or not)."""
    day = h.ts("2024-01-10T08:00:00Z")
    rows = [h.Src(u, day, h.content_for(u)) for u in ("gone", "kept", "new", "fresh")]
    engine, table = h.source_table(sqlite_url, tmp_path / "src", rows)
    out = tmp_path / "out"
    keys = {r.uid: locate_shard(r.uid, r.created_at, 4).object_key for r in rows}
    written: dict[str, ShardWriter] = {}
    files = []
    for r in rows[:2]:  # an earlier run packed "gone" (deleted since) and "kept"
        if keys[r.uid] not in written:
            (out / keys[r.uid]).parent.mkdir(parents=True, exist_ok=True)
            fh = (out / keys[r.uid]).open("wb")
            files.append(fh)
            written[keys[r.uid]] = ShardWriter(fh, codec="zstd")
        written[keys[r.uid]].add(r.uid, r.data)
    written[keys["gone"]].delete("gone")
    for w in written.values():
        w.close()
    for fh in files:
        fh.close()

    report = MigrationOrchestrator(h.migration_config(sqlite_url, out)).run_migration_cycle()
    assert [(f.uid, f.step, f.reason) for f in report.failures] == [
        (
            "gone",
            "pack",
            f"shard {keys['gone']} holds a deletion marker for this uid; not packing it again",
        )
    ]
    assert (report.migrated, report.already_packed) == (3, 1)
    assert h.archived_uids(engine, table) == {"kept", "new", "fresh"}
    for r in rows[1:]:
        assert h.read_back(out, r.uid, r.created_at) == r.data
    # every live uid once ("kept" not packed twice); "gone" stays deleted
    assert sorted(h.shard_uids(out)) == ["fresh", "kept", "new"]
