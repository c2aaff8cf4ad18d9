"""Day-aligned batches: a batch stops at a UTC day boundary so shards are not appended to twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from des_migrate import FileRow, MigrationOrchestrator, plan_day_aligned_cut
from hypothesis import given
from hypothesis import strategies as st

BASE = datetime(2024, 1, 1, tzinfo=UTC)


def _rows(hours: list[int]) -> list[FileRow]:
    return [FileRow(f"u{i}", BASE + timedelta(hours=hr), "/x", 1) for i, hr in enumerate(hours)]


def test_cut_examples() -> None:
    assert plan_day_aligned_cut([]) == 0
    assert plan_day_aligned_cut(_rows([1, 2, 3])) == 3  # one day: nothing to cut
    assert plan_day_aligned_cut(_rows([1, 2, 3, 25, 26])) == 3  # drop the started day 2
    assert plan_day_aligned_cut(_rows([1, 25, 26, 27])) == 4  # cutting would drop >= half
    assert plan_day_aligned_cut(_rows([1, 2, 25, 26])) == 2  # exactly half kept: cut


@given(st.lists(st.integers(0, 24 * 6), min_size=1, max_size=60))
def test_cut_properties(hours: list[int]) -> None:
    rows = _rows(sorted(hours))
    cut = plan_day_aligned_cut(rows)
    assert 0 < cut <= len(rows)
    if cut < len(rows):
        assert cut * 2 >= len(rows)
        last_day = rows[-1].created_at.date()
        assert all(r.created_at.date() == last_day for r in rows[cut:])
        assert rows[cut - 1].created_at.date() != last_day


def _migrate(url: str, tmp_path: Path, h: type, align: bool) -> tuple[Any, int]:
    engine = sa.create_engine(url)
    table = h.make_table(engine)
    rows = [
        h.Src(
            f"d{i:03d}",
            h.ts("2024-01-01T00:00:00Z") + timedelta(hours=2 * i),
            h.content_for(f"d{i:03d}", 120),
        )
        for i in range(48)  # 12 a day over 4 days
    ]
    h.insert_rows(engine, table, tmp_path / "src", rows)
    appended = 0

    def counting_pack(entries: Any, output: str, options: Any) -> Any:
        nonlocal appended
        from des_packer import pack

        report = pack(entries, output, options)
        appended += report.shards_appended
        return report

    cfg = h.migration_config(
        url,
        tmp_path / "out",
        migration={"batch_size": 20, "align_batches_to_days": align},
    )
    report = MigrationOrchestrator(cfg, pack_fn=counting_pack).run_migration_cycle()
    assert report.migrated == 48
    assert sorted(h.shard_uids(tmp_path / "out")) == sorted(r.uid for r in rows)
    return report, appended


def test_aligned_batches_never_append(tmp_path: Path, h: type) -> None:
    report, appended = _migrate(f"sqlite+pysqlite:///{tmp_path / 's.db'}", tmp_path, h, True)
    assert report.batches == 4  # 12 + 12 + 12 + 12: each batch one whole day
    assert appended == 0


def test_unaligned_batches_append(tmp_path: Path, h: type) -> None:
    report, appended = _migrate(f"sqlite+pysqlite:///{tmp_path / 's.db'}", tmp_path, h, False)
    assert report.batches == 3  # 20 + 20 + 8, cutting days 2 and 4 in the middle
    assert appended > 0
