"""What a new user meets with des-stats and des-migrate (issue 20): a SQLite path that does not
exist, and the n_bits des-stats plans with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from des_migrate import DatabaseConfig, MissingDatabase, SourceDatabase
from des_migrate._source_db import require_existing_sqlite_file
from des_migrate.cli import migrate_app, stats_app
from typer.testing import CliRunner


@pytest.mark.parametrize("where", ["absent.db", "no-such-dir/files.db"])
def test_a_sqlite_path_that_does_not_exist_is_named_and_not_created(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite+pysqlite:///./{where}"
    path = tmp_path / where
    expected = (
        f"error: the SQLite database file {path} does not exist; check the path in the "
        f"database URL (a relative path is relative to the current directory, {tmp_path})\n"
    )
    r = CliRunner().invoke(stats_app, ["--db-url", url, "--table", "files"])
    assert (r.exit_code, r.stderr) == (2, expected)
    cfg = tmp_path / "migration.json"
    cfg.write_text(json.dumps({"database": {"url": url}, "packer": {"output_dir": "out"}}))
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg), "--dry-run"])
    assert (r.exit_code, r.stderr) == (2, f"{expected[:-1]} (in {cfg})\n")
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["migration.json"]
    with pytest.raises(MissingDatabase):
        require_existing_sqlite_file(url)


def test_an_in_memory_sqlite_database_and_other_databases_pass_the_check() -> None:
    require_existing_sqlite_file("sqlite+pysqlite:///:memory:")
    require_existing_sqlite_file("sqlite://")
    require_existing_sqlite_file("postgresql+psycopg://u@127.0.0.1:1/db")


def _stats_n_bits(*args: str) -> int:
    r = CliRunner().invoke(stats_app, [*args, "--cutoff", "2030-01-01", "--json"])
    assert r.exit_code == 0, r.output
    n: int = json.loads(r.stdout)["n_bits"]
    return n


def test_des_stats_plans_with_the_configs_n_bits(
    sqlite_url: str, tmp_path: Path, h: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SourceDatabase(DatabaseConfig(url=sqlite_url))
    h.make_table(db.engine)
    cfg = tmp_path / "migration.yaml"
    cfg.write_text(yaml.safe_dump({"database": {"url": sqlite_url}, "packer": {"n_bits": 4}}))
    monkeypatch.delenv("DES_N_BITS", raising=False)
    assert _stats_n_bits("--config", str(cfg)) == 4  # was 8 beside a config's 4
    assert _stats_n_bits("--config", str(cfg), "--n-bits", "6") == 6
    assert _stats_n_bits("--db-url", sqlite_url) == 8
    monkeypatch.setenv("DES_N_BITS", "5")
    assert _stats_n_bits("--db-url", sqlite_url) == 5
    assert _stats_n_bits("--config", str(cfg)) == 4  # the config is the source of truth
    monkeypatch.setenv("DES_N_BITS", "99")
    r = CliRunner().invoke(stats_app, ["--db-url", sqlite_url])
    assert (r.exit_code, r.stderr) == (
        2,
        "error: DES_N_BITS='99' (the default of --n-bits) must be a whole number from 4 to 16; "
        "fix or unset it, or give --n-bits\n",
    )
