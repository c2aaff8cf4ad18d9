"""des-pack against a real S3 server (moto's server mode over HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from des_format import ShardRetriever
from des_packer import PackOptions, pack, read_manifest
from des_packer.cli import des_app
from des_packer_testkit import DataSet, make_dataset, write_manifest
from des_routing import DesSettings, locate_shard
from des_storage_s3 import open_store
from typer.testing import CliRunner

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

N_BITS = 4


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    client.create_bucket(Bucket="packed")
    client.create_bucket(Bucket="sources")
    return s3_server


def opts(s3: Any, **kw: Any) -> PackOptions:
    return PackOptions(n_bits=N_BITS, s3_endpoint_url=s3.endpoint_url, s3_region="us-east-1", **kw)


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def s3_env(s3: Any, prefix: str) -> dict[str, str]:
    return {
        **s3.env(),
        "DES_BACKEND": "s3",
        "DES_S3_BUCKET": "packed",
        "DES_S3_PREFIX": prefix,
        "DES_S3_ENDPOINT_URL": s3.endpoint_url,
        "DES_S3_REGION": "us-east-1",
        "DES_N_BITS": str(N_BITS),
    }


def read_all(s3: Any, prefix: str, ds: DataSet) -> dict[str, bytes]:
    settings = DesSettings.from_env(s3_env(s3, prefix))
    retriever = ShardRetriever(open_store(settings))
    return {
        r["uid"]: retriever.read(
            locate_shard(r["uid"], r["created_at"], N_BITS).object_key, r["uid"]
        )
        for r in ds.rows
    }


def test_pack_to_s3_and_get_batch_back(s3: Any, tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=40, big=1, big_size=3000)
    report = pack(
        read_manifest(ds.manifest),
        "s3://packed/des",
        opts(s3, big_file_threshold=2500, max_shard_size=1500),
    )
    assert report.files == 41
    keys = set(objects(s3, "packed", "des/"))
    assert any("/_bigFiles/" in k for k in keys)
    assert any(".p1.des" in k for k in keys)
    stored = objects(s3, "packed", "des/")
    assert json.loads(stored.pop("des/_des_layout.json"))["n_bits"] == N_BITS  # the record
    assert report.bytes_out == sum(len(v) for v in stored.values())
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in ds.rows
        )
    )
    result = CliRunner().invoke(
        des_app,
        ["get", "--batch", str(batch), "--out", str(tmp_path / "got")],
        env=s3_env(s3, "des"),
    )
    assert result.exit_code == 0, result.output
    for r in ds.rows:
        assert (tmp_path / "got" / r["uid"]).read_bytes() == ds.content(r["uid"])
    verify = CliRunner().invoke(des_app, ["verify", "--deep", ""], env=s3_env(s3, "des"))
    assert verify.exit_code == 0, verify.output
    doc = json.loads(verify.stdout)
    assert (doc["failed"], doc["entries"]) == (0, 41)


def test_s3_append_keeps_old_files_and_rerun_skips(s3: Any, tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=30)
    first = write_manifest(ds.root / "first.json", ds.rows[::3])
    r1 = pack(read_manifest(first), "s3://packed/p", opts(s3))
    r2 = pack(read_manifest(ds.manifest), "s3://packed/p", opts(s3))
    assert r2.shards_appended > 0
    assert sorted(r2.duplicates) == sorted(r["uid"] for r in ds.rows[::3])
    assert r1.files + r2.files == 30
    assert read_all(s3, "p", ds) == {r["uid"]: ds.content(r["uid"]) for r in ds.rows}
    before = objects(s3, "packed", "p/")
    r3 = pack(read_manifest(ds.manifest), "s3://packed/p", opts(s3))
    assert (r3.files, r3.shards_written, r3.shards_appended) == (0, 0, 0)
    assert r3.shards_skipped == r2.shards_written + r2.shards_appended + r2.shards_skipped
    assert objects(s3, "packed", "p/") == before


def test_s3_sources(s3: Any, tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "d", n=12)
    client = s3.client()
    rows = []
    for r in ds.rows:
        client.put_object(Bucket="sources", Key=f"in/{r['uid']}", Body=ds.content(r["uid"]))
        rows.append({**r, "source_path": f"s3://sources/in/{r['uid']}"})
    rows.append({**ds.rows[0], "uid": "ghost", "source_path": "s3://sources/in/ghost"})
    m = write_manifest(ds.root / "s3src.json", rows)
    out = tmp_path / "out"
    report = pack(read_manifest(m), str(out), opts(s3, on_error="skip"))
    assert report.files == 12
    assert [u for u, _ in report.failures] == ["ghost"]
    assert "cannot read source s3://sources/in/ghost" in report.failures[0][1]
    from des_format import LocalObjectStore

    retriever = ShardRetriever(LocalObjectStore(out))
    for r in ds.rows:
        key = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
        assert retriever.read(key, r["uid"]) == ds.content(r["uid"])


def test_multi_zone_output_goes_to_each_zone_and_reads_back(s3: Any, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="zone-a")
    client.create_bucket(Bucket="zone-b")
    zones = tmp_path / "zones.json"
    zones.write_text(
        json.dumps(
            {
                "n_bits": N_BITS,
                "zones": [
                    {
                        "name": "a",
                        "range": {"start": 0, "end": 7},
                        "s3": {"bucket": "zone-a", "endpoint_url": s3.endpoint_url,
                               "region_name": "us-east-1", "prefix": "des-a/"},
                    },
                    {
                        "name": "b",
                        "range": {"start": 8, "end": 15},
                        "s3": {"bucket": "zone-b", "endpoint_url": s3.endpoint_url,
                               "region_name": "us-east-1", "prefix": "des-b/"},
                    },
                ],
            }
        )
    )  # fmt: skip
    ds = make_dataset(tmp_path / "d", n=30)
    report = pack(read_manifest(ds.manifest), "", opts(s3, zones_config=str(zones)))
    assert report.files == 30
    in_a = {k[len("des-a/") :] for k in objects(s3, "zone-a")}
    in_b = {k[len("des-b/") :] for k in objects(s3, "zone-b")}
    for r in ds.rows:
        loc = locate_shard(r["uid"], r["created_at"], N_BITS)
        assert loc.object_key in (in_a if loc.shard_index <= 7 else in_b)
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in ds.rows
        )
    )
    env = {**s3.env(), "DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(zones), "DES_N_BITS": "4"}
    result = CliRunner().invoke(
        des_app, ["get", "--batch", str(batch), "--out", str(tmp_path / "got")], env=env
    )
    assert result.exit_code == 0, result.output
    for r in ds.rows:
        assert (tmp_path / "got" / r["uid"]).read_bytes() == ds.content(r["uid"])
    # ``des ls`` lists each day in every zone (the store's list_dir, each zone's bucket).
    result = CliRunner().invoke(
        des_app, ["ls", "--from", "20240301", "--to", "20240302", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    listed = sorted(json.loads(line)["uid"] for line in result.stdout.splitlines())
    assert listed == sorted(r["uid"] for r in ds.rows)


@pytest.mark.parametrize("tail", [None, "8192", "200000"])
def test_get_reads_the_tail_des_tail_read_bytes_asks_for(
    s3: Any, tmp_path: Path, tail: str | None
) -> None:
    """``des get`` reads the tail size DES_TAIL_READ_BYTES names (64 KiB without it), as
    des-http does: counted on the wire by a proxy in front of the server."""
    from des_testing import FaultProxy

    ds = make_dataset(tmp_path / "d", n=12, days=1)
    pack(read_manifest(ds.manifest), "s3://packed/t", opts(s3))
    row = ds.rows[5]
    with FaultProxy(s3.endpoint_url) as proxy:
        env = {**s3_env(s3, "t"), "DES_S3_ENDPOINT_URL": proxy.url}
        if tail is not None:
            env["DES_TAIL_READ_BYTES"] = tail
        result = CliRunner().invoke(
            des_app, ["get", row["uid"], "--created-at", row["created_at"]], env=env
        )
        assert result.exit_code == 0, result.output
        assert result.stdout_bytes == ds.content(row["uid"])
        gets = [r for r in proxy.snapshot() if r.method == "GET"]
    assert gets[0].range == f"bytes=-{tail or 65536}"
    # The small shard's index comes with its tail: one more GET, for the payload.
    assert len(gets) == 2
