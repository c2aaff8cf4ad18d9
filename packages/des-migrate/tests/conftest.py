"""Helpers for the des-migrate tests: a files table on SQLite or PostgreSQL, source files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa


@dataclass(frozen=True)
class Src:
    uid: str
    created_at: datetime
    data: bytes
    archived: bool = False
    size_bytes: int | None = None  # defaults to len(data)
    location: str | None = None  # defaults to a file written under the source dir
    content_type: str | None = None


def make_table(engine: sa.Engine, name: str = "files", *, uid_key: bool = True) -> sa.Table:
    """The files table; without ``uid_key`` the uid is not a key (two rows may share one)."""
    md = sa.MetaData()
    table = sa.Table(
        name,
        md,
        sa.Column("uid", sa.String(200), primary_key=uid_key, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("file_location", sa.String(1000)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("content_type", sa.String(100)),
        sa.Column("checksum", sa.String(64)),
        sa.Column("migration_error", sa.Text),
        sa.Index(f"ix_{name}_keyset", "created_at", "uid"),
    )
    md.create_all(engine)
    return table


def content_for(uid: str, size: int = 300) -> bytes:
    """Deterministic, mildly compressible bytes for a uid."""
    seed = hashlib.sha256(uid.encode()).digest()
    out = bytearray()
    while len(out) < size:
        out += seed + uid.encode() * 3
    return bytes(out[:size])


def insert_rows(
    engine: sa.Engine, table: sa.Table, src_dir: Path, rows: Iterable[Src]
) -> dict[str, Path]:
    src_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    values: list[dict[str, Any]] = []
    for r in rows:
        if r.location is None:
            p = src_dir / f"{r.uid}.bin"
            p.write_bytes(r.data)
            loc = str(p)
            paths[r.uid] = p
        else:
            loc = r.location
        values.append(
            {
                "uid": r.uid,
                "created_at": r.created_at.astimezone(UTC).replace(tzinfo=None),
                "file_location": loc,
                "size_bytes": len(r.data) if r.size_bytes is None else r.size_bytes,
                "archived": r.archived,
                "content_type": r.content_type,
                "checksum": hashlib.sha256(r.data).hexdigest(),
            }
        )
    with engine.begin() as conn:
        if values:
            conn.execute(table.insert(), values)
    return paths


def source_table(url: str, src_dir: Path, rows: Iterable[Src]) -> tuple[sa.Engine, sa.Table]:
    """A files table at ``url`` holding ``rows``, their source files under ``src_dir``."""
    engine = sa.create_engine(url)
    table = make_table(engine)
    insert_rows(engine, table, src_dir, rows)
    return engine, table


def archived_uids(engine: sa.Engine, table: sa.Table) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(table.c.uid).where(table.c.archived))}


def errors_of(engine: sa.Engine, table: sa.Table) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.uid, table.c.migration_error).where(
                table.c.migration_error.is_not(None)
            )
        )
        return {r[0]: r[1] for r in rows}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+pysqlite:///{tmp_path / 'source.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL at 127.0.0.1:5432."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'source.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Helpers:
    """The helpers above, reachable from tests through the ``h`` fixture."""

    Src = Src
    make_table = staticmethod(make_table)
    content_for = staticmethod(content_for)
    insert_rows = staticmethod(insert_rows)
    source_table = staticmethod(source_table)
    archived_uids = staticmethod(archived_uids)
    errors_of = staticmethod(errors_of)
    ts = staticmethod(ts)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers


def migration_config(
    url: str, out: Path, *, report: Path | None = None, **sections: dict[str, Any]
) -> Any:
    """A config for tests: fixed cutoff 2024-02-01, error and checksum columns, n_bits 4."""
    from des_migrate import parse_config

    doc: dict[str, Any] = {
        "database": {
            "url": url,
            "checksum_column": "checksum",
            "content_type_column": "content_type",
            "error_column": "migration_error",
        },
        "migration": {
            "cutoff": "2024-02-01T00:00:00Z",
            "batch_size": 100,
            "state_dir": str(out.parent / "state"),
        },
        "packer": {"output_dir": str(out), "n_bits": 4, "workers": 2},
    }
    if report is not None:
        doc["migration"]["report_file"] = str(report)
    for name, values in sections.items():
        doc[name].update(values)
    return parse_config(doc)


def read_back(out: Path, uid: str, created_at: datetime, n_bits: int = 4) -> bytes:
    from des_format import LocalObjectStore, ShardRetriever
    from des_routing import locate_shard

    key = locate_shard(uid, created_at, n_bits).object_key
    return ShardRetriever(LocalObjectStore(out)).read(key, uid)


def shard_uids(out: Path) -> list[str]:
    """Every uid in every shard under ``out`` (duplicates across shards would show twice)."""
    from des_format import LocalFileSource, read_index

    uids: list[str] = []
    for path in sorted(out.glob("*/*.des")):
        with LocalFileSource(path) as src:
            uids.extend(e.uid for e in read_index(src).iter_entries() if not e.deleted)
    return uids


def corrupting_pack(out: Path, key: str, uid: str) -> Any:
    """des-packer's ``pack``, flipping a byte of ``uid``'s payload in ``out/key`` right when
    the shard is reported published (the verify step starts from that report)."""
    import dataclasses

    from des_format import LocalObjectStore, ShardRetriever
    from des_packer import pack

    def corrupting(entries: Any, output: str, options: Any) -> Any:
        forward = options.progress

        def progress(event: Any) -> None:
            if event.shard_key == key and event.shard_status in ("written", "appended"):
                entry = ShardRetriever(LocalObjectStore(out)).stat(key, uid)
                path = out / key
                data = bytearray(path.read_bytes())
                data[entry.offset + entry.stored_size // 2] ^= 0xFF
                path.write_bytes(bytes(data))
            forward(event)

        return pack(entries, output, dataclasses.replace(options, progress=progress))

    return corrupting


Helpers.migration_config = staticmethod(migration_config)  # type: ignore[attr-defined]
Helpers.read_back = staticmethod(read_back)  # type: ignore[attr-defined]
Helpers.shard_uids = staticmethod(shard_uids)  # type: ignore[attr-defined]
Helpers.corrupting_pack = staticmethod(corrupting_pack)  # type: ignore[attr-defined]
