"""The layout record re-checked by the real service (``des-http``, granian), on local disk
and on S3 (moto's server and SeaweedFS, through a counting proxy): another writer records
another n_bits while the service runs, and within a few check intervals ``/ready`` and every
file request answer 503 naming both values (never a 404 from the wrong shard); the record
restored, the service serves again. The read path of a file makes the same store requests as
without the checks: a cold read 2, a warm read 1, none of them for the record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from des_format import LAYOUT_KEY, StoreLayout, ensure_local_layout
from des_http_testkit import files_url, object_key, sample, write_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "testing"))
from des_testing import FaultProxy, free_port, stop_process

pytestmark = pytest.mark.heavy  # the service end to end: left out of tools/test --quick

BIG = "2025"  # 200 kB: its payload lies outside the shard's tail read
SMALL = "1001"
DEADLINE = 30.0  # seconds for what a check every second must notice


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_for(self, what: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not what():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)


def start(env: dict[str, str], log: Path) -> Server:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DES_")}
    clean.update(DES_LAYOUT_CHECK_SECONDS="1", **env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["des-http", "--port", str(port), "--workers", "1"],
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    srv = Server(proc, f"http://127.0.0.1:{port}", log)

    def healthy() -> bool:
        try:
            return srv.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    srv.wait_for(healthy)
    return srv


@pytest.fixture
def stopped() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for srv in servers:
        stop_process(srv.proc)


def exercise(srv: Server, rewrite: Callable[[int], None], count_reads: Callable[[], int]) -> None:
    """Serve, re-initialise the record with n_bits 6, restore it: the answers all along."""
    # the read path: a cold read 2 store requests, a warm one 1, while checks run (1 s)
    before = count_reads()
    got = srv.get(files_url(BIG))
    assert (got.status_code, got.content) == (200, sample(BIG).data)
    assert count_reads() - before == 2
    time.sleep(1.5)  # at least one check in between
    before = count_reads()
    got = srv.get(files_url(BIG))
    assert (got.status_code, got.content) == (200, sample(BIG).data)
    assert count_reads() - before == 1
    assert srv.get("/ready").status_code == 200

    rewrite(6)  # another writer re-initialised the store
    srv.wait_for(lambda: srv.get("/ready").status_code == 503)
    ready = srv.get("/ready")
    assert ready.headers["content-type"] == "application/problem+json"
    problem = ready.json()
    assert problem["type"] == "urn:des:problem:store-layout-changed"
    detail = problem["detail"]
    assert "now records n_bits 6 (this service reads with n_bits 8)" in detail
    assert "DES_N_BITS=6" in detail
    assert "Restore the record" in detail
    for uid in (SMALL, BIG):  # warm and cold alike: no lookup at all
        got = srv.get(files_url(uid))
        assert got.status_code == 503
        assert got.headers["retry-after"] == "5"
        assert got.json()["type"] == "urn:des:problem:store-layout-changed"
        assert got.json()["detail"] == detail
        head = httpx.head(srv.url + files_url(uid), timeout=10)
        assert (head.status_code, head.content) == (503, b"")
    batch = httpx.post(
        srv.url + "/files/batch",
        json={"items": [{"uid": SMALL, "created_at": sample(SMALL).created_at}]},
        timeout=10,
    )
    assert batch.status_code == 503
    assert batch.json()["detail"] == detail
    gone = httpx.delete(srv.url + files_url(SMALL), timeout=10)  # nothing deleted either
    assert (gone.status_code, gone.json()["detail"]) == (503, detail)
    assert srv.metric("des_store_layout_faults_total", reason="mismatch") == 1.0

    rewrite(8)  # restored
    srv.wait_for(lambda: srv.get("/ready").status_code == 200)
    got = srv.get(files_url(SMALL))  # served, and not deleted by the refused DELETE
    assert (got.status_code, got.content) == (200, sample(SMALL).data)
    assert srv.metric("des_store_layout_faults_total", reason="mismatch") == 1.0
    errors = [line for line in srv.log.read_text().splitlines() if '"level":"error"' in line]
    assert len(errors) == 1, errors  # logged once, however many checks saw it
    assert "files are not served: the layout record" in errors[0]


def test_local_store(tmp_path: Path, stopped: list[Server]) -> None:
    base = tmp_path / "des"
    write_dataset(base)
    ensure_local_layout(base, StoreLayout(8))

    def rewrite(n_bits: int) -> None:
        tmp = base / "new-record"
        tmp.write_bytes(StoreLayout(n_bits).to_bytes())
        tmp.replace(base / LAYOUT_KEY)

    srv = start({"DES_BACKEND": "local", "DES_BASE_DIR": str(base)}, tmp_path / "log")
    stopped.append(srv)

    def store_requests() -> int:
        return int(srv.metric("des_s3_range_calls_total"))

    exercise(srv, rewrite, store_requests)


def bucket_with_records(s3_server: Any, tmp_path: Path) -> str:
    """A new bucket holding the data set and its layout record (n_bits 8) under des/."""
    base = tmp_path / "des"
    if not base.exists():
        write_dataset(base)
        ensure_local_layout(base, StoreLayout(8))
    client = s3_server.client()
    bucket = f"layout-watch-{os.getpid()}-{time.monotonic_ns()}"
    client.create_bucket(Bucket=bucket)
    for path in sorted(base.rglob("*")):
        if path.is_file():
            key = "des/" + path.relative_to(base).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return bucket


def test_s3_store(s3_server: Any, tmp_path: Path, stopped: list[Server]) -> None:
    client = s3_server.client()
    bucket = bucket_with_records(s3_server, tmp_path)

    def rewrite(n_bits: int) -> None:
        body = StoreLayout(n_bits).to_bytes()
        client.put_object(Bucket=bucket, Key=f"des/{LAYOUT_KEY}", Body=body)

    with FaultProxy(s3_server.endpoint_url) as proxy:
        env = {
            **s3_server.env(),
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": bucket,
            "DES_S3_PREFIX": "des/",
            "DES_S3_ENDPOINT_URL": proxy.url,
            "DES_S3_REGION": "us-east-1",
        }
        srv = start(env, tmp_path / "log")
        stopped.append(srv)
        record = f"{bucket}/des/{LAYOUT_KEY}"
        shard = f"{bucket}/des/{object_key(sample(BIG))}"

        def shard_reads() -> int:
            return sum(1 for r in proxy.snapshot() if r.key == shard)

        exercise(srv, rewrite, shard_reads)
        # the record: read at start (by the command, then by its worker), then one HEAD a
        # check, read again only when its ETag changed (n_bits 6, then restored)
        checks = [r.method for r in proxy.snapshot() if r.key == record]
        assert checks[:3] == ["GET", "GET", "HEAD"]
        assert checks.count("GET") == 2 + 2
        assert set(checks) == {"GET", "HEAD"}
        assert checks.count("HEAD") >= 3


def test_each_zone_of_a_multi_zone_store(
    s3_server: Any, tmp_path: Path, stopped: list[Server]
) -> None:
    """Each zone's record is checked: the one that changed is named, alone."""
    client = s3_server.client()
    buckets = {name: bucket_with_records(s3_server, tmp_path) for name in ("east", "west")}
    zones = [
        {
            "name": name,
            "range": {"start": 0 if name == "east" else 128, "end": 127 if name == "east" else 255},
            "s3": {
                "bucket": bucket,
                "endpoint_url": s3_server.endpoint_url,
                "region_name": "us-east-1",
                "prefix": "des/",
            },
        }
        for name, bucket in buckets.items()
    ]
    zones_file = tmp_path / "zones.json"
    zones_file.write_text(json.dumps({"n_bits": 8, "zones": zones}))
    env = {**s3_server.env(), "DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(zones_file)}
    srv = start(env, tmp_path / "log")
    stopped.append(srv)
    got = srv.get(files_url(SMALL))
    assert (got.status_code, got.content) == (200, sample(SMALL).data)
    record = f"des/{LAYOUT_KEY}"
    client.put_object(Bucket=buckets["west"], Key=record, Body=StoreLayout(7).to_bytes())
    srv.wait_for(lambda: srv.get("/ready").status_code == 503)
    detail = srv.get("/ready").json()["detail"]
    assert detail.startswith(f"the layout record {LAYOUT_KEY} of zone 'west' changed")
    assert "now records n_bits 7 (this service reads with n_bits 8)" in detail
    assert "east" not in detail
    assert buckets["west"] not in detail  # places named as /ready names them, no bucket
    assert srv.get(files_url(SMALL)).status_code == 503  # whichever zone holds the file
    client.delete_object(Bucket=buckets["east"], Key=record)
    srv.wait_for(lambda: "zone 'east' is gone" in srv.get("/ready").text)
    client.put_object(Bucket=buckets["west"], Key=record, Body=StoreLayout(8).to_bytes())
    client.put_object(Bucket=buckets["east"], Key=record, Body=StoreLayout(8).to_bytes())
    srv.wait_for(lambda: srv.get("/ready").status_code == 200)
    got = srv.get(files_url(SMALL))
    assert (got.status_code, got.content) == (200, sample(SMALL).data)
    assert srv.metric("des_store_layout_faults_total", reason="mismatch") == 1.0
    assert srv.metric("des_store_layout_faults_total", reason="missing") == 1.0
