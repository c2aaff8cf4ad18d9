"""PostgreSQL: the next batch is fetched (and validated in the verify worker) while the current
one is packed; a day-aligned batch claims only the rows before its cut."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from des_migrate import MigrationOrchestrator, MigrationTuning, parse_config
from des_migrate._batch import Batch
from des_migrate._source_db import FileRow
from des_migrate._validate import apply_validated, worker_rows
from des_migrate._verifier import Verifier
from des_migrate._verify_worker import duplicate_uid, validate_rows
from hypothesis import given, settings
from hypothesis import strategies as st

IN_WORKER = MigrationTuning(process_verify_min_rows=1)  # validation ahead in the worker


class Boom(Exception):
    pass


def _setup(
    pg_url: str, tmp_path: Path, h: type, extra: tuple[Any, ...] = ()
) -> tuple[sa.Engine, sa.Table]:
    # rows every 7 hours: days hold 4, 3, 4 and 1 rows; batches of 5 are cut to whole days
    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(f"file-{i:03d}", base + timedelta(hours=7 * i), h.content_for(f"file-{i:03d}"))
        for i in range(12)
    ]
    engine, table = h.source_table(pg_url, tmp_path / "src", [*rows, *extra])
    return engine, table


def _config(pg_url: str, tmp_path: Path, h: type, **migration: Any) -> Any:
    return h.migration_config(pg_url, tmp_path / "out", migration={"batch_size": 5, **migration})


def _lockable(engine: sa.Engine, table: sa.Table, uid: str) -> bool:
    """Whether another transaction can lock the row at once."""
    with engine.connect() as conn, conn.begin():
        got = conn.execute(
            sa.select(table.c.uid).where(table.c.uid == uid).with_for_update(skip_locked=True)
        ).all()
    return len(got) == 1


@pytest.mark.postgres
def test_rows_beyond_the_cut_are_not_claimed(pg_url: str, tmp_path: Path, h: type) -> None:
    engine, table = _setup(pg_url, tmp_path, h)
    seen: list[tuple[bool, bool]] = []

    def during_pack(step: str) -> None:
        if step == "pack" and not seen:
            # batch 1 is day 1 (file-000..003); file-004 starts day 2 and is not locked yet
            seen.append(
                (_lockable(engine, table, "file-003"), _lockable(engine, table, "file-004"))
            )

    report = MigrationOrchestrator(
        _config(pg_url, tmp_path, h, max_batches_per_cycle=1), fault=during_pack
    ).run_migration_cycle()
    assert seen == [(False, True)]
    assert (report.status, report.batches, report.migrated) == ("success", 1, 4)


@pytest.mark.postgres
def test_a_cut_whose_rows_another_migrator_took_falls_back_to_a_full_batch(
    pg_url: str, tmp_path: Path, h: type
) -> None:
    engine, table = _setup(pg_url, tmp_path, h)
    orch = MigrationOrchestrator(_config(pg_url, tmp_path, h, max_batches_per_cycle=1))
    other = engine.connect()
    other_trans = other.begin()
    real = orch.db.day_cut_bounds

    def racing_bounds(conn: Any, cutoff: Any, **kw: Any) -> Any:
        bounds = real(conn, cutoff, **kw)
        # between finding the cut and claiming, another migrator takes all of day 1
        other.execute(
            sa.select(table.c.uid).where(table.c.uid <= "file-003").with_for_update()
        ).all()
        return bounds

    orch.db.day_cut_bounds = racing_bounds  # type: ignore[method-assign]
    try:
        report = orch.run_migration_cycle()
    finally:
        other_trans.rollback()
        other.close()
    assert (report.status, report.batches, report.migrated) == ("success", 1, 5)
    assert h.archived_uids(engine, table) == {f"file-{i:03d}" for i in range(4, 9)}


@pytest.mark.postgres
def test_stopping_releases_the_batch_fetched_ahead(pg_url: str, tmp_path: Path, h: type) -> None:
    engine, table = _setup(pg_url, tmp_path, h)
    orch: MigrationOrchestrator
    fetches: list[str] = []

    def fault(step: str) -> None:
        if step == "fetch":
            fetches.append(step)
        if step == "pack":
            orch.request_stop()

    orch = MigrationOrchestrator(_config(pg_url, tmp_path, h), fault=fault)
    report = orch.run_migration_cycle()
    assert (report.status, report.batches, report.migrated) == ("success", 1, 4)
    assert len(fetches) == 2  # the second batch was fetched ahead, then rolled back
    assert orch.db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert h.archived_uids(engine, table) == {f"file-{i:03d}" for i in range(4)}
    rest = MigrationOrchestrator(_config(pg_url, tmp_path, h)).run_migration_cycle()
    assert (rest.status, rest.batches, rest.migrated) == ("success", 3, 8)


@pytest.mark.postgres
def test_a_failed_batch_rolls_back_the_batch_fetched_ahead(
    pg_url: str, tmp_path: Path, h: type
) -> None:
    engine, table = _setup(pg_url, tmp_path, h)

    def fault(step: str) -> None:
        if step == "verify":
            raise Boom("read-back refused")

    orch = MigrationOrchestrator(_config(pg_url, tmp_path, h), fault=fault)
    report = orch.run_migration_cycle()
    assert report.status == "failure"
    assert report.error == "verify failed: Boom: read-back refused"
    assert report.batches == 0
    assert h.archived_uids(engine, table) == set()
    assert orch.db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    rerun = MigrationOrchestrator(_config(pg_url, tmp_path, h)).run_migration_cycle()
    assert (rerun.status, rerun.migrated, rerun.already_packed) == ("success", 12, 4)


@pytest.mark.postgres
@pytest.mark.parametrize("step", ["fetch", "validate"])
def test_a_failure_ahead_ends_the_cycle_after_the_current_batch(
    pg_url: str, tmp_path: Path, h: type, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, table = _setup(pg_url, tmp_path, h)
    calls: list[str] = []

    def fault(name: str) -> None:
        if name == step:
            calls.append(name)
            if len(calls) == 2:
                raise Boom("connection lost")

    report_file = tmp_path / "failures.jsonl"
    cfg = h.migration_config(
        pg_url, tmp_path / "out", report=report_file, migration={"batch_size": 5}
    )
    orch = MigrationOrchestrator(cfg, fault=fault, tuning=IN_WORKER)
    report = orch.run_migration_cycle()
    assert report.status == "failure"
    assert report.error == f"{step} failed: Boom: connection lost"
    assert (report.batches, report.migrated) == (1, 4)
    assert h.archived_uids(engine, table) == {f"file-{i:03d}" for i in range(4)}
    assert orch.db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    if step == "validate":  # the batch validated ahead is reported like any failed batch
        lines = report_file.read_text().splitlines()
        assert len(lines) == 3  # day 2: file-004..006
        assert all('"step": "validate"' in line for line in lines)


@pytest.mark.postgres
def test_files_refused_by_validation_ahead_are_reported_as_here(
    pg_url: str, tmp_path: Path, h: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    day2 = h.ts("2024-01-11T06:00:00Z")
    bad = [
        h.Src("missing", day2, b"x", location=str(tmp_path / "nope.bin")),
        h.Src("wrong-size", day2, b"12345", size_bytes=9),
        h.Src("bad\x01uid", day2, b"ctl"),
        h.Src("dir", day2, b"", location=str(tmp_path)),
    ]
    _setup(pg_url, tmp_path, h, tuple(bad))
    in_worker: list[int] = []
    real = Verifier.validate

    def counting_validate(self: Verifier, rows: Any, n_bits: int) -> Any:
        job = real(self, rows, n_bits)
        if job is not None:
            in_worker.append(len(rows))
        return job

    monkeypatch.setattr(Verifier, "validate", counting_validate)
    orch = MigrationOrchestrator(_config(pg_url, tmp_path, h, batch_size=8), tuning=IN_WORKER)
    report = orch.run_migration_cycle()
    assert report.status == "partial"
    assert report.migrated == 12
    assert report.fetched == 16
    # every batch after the first was validated ahead, in the worker
    assert sum(in_worker) == 16 - 4
    assert sorted((f.uid, f.step, f.reason) for f in report.failures) == sorted(
        [
            ("bad\x01uid", "validate", _route_error("bad\x01uid")),
            ("dir", "validate", f"source {tmp_path} is not a regular file"),
            ("missing", "validate", f"source {tmp_path / 'nope.bin'} does not exist"),
            (
                "wrong-size",
                "validate",
                f"source {tmp_path / 'src' / 'wrong-size.bin'} has 5 bytes, the table says 9",
            ),
        ]
    )


def _route_error(uid: str) -> str:
    from des_routing import RoutingError, locate_shard

    try:
        locate_shard(uid, datetime(2024, 1, 1, tzinfo=UTC), 4)
    except RoutingError as exc:
        return f"cannot route uid: {exc}"
    raise AssertionError("routes")


_UIDS = st.sampled_from(["a", "b", "c", "42", "x\x01y", "", "é"])


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            _UIDS,
            st.integers(0, 3),  # day
            st.sampled_from(["file", "missing", "dir", "empty"]),
            st.integers(-1, 6),  # size in the table (files hold 3 bytes)
        ),
        max_size=12,
    )
)
def test_validation_in_the_worker_equals_validation_here(
    rows: list[tuple[str, int, str, int]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("v")
    (base / "f").write_bytes(b"abc")
    where = {"file": str(base / "f"), "missing": str(base / "nope"), "dir": str(base), "empty": ""}
    file_rows = [
        FileRow(uid, datetime(2024, 1, 1 + day, 5, tzinfo=UTC), where[kind], size)
        for uid, day, kind, size in rows
    ]
    cfg = parse_config(
        {
            "database": {"url": "sqlite://"},
            "migration": {"cutoff": "2030-01-01T00:00:00Z"},
            "packer": {"output_dir": str(base / "out"), "n_bits": 4},
        }
    )
    here = Batch(file_rows)
    MigrationOrchestrator(cfg).validate(here)
    keys, refused = validate_rows(
        [(r.uid, r.created_at.isoformat(), r.location, r.size_bytes) for r in file_rows], 4
    )
    assert {r.uid: k for r, k in zip(file_rows, keys, strict=True) if k is not None} == here.keys
    assert [(file_rows[i].uid, reason) for i, reason in refused] == [
        (f.uid, f.reason) for f in here.failures
    ]
    assert all(f.step == "validate" for f in here.failures)
    assert os.path.exists(base / "f")


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            _UIDS,
            st.integers(0, 3),  # day
            st.sampled_from(["file", "missing", "dir", "empty"]),
            st.integers(-1, 6),  # size in the table (files hold 3 bytes)
        ),
        max_size=12,
    ),
    data=st.data(),
)
def test_a_batch_validated_in_two_parts_equals_one_pass(
    rows: list[tuple[str, int, str, int]],
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What the first batch of a cycle gets (half here, half in the worker), at any split:
    the same keys and the same failures, in the same order, as one pass over the batch
    (a uid of the second part already routed in the first is a duplicate)."""
    base = tmp_path_factory.mktemp("v")
    (base / "f").write_bytes(b"abc")
    where = {"file": str(base / "f"), "missing": str(base / "nope"), "dir": str(base), "empty": ""}
    file_rows = [
        FileRow(uid, datetime(2024, 1, 1 + day, 5, tzinfo=UTC), where[kind], size)
        for uid, day, kind, size in rows
    ]
    split = data.draw(st.integers(0, len(file_rows)))
    one = Batch(file_rows)
    apply_validated(one, file_rows, validate_rows(worker_rows(file_rows), 4))
    two = Batch(file_rows)
    for part in (file_rows[:split], file_rows[split:]):
        apply_validated(two, part, validate_rows(worker_rows(part), 4))
    assert two.keys == one.keys
    assert two.failures == one.failures
    # and one pass is what the rows say: the first routed row of a uid keeps it
    first: dict[str, str] = {}
    for r, k in zip(file_rows, validate_rows(worker_rows(file_rows), 4)[0], strict=True):
        if k is not None:
            first.setdefault(r.uid, k)
    assert one.keys == first


