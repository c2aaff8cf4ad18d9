"""The migration cycle end to end on SQLite and PostgreSQL, with injected failures."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from des_migrate import MigrationMetrics, MigrationOrchestrator, SourceDatabase
from prometheus_client import CollectorRegistry


def _rows(h: type, n: int = 12) -> list[Any]:
    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(
            f"file-{i:03d}",
            base + timedelta(hours=7 * i),
            h.content_for(f"file-{i:03d}", 200 + 37 * i),
            content_type="text/plain" if i % 2 else None,
        )
        for i in range(n)
    ]
    rows.append(h.Src("done-before", base, b"already archived", archived=True))
    rows.append(h.Src("too-new", h.ts("2024-02-01T00:00:00Z"), b"after the cutoff"))
    return rows


def _setup(url: str, tmp_path: Path, h: type, rows: list[Any]) -> tuple[sa.Engine, sa.Table]:
    engine, table = h.source_table(url, tmp_path / "src", rows)
    return engine, table


def _metric(reg: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = reg.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


def test_whole_cycle(db_url: str, tmp_path: Path, h: type) -> None:
    rows = _rows(h)
    engine, table = _setup(db_url, tmp_path, h, rows)
    out = tmp_path / "out"
    # files every 7 hours: days hold 4, 3, 4 and 1 of them; batches of at most 5 are cut at
    # day boundaries (4, 3, 4, 1) so no shard is appended to by two batches
    cfg = h.migration_config(db_url, out, migration={"batch_size": 5})
    reg = CollectorRegistry()
    orch = MigrationOrchestrator(cfg, metrics=MigrationMetrics(reg))

    report = orch.run_migration_cycle()

    eligible = [r for r in rows if r.uid.startswith("file-")]
    assert report.status == "success"
    assert report.exit_code == 0
    assert (report.batches, report.fetched, report.migrated) == (4, 12, 12)
    assert report.bytes_migrated == sum(len(r.data) for r in eligible)
    assert report.failures == ()
    assert report.already_packed == 0
    assert h.archived_uids(engine, table) == {r.uid for r in eligible} | {"done-before"}
    for r in eligible:
        assert h.read_back(out, r.uid, r.created_at) == r.data
        assert (tmp_path / "src" / f"{r.uid}.bin").exists()  # cleanup is off by default
    assert sorted(h.shard_uids(out)) == sorted(r.uid for r in eligible)
    assert _metric(reg, "des_migration_files_total") == 12
    assert _metric(reg, "des_migration_bytes_total") == report.bytes_migrated
    assert _metric(reg, "des_migration_cycles_total", {"status": "success"}) == 1
    assert _metric(reg, "des_migration_batch_size") == 1
    assert _metric(reg, "des_migration_pending_files") == 0
    assert _metric(reg, "des_migration_duration_seconds_count") == 1

    again = orch.run_migration_cycle()
    assert again.status == "empty"
    assert again.exit_code == 0
    assert _metric(reg, "des_migration_cycles_total", {"status": "empty"}) == 1


def test_content_type_is_stored(sqlite_url: str, tmp_path: Path, h: type) -> None:
    rows = _rows(h, 2)
    _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    MigrationOrchestrator(h.migration_config(sqlite_url, out)).run_migration_cycle()
    from des_format import LocalObjectStore, ShardRetriever
    from des_routing import locate_shard

    r = rows[1]
    key = locate_shard(r.uid, r.created_at, 4).object_key
    assert ShardRetriever(LocalObjectStore(out)).stat(key, r.uid).content_type == "text/plain"


def test_bad_files_are_isolated_and_recorded(db_url: str, tmp_path: Path, h: type) -> None:
    base = h.ts("2024-01-05T00:00:00Z")
    good = [h.Src(f"ok-{i}", base + timedelta(hours=i), h.content_for(f"ok-{i}")) for i in range(4)]
    missing = h.Src("missing", base, b"x", location=str(tmp_path / "nope.bin"))
    wrong_size = h.Src("wrong-size", base, b"12345", size_bytes=9)
    bad_uid = h.Src("bad\x01uid", base, b"ctl")
    rows = [*good, missing, wrong_size, bad_uid]
    engine, table = _setup(db_url, tmp_path, h, rows)
    with engine.begin() as conn:  # a checksum in the table that the file does not have
        conn.execute(table.update().where(table.c.uid == "ok-3").values(checksum="0" * 64))
    out = tmp_path / "out"
    report_file = tmp_path / "failures.jsonl"
    cfg = h.migration_config(db_url, out, report=report_file, migration={"batch_size": 3})

    report = MigrationOrchestrator(cfg).run_migration_cycle()

    assert report.status == "partial"
    assert report.exit_code == 3
    assert report.migrated == 3
    failures = {f.uid: (f.step, f.reason) for f in report.failures}
    sha = __import__("hashlib").sha256(h.content_for("ok-3")).hexdigest()
    assert failures == {
        "missing": ("validate", f"source {tmp_path / 'nope.bin'} does not exist"),
        "wrong-size": (
            "validate",
            f"source {tmp_path / 'src' / 'wrong-size.bin'} has 5 bytes, the table says 9",
        ),
        "bad\x01uid": (
            "validate",
            "cannot route uid: uid 'bad\\x01uid' contains control character U+0001 at "
            "position 3; uids must be printable text",
        ),
        "ok-3": ("verify", f"packed copy has sha256 {sha}, the table says {'0' * 64}"),
    }
    assert h.archived_uids(engine, table) == {"ok-0", "ok-1", "ok-2"}
    errors = h.errors_of(engine, table)
    assert errors == {uid: f"{step}: {reason}" for uid, (step, reason) in failures.items()}
    lines = [json.loads(line) for line in report_file.read_text().splitlines()]
    assert sorted((x["uid"], x["step"], x["reason"]) for x in lines) == sorted(
        (u, s, r) for u, (s, r) in failures.items()
    )

    # recorded failures are skipped next time (retry_failed: false) ...
    assert MigrationOrchestrator(cfg).run_migration_cycle().status == "empty"
    # ... and retried on request; fixed rows then go through and their error is cleared
    (tmp_path / "nope.bin").write_bytes(b"x")
    retry = h.migration_config(db_url, out, migration={"retry_failed": True})
    second = MigrationOrchestrator(retry).run_migration_cycle()
    assert second.migrated == 1
    assert "missing" in h.archived_uids(engine, table)
    assert "missing" not in h.errors_of(engine, table)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("step", ["fetch", "validate", "pack", "verify", "mark"])
def test_a_failing_step_leaves_rows_unmarked_and_sources_in_place(
    db_url: str, tmp_path: Path, h: type, step: str
) -> None:
    rows = _rows(h, 8)
    engine, table = _setup(db_url, tmp_path, h, rows)
    out = tmp_path / "out"
    cfg = h.migration_config(db_url, out, migration={"delete_source_files": True})
    reg = CollectorRegistry()

    def fault(name: str) -> None:
        if name == step:
            raise Boom("injected")

    report = MigrationOrchestrator(
        cfg, metrics=MigrationMetrics(reg), fault=fault
    ).run_migration_cycle()

    assert report.status == "failure"
    assert report.exit_code == 1
    assert report.error == f"{step} failed: Boom: injected"
    assert h.archived_uids(engine, table) == {"done-before"}
    assert h.errors_of(engine, table) == {}  # a batch-wide failure is not a file's fault
    for r in rows:
        if r.uid.startswith("file-"):
            assert (tmp_path / "src" / f"{r.uid}.bin").read_bytes() == r.data
    assert _metric(reg, "des_migration_cycles_total", {"status": "failure"}) == 1
    assert _metric(reg, "des_migration_files_total") == 0

    # a clean re-run finishes the job: files packed before the failure are verified and
    # marked, never packed twice
    rerun = MigrationOrchestrator(cfg).run_migration_cycle()
    assert rerun.status == "success"
    assert rerun.migrated == 8
    assert rerun.already_packed == (8 if step in ("verify", "mark") else 0)
    assert rerun.deleted_sources == 8
    eligible = [r for r in rows if r.uid.startswith("file-")]
    assert sorted(h.shard_uids(out)) == sorted(r.uid for r in eligible)
    for r in eligible:
        assert h.read_back(out, r.uid, r.created_at) == r.data
        assert not (tmp_path / "src" / f"{r.uid}.bin").exists()


def test_cleanup_runs_only_after_the_marks_committed(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    rows = _rows(h, 6)
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    cfg = h.migration_config(
        sqlite_url, out, migration={"delete_source_files": True, "batch_size": 4}
    )
    seen: list[tuple[str, set[str], int]] = []

    def observe(name: str) -> None:
        if name in ("mark", "cleanup"):
            left = len(list((tmp_path / "src").glob("file-*.bin")))
            seen.append((name, h.archived_uids(engine, table) - {"done-before"}, left))

    report = MigrationOrchestrator(cfg, fault=observe).run_migration_cycle()
    assert report.deleted_sources == 6
    first4 = {f"file-{i:03d}" for i in range(4)}
    assert seen == [
        ("mark", set(), 6),  # nothing marked, nothing deleted before the mark
        ("cleanup", first4, 6),  # marks committed (seen from another connection) first
        ("mark", first4, 2),
        ("cleanup", first4 | {"file-004", "file-005"}, 2),
    ]
    assert list((tmp_path / "src").glob("file-*.bin")) == []


def test_cleanup_failure_keeps_sources_and_marks(sqlite_url: str, tmp_path: Path, h: type) -> None:
    rows = _rows(h, 3)
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    cfg = h.migration_config(sqlite_url, tmp_path / "out", migration={"delete_source_files": True})

    def fault(name: str) -> None:
        if name == "cleanup":
            raise Boom("disk went read-only")

    report = MigrationOrchestrator(cfg, fault=fault).run_migration_cycle()
    assert report.status == "success"
    assert report.deleted_sources == 0
    assert len(h.archived_uids(engine, table)) == 4
    assert len(list((tmp_path / "src").glob("file-*.bin"))) == 3


def test_rows_packed_by_a_crashed_run_are_verified_not_duplicated(
    db_url: str, tmp_path: Path, h: type
) -> None:
    from des_packer import ManifestEntry, PackOptions, pack

    rows = _rows(h, 10)
    engine, table = _setup(db_url, tmp_path, h, rows)
    out = tmp_path / "out"
    # an earlier run packed the first six and died before marking them
    early = [
        ManifestEntry(r.uid, r.created_at, len(r.data), str(tmp_path / "src" / f"{r.uid}.bin"))
        for r in rows[:6]
    ]
    pack(early, str(out), PackOptions(n_bits=4))
    report = MigrationOrchestrator(h.migration_config(db_url, out)).run_migration_cycle()
    assert report.status == "success"
    assert (report.migrated, report.already_packed) == (10, 6)
    assert sorted(h.shard_uids(out)) == sorted(r.uid for r in rows[:10])
    assert h.archived_uids(engine, table) == {r.uid for r in rows[:10]} | {"done-before"}


def test_a_different_file_already_in_the_shard_is_refused(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    from des_packer import ManifestEntry, PackOptions, pack

    rows = _rows(h, 2)
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    r = rows[0]
    impostor = tmp_path / "impostor.bin"
    impostor.write_bytes(bytes(len(r.data)))  # same size, other bytes
    pack(
        [ManifestEntry(r.uid, r.created_at, len(r.data), str(impostor))],
        str(out),
        PackOptions(n_bits=4),
    )
    cfg = h.migration_config(sqlite_url, out, database={"checksum_column": None})
    report = MigrationOrchestrator(cfg).run_migration_cycle()
    assert report.status == "partial"
    assert [(f.uid, f.step) for f in report.failures] == [(r.uid, "verify")]
    assert report.failures[0].reason.startswith("shard already holds uid with CRC-32 ")
    assert report.failures[0].reason.endswith("; resolve by hand")
    assert r.uid not in h.archived_uids(engine, table)
    assert (tmp_path / "src" / f"{r.uid}.bin").exists()


def test_dry_run_writes_and_marks_nothing(sqlite_url: str, tmp_path: Path, h: type) -> None:
    rows = _rows(h, 5)
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    report = MigrationOrchestrator(h.migration_config(sqlite_url, out)).run_migration_cycle(
        dry_run=True
    )
    from des_routing import locate_shard

    assert report.dry_run is True
    assert report.status == "success"
    assert report.fetched == 5
    assert report.migrated == 0
    assert report.shards == tuple(
        sorted({locate_shard(r.uid, r.created_at, 4).object_key for r in rows[:5]})
    )
    assert not out.exists()
    assert h.archived_uids(engine, table) == {"done-before"}


@pytest.mark.postgres
def test_three_concurrent_migrators_pack_each_row_exactly_once(
    pg_url: str, tmp_path: Path, h: type
) -> None:
    base = h.ts("2024-01-20T00:00:00Z")
    rows = [
        h.Src(f"c{i:04d}", base + timedelta(minutes=17 * i), h.content_for(f"c{i:04d}", 150))
        for i in range(240)
    ]
    engine, table = _setup(pg_url, tmp_path, h, rows)
    out = tmp_path / "out"
    reports: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            cfg = h.migration_config(
                pg_url, out, migration={"batch_size": 9}, packer={"workers": 1}
            )
            db = SourceDatabase(cfg.database)
            orch = MigrationOrchestrator(cfg, db=db)
            _ = db.table  # reflect before the start line, so all three start together
            barrier.wait(timeout=60)
            reports.append(orch.run_migration_cycle())
            db.engine.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert len(reports) == 3
    assert all(r.status in ("success", "empty") for r in reports), [r.to_json() for r in reports]
    assert sum(1 for r in reports if r.migrated > 0) >= 2  # they really shared the work
    assert sum(r.migrated for r in reports) == 240
    assert sum(r.already_packed for r in reports) == 0
    assert len(h.archived_uids(engine, table)) == 240
    uids = h.shard_uids(out)
    assert len(uids) == 240
    assert sorted(uids) == sorted(r.uid for r in rows)
    for r in rows[::7]:
        assert h.read_back(out, r.uid, r.created_at) == r.data


def test_a_corrupted_packed_copy_fails_verification_for_that_file_only(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    """Bytes that change between the packer publishing a shard and the read-back are caught:
    the pack function is wrapped so a payload byte flips right when the shard is reported
    published (verification starts from that report)."""
    from des_routing import locate_shard

    rows = _rows(h, 6)
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    cfg = h.migration_config(sqlite_url, out, migration={"delete_source_files": True})
    victim = rows[2]
    key = locate_shard(victim.uid, victim.created_at, 4).object_key

    corrupting_pack = h.corrupting_pack(out, key, victim.uid)
    report = MigrationOrchestrator(cfg, pack_fn=corrupting_pack).run_migration_cycle()
    assert report.status == "partial"
    assert report.migrated == 5
    assert [(f.uid, f.step) for f in report.failures] == [(victim.uid, "verify")]
    assert report.failures[0].reason.startswith(f"reading back from {key}: ")
    assert victim.uid not in h.archived_uids(engine, table)
    assert (tmp_path / "src" / f"{victim.uid}.bin").read_bytes() == victim.data
    assert report.deleted_sources == 5


def test_a_crash_between_marking_and_cleanup_is_finished_by_the_next_cycle(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    """The cleanup journal: sources of rows whose marks committed are deleted by a later
    cycle when the migrator died before deleting them; rows not marked keep theirs."""
    import os

    rows = _rows(h, 6)
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    cfg = h.migration_config(
        sqlite_url, out, migration={"delete_source_files": True, "batch_size": 3}
    )
    state = tmp_path / "state"

    class Died(BaseException):
        """Stands for SIGKILL: not an Exception, so nothing catches it."""

    calls = {"n": 0}

    def die_at_second_cleanup(step: str) -> None:
        if step == "cleanup":
            calls["n"] += 1
            if calls["n"] == 2:
                raise Died

    with pytest.raises(Died):
        MigrationOrchestrator(cfg, fault=die_at_second_cleanup).run_migration_cycle()
    journals = sorted(state.glob("cleanup-*.jsonl"))
    assert len(journals) == 1
    second = {f"file-{i:03d}" for i in range(3, 6)}
    assert {json.loads(x)["uid"] for x in journals[0].read_text().splitlines()} == second
    assert h.archived_uids(engine, table) - {"done-before"} == {f"file-{i:03d}" for i in range(6)}
    left = {p.stem for p in (tmp_path / "src").glob("file-*.bin")}
    assert left == second
    # a journal of a batch that never committed (rows unmarked) must not delete anything
    (state / "cleanup-elsewhere-1-1.jsonl").write_text(
        json.dumps({"uid": "too-new", "source": str(tmp_path / "src" / "too-new.bin")}) + "\n"
    )
    # the dead migrator's flock went with it; here the test process still holds the fd
    for fd_path in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd_path) == str(journals[0]):
                os.close(int(fd_path.name))
        except OSError:
            pass

    report = MigrationOrchestrator(cfg).run_migration_cycle()
    assert report.status == "empty"
    assert report.deleted_sources == 3
    assert list((tmp_path / "src").glob("file-*.bin")) == []
    assert (tmp_path / "src" / "too-new.bin").exists()
    assert list(state.glob("cleanup-*.jsonl")) == []


def test_default_state_dir_is_per_database_table_and_output(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from des_migrate import parse_config

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))

    def state(table: str, out: str) -> Path:
        cfg = parse_config(
            {"database": {"url": sqlite_url, "table_name": table}, "packer": {"output_dir": out}}
        )
        return MigrationOrchestrator(cfg).state_dir()

    a = state("files", "/data/des")
    assert a.parent == tmp_path / "xdg" / "des-migrate"
    assert len(a.name) == 16
    assert a == state("files", "/data/des")
    assert a != state("other_files", "/data/des")
    assert a != state("files", "/data/des2")


def test_a_cycle_leaves_the_garbage_collector_alone(db_url: str, tmp_path: Path, h: type) -> None:
    """No process-wide effect in the library: ``gc.freeze`` is the command's opt-in."""
    import gc

    rows = _rows(h, 4)
    _setup(db_url, tmp_path, h, rows)
    frozen_during: list[int] = []

    def fault(step: str) -> None:
        if step in ("fetch", "pack"):
            frozen_during.append(gc.get_freeze_count())

    cfg = h.migration_config(db_url, tmp_path / "out")
    assert gc.get_freeze_count() == 0
    assert MigrationOrchestrator(cfg, fault=fault).run_migration_cycle().status == "success"
    assert frozen_during
    assert set(frozen_during) == {0}


