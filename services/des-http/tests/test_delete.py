"""DELETE /files/{uid}: tombstones through the append path; 410 afterwards on every replica
(also for files in continuation parts and big files, whose bytes the delete erases at once),
404 for unknown uids, admin scope when auth is on."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from des_format import Codec, IndexEntry
from des_format.testing import write_local_shard
from des_http import create_app
from des_http_testkit import DAY, N_BITS, MakeHarness, files_url, parse_multipart, sample
from des_routing import DesSettings, locate_shard
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry


def copy_of(dataset_dir: Path, tmp_path: Path) -> Path:
    base = tmp_path / "data"
    shutil.copytree(dataset_dir, base)
    return base


def test_delete_then_410_and_unknown_stays_404(
    make_harness: MakeHarness, dataset_dir: Path, tmp_path: Path
) -> None:
    h = make_harness(copy_of(dataset_dir, tmp_path))
    s = sample("1513")
    assert h.client.get(files_url(s.uid)).content == s.data
    r = h.client.delete(files_url(s.uid))
    assert r.status_code == 200
    assert r.json() == {
        "uid": "1513",
        "state": "hidden",
        "already_deleted": False,
        "kept_because": r.json()["kept_because"],
    }
    assert "repack" in r.json()["kept_because"]  # a payload in the head object
    g = h.client.get(files_url(s.uid))
    assert g.status_code == 410
    assert g.headers["content-type"] == "application/problem+json"
    assert g.json()["title"] == "File deleted"
    assert h.client.head(files_url(s.uid)).status_code == 410
    again = h.client.delete(files_url(s.uid))
    assert (again.status_code, again.json()["already_deleted"]) == (200, True)
    # unknown uids: 404 for both GET and DELETE; other files unaffected
    assert h.client.get(files_url("999999")).status_code == 404
    assert h.client.delete(files_url("999999")).status_code == 404
    other = sample("1001")
    assert h.client.get(files_url(other.uid)).content == other.data
    missing = h.client.delete("/files/1513")
    assert missing.status_code == 400
    assert "created_at" in missing.json()["detail"]


def test_delete_on_one_replica_is_seen_by_another_with_a_warm_cache(
    make_harness: MakeHarness, dataset_dir: Path, tmp_path: Path
) -> None:
    base = copy_of(dataset_dir, tmp_path)
    a = make_harness(base)
    b = make_harness(base)
    s = sample("1257")
    assert a.client.get(files_url(s.uid)).content == s.data  # a's index cache is warm
    assert b.client.delete(files_url(s.uid)).status_code == 200
    assert a.client.get(files_url(s.uid)).status_code == 410
    # the shard kept every other file
    for uid in ("1001", "1513", "2025"):
        assert a.client.get(files_url(uid)).content == sample(uid).data


def test_delete_needs_the_admin_scope(
    make_harness: MakeHarness, dataset_dir: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    read_t, admin_t = "r3ad-del", "adm1n-del"
    tokens.write_text(
        f"read sha256:{hashlib.sha256(read_t.encode()).hexdigest()} app\n"
        f"admin sha256:{hashlib.sha256(admin_t.encode()).hexdigest()} ops\n"
    )
    h = make_harness(copy_of(dataset_dir, tmp_path), auth_tokens_file=tokens)
    url = files_url("1513", DAY)
    assert h.client.delete(url).status_code == 401
    r = h.client.delete(url, headers={"Authorization": f"Bearer {read_t}"})
    assert r.status_code == 403
    ok = h.client.get(url, headers={"Authorization": f"Bearer {read_t}"})
    assert ok.status_code == 200  # a read token still reads
    r = h.client.delete(url, headers={"Authorization": f"Bearer {admin_t}"})
    assert r.status_code == 200
    gone = h.client.get(url, headers={"Authorization": f"Bearer {read_t}"})
    assert gone.status_code == 410


# ---- files in continuation parts and big files, two replicas ------------------------------

PART_DAY = "2024-04-02T08:00:00Z"


def part_files() -> dict[str, bytes]:
    """Files of one shard (numeric uids 1000 + k*256 share shard k): compressible and
    random ones, rolled over into continuation parts, and two big files."""
    rnd = random.Random(12)
    files = {
        str(1003 + 256 * i): (f"row {i} " * 60).encode() if i % 2 else rnd.randbytes(500 + i)
        for i in range(16)
    }
    files[str(1003 + 256 * 16)] = rnd.randbytes(9000)  # a big file
    files[str(1003 + 256 * 17)] = rnd.randbytes(3000)  # streamed when the threshold is low
    return files


def write_part_shard(base: Path, files: dict[str, bytes]) -> tuple[str, dict[str, IndexEntry]]:
    keys = {locate_shard(u, PART_DAY, N_BITS).object_key for u in files}
    assert len(keys) == 1
    key = keys.pop()
    entries = write_local_shard(base, key, files, max_size=1200, big_file_threshold=8000)
    past = time.time() - 7200  # packed more than the big-file grace period (an hour) ago
    for big in ((base / key).parent / "_bigFiles").iterdir():
        os.utime(big, (past, past))
    return key, entries


def test_a_warm_replica_answers_410_for_files_in_parts_and_big_files(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    base = tmp_path / "parts"
    files = part_files()
    _key, entries = write_part_shard(base, files)
    in_parts = [u for u, e in entries.items() if e.part and not e.is_bigfile]
    victim = next(u for u in in_parts if entries[u].codec is not Codec.NONE)
    raw_victim = next(u for u in in_parts if entries[u].codec is Codec.NONE)
    big = next(u for u, e in entries.items() if e.is_bigfile)
    streamed = str(1003 + 256 * 17)
    assert entries[streamed].part
    assert not entries[streamed].is_bigfile
    victims = (victim, raw_victim, big, streamed)
    # one replica with a warm cache per deleted file, so each meets its stale index
    # (the one for the streamed file streams every file above 1 KiB)
    replicas = {
        uid: make_harness(base, stream_threshold_bytes=1024 if uid == streamed else 1 << 20)
        for uid in victims
    }
    for a in replicas.values():
        for uid in files:
            assert a.client.get(files_url(uid, PART_DAY)).content == files[uid]
    a = replicas[victim]
    live = next(u for u in in_parts if u not in victims)
    before = a.store_requests()
    assert a.client.get(files_url(live, PART_DAY)).content == files[live]
    assert a.store_requests() - before == 1  # warm: one payload request

    b = make_harness(base)
    for uid in victims:
        d = b.client.delete(files_url(uid, PART_DAY))
        assert d.status_code == 200
        # bytes in a part (overwritten) and an unshared old big file (removed): gone at once
        assert d.json() == {
            "uid": uid,
            "state": "erased",
            "already_deleted": False,
            "kept_because": None,
        }, uid

    # a streamed answer's headers leave only once its first bytes were read: the stale
    # index is found out before, so even the first request after the delete is a 410
    for uid in victims:
        r = replicas[uid].client.get(files_url(uid, PART_DAY))
        assert r.status_code == 410, uid
        assert r.json()["title"] == "File deleted"
        assert replicas[uid].client.head(files_url(uid, PART_DAY)).status_code == 410
    for uid, data in files.items():
        if uid not in victims:
            assert a.client.get(files_url(uid, PART_DAY)).content == data, uid
    before = a.store_requests()
    assert a.client.get(files_url(live, PART_DAY)).content == files[live]
    assert a.store_requests() - before == 1  # still one request for a warm read
    blob = b"\x00".join(p.read_bytes() for p in base.rglob("*") if p.is_file())
    for uid in victims:
        assert files[uid] not in blob, uid


def test_a_warm_replica_answers_410_in_a_batch(make_harness: MakeHarness, tmp_path: Path) -> None:
    base = tmp_path / "parts"
    files = part_files()
    _key, entries = write_part_shard(base, files)
    victim = next(u for u, e in entries.items() if e.part and not e.is_bigfile)
    big = next(u for u, e in entries.items() if e.is_bigfile)
    a, b = make_harness(base), make_harness(base)
    items = [{"uid": u, "created_at": PART_DAY} for u in files]
    warm = a.client.post("/files/batch", json={"items": items})
    assert warm.status_code == 200
    for uid in (victim, big):
        assert b.client.delete(files_url(uid, PART_DAY)).status_code == 200
    r = a.client.post("/files/batch", json={"items": items})
    status = {
        h["x-des-item"]: (h["x-des-status"], body)
        for h, body in parse_multipart(r.content, r.headers["content-type"])
    }
    for i, uid in enumerate(files):
        want = "410" if uid in (victim, big) else "200"
        assert status[str(i)][0] == want, uid
        if want == "200":
            assert status[str(i)][1] == files[uid]


def test_two_replicas_on_s3_answer_410_for_files_in_parts_and_big_files(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from des_storage_s3 import S3ShardEditor, open_shard_store, open_store

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    client.create_bucket(Bucket="replicas")
    client.put_bucket_versioning(Bucket="replicas", VersioningConfiguration={"Status": "Enabled"})
    base = tmp_path / "local"
    files = part_files()
    key, entries = write_part_shard(base, files)
    for p in sorted(base.rglob("*"), key=lambda p: p.name.endswith(".des") and ".p" not in p.name):
        if p.is_file():  # big files and parts first, the head last
            client.upload_file(str(p), "replicas", p.relative_to(base).as_posix())
    des = DesSettings(
        backend="s3",
        s3_bucket="replicas",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
        n_bits=N_BITS,
    )
    apps = []
    for _ in range(3):
        # the big file was uploaded just now and S3 keeps its LastModified: no grace period
        editor = S3ShardEditor(
            open_store(des), open_shard_store(des), scratch=tmp_path / "s", bigfile_grace_seconds=0
        )
        apps.append(
            TestClient(
                create_app(des, registry=CollectorRegistry(), editor=editor),
                raise_server_exceptions=False,
            )
        )
    victim = next(u for u, e in entries.items() if e.part and not e.is_bigfile)
    big = next(u for u, e in entries.items() if e.is_bigfile)
    replicas, b = dict(zip((victim, big), apps[:2], strict=True)), apps[2]
    for a in replicas.values():
        for uid in files:
            assert a.get(files_url(uid, PART_DAY)).content == files[uid]
    for uid in (victim, big):
        assert b.delete(files_url(uid, PART_DAY)).status_code == 200
    for uid in (victim, big):
        assert replicas[uid].get(files_url(uid, PART_DAY)).status_code == 410, uid
    for uid, data in files.items():
        if uid not in (victim, big):
            assert replicas[big].get(files_url(uid, PART_DAY)).content == data, uid
    blobs = []
    for v in client.list_object_versions(Bucket="replicas").get("Versions", []):
        body = client.get_object(Bucket="replicas", Key=v["Key"], VersionId=v["VersionId"])
        blobs.append(body["Body"].read())
    blob = b"\x00".join(blobs)
    for uid in (victim, big):
        assert files[uid] not in blob, uid
    for c in apps:
        c.close()
    assert key.endswith(".des")