def test_the_first_batch_is_validated_half_in_the_worker(
    sqlite_url: str, tmp_path: Path, h: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large first batch: its second half goes to the worker process while the migrator
    validates the first half; a uid on both halves, a missing file and an unroutable uid
    are refused exactly as one pass refuses them."""
    engine = sa.create_engine(sqlite_url)
    table = h.make_table(engine, uid_key=False)
    day = h.ts("2024-01-10T00:00:00Z")
    good = [
        h.Src(f"f{i:02d}", day + timedelta(minutes=i), h.content_for(f"f{i:02d}")) for i in range(8)
    ]
    rows = [
        *good,
        h.Src("missing", day + timedelta(minutes=20), b"x", location=str(tmp_path / "nope.bin")),
        h.Src("bad\x01uid", day + timedelta(minutes=30), b"ctl"),
        h.Src("f01", day + timedelta(minutes=40), b"again", location=str(tmp_path / "again")),
    ]
    (tmp_path / "again").write_bytes(b"again")
    h.insert_rows(engine, table, tmp_path / "src", rows)
    in_worker: list[list[str]] = []
    real = Verifier.validate

    def counting_validate(self: Verifier, part: Any, n_bits: int) -> Any:
        job = real(self, part, n_bits)
        if job is not None:
            in_worker.append([r[0] for r in part])
        return job

    monkeypatch.setattr(Verifier, "validate", counting_validate)
    tuning = MigrationTuning(process_verify_min_rows=1, validate_split_min_rows=2)
    cfg = h.migration_config(sqlite_url, tmp_path / "out")
    report = MigrationOrchestrator(cfg, tuning=tuning).run_migration_cycle()
    # 11 rows in (created_at, uid) order: the last 6 were validated in the worker
    assert in_worker == [["f05", "f06", "f07", "missing", "bad\x01uid", "f01"]]
    assert report.status == "partial"
    assert [(f.uid, f.step, f.reason) for f in report.failures] == [
        ("missing", "validate", f"source {tmp_path / 'nope.bin'} does not exist"),
        ("bad\x01uid", "validate", _route_error("bad\x01uid")),
        ("f01", "validate", duplicate_uid("f01")),
    ]
    # rows are marked by uid: neither row of f01 is packed (as before the split)
    assert report.migrated == 7
    assert h.archived_uids(engine, table) == {r.uid for r in good} - {"f01"}
    for r in good[:1] + good[2:]:
        assert h.read_back(tmp_path / "out", r.uid, r.created_at) == r.data