def test_gc_freeze_of_the_command_freezes_only_while_it_runs() -> None:
    import gc

    from des_migrate.cli import older_objects_frozen

    assert gc.get_freeze_count() == 0
    with older_objects_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # given back to the collector
    gc.freeze()  # a process that froze objects of its own: nothing more, nothing given back
    try:
        own = gc.get_freeze_count()
        with older_objects_frozen():
            assert gc.get_freeze_count() == own
        assert gc.get_freeze_count() == own
    finally:
        gc.unfreeze()


def test_solid_blocks_are_packed_verified_and_read_back(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    from collections import defaultdict

    from des_format import FEATURE_BLOCKS, Codec, ShardReader

    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(
            f"blk-{i:03d}",
            base + timedelta(minutes=5 * i),
            # eight over block_member_max: never in a block
            h.content_for(f"blk-{i:03d}", 5000 if i % 20 == 7 else 100 + 37 * i % 900),
            content_type="application/json" if i % 5 == 0 else "text/plain",
        )
        for i in range(160)
    ]
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    # one day of 160 files in batches of 80: the second batch appends to the same shards
    cfg = h.migration_config(
        sqlite_url,
        out,
        migration={"batch_size": 80},
        packer={"block_size": 2048, "block_member_max": 1024},
    )
    assert (cfg.packer.block_size, cfg.packer.block_member_max) == (2048, 1024)

    report = MigrationOrchestrator(cfg).run_migration_cycle()

    assert report.status == "success"
    assert report.failures == ()
    assert (report.batches, report.fetched, report.migrated) == (2, 160, 160)
    assert h.archived_uids(engine, table) == {r.uid for r in rows}
    for r in rows:
        assert h.read_back(out, r.uid, r.created_at) == r.data
    assert sorted(h.shard_uids(out)) == sorted(r.uid for r in rows)
    by_uid = {r.uid: r for r in rows}
    members = 0
    appended = 0  # blocks the second batch wrote into shards the first one created
    for path in sorted(out.glob("*/*.des")):
        with ShardReader.open_path(path) as reader:
            features, entries = reader.index.features, list(reader.iter_entries())
        blocks: dict[tuple[int, int], list[Any]] = defaultdict(list)
        for e in entries:
            if e.codec is Codec.ZSTD_BLOCK:
                blocks[(e.part, e.offset)].append(e)
        assert bool(features & FEATURE_BLOCKS) == bool(blocks), path
        for block in blocks.values():
            assert len(block) >= 2
            assert sum(e.size for e in block) <= 2048
            assert len({by_uid[e.uid].content_type for e in block}) == 1
            members += len(block)
            for e in block:
                assert len(by_uid[e.uid].data) <= 1024
            appended += all(int(e.uid[4:]) >= 80 for e in block)
    assert members >= 100  # most of the 152 small files went into blocks
    assert appended > 0


