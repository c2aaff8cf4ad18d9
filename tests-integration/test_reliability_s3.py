"""Storage faults between DES and the S3 server (moto over HTTP): a FaultProxy on 127.0.0.1
fails 10% or 50% of all requests at random (503 SlowDown, 500, connection resets, truncated
bodies, delays, a wrong Content-Range, a Range ignored by the server).

- reads through the service end with the right bytes or a clear 503 problem, never wrong bytes;
- packing to S3 leaves only complete valid shards (every visible object verifies deep and holds
  whole files) and no pending multipart upload; running again without faults finishes the job;
- a migration marks and deletes only what it stored: every archived row reads back byte-exact
  from S3, every row whose source file is gone is archived, and a clean re-run finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from des_format import ShardReader, ShardRetriever, StoreSource, bigfile_key, part_key
from des_http import HttpSettings, create_app
from des_migrate import MigrationOrchestrator, parse_config
from des_packer import ManifestEntry, PackOptions, pack
from des_routing import DesSettings, locate_shard
from des_storage_s3 import S3ObjectStore
from des_testing import FaultProxy
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

N_BITS = 4
# tools/reliability/run_long.py raises this: more files, rounds and attempts per test.
SCALE = int(os.environ.get("DES_RELIABILITY_SCALE", "1"))
BIG = 20_000  # files above this go to _bigFiles/
TRANSIENT = ("slowdown", "error500", "reset", "truncate", "slow")
# A server or proxy answering the wrong bytes: refused, not retried (S3ProtocolError).
PROTOCOL = ("bad_content_range", "ignore_range")
RATES = [pytest.param(0.1, id="10pct"), pytest.param(0.5, id="50pct")]


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture
def proxy(s3: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint_url) as p:
        yield p


def make_files(root: Path, n: int, seed: int) -> dict[str, tuple[str, bytes]]:
    """uid -> (created_at, bytes): text, random bytes, empty, two big files, over two days."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, bytes]] = {}
    for i in range(n):
        day = f"2024-05-0{1 + i % 2}T{i % 24:02d}:00:00Z"
        kind = i % 4
        if kind == 0:
            data = (f"line {i} " * rnd.randint(1, 400)).encode()
        elif kind == 1:
            data = rnd.randbytes(rnd.randint(1, 6000))
        elif kind == 2:
            data = b""
        else:
            data = rnd.randbytes(rnd.randint(100, 3000)) * 3
        files[f"f{seed}-{i:03d}"] = (day, data)
    files[f"big{seed}-a"] = ("2024-05-01T03:00:00Z", rnd.randbytes(BIG + 5000))
    files[f"big{seed}-b"] = ("2024-05-02T04:00:00Z", b"z" * (BIG * 3))
    for uid, (_, data) in files.items():
        (root / uid).write_bytes(data)
    return files


def manifest(root: Path, files: dict[str, tuple[str, bytes]]) -> list[ManifestEntry]:
    return [
        ManifestEntry(uid, created_at, len(data), str(root / uid))
        for uid, (created_at, data) in files.items()
    ]


