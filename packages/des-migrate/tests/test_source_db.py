"""The source-database layer: keyset pages, eligibility, claims, marks, errors, redaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from des_migrate import DatabaseConfig, SchemaMismatch, SourceDatabase, advisory_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CUTOFF = datetime(2024, 2, 1, tzinfo=UTC)
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def _db(url: str, **kw: object) -> SourceDatabase:
    return SourceDatabase(DatabaseConfig(url=url, **kw))  # type: ignore[arg-type]


def test_pages_follow_created_at_then_uid_and_respect_cutoff_and_archived(
    db_url: str, tmp_path: Path, h: type
) -> None:
    db = _db(db_url, error_column="migration_error", checksum_column="checksum")
    table = h.make_table(db.engine)
    same = BASE + timedelta(hours=3)
    rows = [
        h.Src("b", same, b"1"),
        h.Src("a", same, b"22"),
        h.Src("c", same, b"333"),
        h.Src("z", BASE, b"4444"),
        h.Src("old-archived", BASE, b"5", archived=True),
        h.Src("late", CUTOFF, b"6"),  # not strictly before the cutoff
        h.Src("m", BASE + timedelta(days=2), b"77"),
    ]
    h.insert_rows(db.engine, table, tmp_path / "src", rows)
    got = [r.uid for r in db.iter_eligible(CUTOFF, page_size=2)]
    assert got == ["z", "a", "b", "c", "m"]
    first = next(iter(db.iter_eligible(CUTOFF, page_size=2)))
    assert first.created_at == BASE
    assert first.created_at.tzinfo is not None
    assert first.size_bytes == 4
    assert first.location.endswith("z.bin")
    assert first.checksum is not None
    assert len(first.checksum) == 64
    totals = db.totals(CUTOFF)
    assert (totals.files, totals.bytes) == (5, 1 + 2 + 3 + 4 + 2)
    assert (totals.oldest, totals.newest) == (BASE, BASE + timedelta(days=2))
    assert db.count_pending(CUTOFF) == 5


def test_pages_are_keyset_never_offset(db_url: str, h: type) -> None:
    db = _db(db_url)
    h.make_table(db.engine)
    after = __import__("des_migrate").Cursor(BASE.replace(tzinfo=None), "x")
    captured: list[tuple[str, object]] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def grab(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        captured.append((statement, params))

    with db.engine.connect() as conn:
        db.select_page(conn, CUTOFF, after=after, limit=10, claim=True)
    sql, params = [c for c in captured if c[0].lstrip().upper().startswith("SELECT")][-1]
    flat = " ".join(sql.split())
    assert "ORDER BY files.created_at, files.uid" in flat
    assert "files.created_at > " in flat
    assert "files.uid > " in flat
    if db.dialect == "postgresql":
        assert "OFFSET" not in flat.upper()
        assert flat.endswith("FOR UPDATE SKIP LOCKED")
    else:
        # SQLite's compiler always prints "LIMIT ? OFFSET ?"; the offset bound is 0
        assert flat.endswith("LIMIT ? OFFSET ?")
        assert isinstance(params, tuple)
        assert params[-1] == 0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 4), st.text("abcxyz", min_size=1, max_size=4), st.booleans()),
        max_size=40,
        unique_by=lambda t: t[1],
    ),
    page=st.integers(1, 7),
)
def test_keyset_pages_yield_each_eligible_row_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, h: type, data: list[tuple[int, str, bool]], page: int
) -> None:
    d = tmp_path_factory.mktemp("ks")
    db = _db(f"sqlite+pysqlite:///{d / 's.db'}")
    table = h.make_table(db.engine)
    rows = [
        h.Src(uid, BASE + timedelta(minutes=m), b"x", archived=arch, location="/nowhere")
        for m, uid, arch in data
    ]
    h.insert_rows(db.engine, table, d / "src", rows)
    expected = sorted((r.created_at, r.uid) for r in rows if not r.archived)
    got = [(r.created_at, r.uid) for r in db.iter_eligible(CUTOFF, page_size=page)]
    assert got == expected


def test_failed_rows_are_skipped_unless_retried(sqlite_url: str, tmp_path: Path, h: type) -> None:
    db = _db(sqlite_url, error_column="migration_error")
    table = h.make_table(db.engine)
    h.insert_rows(db.engine, table, tmp_path, [h.Src("a", BASE, b"1"), h.Src("b", BASE, b"2")])
    with db.engine.begin() as conn:
        db.record_errors(conn, [("a", "validate: " + "x" * 5000)])
    assert len(h.errors_of(db.engine, table)["a"]) == 1000
    assert [r.uid for r in db.iter_eligible(CUTOFF, include_failed=False)] == ["b"]
    assert [r.uid for r in db.iter_eligible(CUTOFF)] == ["a", "b"]
    with db.engine.begin() as conn:
        assert db.mark_archived(conn, ["a", "b"]) == 2
        assert db.mark_archived(conn, ["a"]) == 0  # already archived: unchanged
    assert h.errors_of(db.engine, table) == {}
    assert h.archived_uids(db.engine, table) == {"a", "b"}


def test_missing_table_and_column_name_the_key(sqlite_url: str, h: type) -> None:
    db = _db(sqlite_url, table_name="nope")
    with pytest.raises(SchemaMismatch, match=r"table 'nope' not found .*database.table_name"):
        _ = db.table
    db2 = _db(sqlite_url, archived_column="is_archived")
    h.make_table(db2.engine)
    with pytest.raises(SchemaMismatch) as info:
        _ = db2.table
    assert str(info.value).startswith(
        "column 'is_archived' (database.archived_column) not found in table 'files'"
    )


def test_redacted_url_hides_the_password() -> None:
    db = _db("postgresql+psycopg://des:hunter2@127.0.0.1:5432/app")
    assert db.redacted_url == "postgresql+psycopg://des:***@127.0.0.1:5432/app"
    assert "hunter2" not in repr(db.redacted_url)


def test_advisory_key_is_stable_and_signed_64_bit() -> None:
    k = advisory_key("20240101/1A.des")
    assert k == advisory_key("20240101/1A.des")
    assert k != advisory_key("20240101/1B.des")
    assert -(2**63) <= k < 2**63


@pytest.mark.postgres
def test_skip_locked_claims_split_rows_between_migrators(
    pg_url: str, tmp_path: Path, h: type
) -> None:
    db = _db(pg_url)
    table = h.make_table(db.engine)
    rows = [h.Src(f"u{i}", BASE + timedelta(minutes=i), b"x") for i in range(7)]
    h.insert_rows(db.engine, table, tmp_path, rows)
    c1 = db.engine.connect()
    c2 = db.engine.connect()
    t1 = c1.begin()
    t2 = c2.begin()
    got1, _ = db.select_page(c1, CUTOFF, after=None, limit=3, claim=True)
    got2, _ = db.select_page(c2, CUTOFF, after=None, limit=3, claim=True)
    assert [r.uid for r in got1] == ["u0", "u1", "u2"]
    assert [r.uid for r in got2] == ["u3", "u4", "u5"]
    db.mark_archived(c2, [r.uid for r in got2])
    t2.commit()
    t1.rollback()  # a migrator that crashed or failed: its claims come back at once
    with db.engine.connect() as c3, c3.begin():
        got3, _ = db.select_page(c3, CUTOFF, after=None, limit=10, claim=True)
    assert [r.uid for r in got3] == ["u0", "u1", "u2", "u6"]
    c1.close()
    c2.close()


@pytest.mark.postgres
def test_advisory_shard_locks_serialize_two_transactions(pg_url: str, h: type) -> None:
    db = _db(pg_url)
    h.make_table(db.engine)
    c1 = db.engine.connect()
    t1 = c1.begin()
    db.lock_shards(c1, ["20240101/0A.des", "20240101/0B.des"])
    with db.engine.connect() as c2:
        probe = sa.text("SELECT pg_try_advisory_xact_lock(:k)")
        with c2.begin():
            assert c2.execute(probe, {"k": advisory_key("20240101/0A.des")}).scalar() is False
            assert c2.execute(probe, {"k": advisory_key("20240101/0C.des")}).scalar() is True
        t1.commit()
        with c2.begin():
            assert c2.execute(probe, {"k": advisory_key("20240101/0A.des")}).scalar() is True
    c1.close()


def test_integer_uid_column(db_url: str) -> None:
    db = _db(db_url, table_name="numbered")
    md = sa.MetaData()
    table = sa.Table(
        "numbered",
        md,
        sa.Column("uid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("file_location", sa.Text),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    md.create_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "uid": n,
                    "created_at": datetime(2024, 1, 1, 10 - n),
                    "file_location": f"/f/{n}",
                    "size_bytes": n,
                }
                for n in (3, 1, 2)
            ],
        )
    rows = list(db.iter_eligible(CUTOFF, page_size=2))
    assert [r.uid for r in rows] == ["3", "2", "1"]  # created_at order; uids as text
    with db.engine.begin() as conn:
        assert db.mark_archived(conn, ["1", "3"]) == 2
    with db.engine.connect() as conn:
        left = conn.execute(sa.select(table.c.uid).where(table.c.archived.is_(False))).all()
    assert left == [(2,)]