def test_a_corrupted_solid_block_fails_only_members_that_do_not_read_back(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    """A byte flipped in a solid block after the shard is published: the members whose bytes
    the damaged frame no longer gives back (all of them when it no longer decodes) fail the
    verify step and stay unmarked with their sources; every file marked reads back
    byte-exact from the damaged shard."""
    from des_format import DesFormatError
    from des_routing import locate_shard

    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(f"sb-{i:02d}", base + timedelta(minutes=i), h.content_for(f"sb-{i:02d}", 300 + i))
        for i in range(40)
    ]
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    cfg = h.migration_config(
        sqlite_url, out, migration={"delete_source_files": True}, packer={"block_size": 65536}
    )
    victim = rows[0]
    key = locate_shard(victim.uid, victim.created_at, 4).object_key
    # the victim's shard-mates: one group (no content type, .bin), all in one block
    block = {r.uid for r in rows if locate_shard(r.uid, r.created_at, 4).object_key == key}
    assert len(block) >= 2

    corrupting_pack = h.corrupting_pack(out, key, victim.uid)
    report = MigrationOrchestrator(cfg, pack_fn=corrupting_pack).run_migration_cycle()
    failed = {f.uid for f in report.failures}
    assert report.status == "partial"
    assert failed
    assert failed <= block
    assert {f.step for f in report.failures} == {"verify"}
    assert report.migrated == len(rows) - len(failed)
    assert h.archived_uids(engine, table) == {r.uid for r in rows} - failed
    for r in rows:
        assert (tmp_path / "src" / f"{r.uid}.bin").exists() == (r.uid in failed)
        if r.uid not in failed:
            assert h.read_back(out, r.uid, r.created_at) == r.data
        else:
            with pytest.raises(DesFormatError):
                h.read_back(out, r.uid, r.created_at)