def pending_uploads(client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def visible_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
    return keys


def check_bucket(
    client: Any, bucket: str, prefix: str, files: dict[str, tuple[str, bytes]]
) -> set[str]:
    """Every visible shard is complete and valid and holds right bytes; returns its uids."""
    store = S3ObjectStore(client, bucket, prefix)
    found: set[str] = set()
    keys = visible_keys(client, bucket, prefix + "/")
    for key in keys:
        if not key.endswith(".des") or ".p" in key.rsplit("/", 1)[-1]:
            continue
        reader = ShardReader(
            StoreSource(store, key),
            lambda n, k=key: StoreSource(store, part_key(k, n)),
            lambda sha, k=key: StoreSource(store, bigfile_key(k, sha)),
        )
        reader.verify(deep=True)
        for e in reader.iter_entries():
            assert reader.read(e.uid) == files[e.uid][1], e.uid
            assert locate_shard(e.uid, files[e.uid][0], N_BITS).object_key == key
            found.add(e.uid)
    # Every other object is a part or a big file of a visible shard (nothing orphaned but
    # content-addressed big files, which are complete by construction: checked by hash).
    for key in keys:
        if "/_bigFiles/" in key:
            data = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
            assert hashlib.sha256(data).hexdigest() == key.rsplit("/", 1)[-1]
    assert pending_uploads(client, bucket) == []
    return found


# ---- reads through the service ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "kinds"),
    [
        pytest.param(0.1, TRANSIENT, id="transient-10pct"),
        pytest.param(0.5, TRANSIENT, id="transient-50pct"),
        pytest.param(0.1, PROTOCOL, id="protocol-10pct"),
        pytest.param(0.5, TRANSIENT + PROTOCOL, id="all-50pct"),
    ],
)
def test_reads_through_the_service_under_faults(
    s3: Any, proxy: FaultProxy, tmp_path: Path, rate: float, kinds: tuple[str, ...]
) -> None:
    """Transient faults are retried: 200 with the right bytes, or 503 once the retry budget
    is spent. Protocol faults (wrong Content-Range, Range ignored) are refused: 502
    storage-error (a bad gateway, not a server bug). Never wrong bytes, never another status."""
    client = s3.client()
    bucket = f"rel-reads-{len(kinds)}-{int(rate * 100)}"
    client.create_bucket(Bucket=bucket)
    files = make_files(tmp_path / "src", 16 * SCALE, seed=1)
    report = pack(
        manifest(tmp_path / "src", files),
        f"s3://{bucket}/des",
        PackOptions(n_bits=N_BITS, big_file_threshold=BIG, s3_endpoint_url=s3.endpoint_url),
    )
    assert list(report.failures) == []
    des = DesSettings(
        backend="s3",
        n_bits=N_BITS,
        s3_bucket=bucket,
        s3_prefix="des",
        s3_region="us-east-1",
        s3_endpoint_url=proxy.url,
        big_file_threshold_bytes=BIG,
        index_cache_bytes=1 << 20,
    )
    app = create_app(HttpSettings(des=des), registry=CollectorRegistry())
    proxy.chaos(rate, kinds, seed=int(rate * 1000) + len(kinds) + 1)
    allowed = {503: "storage-unavailable"}
    if set(kinds) & set(PROTOCOL):
        allowed[502] = "storage-error"
    outcomes: Counter[str] = Counter()
    with TestClient(app, raise_server_exceptions=False) as http:
        for _round in range(2 * SCALE):
            for uid, (created_at, data) in files.items():
                r = http.get(f"/files/{uid}", params={"created_at": created_at})
                if r.status_code == 200:
                    assert r.content == data, uid  # never wrong bytes
                    outcomes["200"] += 1
                else:
                    problem = json.loads(r.content)
                    assert r.status_code in allowed, (uid, r.status_code, problem)
                    assert problem["type"] == f"urn:des:problem:{allowed[r.status_code]}"
                    if r.status_code == 503:
                        assert r.headers["retry-after"] == "5"
                    outcomes[str(r.status_code)] += 1
                h = http.head(f"/files/{uid}", params={"created_at": created_at})
                assert h.status_code == 200 or h.status_code in allowed
    faults = Counter(r.fault for r in proxy.snapshot())
    del faults[None]
    assert sum(faults.values()) > 0, (len(proxy.snapshot()), outcomes)
    assert outcomes["200"] > 0, outcomes
    if kinds == TRANSIENT and rate <= 0.1:
        assert outcomes["503"] <= len(files) * 2 * SCALE // 5, outcomes


# ---- packing to S3 ------------------------------------------------------------------------------


