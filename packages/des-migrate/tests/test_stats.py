"""des-stats figures against a hand-computed expectation; plan_n_bits properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from des_migrate import DatabaseConfig, SourceDatabase, compute_stats, plan_n_bits
from des_migrate.cli import stats_app
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

CUTOFF = datetime(2024, 1, 3, tzinfo=UTC)


def _populate(url: str, tmp_path: Path, h: type) -> None:
    db = SourceDatabase(DatabaseConfig(url=url))
    table = h.make_table(db.engine)
    ts = h.ts
    rows = [
        # numeric uids route to int(uid) % 2**n_bits: with n_bits=4, shard = uid % 16
        h.Src("1", ts("2024-01-01T10:00:00Z"), b"a" * 100),  # 20240101 / 1
        h.Src("17", ts("2024-01-01T11:00:00Z"), b"b" * 200),  # 20240101 / 1
        h.Src("2", ts("2024-01-01T12:00:00Z"), b"c" * 300),  # 20240101 / 2
        h.Src("3", ts("2024-01-02T00:00:00Z"), b"d" * 400),  # 20240102 / 3
        h.Src("18", ts("2024-01-02T05:00:00Z"), b"e" * 50),  # 20240102 / 2
        h.Src("4", ts("2024-01-02T23:59:59Z"), b"f" * 500, archived=True),  # excluded
        h.Src("5", ts("2024-01-03T00:00:00Z"), b"g" * 600),  # at the cutoff: excluded
    ]
    h.insert_rows(db.engine, table, tmp_path / "src", rows)


EXPECTED = {
    "cutoff": "2024-01-03T00:00:00Z",
    "n_bits": 4,
    "files": 5,
    "bytes": 1050,
    "oldest": "2024-01-01T10:00:00Z",
    "newest": "2024-01-02T05:00:00Z",
    "shards_to_write": 4,
    "average_shard_bytes": 262,
    "target_shard_bytes": 16,
    # mean bytes per day 525; 525 / 16 = 32.8 -> floor(log2) = 5
    "recommended_n_bits": 5,
    "per_day": [
        {"day": "20240101", "files": 3, "bytes": 600, "shards": 2},
        {"day": "20240102", "files": 2, "bytes": 450, "shards": 2},
    ],
    "per_shard_index": [
        {"shard_index": 1, "files": 2, "bytes": 300},
        {"shard_index": 2, "files": 2, "bytes": 350},
        {"shard_index": 3, "files": 1, "bytes": 400},
    ],
}


def test_stats_match_hand_computed_figures(db_url: str, tmp_path: Path, h: type) -> None:
    _populate(db_url, tmp_path, h)
    db = SourceDatabase(DatabaseConfig(url=db_url))
    stats = compute_stats(db, CUTOFF, n_bits=4, target_shard_bytes=16, page_size=2)
    assert stats.to_json() == EXPECTED


def test_des_stats_command_json(sqlite_url: str, tmp_path: Path, h: type) -> None:
    _populate(sqlite_url, tmp_path, h)
    result = CliRunner().invoke(
        stats_app,
        [
            "--db-url",
            sqlite_url,
            "--table",
            "files",
            "--cutoff",
            "2024-01-03T00:00:00Z",
            "--n-bits",
            "4",
            "--target-shard-bytes",
            "16",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == EXPECTED


def test_des_stats_command_text(sqlite_url: str, tmp_path: Path, h: type) -> None:
    _populate(sqlite_url, tmp_path, h)
    result = CliRunner().invoke(
        stats_app, ["--db-url", sqlite_url, "--cutoff", "2024-01-03", "--n-bits", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "eligible files:      5" in result.stdout
    assert "shards to write:     4" in result.stdout
    assert "  20240101           3             600       2" in result.stdout


def test_des_stats_errors_exit_2_for_config_and_1_for_database(
    sqlite_url: str, tmp_path: Path, h: type
) -> None:
    _populate(sqlite_url, tmp_path, h)
    runner = CliRunner()
    r = runner.invoke(stats_app, ["--cutoff", "2024-01-03"])
    assert r.exit_code == 2
    assert "config key '--db-url' is required" in r.stderr
    r = runner.invoke(stats_app, ["--db-url", sqlite_url, "--cutoff", "soon"])
    assert r.exit_code == 2
    assert "config key '--cutoff': expected an ISO-8601" in r.stderr
    r = runner.invoke(stats_app, ["--db-url", sqlite_url, "--table", "missing"])
    assert r.exit_code == 2
    assert "table 'missing' not found" in r.stderr
    r = runner.invoke(stats_app, ["--db-url", "postgresql+psycopg://u:topsecret@127.0.0.1:1/db"])
    assert r.exit_code == 1
    assert "topsecret" not in r.output
    assert "postgresql+psycopg://u:***@127.0.0.1:1/db" in r.stderr
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    ("days", "target", "expected"),
    [
        ([525, 525], 1, 9),
        ([525, 525], 16, 5),
        ([525, 525], 100, 4),  # 5.25 shards' worth: clamped to the minimum n_bits
        ([0, 0], 1, 4),
        ([1 << 40], 1, 16),  # clamped to the maximum
        ([256 << 20] * 3, 1 << 20, 8),
    ],
)
def test_plan_n_bits_examples(days: list[int], target: int, expected: int) -> None:
    assert plan_n_bits(days, target) == expected


@given(
    days=st.lists(st.integers(0, 1 << 45), min_size=1, max_size=20),
    target=st.integers(1, 1 << 32),
)
def test_plan_n_bits_keeps_average_shards_at_or_above_target(days: list[int], target: int) -> None:
    n = plan_n_bits(days, target)
    assert 4 <= n <= 16
    nonzero = [d for d in days if d > 0]
    if not nonzero:
        assert n == 4
        return
    mean = sum(nonzero) / len(nonzero)
    if n > 4:
        assert mean / (1 << n) >= target
    if n < 16:
        assert mean / (1 << (n + 1)) < target