def test_block_members_packed_by_a_crashed_run_are_verified_not_duplicated(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    from des_format import Codec, LocalObjectStore, ShardRetriever
    from des_packer import ManifestEntry, PackOptions, pack
    from des_routing import locate_shard

    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(f"cr-{i:02d}", base + timedelta(minutes=i), h.content_for(f"cr-{i:02d}", 200 + i))
        for i in range(40)
    ]
    engine, table = _setup(sqlite_url, tmp_path, h, rows)
    out = tmp_path / "out"
    # an earlier run packed the first 30 in solid blocks and died before marking them
    early = [
        ManifestEntry(r.uid, r.created_at, len(r.data), str(tmp_path / "src" / f"{r.uid}.bin"))
        for r in rows[:30]
    ]
    pack(early, str(out), PackOptions(n_bits=4, block_size=65536))
    retriever = ShardRetriever(LocalObjectStore(out))
    codecs = {
        retriever.stat(locate_shard(r.uid, r.created_at, 4).object_key, r.uid).codec
        for r in rows[:30]
    }
    assert Codec.ZSTD_BLOCK in codecs

    cfg = h.migration_config(sqlite_url, out, packer={"block_size": 65536})
    report = MigrationOrchestrator(cfg).run_migration_cycle()
    assert report.status == "success"
    assert (report.migrated, report.already_packed) == (40, 30)
    assert sorted(h.shard_uids(out)) == sorted(r.uid for r in rows)
    assert h.archived_uids(engine, table) == {r.uid for r in rows}
    for r in rows:
        assert h.read_back(out, r.uid, r.created_at) == r.data
