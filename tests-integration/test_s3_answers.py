"""S3 answers DES does not understand, met by the real commands as processes (des-pack, des,
des-migrate), through a proxy in front of each S3 server that drops the ETag or garbles the
body: a typed error naming the operation and the key, exit code 1, never a traceback, and the
``--json`` document written all the same."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from des_storage_s3 import (
    ClientSettings,
    S3ProtocolError,
    S3ShardEditor,
    S3ShardStore,
    S3StoreError,
    S3Unavailable,
    make_client,
)
from des_testing import FaultProxy
from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY

PACK = [sys.executable, "-c", "from des_packer.cli import pack_main; pack_main()"]
DES = [sys.executable, "-c", "from des_packer.cli import des_main; des_main()"]
MIGRATE = [sys.executable, "-c", "from des_migrate.cli import migrate_main; migrate_main()"]
DAY = "2024-03-01T10:00:00Z"


@pytest.fixture
def s3(s3_server: Any) -> Any:
    s3_server.reset()
    s3_server.client().create_bucket(Bucket="answers")
    return s3_server


@pytest.fixture
def proxy(s3: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint_url) as p:
        yield p


def _env(s3: Any, endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        **s3.env(),
        "DES_BACKEND": "s3",
        "DES_S3_BUCKET": "answers",
        "DES_S3_PREFIX": "des",
        "DES_S3_ENDPOINT_URL": endpoint,
        "DES_S3_REGION": REGION,
        "DES_N_BITS": "4",
    }


def _files(tmp_path: Path, n: int = 5) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    rows = []
    for i in range(n):
        (src / f"f{i}").write_bytes(f"file {i} ".encode() * (i + 1))
        rows.append(
            {
                "uid": f"ans-{i}",
                "created_at": DAY,
                "size_bytes": len(f"file {i} ".encode() * (i + 1)),
                "source_path": f"in/f{i}",
            }
        )
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(rows))
    return manifest


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def test_an_answer_without_etag_is_a_typed_error(proxy: FaultProxy, tmp_path: Path) -> None:
    """des-storage-s3's own error type, naming the operation, the key and what to check."""
    settings = ClientSettings(
        region_name=REGION,
        endpoint_url=proxy.url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    shards = S3ShardStore(make_client(settings), "answers", "des")
    shard = tmp_path / "x.des"
    shard.write_bytes(b"0123456789")
    proxy.inject("no_etag", method="PUT")
    with pytest.raises(S3ProtocolError) as info:
        shards.put_shard(shard, "20240301/0.des")
    assert isinstance(info.value, S3StoreError)
    assert str(info.value) == (
        "PUT s3://answers/des/20240301/0.des: the server sent an answer without ETag, which S3 "
        "always sends; check that the endpoint is an S3-compatible server DES supports "
        "(docs/S3-COMPATIBILITY.md) and that no proxy in between alters answers"
    )
    # A body that is not S3's XML: botocore reports it as a 500, so it is retried, then a
    # typed error that names the listing.
    proxy.inject("garble", method="GET", times=100)
    with pytest.raises(S3Unavailable, match=r"LIST S3 server error 500 for s3://answers/des/"):
        list(S3ShardEditor(None, shards).list_keys(""))


@pytest.mark.heavy
def test_des_pack_meets_an_answer_without_etag(s3: Any, proxy: FaultProxy, tmp_path: Path) -> None:
    manifest = _files(tmp_path)
    proxy.inject("no_etag", method="PUT", times=100)
    run = _run(
        [*PACK, "--input-json", str(manifest), "--output-dir", "s3://answers/des", "--json"],
        _env(s3, proxy.url),
    )
    assert run.returncode == 1
    (line,) = run.stderr.splitlines()
    assert line.startswith("des-pack: error: PUT s3://answers/des/")
    assert "the server sent an answer without ETag, which S3 always sends" in line
    assert "docs/S3-COMPATIBILITY.md" in line
    doc = json.loads(run.stdout)
    assert doc["exit_code"] == 1
    assert doc["error"] == line.removeprefix("des-pack: error: ")


@pytest.mark.heavy
def test_des_commands_meet_a_garbled_listing(s3: Any, proxy: FaultProxy, tmp_path: Path) -> None:
    """A listing answered with something that is not S3's XML: ``des deletions`` and ``des
    repack`` stop with one line (and their --json document), ``des get`` of a stored file
    still works around it."""
    run = _run(
        [*PACK, "--input-json", str(_files(tmp_path)), "--output-dir", "s3://answers/des"],
        _env(s3, s3.endpoint_url),
    )
    assert run.returncode == 0, run.stderr
    env = _env(s3, proxy.url)
    for cmd in (["deletions", "--json"], ["repack", "--json"]):
        proxy.clear()
        proxy.inject("garble", match=lambda m, p, h: m == "GET" and "list-type=2" in p, times=100)
        run = _run([*DES, *cmd], env)
        assert run.returncode == 1, cmd
        last = run.stderr.splitlines()[-1]
        assert last.startswith("des: error: LIST S3 server error 500 for s3://answers/des"), last
        doc = json.loads(run.stdout.splitlines()[-1])
        assert doc["exit_code"] == 1
        assert doc["error"] in last


@pytest.mark.heavy
def test_des_migrate_meets_an_answer_without_etag(
    s3: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    db = tmp_path / "src.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE files (uid TEXT PRIMARY KEY, created_at TEXT, size_bytes INTEGER, "
        "file_location TEXT, archived INTEGER DEFAULT 0)"
    )
    for i in range(3):
        p = tmp_path / f"src{i}"
        p.write_bytes(b"x" * (10 + i))
        con.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, 0)",
            (f"mig-{i}", "2024-01-05 10:00:00", 10 + i, str(p)),
        )
    con.commit()
    con.close()
    config = tmp_path / "migrate.json"
    config.write_text(
        json.dumps(
            {
                "database": {"url": f"sqlite+pysqlite:///{db}"},
                "migration": {
                    "cutoff": "2024-02-01T00:00:00Z",
                    "state_dir": str(tmp_path / "state"),
                },
                "packer": {
                    "output_dir": "s3://answers/des",
                    "n_bits": 4,
                    "s3_endpoint_url": proxy.url,
                    "s3_region_name": REGION,
                },
            }
        )
    )
    proxy.inject("no_etag", method="PUT", times=100)
    run = _run([*MIGRATE, "--config", str(config), "--json"], _env(s3, proxy.url))
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout.splitlines()[-1])
    text = json.dumps(doc)
    assert "the server sent an answer without ETag" in text, text
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM files WHERE archived = 1").fetchone() == (0,)
    con.close()
