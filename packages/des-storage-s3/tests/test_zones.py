"""Two zones on two buckets (moto over HTTP): reads and writes go to the owning zone; a zone
that is down fails clearly for its own shards only.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from des_format import ShardWriter, StorageUnavailable, bigfile_key
from des_routing import DesSettings, locate_shard, parse_zones
from des_storage_s3 import (
    MultiZoneObjectStore,
    MultiZoneShardStore,
    RetryPolicy,
    S3Unavailable,
    ShardExists,
    open_retriever,
    open_shard_store,
    open_store,
    zone_index_of_key,
)
from des_testing import FaultProxy, free_port
from prometheus_client import CollectorRegistry

CREATED = "2024-06-01T12:00:00Z"


def zones_config(endpoint_a: str, endpoint_b: str, bucket_a: str, bucket_b: str) -> Any:
    creds = {"access_key_id": "testing", "secret_access_key": "testing"}
    return parse_zones(
        {
            "n_bits": 8,
            "zones": [
                {
                    "name": "zone-a",
                    "range": {"start": 0, "end": 127},
                    "s3": {
                        "bucket": bucket_a,
                        "region_name": "us-east-1",
                        "endpoint_url": endpoint_a,
                        "prefix": "des-a/",
                        "credentials": creds,
                    },
                },
                {
                    "name": "zone-b",
                    "range": {"start": 128, "end": 255},
                    "s3": {
                        "bucket": bucket_b,
                        "region_name": "us-east-1",
                        "endpoint_url": endpoint_b,
                        "prefix": "des-b/",
                        "credentials": creds,
                    },
                },
            ],
        }
    )


@pytest.fixture
def two_buckets(direct: Any) -> tuple[str, str]:
    a, b = f"zone-a-{uuid.uuid4().hex[:10]}", f"zone-b-{uuid.uuid4().hex[:10]}"
    direct.create_bucket(Bucket=a)
    direct.create_bucket(Bucket=b)
    return a, b


def keys_in(direct: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in direct.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_zone_index_of_key() -> None:
    assert zone_index_of_key("20240101/A7.des", 8) == 0xA7
    assert zone_index_of_key("20240101/A7.p3.des", 8) == 0xA7
    assert zone_index_of_key("20240101/_bigFiles/" + "c3" + "0" * 62, 8) == 0xC3
    assert zone_index_of_key("20240101/_bigFiles/" + "c3" + "0" * 62, 4) == 0xC


def pack_files(tmp_path: Path, shard_store: Any, n: int = 40) -> dict[str, bytes]:
    files = {f"item-{i}": f"payload {i} ".encode() * (i + 1) for i in range(n)}
    by_key: dict[str, list[str]] = {}
    for uid in files:
        by_key.setdefault(locate_shard(uid, CREATED, 8).object_key, []).append(uid)
    for key, uids in by_key.items():
        path = tmp_path / key.replace("/", "_")
        with path.open("wb") as out:
            w = ShardWriter(out)
            for uid in sorted(uids):
                w.add(uid, files[uid])
            w.close()
        shard_store.put_shard(path, key)
    return files


def test_reads_and_writes_go_to_the_owning_zone(
    two_buckets: tuple[str, str],
    proxy: FaultProxy,
    direct: Any,
    tmp_path: Path,
    fast_retry: RetryPolicy,
) -> None:
    a, b = two_buckets
    zones = zones_config(proxy.url, proxy.url, a, b)
    settings = DesSettings(backend="multi_s3", zones=zones)
    writer = open_shard_store(settings, retry=fast_retry)
    assert isinstance(writer, MultiZoneShardStore)
    files = pack_files(tmp_path, writer)
    in_a, in_b = keys_in(direct, a), keys_in(direct, b)
    assert in_a
    assert in_b
    assert all(k.startswith("des-a/") and int(k[15:17], 16) < 128 for k in in_a)
    assert all(k.startswith("des-b/") and int(k[15:17], 16) >= 128 for k in in_b)
    assert len(in_a) + len(in_b) == len({locate_shard(u, CREATED, 8).object_key for u in files})
    # a second publish of the same shard is refused in its own zone
    key = in_b[0].removeprefix("des-b/")
    with pytest.raises(ShardExists, match=f"s3://{b}/des-b/{key} already exists"):
        writer.put_shard(tmp_path / key.replace("/", "_"), key)
    # big files go to the zone named by their hash
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    bkey = bigfile_key("20240601/00.des", "f0" + "1" * 62)
    assert writer.put_bigfile(big, bkey) is True
    assert f"des-b/{bkey}" in keys_in(direct, b)

    store = open_store(settings, retry=fast_retry)
    assert isinstance(store, MultiZoneObjectStore)
    assert "zone-b" in store.describe(key)
    ret = open_retriever(settings, retry=fast_retry, registry=CollectorRegistry())
    proxy.clear()
    for uid, data in files.items():
        assert ret.read(uid, CREATED) == data
    for r in proxy.snapshot():
        shard_hex = r.key.split("/")[-1][:2]
        bucket = a if int(shard_hex, 16) < 128 else b
        assert r.key.startswith(f"{bucket}/des-")


def test_a_zone_that_is_down_fails_only_its_shards(
    two_buckets: tuple[str, str], s3_server: Any, tmp_path: Path, direct: Any
) -> None:
    a, b = two_buckets
    up = zones_config(s3_server.endpoint_url, s3_server.endpoint_url, a, b)
    files = pack_files(tmp_path, open_shard_store(DesSettings(backend="multi_s3", zones=up)))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    zones = zones_config(s3_server.endpoint_url, dead, a, b)
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    ret = open_retriever(
        DesSettings(backend="multi_s3", zones=zones), retry=policy, registry=CollectorRegistry()
    )
    ok = failed = 0
    for uid, data in files.items():
        index = locate_shard(uid, CREATED, 8).shard_index
        if index < 128:
            assert ret.read(uid, CREATED) == data
            ok += 1
        else:
            with pytest.raises(S3Unavailable) as info:
                ret.read(uid, CREATED)
            assert isinstance(info.value, StorageUnavailable)
            msg = str(info.value)
            assert msg.startswith(f"GET tail S3 connection failed for s3://{b}/des-b/20240601/")
            assert dead in msg
            assert msg.endswith("(gave up after 3 attempts)")
            failed += 1
    assert ok > 0
    assert failed > 0
