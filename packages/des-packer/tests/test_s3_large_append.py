"""Appends to, and deletes from, shards of 5 MiB and more on S3, through the real commands.

A shard of at least 5 MiB is appended to server-side: UploadPartCopy of its current bytes,
then the new tail. SeaweedFS answers UploadPartCopy with an ETag that is not an MD5 (``<hex>-N``,
unquoted); DES must not care what an ETag looks like. Every file is read back byte-exact.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from des_format import ShardRetriever
from des_packer_testkit import write_manifest
from des_routing import DesSettings, locate_shard
from des_storage_s3 import open_store

N_BITS = 4
DAY = "2024-05-06T07:00:00Z"
PACK = [sys.executable, "-c", "from des_packer.cli import pack_main; pack_main()"]
DES = [sys.executable, "-c", "from des_packer.cli import des_main; des_main()"]
FILE_SIZE = 400 * 1024


def _uids_of_one_shard(count: int) -> tuple[str, list[str]]:
    """``count`` uids that all route to the same shard (key, uids)."""
    by_key: dict[str, list[str]] = {}
    i = 0
    while True:
        uid = f"late-{i:05d}"
        key = locate_shard(uid, DAY, N_BITS).object_key
        by_key.setdefault(key, []).append(uid)
        if len(by_key[key]) == count:
            return key, by_key[key]
        i += 1


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.client().create_bucket(Bucket="large")
    return s3_server


def _env(s3: Any) -> dict[str, str]:
    return {
        **os.environ,
        **s3.env(),
        "DES_BACKEND": "s3",
        "DES_S3_BUCKET": "large",
        "DES_S3_PREFIX": "des",
        "DES_S3_ENDPOINT_URL": s3.endpoint_url,
        "DES_S3_REGION": "us-east-1",
        "DES_N_BITS": str(N_BITS),
    }


def _pack(s3: Any, manifest: Path) -> dict[str, Any]:
    run = subprocess.run(
        [*PACK, "--input-json", str(manifest), "--output-dir", "s3://large/des", "--json"],
        env=_env(s3),
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stderr
    doc: dict[str, Any] = json.loads(run.stdout)
    return doc


@pytest.mark.heavy
def test_late_files_appended_to_a_large_shard_read_back_byte_exact(s3: Any, tmp_path: Path) -> None:
    """A 6 MiB shard (incompressible files) gets late files twice (UploadPartCopy of its
    current bytes each time); a file of it is then deleted with ``des delete``. Every file
    reads back byte-exact, the deleted one answers "deleted"."""
    key, uids = _uids_of_one_shard(22)
    rnd = random.Random(16)
    src = tmp_path / "input"
    src.mkdir()
    rows: list[dict[str, Any]] = []
    content: dict[str, bytes] = {}
    for uid in uids:
        data = rnd.randbytes(FILE_SIZE)
        (src / uid).write_bytes(data)
        content[uid] = data
        rows.append(
            {"uid": uid, "created_at": DAY, "size_bytes": len(data), "source_path": f"input/{uid}"}
        )
    first, second, third = rows[:16], rows[16:19], rows[19:]
    doc = _pack(s3, write_manifest(tmp_path / "first.json", first))
    assert (doc["files"], doc["shards_written"]) == (16, 1)
    size = s3.client().head_object(Bucket="large", Key=f"des/{key}")["ContentLength"]
    assert size >= 16 * FILE_SIZE > 5 * 1024 * 1024

    doc = _pack(s3, write_manifest(tmp_path / "second.json", first + second))
    assert (doc["files"], doc["shards_appended"]) == (3, 1)
    doc = _pack(s3, write_manifest(tmp_path / "third.json", third))
    assert (doc["files"], doc["shards_appended"]) == (3, 1)

    settings = DesSettings.from_env(_env(s3))
    retriever = ShardRetriever(open_store(settings))
    assert {u: retriever.read(key, u) for u in uids} == content

    victim = uids[3]
    run = subprocess.run(
        [*DES, "delete", victim, "--created-at", DAY],
        env=_env(s3),
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert run.stdout.startswith(f"deleted {victim} (")
    fresh = ShardRetriever(open_store(settings))
    assert {u: fresh.read(key, u) for u in uids if u != victim} == {
        u: d for u, d in content.items() if u != victim
    }
    got = subprocess.run(
        [*DES, "get", victim, "--created-at", DAY], env=_env(s3), capture_output=True, check=False
    )
    assert (got.returncode, got.stdout) == (4, b"")
