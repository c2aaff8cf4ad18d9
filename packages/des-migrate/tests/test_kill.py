"""R7: the kill test (tools/migrate_kill_test.py) with a few trials; run it by hand with 20+."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

TOOL = Path(__file__).resolve().parents[3] / "tools" / "migrate_kill_test.py"


def _run(tmp_path: Path, *extra: str, trials: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--trials",
            str(trials),
            "--rows",
            "30",
            "--batch-size",
            "4",
            "--seed",
            "7",
            "--workdir",
            str(tmp_path),
            *extra,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_killed_migrator_loses_nothing_sqlite(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2/2 trials held" in proc.stdout


@pytest.mark.postgres
def test_killed_migrator_loses_nothing_postgres(tmp_path: Path, pg_url: str) -> None:
    proc = _run(tmp_path, "--pg-url", pg_url, trials=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 trials held" in proc.stdout


def test_the_checker_catches_a_source_deleted_too_early(tmp_path: Path) -> None:
    """The invariant check itself must be able to fail: delete a source whose row is not
    archived and read the verdict."""
    sys.path.insert(0, str(TOOL.parent))
    try:
        import migrate_kill_test as kt
    finally:
        sys.path.remove(str(TOOL.parent))
    import random

    setup = kt.build(
        tmp_path / "t", f"sqlite+pysqlite:///{tmp_path / 's.db'}", 5, 3, random.Random(1)
    )
    uid, _ = setup.rows[0]
    (setup.src / f"{uid}.bin").unlink()
    problems = kt.check(setup, final=False)
    assert f"source of {uid} deleted but the row is not archived" in problems
