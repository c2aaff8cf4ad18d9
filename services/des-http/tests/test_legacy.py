"""Legacy DES2 shards (R9) served over HTTP: bytes, sizes and stored content types as the
workspace's legacy vectors expect (the vectors live with des-format's tests)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from des_http_testkit import N_BITS, MakeHarness, files_url
from des_routing import locate_shard

LEGACY = Path(__file__).parents[3] / "packages" / "des-format" / "tests" / "vectors" / "legacy"
WHEN = "2023-07-14T08:00:00Z"
EXPECTED: dict[str, list[dict[str, object]]] = json.loads((LEGACY / "expected.json").read_text())


@pytest.mark.parametrize("shard", ["v1-mixed.des", "v2-none.des", "v2-zstd.des", "v2-lz4.des"])
def test_legacy_shards_are_served_byte_exact(
    make_harness: MakeHarness, tmp_path: Path, shard: str
) -> None:
    files = EXPECTED[shard]
    for f in files:  # put the shard wherever each of its uids routes to
        key = locate_shard(str(f["uid"]), WHEN, N_BITS).object_key
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(LEGACY / shard, tmp_path / key)
    h = make_harness(base_dir=tmp_path)
    for f in files:
        r = h.client.get(files_url(str(f["uid"]), WHEN))
        assert r.status_code == 200, (shard, f["uid"], r.text)
        assert len(r.content) == f["size"]
        assert hashlib.sha256(r.content).hexdigest() == f["sha256"]
        meta = f["meta"]
        assert isinstance(meta, dict)
        if "content_type" in meta:
            assert r.headers["content-type"] == meta["content_type"]
        etag = r.headers["etag"]
        assert (
            h.client.get(
                files_url(str(f["uid"]), WHEN), headers={"If-None-Match": etag}
            ).status_code
            == 304
        )
