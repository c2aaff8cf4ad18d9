"""The migrator's own plan (from the shard keys validate computed) and its read-back requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from des_format import LocalObjectStore
from des_format.testing import CountingStore
from des_migrate import MigrationOrchestrator
from des_migrate._orchestrator import plan_from_keys
from des_packer import ManifestEntry, plan_shards
from des_routing import locate_shard
from hypothesis import given, settings
from hypothesis import strategies as st

_DAY0 = datetime(2024, 3, 1, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 86_399), st.integers(0, 5_000)),
        max_size=120,
    ),
    n_bits=st.sampled_from([4, 6, 8]),
)
def test_plan_from_keys_is_the_planners_plan(
    picks: list[tuple[int, int, int]], n_bits: int
) -> None:
    # a uid always falls on the same day (as validate guarantees: one key per uid), and may
    # repeat: the planner keeps the first entry of a uid in a shard and rejects the others
    entries = [
        ManifestEntry(
            f"doc-{u:03d}",
            _DAY0 + timedelta(days=u % 3, seconds=sec),
            size,
            f"/src/{u}-{sec}.bin",
        )
        for u, sec, size in picks
    ]
    keys = {e.uid: locate_shard(e.uid, e.created_at, n_bits).object_key for e in entries}
    ours = plan_from_keys(entries, keys, n_bits)
    theirs = plan_shards(entries, n_bits=n_bits, on_duplicate="skip")
    assert ours.shards == theirs.shards
    assert ours.n_bits == theirs.n_bits
    assert ours.out_of_range == theirs.out_of_range == 0
    assert [uid for uid, _ in ours.rejected] == [uid for uid, _ in theirs.rejected]
    for uid, reason in ours.rejected:
        assert reason.startswith(f"duplicate uid {uid!r} on 2024030")


def test_each_new_shard_is_read_back_with_one_request(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(f"f-{i:03d}", base + timedelta(hours=5 * i), h.content_for(f"f-{i:03d}", 150 + i))
        for i in range(30)
    ]
    h.source_table(sqlite_url, tmp_path / "src", rows)
    out = tmp_path / "out"
    store = CountingStore(LocalObjectStore(out))
    cfg = h.migration_config(sqlite_url, out)
    report = MigrationOrchestrator(cfg, store=store).run_migration_cycle()
    assert report.status == "success"
    assert report.migrated == 30
    keys = sorted({locate_shard(r.uid, r.created_at, 4).object_key for r in rows})
    assert list(report.shards) == keys
    # "already packed?" probes of shards that do not exist yet fail before any byte is read;
    # then the verify step reads each shard once: index and every payload in one request
    assert sorted((q.method, q.key) for q in store.requests) == [("read_tail", k) for k in keys]
    for q in store.requests:
        assert q.nbytes == (out / q.key).stat().st_size


def test_a_uid_on_two_rows_of_one_batch_is_refused(db_url: str, tmp_path: Path, h: type) -> None:
    engine = sa.create_engine(db_url)
    table = h.make_table(engine, uid_key=False)
    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src("single", base, b"one row"),
        h.Src("twin", base + timedelta(hours=1), b"first twin"),
        h.Src("twin", base + timedelta(days=1), b"second twin"),
    ]
    src = tmp_path / "src"
    src.mkdir()
    for i, r in enumerate(rows):
        (src / f"{i}.bin").write_bytes(r.data)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "uid": r.uid,
                    "created_at": r.created_at.replace(tzinfo=None),
                    "file_location": str(src / f"{i}.bin"),
                    "size_bytes": len(r.data),
                }
                for i, r in enumerate(rows)
            ],
        )
    out = tmp_path / "out"
    cfg = h.migration_config(db_url, out)
    report = MigrationOrchestrator(cfg).run_migration_cycle()
    assert report.status == "partial"
    assert report.migrated == 1
    assert [(f.uid, f.step, f.reason) for f in report.failures] == [
        (
            "twin",
            "validate",
            "uid 'twin' is on more than one row of the batch; rows are marked by uid, so uids "
            "must be unique in the table",
        )
    ]
    assert h.archived_uids(engine, table) == {"single"}
    assert h.shard_uids(out) == ["single"]
    assert set(h.errors_of(engine, table)) == {"twin"}
