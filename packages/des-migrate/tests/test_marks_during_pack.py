"""Verified rows are marked while the batch is still being packed; committed only at its end."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from des_migrate import MigrationOrchestrator, MigrationTuning
from des_packer import pack

CHUNK_OF_3 = MigrationTuning(mark_chunk=3)  # rows marked per statement


def _setup(url: str, tmp_path: Path, h: type, n: int = 24) -> tuple[sa.Engine, sa.Table]:
    base = h.ts("2024-01-10T00:00:00Z")
    rows = [
        h.Src(f"file-{i:03d}", base + timedelta(minutes=13 * i), h.content_for(f"file-{i:03d}"))
        for i in range(n)
    ]
    engine, table = h.source_table(url, tmp_path / "src", rows)
    return engine, table


def test_marks_start_before_the_pack_ends(
    db_url: str, tmp_path: Path, h: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, table = _setup(db_url, tmp_path, h)
    cfg = h.migration_config(db_url, tmp_path / "out")
    marked = threading.Event()
    chunks: list[int] = []

    def recording_mark(conn: Any, uids: Any) -> int:
        uids = list(uids)
        chunks.append(len(uids))
        changed = real_mark(conn, uids)
        marked.set()
        return changed

    def pack_then_wait(entries: Any, output: str, options: Any) -> Any:
        report = pack(entries, output, options)
        # every shard is published and handed to the verifier: marks come without the pack
        # returning (before, they were made only after it)
        assert marked.wait(60), "no marks while the pack was still running"
        assert h.archived_uids(engine, table) == set()  # not committed yet
        return report

    orch = MigrationOrchestrator(cfg, pack_fn=pack_then_wait, tuning=CHUNK_OF_3)
    real_mark = orch.db.mark_archived
    orch.db.mark_archived = recording_mark  # type: ignore[method-assign]
    report = orch.run_migration_cycle()
    assert report.status == "success"
    assert report.migrated == 24
    assert sum(chunks) == 24  # every verified row marked once, in several statements
    assert len(chunks) >= 2
    assert len(h.archived_uids(engine, table)) == 24


class Boom(Exception):
    pass


def test_a_mark_that_fails_rolls_the_whole_batch_back(
    db_url: str, tmp_path: Path, h: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, table = _setup(db_url, tmp_path, h)
    cfg = h.migration_config(db_url, tmp_path / "out")
    orch = MigrationOrchestrator(cfg, tuning=CHUNK_OF_3)
    real_mark = orch.db.mark_archived
    calls: list[int] = []

    def failing_second_mark(conn: Any, uids: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise Boom("lost the connection")
        return real_mark(conn, list(uids))

    orch.db.mark_archived = failing_second_mark  # type: ignore[method-assign]
    report = orch.run_migration_cycle()
    assert report.status == "failure"
    assert report.error == "mark failed: Boom: lost the connection"
    assert h.archived_uids(engine, table) == set()  # the first chunk's marks rolled back
    rerun = MigrationOrchestrator(cfg).run_migration_cycle()
    assert (rerun.status, rerun.migrated, rerun.already_packed) == ("success", 24, 24)
