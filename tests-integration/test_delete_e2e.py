"""Deletion end to end on S3 (moto's server, bucket versioning on): des-pack, two des-http
replicas under uvicorn, DELETE on one replica, 410 on the other (its index cache warm), then
``des repack`` and ``des deletions`` as subprocesses, and a search of every object version
for the deleted bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from des_testing import S3Server

sys.path.insert(0, str(Path(__file__).parent))
from test_http_e2e import (
    BIG_THRESHOLD,
    Packed,
    _s3_env,
    des_pack,
    file_url,
    make_files,
    run_service,
)

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

BUCKET = "del-e2e"


def des(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["des", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def every_version(s3: S3Server) -> bytes:
    client = s3.client()
    blobs: list[bytes] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for v in page.get("Versions", []):
            got = client.get_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])
            blobs.append(got["Body"].read())
    return b"\x00".join(blobs)


def test_delete_on_one_replica_410_on_another_then_erase(
    tmp_path: Path, s3_server: S3Server
) -> None:
    packed: Packed = make_files(tmp_path / "files")
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    des_pack(packed, f"s3://{BUCKET}/des/", _s3_env(s3_server))
    env = _s3_env(
        s3_server,
        DES_BACKEND="s3",
        DES_S3_BUCKET=BUCKET,
        DES_S3_PREFIX="des/",
        DES_S3_REGION="us-east-1",
        DES_N_BITS="4",
    )
    inline = packed.rows[1]  # a payload in the shard head object
    big = packed.rows[7]  # a big file (_bigFiles/<sha256>)
    assert big["size_bytes"] > BIG_THRESHOLD
    assert inline["size_bytes"] >= 16
    victims = (inline, big)
    unknown: dict[str, Any] = {"uid": "http-9999", "created_at": inline["created_at"]}

    with (
        run_service(tmp_path, env) as a,
        run_service(tmp_path, env) as b,
        a.client() as ca,
        b.client() as cb,
    ):
        for row in victims:  # replica a: index cache warm for both shards
            assert ca.get(file_url(row)).content == packed.content(row)
        r = cb.delete(file_url(inline))
        assert (r.status_code, r.json()["state"]) == (200, "hidden")
        assert cb.delete(file_url(big)).status_code == 200
        assert ca.get(file_url(inline)).status_code == 410  # If-Match on the cached ETag
        assert cb.get(file_url(big)).status_code == 410
        assert ca.get(file_url(unknown)).status_code == 404
        assert cb.delete(file_url(unknown)).status_code == 404

        listed = des(env, "deletions", "--json")
        assert listed.returncode == 0, listed.stderr
        states = sorted(json.loads(x)["state"] for x in listed.stdout.splitlines())
        assert states == ["hidden", "hidden"]

        repacked = des(env, "repack", "--json", "--bigfile-grace", "0")
        assert repacked.returncode == 0, repacked.stderr
        report = json.loads(repacked.stdout)
        assert sum(r["erased"] for r in report["repacked"]) == 2
        assert len(report["bigfiles_removed"]) == 1

        # After erasure the big file is gone too, so even a warm replica answers 410.
        for c in (ca, cb):
            for row in victims:
                assert c.get(file_url(row)).status_code == 410
        for row in packed.rows:
            if row in victims:
                continue
            got = ca.get(file_url(row))
            assert (got.status_code, got.content) == (200, packed.content(row)), row["uid"]

    blob = every_version(s3_server)
    for row in victims:
        assert packed.content(row) not in blob, row["uid"]
    listed = des(env, "deletions", "--json")
    assert sorted(json.loads(x)["state"] for x in listed.stdout.splitlines()) == [
        "erased",
        "erased",
    ]
    get = des(env, "get", inline["uid"], "--created-at", inline["created_at"])
    assert get.returncode == 4
    assert get.stderr == f"des: error: {inline['uid']}: deleted (gone; it will not come back)\n"
