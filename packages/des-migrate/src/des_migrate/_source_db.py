"""The source database: a table of files read and updated through SQLAlchemy 2 Core.

Rows are read in keyset order on ``(created_at, uid)`` (never OFFSET). On PostgreSQL a batch is
claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the batch's transaction, so several
migrators share one table without packing a row twice; a crashed migrator's connection drops
and PostgreSQL releases its claims at once. SQLite has no row locks: one migrator per database.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from ._config import DatabaseConfig, redact_url
from ._errors import MissingDatabase, SchemaMismatch, SourceDatabaseError

log = logging.getLogger("des_migrate")

_CHUNK = 1000
MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class FileRow:
    """One eligible row of the source table."""

    uid: str
    created_at: datetime
    location: str
    size_bytes: int
    content_type: str | None = None
    checksum: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """A keyset position: rows strictly after ``(created_at, uid)`` come next."""

    created_at: Any
    uid: Any


@dataclass(frozen=True, slots=True)
class Totals:
    files: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None


def as_utc(value: Any) -> datetime:
    """A created_at value from the database as an aware UTC datetime (naive means UTC)."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    if not isinstance(value, datetime):
        raise SourceDatabaseError(f"created_at value {value!r} is not a timestamp")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; PostgreSQL sessions run in UTC so timestamps compare as stored."""
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SourceDatabaseError(f"database.url is not a valid SQLAlchemy URL: {exc}") from None
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "postgresql":
        if u.get_driver_name() in ("psycopg", "psycopg2"):
            kwargs["connect_args"] = {"options": "-c timezone=UTC"}
        kwargs["pool_pre_ping"] = True
    try:
        return sa.create_engine(u, **kwargs)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise SourceDatabaseError(
            f'cannot open {redact_url(url)}: {exc} (for PostgreSQL install "des-migrate[postgres]")'
        ) from None


def require_existing_sqlite_file(url: str) -> None:
    """For a SQLite URL, raise ``MissingDatabase`` unless it names an existing file (or is
    in memory): SQLite would otherwise create an empty database there, and the next message
    would blame the table name. The commands call it before they open the database; a
    program that means to create its database opens the URL itself."""
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return  # make_engine names a malformed URL
    if u.get_backend_name() != "sqlite":
        return
    database, query = u.database, u.query
    if not database or database == ":memory:" or str(query.get("uri", "")).lower() == "true":
        return
    path = os.path.abspath(database)
    if os.path.isfile(path):
        return
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    raise MissingDatabase(
        f"the SQLite database file {path} {what}; check the path in the database URL "
        f"(a relative path is relative to the current directory, {os.getcwd()})"
    )


class SourceDatabase:
    """Reads eligible rows, claims batches, marks rows archived and records per-file errors."""

    def __init__(self, config: DatabaseConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine if engine is not None else make_engine(config.url)
        self._table: sa.Table | None = None

    # ------------------------------------------------------------------ schema

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    @property
    def supports_skip_locked(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def redacted_url(self) -> str:
        return str(self.engine.url.render_as_string(hide_password=True))

    @property
    def table(self) -> sa.Table:
        if self._table is None:
            self._table = self._reflect()
        return self._table

    def _reflect(self) -> sa.Table:
        cfg = self.config
        try:
            table = sa.Table(
                cfg.table_name, sa.MetaData(), schema=cfg.schema, autoload_with=self.engine
            )
        except NoSuchTableError:
            raise SchemaMismatch(
                f"table {cfg.table_name!r} not found in {self.redacted_url} "
                "(set database.table_name)"
            ) from None
        except SQLAlchemyError as exc:
            raise SourceDatabaseError(
                f"cannot read the source database {self.redacted_url}: {exc.__class__.__name__}: "
                f"{_first_line(exc)}"
            ) from None
        wanted = {
            "database.uid_column": cfg.uid_column,
            "database.created_at_column": cfg.created_at_column,
            "database.file_location_column": cfg.file_location_column,
            "database.size_bytes_column": cfg.size_bytes_column,
            "database.archived_column": cfg.archived_column,
            "database.content_type_column": cfg.content_type_column,
            "database.checksum_column": cfg.checksum_column,
            "database.error_column": cfg.error_column,
        }
        for key, name in wanted.items():
            if name is not None and name not in table.c:
                have = ", ".join(c.name for c in table.c)
                raise SchemaMismatch(
                    f"column {name!r} ({key}) not found in table {cfg.table_name!r} "
                    f"(columns: {have})"
                )
        return table

    def col(self, name: str) -> sa.Column[Any]:
        return self.table.c[name]

    # ------------------------------------------------------------------ reading

    def eligible(self, cutoff: datetime, *, include_failed: bool = True) -> sa.ColumnElement[bool]:
        """Rows not archived and created before ``cutoff`` (optionally without recorded errors)."""
        cfg = self.config
        cond = sa.and_(
            self.col(cfg.archived_column).is_not(True),
            self.col(cfg.created_at_column) < cutoff,
        )
        if cfg.error_column is not None and not include_failed:
            cond = sa.and_(cond, self.col(cfg.error_column).is_(None))
        return cond

    def _after(self, cursor: Cursor | None) -> sa.ColumnElement[bool]:
        if cursor is None:
            return sa.true()
        c = self.col(self.config.created_at_column)
        u = self.col(self.config.uid_column)
        return sa.or_(c > cursor.created_at, sa.and_(c == cursor.created_at, u > cursor.uid))

    def _next_rows(
        self,
        stmt: sa.Select[Any],
        cutoff: datetime,
        after: Cursor | None,
        limit: int,
        include_failed: bool,
        *,
        before: datetime | None = None,
    ) -> sa.Select[Any]:
        """``stmt`` over the next ``limit`` eligible rows after ``after`` in (created_at, uid)
        order (only those created before ``before``, if given)."""
        c = self.col(self.config.created_at_column)
        where = [self.eligible(cutoff, include_failed=include_failed), self._after(after)]
        if before is not None:
            where.append(c < before)
        return stmt.where(*where).order_by(c, self.col(self.config.uid_column)).limit(limit)

    def _columns(self) -> list[sa.Column[Any]]:
        cfg = self.config
        names = [
            cfg.uid_column,
            cfg.created_at_column,
            cfg.file_location_column,
            cfg.size_bytes_column,
        ]
        names += [n for n in (cfg.content_type_column, cfg.checksum_column) if n is not None]
        return [self.col(n) for n in names]

    def _file_rows(self, raw: Sequence[Sequence[Any]]) -> list[FileRow]:
        """Database rows (the columns of :meth:`_columns`) as FileRows."""
        cfg = self.config
        ict = 4 if cfg.content_type_column else None
        ick = (5 if ict is not None else 4) if cfg.checksum_column else None
        out: list[FileRow] = []
        append = out.append
        for r in raw:
            uid, created, location, size = r[0], r[1], r[2], r[3]
            content_type = r[ict] if ict is not None else None
            checksum = r[ick] if ick is not None else None
            append(
                FileRow(
                    uid if type(uid) is str else str(uid),
                    # PostgreSQL sessions run in UTC: most values need no conversion
                    created
                    if type(created) is datetime and created.tzinfo is UTC
                    else as_utc(created),
                    (location if type(location) is str else str(location))
                    if location is not None
                    else "",
                    (size if type(size) is int else int(size)) if size is not None else -1,
                    str(content_type) if content_type is not None else None,
                    str(checksum).strip().lower() if checksum is not None else None,
                )
            )
        return out

    def select_page(
        self,
        conn: Connection,
        cutoff: datetime,
        *,
        after: Cursor | None,
        limit: int,
        include_failed: bool = True,
        claim: bool = False,
    ) -> tuple[list[FileRow], Cursor | None]:
        """The next ``limit`` eligible rows after ``after`` in (created_at, uid) order.

        With ``claim`` the rows are locked ``FOR UPDATE SKIP LOCKED`` until ``conn``'s
        transaction ends (PostgreSQL); rows another migrator holds are left to it.
        """
        rows, raw = self.select_rows(
            conn, cutoff, after=after, limit=limit, include_failed=include_failed, claim=claim
        )
        return rows, (row_cursor(raw[-1]) if raw else None)

    def select_rows(
        self,
        conn: Connection,
        cutoff: datetime,
        *,
        after: Cursor | None,
        limit: int,
        include_failed: bool = True,
        claim: bool = False,
        before: datetime | None = None,
    ) -> tuple[list[FileRow], Sequence[Sequence[Any]]]:
        """Like :meth:`select_page`, with the database rows instead of the last cursor:
        ``row_cursor(raw[i])`` is row ``i``'s keyset position (a batch needs only its last
        one, so none is built per row). ``before``: only rows created before that instant."""
        stmt = self._next_rows(
            sa.select(*self._columns()), cutoff, after, limit, include_failed, before=before
        )
        if claim and self.supports_skip_locked:
            stmt = stmt.with_for_update(skip_locked=True)
        raw = conn.execute(stmt).all()
        return self._file_rows(raw), raw

    def day_cut_bounds(
        self,
        conn: Connection,
        cutoff: datetime,
        *,
        after: Cursor | None,
        limit: int,
        include_failed: bool = True,
    ) -> tuple[datetime, datetime] | None:
        """The created_at (UTC) of the ``(limit + 1) // 2``-th and the ``limit``-th eligible
        row after ``after``, or None when fewer than ``limit`` are left. One scan, no locks:
        what a day-aligned cut of the next ``limit`` rows needs, without fetching them."""
        c = self.col(self.config.created_at_column)
        u = self.col(self.config.uid_column)
        half = (limit + 1) // 2
        numbered = self._next_rows(
            sa.select(c.label("at"), sa.func.row_number().over(order_by=(c, u)).label("n")),
            cutoff,
            after,
            limit,
            include_failed,
        ).subquery()
        got = dict(
            (int(n), at)
            for at, n in conn.execute(
                sa.select(numbered.c.at, numbered.c.n).where(numbered.c.n.in_([half, limit]))
            ).all()
        )
        if limit not in got:
            return None
        return as_utc(got[half]), as_utc(got[limit])

    def iter_eligible(
        self, cutoff: datetime, *, page_size: int = 5000, include_failed: bool = True
    ) -> Iterator[FileRow]:
        """Every eligible row, streamed page by page (each page its own short transaction)."""
        after: Cursor | None = None
        while True:
            with self.engine.connect() as conn:
                rows, last = self.select_page(
                    conn, cutoff, after=after, limit=page_size, include_failed=include_failed
                )
            yield from rows
            if last is None or len(rows) < page_size:
                return
            after = last

    def totals(self, cutoff: datetime, *, include_failed: bool = True) -> Totals:
        """Count, bytes, oldest and newest of the eligible rows, aggregated in SQL."""
        cfg = self.config
        c = self.col(cfg.created_at_column)
        stmt = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(self.col(cfg.size_bytes_column)), 0),
            sa.func.min(c),
            sa.func.max(c),
        ).where(self.eligible(cutoff, include_failed=include_failed))
        with self.engine.connect() as conn:
            n, total, oldest, newest = conn.execute(stmt).one()
        return Totals(
            files=int(n),
            bytes=int(total),
            oldest=as_utc(oldest) if oldest is not None else None,
            newest=as_utc(newest) if newest is not None else None,
        )

    def count_pending(self, cutoff: datetime) -> int:
        stmt = sa.select(sa.func.count()).where(self.eligible(cutoff))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    # ------------------------------------------------------------------ writing

    def mark_archived(self, conn: Connection, uids: Iterable[str]) -> int:
        """Set the archived flag (and clear a recorded error) for ``uids``; returns rows changed."""
        cfg = self.config
        values: dict[str, Any] = {cfg.archived_column: True}
        if cfg.error_column is not None:
            values[cfg.error_column] = None
        changed = 0
        values_uids = self._uid_values(uids)
        if self.dialect == "postgresql":
            # one array parameter per 10,000 uids: about half the time of IN (...) lists
            from sqlalchemy.dialects.postgresql import ARRAY

            ucol = self.col(cfg.uid_column)
            for chunk in _chunks(values_uids, 10 * _CHUNK):
                stmt = (
                    sa.update(self.table)
                    .where(ucol == sa.func.any(sa.bindparam("uids", chunk, type_=ARRAY(ucol.type))))
                    .where(self.col(cfg.archived_column).is_not(True))
                    .values(values)
                )
                changed += int(conn.execute(stmt).rowcount)
            return changed
        for chunk in _chunks(values_uids, _CHUNK):
            stmt = (
                sa.update(self.table)
                .where(self.col(cfg.uid_column).in_(chunk))
                .where(self.col(cfg.archived_column).is_not(True))
                .values(values)
            )
            changed += int(conn.execute(stmt).rowcount)
        return changed

    def _uid_values(self, uids: Iterable[str]) -> list[Any]:
        """uids as the uid column's Python type (an integer uid column gets ints)."""
        try:
            py = self.col(self.config.uid_column).type.python_type
        except NotImplementedError:
            py = str
        if py is int:
            return [int(u) for u in uids]
        return list(uids)

    def archived_among(self, uids: Iterable[str]) -> set[str]:
        """Which of ``uids`` are marked archived (committed marks only)."""
        cfg = self.config
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(self._uid_values(uids), _CHUNK):
                stmt = sa.select(self.col(cfg.uid_column)).where(
                    self.col(cfg.uid_column).in_(chunk), self.col(cfg.archived_column).is_(True)
                )
                found.update(str(r[0]) for r in conn.execute(stmt))
        return found

    def record_errors(self, conn: Connection, failures: Iterable[tuple[str, str]]) -> None:
        """Write each failure's reason into the error column (no-op without one)."""
        cfg = self.config
        if cfg.error_column is None:
            return
        u = self.col(cfg.uid_column)
        for uid, reason in failures:
            conn.execute(
                sa.update(self.table)
                .where(u == uid)
                .values({cfg.error_column: reason[:MAX_ERROR_LENGTH]})
            )

    def lock_shards(self, conn: Connection, keys: Iterable[str]) -> None:
        """Hold a PostgreSQL advisory lock per shard key until ``conn``'s transaction ends.

        Locks are taken in ascending lock-id order, so two migrators never wait on each other
        in a cycle (PostgreSQL would report such a deadlock; the batch would then fail and be
        retried). A no-op on databases without advisory locks (one migrator per database).
        """
        if self.dialect != "postgresql":
            return
        ids = sorted({advisory_key(k) for k in keys})
        if not ids:
            return
        # one round trip; the subquery's ORDER BY fixes the order the locks are taken in
        conn.execute(
            sa.text(
                "SELECT count(pg_advisory_xact_lock(k)) FROM "
                "(SELECT k FROM unnest(CAST(:ids AS bigint[])) AS t(k) ORDER BY k) AS s"
            ),
            {"ids": ids},
        )


def row_cursor(raw: Sequence[Any]) -> Cursor:
    """The keyset position of a database row (the columns of ``SourceDatabase._columns``)."""
    return Cursor(raw[1], raw[0])


def advisory_key(key: str) -> int:
    """A stable signed 64-bit number for a shard key (PostgreSQL advisory lock ids are bigint)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"des-migr").digest()
    return int.from_bytes(digest, "big", signed=True)


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
