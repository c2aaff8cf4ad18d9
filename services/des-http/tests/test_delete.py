"""DELETE /files/{uid}: tombstones through the append path; 410 afterwards on every replica,
404 for unknown uids, admin scope when auth is on."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from des_http_testkit import DAY, MakeHarness, files_url, sample


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
    assert r.json() == {"uid": "1513", "state": "hidden", "already_deleted": False}
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
