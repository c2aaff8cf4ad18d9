"""des-migrate as users run it: exit codes, dry run, continuous mode with SIGTERM, /metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from des_migrate import MigrationOrchestrator
from des_migrate.cli import migrate_app
from des_testing import free_port
from typer.testing import CliRunner


def _prepare(tmp_path: Path, h: type, n: int = 6, **migration: Any) -> tuple[Path, sa.Engine, Any]:
    url = f"sqlite+pysqlite:///{tmp_path / 'source.db'}"
    engine = sa.create_engine(url)
    table = h.make_table(engine)
    base = h.ts("2024-01-03T00:00:00Z")
    rows = [
        h.Src(f"u{i}", base + timedelta(hours=5 * i), h.content_for(f"u{i}", 100 + i))
        for i in range(n)
    ]
    h.insert_rows(engine, table, tmp_path / "src", rows)
    doc = {
        "database": {"url": url, "error_column": "migration_error"},
        "migration": {
            "cutoff": "2024-02-01T00:00:00Z",
            "batch_size": 4,
            "state_dir": str(tmp_path / "state"),
            **migration,
        },
        "packer": {"output_dir": str(tmp_path / "out"), "n_bits": 4, "workers": 1},
    }
    cfg = tmp_path / "migration.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    return cfg, engine, table


def test_success_exits_0_and_prints_json(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h)
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["status"] == "success"
    assert report["migrated"] == 6
    assert report["batches"] == 2
    assert len(h.archived_uids(engine, table)) == 6


def test_partial_failure_exits_3(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h)
    (tmp_path / "src" / "u2.bin").unlink()
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg)])
    assert r.exit_code == 3, r.output
    assert "migration: partial" in r.stdout
    assert f"u2: validate: source {tmp_path / 'src' / 'u2.bin'} does not exist" in r.stdout
    assert len(h.archived_uids(engine, table)) == 5


def test_failure_exits_1(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h)
    doc = yaml.safe_load(cfg.read_text())
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be")
    doc["packer"]["output_dir"] = str(blocker)
    cfg.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg)])
    assert r.exit_code == 1, r.output
    assert "migration: failure" in r.stdout
    assert "error: pack failed:" in r.stdout
    assert h.archived_uids(engine, table) == set()


def test_config_errors_exit_2_naming_the_key(tmp_path: Path, h: type) -> None:
    cfg, _, _ = _prepare(tmp_path, h)
    doc = yaml.safe_load(cfg.read_text())
    doc["migration"]["batch_size"] = -5
    cfg.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg)])
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "error: config key 'migration.batch_size': expected an integer from 1 to 1000000, got -5"
    )
    doc["migration"]["batch_size"] = 5
    doc["database"]["archived_column"] = "is_archived"
    cfg.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg)])
    assert r.exit_code == 2
    assert "column 'is_archived' (database.archived_column) not found" in r.stderr
    r = CliRunner().invoke(migrate_app, ["--config", str(tmp_path / "absent.yaml")])
    assert r.exit_code == 2
    assert r.stderr.startswith(
        f"error: config file {tmp_path / 'absent.yaml'}: no such file; check the --config path"
    )


def test_password_is_never_logged(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps({"database": {"url": "postgresql+psycopg://des:${PW}@127.0.0.1:1/app"}})
    )
    env = {**os.environ, "PW": "do-not-print-me"}
    proc = subprocess.run(
        [sys.executable, "-m", "des_migrate.cli", "--config", str(cfg)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "do-not-print-me" not in proc.stdout + proc.stderr
    assert "postgresql+psycopg://des:***@127.0.0.1:1/app" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cutoff_option_overrides_the_config(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h)  # u0..u5 at 2024-01-03 + 5 h steps
    r = CliRunner().invoke(
        migrate_app, ["--config", str(cfg), "--cutoff", "2024-01-03T10:00:00Z", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["migrated"] == 2
    assert h.archived_uids(engine, table) == {"u0", "u1"}
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg), "--cutoff", "later"])
    assert r.exit_code == 2
    assert "config key '--cutoff': expected an ISO-8601" in r.stderr


def test_dry_run_cli(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h)
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "dry run: success" in r.stdout
    assert "eligible rows:   6" in r.stdout
    assert h.archived_uids(engine, table) == set()
    assert not (tmp_path / "out").exists()


def test_request_stop_finishes_the_current_batch(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h, n=9)
    from des_migrate import read_config

    orch: MigrationOrchestrator

    def stop_during_pack(step: str) -> None:
        if step == "pack":
            orch.request_stop()

    orch = MigrationOrchestrator(read_config(cfg), fault=stop_during_pack)
    report = orch.run_migration_cycle()
    assert report.status == "success"
    assert report.batches == 1
    assert report.migrated == 4
    assert h.archived_uids(engine, table) == {"u0", "u1", "u2", "u3"}


def test_continuous_mode_stops_cleanly_on_sigterm_and_serves_metrics(
    tmp_path: Path, h: type
) -> None:
    cfg, engine, table = _prepare(tmp_path, h)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "des_migrate.cli",
            "--config",
            str(cfg),
            "--continuous",
            "--interval",
            "0.2",
            "--metrics-port",
            str(port),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                body = body.decode()
                # An empty cycle after the one that migrated: counted once or more by now
                # (a scrape that comes late sees 2.0 or more, never exactly 1.0 again).
                empty = re.search(r'des_migration_cycles_total\{status="empty"\} (\S+)', body)
                if "des_migration_files_total 6.0" in body and empty and float(empty[1]) >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert "des_migration_files_total 6.0" in body
        assert 'des_migration_cycles_total{status="success"} 1.0' in body
        assert "des_migration_pending_files 0.0" in body
        assert "des_migration_duration_seconds_count" in body
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "signal 15: finishing the current batch, then exiting" in err
    first = json.loads(out.splitlines()[0])
    assert first["status"] == "success"
    assert first["migrated"] == 6
    assert len(h.archived_uids(engine, table)) == 6


def test_skip_locked_on_sqlite_is_a_config_error(tmp_path: Path, h: type) -> None:
    cfg, _, _ = _prepare(tmp_path, h, claim_mode="skip_locked")
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg)])
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "error: config key 'migration.claim_mode': expected 'auto' or 'none' on sqlite "
        "(row claims need PostgreSQL; run one migrator per database), got 'skip_locked'"
    )


def test_a_solid_block_config_error_exits_2_naming_the_key(tmp_path: Path, h: type) -> None:
    cfg, engine, table = _prepare(tmp_path, h)
    doc = yaml.safe_load(cfg.read_text())
    doc["packer"].update({"codec": "lz4", "block_size": 131072})
    cfg.write_text(yaml.safe_dump(doc))
    r = CliRunner().invoke(migrate_app, ["--config", str(cfg)])
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "error: config key 'packer.block_size': expected 0 (off) when packer.codec is 'lz4' "
        "(solid blocks are zstd frames: set packer.codec to zstd, or packer.block_size to 0), "
        "got 131072"
    )
    assert "Traceback" not in r.output
    assert h.archived_uids(engine, table) == set()