@pytest.mark.parametrize("appending", [False, True], ids=["fresh", "append"])
@pytest.mark.parametrize("rate", RATES)
def test_packing_to_s3_under_faults_leaves_no_partial_object(
    s3: Any, proxy: FaultProxy, tmp_path: Path, rate: float, appending: bool
) -> None:
    """Fresh shards, or (``append``) late files added to shards already in the bucket: the
    rebuild by server-side copy + tail runs under the faults."""
    client = s3.client()
    bucket = f"rel-pack-{int(rate * 100)}-{int(appending)}"
    client.create_bucket(Bucket=bucket)
    files = make_files(tmp_path / "src", 12 * SCALE, seed=2)
    entries = manifest(tmp_path / "src", files)
    if appending:  # everything first, fault-free; then late files for those same shards
        first = PackOptions(n_bits=N_BITS, big_file_threshold=BIG, s3_endpoint_url=s3.endpoint_url)
        assert list(pack(entries, f"s3://{bucket}/des", first).failures) == []
        for j, e in enumerate(entries[:8]):
            index = locate_shard(e.uid, e.created_at, N_BITS).shard_index
            late = str(1600 + 16 * j + index)  # numeric uid: shard index = uid mod 16
            files[late] = (e.created_at, f"late file {j} for shard {index}".encode() * 20)
            (tmp_path / "src" / late).write_bytes(files[late][1])
        entries = manifest(tmp_path / "src", files)
    options = PackOptions(
        n_bits=N_BITS,
        big_file_threshold=BIG,
        max_shard_size=8000,  # continuation parts too
        s3_endpoint_url=proxy.url,
        workers=2,
    )
    proxy.chaos(rate, ("slowdown", "error500", "reset", "truncate"), seed=7)
    outcome = "ok"
    appended = 0
    for _attempt in range(2 * SCALE):
        try:
            report = pack(entries, f"s3://{bucket}/des", options)
            outcome = "failures" if report.failures else "ok"
            appended += report.shards_appended
        except Exception as exc:  # a clear error is allowed, a partial object is not
            outcome = f"{type(exc).__name__}: {exc}"
        check_bucket(client, bucket, "des", files)
    assert any(r.fault for r in proxy.snapshot())
    proxy.clear()  # the faults stop: the same command finishes the job
    report = pack(entries, f"s3://{bucket}/des", options)
    assert list(report.failures) == []
    assert check_bucket(client, bucket, "des", files) == set(files)
    appended += report.shards_appended
    assert (appended > 0) == appending
    assert outcome in ("ok", "failures") or ": " in outcome  # an error says what failed


# ---- migration ----------------------------------------------------------------------------------


def _table(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    table = sa.Table(
        "files",
        md,
        sa.Column("uid", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("file_location", sa.String(1000)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("checksum", sa.String(64)),
        sa.Column("migration_error", sa.Text),
    )
    md.create_all(engine)
    return table


@pytest.mark.parametrize("rate", RATES)
def test_migration_under_faults_marks_and_deletes_only_what_it_stored(
    s3: Any, proxy: FaultProxy, tmp_path: Path, rate: float
) -> None:
    client = s3.client()
    bucket = f"rel-mig-{int(rate * 100)}"
    client.create_bucket(Bucket=bucket)
    src = tmp_path / "src"
    files = make_files(src, 12 * SCALE, seed=3)
    url = f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    table = _table(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "uid": uid,
                    "created_at": datetime.fromisoformat(ca).astimezone(UTC).replace(tzinfo=None),
                    "file_location": str(src / uid),
                    "size_bytes": len(data),
                    "checksum": hashlib.sha256(data).hexdigest(),
                }
                for uid, (ca, data) in files.items()
            ],
        )
    cfg = parse_config(
        {
            "database": {
                "url": url,
                "checksum_column": "checksum",
                "error_column": "migration_error",
            },
            "migration": {
                "cutoff": (datetime(2024, 6, 1, tzinfo=UTC) + timedelta(0)).isoformat(),
                "delete_source_files": True,
                "batch_size": 8,
            },
            "packer": {
                "output_dir": f"s3://{bucket}/des",
                "n_bits": N_BITS,
                "big_file_threshold_bytes": BIG,
                "s3_endpoint_url": proxy.url,
                "s3_region_name": "us-east-1",
            },
        }
    )

    def check() -> set[str]:
        with engine.connect() as conn:
            archived = {r.uid for r in conn.execute(sa.select(table.c.uid).where(table.c.archived))}
        stored = check_bucket(client, bucket, "des", files)
        retriever = ShardRetriever(S3ObjectStore(client, bucket, "des"))
        for uid in archived:  # marked => stored and readable, byte-exact
            key = locate_shard(uid, files[uid][0], N_BITS).object_key
            assert retriever.read(key, uid) == files[uid][1], uid
        assert archived <= stored
        for uid in files:  # deleted => marked
            if not (src / uid).exists():
                assert uid in archived, uid
        return archived

    proxy.chaos(rate, ("slowdown", "error500", "reset", "truncate"), seed=11)
    for _cycle in range(2 * SCALE):
        try:
            MigrationOrchestrator(cfg).run_migration_cycle()
        except Exception as exc:  # an aborted cycle is allowed; a lie is not
            print(f"cycle aborted: {type(exc).__name__}: {exc}")
        check()
    proxy.clear()
    MigrationOrchestrator(cfg).run_migration_cycle()
    assert check() == set(files)
    assert sorted(p.name for p in src.iterdir()) == []
