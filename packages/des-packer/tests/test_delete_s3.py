"""Delete and erase against real S3 servers (moto and SeaweedFS) with bucket versioning on:
after des repack no version of any object holds a deleted file's bytes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from des_format import EntryDeleted, ShardRetriever, part_key, read_shard_index
from des_packer import PackOptions, pack, read_manifest
from des_packer._delete import ERASED_ON_S3
from des_packer.cli import des_app
from des_routing import DesSettings, locate_shard
from des_storage_s3 import open_editor, open_store
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_delete_local import (
    N_BITS,
    assert_replica_sees_deletes,
    content,
    key_of,
    make_files,
    warm_replica,
)

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

PREFIX = "arch"


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    client.create_bucket(Bucket="packed")
    client.put_bucket_versioning(Bucket="packed", VersioningConfiguration={"Status": "Enabled"})
    return s3_server


def env(s3: Any) -> dict[str, str]:
    return {
        **s3.env(),
        "DES_BACKEND": "s3",
        "DES_S3_BUCKET": "packed",
        "DES_S3_PREFIX": PREFIX,
        "DES_S3_ENDPOINT_URL": s3.endpoint_url,
        "DES_S3_REGION": "us-east-1",
        "DES_N_BITS": str(N_BITS),
    }


def des(s3: Any, *args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(des_app, list(args), env=env(s3))
    return result.exit_code, result.stdout_bytes, result.stderr


def every_version(s3: Any) -> dict[tuple[str, str], bytes]:
    """Every stored version of every object in the bucket, with its bytes."""
    client = s3.client()
    out: dict[tuple[str, str], bytes] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket="packed"):
        for v in page.get("Versions", []):
            body = client.get_object(Bucket="packed", Key=v["Key"], VersionId=v["VersionId"])
            out[(v["Key"], v["VersionId"])] = body["Body"].read()
    return out


def test_delete_and_erase_on_versioned_s3(s3: Any, tmp_path: Path) -> None:
    rows = make_files(tmp_path, n=30, big=3)
    opts = PackOptions(
        n_bits=N_BITS,
        s3_endpoint_url=s3.endpoint_url,
        s3_region="us-east-1",
        big_file_threshold=2500,
    )
    pack(read_manifest(tmp_path / "m.json"), f"s3://packed/{PREFIX}", opts)
    victims = [r for r in rows if r["uid"] in ("bin-001", "txt-003", "bin-007", "big-2")]
    settings = DesSettings.from_env(env(s3))
    store = open_store(settings)
    stored: dict[str, bytes] = {}
    for r in victims:
        key = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
        e = read_shard_index(store, key)[0].lookup(r["uid"])
        assert e is not None
        if not e.is_bigfile:
            okey = key if e.part == 0 else part_key(key, e.part)
            stored[r["uid"]] = store.read_range(okey, e.offset, e.offset + e.stored_size)

    for r in victims:
        code, _, err = des(s3, "delete", r["uid"], "--created-at", r["created_at"])
        assert (code, err) == (0, "")
    v = victims[0]
    code, out, err = des(s3, "get", v["uid"], "--created-at", v["created_at"])
    assert (code, out) == (4, b"")
    assert err == f"des: error: {v['uid']}: deleted (gone; it will not come back)\n"
    assert des(s3, "get", "nope-9", "--created-at", v["created_at"])[0] == 1

    code, out, _ = des(s3, "deletions", "--json")
    assert code == 0
    assert sorted(json.loads(x)["state"] for x in out.decode().splitlines()) == ["hidden"] * 4

    code, out, err = des(s3, "repack", "--json", "--bigfile-grace", "0")
    assert code == 0, err
    doc = json.loads(out)
    assert sum(r["erased"] for r in doc["repacked"]) == 4
    assert len(doc["bigfiles_removed"]) == 1

    versions = every_version(s3)
    blob = b"\x00".join(versions.values())
    for r in victims:
        assert content(tmp_path, r["uid"]) not in blob, r["uid"]
    for uid, s in stored.items():
        assert s not in blob, uid
    # only current versions remain, and no delete markers hide old ones
    client = s3.client()
    listing = client.list_object_versions(Bucket="packed")
    assert listing.get("DeleteMarkers", []) == []
    assert all(v["IsLatest"] for v in listing["Versions"])

    retriever = ShardRetriever(store)
    for r in rows:
        key = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
        if r in victims:
            with pytest.raises(EntryDeleted):
                retriever.read(key, r["uid"])
        else:
            assert retriever.read(key, r["uid"]) == content(tmp_path, r["uid"]), r["uid"]
    code, out, _ = des(s3, "deletions", "--json")
    assert sorted(json.loads(x)["state"] for x in out.decode().splitlines()) == ["erased"] * 4
    # In text, what "erased" means on servers that free their disks later.
    code, out, err = des(s3, "deletions")
    assert code == 0
    assert err == f"0 hidden, 0 erasing, 4 erased\n{ERASED_ON_S3}\n"
    assert "SeaweedFS until volume.vacuum" in ERASED_ON_S3
    editor = open_editor(settings)
    assert editor.old_versions(locate_shard(v["uid"], v["created_at"], N_BITS).object_key) == 0


def test_repack_racing_an_append_on_s3_loses_nothing(s3: Any, tmp_path: Path) -> None:
    from des_packer._repack import RepackOptions, repack
    from des_packer_testkit import write_manifest

    rows = make_files(tmp_path, n=16)
    opts = PackOptions(n_bits=N_BITS, s3_endpoint_url=s3.endpoint_url, s3_region="us-east-1")
    pack(read_manifest(tmp_path / "m.json"), f"s3://packed/{PREFIX}", opts)
    victim = rows[1]
    key = locate_shard(victim["uid"], victim["created_at"], N_BITS).object_key
    assert des(s3, "delete", victim["uid"], "--created-at", victim["created_at"])[0] == 0
    late_root = tmp_path / "late"
    (late_root / "input").mkdir(parents=True)
    late: list[dict[str, Any]] = []
    i = 0
    while len(late) < 2:
        uid = f"late-{i}"
        i += 1
        if locate_shard(uid, victim["created_at"], N_BITS).object_key == key:
            (late_root / "input" / uid).write_bytes(uid.encode() * 50)
            late.append(
                {
                    "uid": uid,
                    "created_at": victim["created_at"],
                    "size_bytes": len(uid) * 50,
                    "source_path": f"input/{uid}",
                }
            )
    write_manifest(late_root / "m.json", late)
    built: list[str] = []

    def hook(step: str) -> None:
        if step == "built":
            built.append(step)
            if len(built) == 1:
                rep = pack(read_manifest(late_root / "m.json"), f"s3://packed/{PREFIX}", opts)
                assert rep.shards_appended == 1

    settings = DesSettings.from_env(env(s3))
    report = repack(
        open_editor(settings), RepackOptions(prefix=key, bigfile_grace_seconds=0), hook=hook
    )
    assert [r.attempts for r in report.repacked] == [2]
    retriever = ShardRetriever(open_store(settings))
    for r in rows:
        k = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
        if r is victim:
            with pytest.raises(EntryDeleted):
                retriever.read(k, r["uid"])
        else:
            assert retriever.read(k, r["uid"]) == content(tmp_path, r["uid"])
    for r in late:
        assert retriever.read(key, r["uid"]) == r["uid"].encode() * 50
    blob = b"\x00".join(every_version(s3).values())
    assert content(tmp_path, victim["uid"]) not in blob


def test_delete_and_erase_across_two_zones(s3: Any, tmp_path: Path) -> None:
    client = s3.client()
    for bucket in ("zone-a", "zone-b"):
        client.create_bucket(Bucket=bucket)
    zones = tmp_path / "zones.json"
    zones.write_text(
        json.dumps(
            {
                "n_bits": N_BITS,
                "zones": [
                    {
                        "name": name,
                        "range": {"start": start, "end": start + 7},
                        "s3": {
                            "bucket": f"zone-{name}",
                            "endpoint_url": s3.endpoint_url,
                            "region_name": "us-east-1",
                            "prefix": f"des-{name}/",
                        },
                    }
                    for name, start in (("a", 0), ("b", 8))
                ],
            }
        )
    )
    rows = make_files(tmp_path, n=32, big=3)
    opts = PackOptions(
        n_bits=N_BITS,
        s3_endpoint_url=s3.endpoint_url,
        s3_region="us-east-1",
        zones_config=str(zones),
        big_file_threshold=2500,
    )
    pack(read_manifest(tmp_path / "m.json"), "", opts)
    zone_env = {
        **s3.env(),
        "DES_BACKEND": "multi_s3",
        "DES_ZONES_CONFIG": str(zones),
        "DES_N_BITS": str(N_BITS),
    }
    by_zone: dict[str, dict[str, Any]] = {}
    for r in rows[:32]:
        index = locate_shard(r["uid"], r["created_at"], N_BITS).shard_index
        by_zone.setdefault("a" if index <= 7 else "b", r)
    victims = [by_zone["a"], by_zone["b"], next(r for r in rows if r["uid"] == "big-2")]
    runner = CliRunner()
    for r in victims:
        res = runner.invoke(
            des_app, ["delete", r["uid"], "--created-at", r["created_at"]], env=zone_env
        )
        assert res.exit_code == 0, res.output
    res = runner.invoke(des_app, ["repack", "--json", "--bigfile-grace", "0"], env=zone_env)
    assert res.exit_code == 0, res.output
    assert sum(x["erased"] for x in json.loads(res.stdout)["repacked"]) == 3
    blob = b""
    for bucket in ("zone-a", "zone-b"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                blob += client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    for r in victims:
        assert content(tmp_path, r["uid"]) not in blob, r["uid"]
    retriever = ShardRetriever(open_store(DesSettings.from_env(zone_env)))
    for r in rows:
        key = locate_shard(r["uid"], r["created_at"], N_BITS).object_key
        if r in victims:
            with pytest.raises(EntryDeleted):
                retriever.read(key, r["uid"])
        else:
            assert retriever.read(key, r["uid"]) == content(tmp_path, r["uid"])
    res = runner.invoke(des_app, ["deletions", "--json"], env=zone_env)
    assert sorted(json.loads(x)["state"] for x in res.stdout.splitlines()) == ["erased"] * 3


def test_delete_on_s3_erases_part_payloads_and_big_files_for_a_warm_replica(
    s3: Any, tmp_path: Path
) -> None:
    rows = make_files(tmp_path, n=40, big=3)
    opts = PackOptions(
        n_bits=N_BITS,
        s3_endpoint_url=s3.endpoint_url,
        s3_region="us-east-1",
        big_file_threshold=2500,
        max_shard_size=600,
    )
    pack(read_manifest(tmp_path / "m.json"), f"s3://packed/{PREFIX}", opts)
    settings = DesSettings.from_env(env(s3))
    store = open_store(settings)
    entries = {r["uid"]: read_shard_index(store, key_of(r))[0].lookup(r["uid"]) for r in rows}
    in_parts = [r for r in rows if not entries[r["uid"]].is_bigfile and entries[r["uid"]].part]
    victim = in_parts[0]
    live = next(r for r in in_parts[1:] if key_of(r) == key_of(victim))
    big = next(r for r in rows if r["uid"] == "big-2")
    e = entries[victim["uid"]]
    stored = store.read_range(part_key(key_of(victim), e.part), e.offset, e.offset + e.stored_size)
    counted, replica = warm_replica(open_store(settings), tmp_path, rows, live)

    for r in (victim, big):
        code, out, err = des(
            s3, "delete", r["uid"], "--created-at", r["created_at"], "--bigfile-grace", "0"
        )
        assert (code, out.decode(), err) == (0, f"deleted {r['uid']} (its bytes are erased)\n", "")
    assert_replica_sees_deletes(counted, replica, tmp_path, rows, (victim, big), live)

    blob = b"\x00".join(every_version(s3).values())
    assert stored not in blob
    for r in (victim, big):
        assert content(tmp_path, r["uid"]) not in blob, r["uid"]
    code, out, _ = des(s3, "deletions", "--json")
    assert code == 0
    assert sorted(
        (json.loads(x)["uid"], json.loads(x)["state"]) for x in out.decode().splitlines()
    ) == sorted((r["uid"], "erased") for r in (victim, big))
