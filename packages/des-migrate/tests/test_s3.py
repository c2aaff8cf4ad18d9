"""Migration with S3 on both sides: s3:// sources and an s3:// output (moto server over HTTP)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from des_migrate import MigrationOrchestrator, MigrationTuning, parse_config


@pytest.mark.parametrize("verify_in", ["threads", "a worker process"])
def test_s3_sources_to_s3_output(
    s3_server: Any,
    sqlite_url: str,
    tmp_path: Path,
    h: type,
    monkeypatch: pytest.MonkeyPatch,
    verify_in: str,
) -> None:
    # a worker process builds its own S3 client from the config
    tuning = MigrationTuning(process_verify_min_rows=1 if verify_in == "a worker process" else 1000)
    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    client.create_bucket(Bucket="sources")
    client.create_bucket(Bucket="archive")
    base = h.ts("2024-01-07T00:00:00Z")
    rows = []
    for i in range(6):
        uid = f"s3doc-{i}"
        data = h.content_for(uid, 500 + i)
        client.put_object(Bucket="sources", Key=f"in/{uid}", Body=data)
        rows.append(h.Src(uid, base + timedelta(hours=i), data, location=f"s3://sources/in/{uid}"))
    rows.append(h.Src("s3-missing", base, b"zz", location="s3://sources/in/s3-missing"))
    engine = sa.create_engine(sqlite_url)
    table = h.make_table(engine)
    h.insert_rows(engine, table, tmp_path / "unused", rows)
    cfg = parse_config(
        {
            "database": {
                "url": sqlite_url,
                "checksum_column": "checksum",
                "error_column": "migration_error",
            },
            "migration": {
                "cutoff": "2024-02-01T00:00:00Z",
                "delete_source_files": True,
                "state_dir": str(tmp_path / "state"),
            },
            "packer": {
                "output_dir": "s3://archive/des",
                "n_bits": 4,
                "s3_endpoint_url": s3_server.endpoint_url,
                "s3_region_name": "us-east-1",
                "s3_source": {
                    "enabled": True,
                    "endpoint_url": s3_server.endpoint_url,
                    "retry_delay_seconds": 0,
                },
            },
        }
    )
    report = MigrationOrchestrator(cfg, tuning=tuning).run_migration_cycle()
    assert report.status == "partial"
    assert report.migrated == 6
    assert [(f.uid, f.step, f.reason) for f in report.failures] == [
        ("s3-missing", "validate", "source s3://sources/in/s3-missing does not exist")
    ]
    assert h.archived_uids(engine, table) == {f"s3doc-{i}" for i in range(6)}
    # sources deleted after marking; the copies read back from the S3 output
    left = client.list_objects_v2(Bucket="sources").get("KeyCount", 0)
    assert left == 0
    from des_format import ShardRetriever
    from des_routing import locate_shard
    from des_storage_s3 import S3ObjectStore

    retriever = ShardRetriever(S3ObjectStore(client, "archive", "des"))
    for r in rows[:6]:
        key = locate_shard(r.uid, r.created_at, 4).object_key
        got = retriever.read(key, r.uid)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(r.data).hexdigest()
