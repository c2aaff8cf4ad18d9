"""des-http end to end: shards packed by ``des-pack`` (a subprocess), served by uvicorn as a
real process on 127.0.0.1, fetched over HTTP byte-exact, from a local directory, from S3 (the
moto server) and from two S3 zones (two buckets)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from des_testing import S3Server, free_port, start_s3_server, stop_process
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

BIG_THRESHOLD = 40_000


@dataclass(frozen=True)
class Packed:
    manifest: Path
    rows: list[dict[str, Any]]

    def content(self, row: dict[str, Any]) -> bytes:
        return (self.manifest.parent / str(row["source_path"])).read_bytes()


def make_files(root: Path, n: int = 48) -> Packed:
    """Text, binary, empty, already-compressed and two big files over two days."""
    rnd = random.Random(5)
    (root / "in").mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 4
        if i in (7, 31):
            data, name = rnd.randbytes(BIG_THRESHOLD + 25_000 + i), f"big{i}.bin"
        elif kind == 0:
            data, name = (f"row {i};" * rnd.randint(1, 900)).encode(), f"t{i}.txt"
        elif kind == 1:
            data, name = rnd.randbytes(rnd.randint(1, 6000)), f"b{i}.bin"
        elif kind == 2:
            data, name = rnd.randbytes(rnd.randint(20, 500)), f"z{i}.gz"
        else:
            data, name = (b"" if i % 8 == 3 else b"q" * rnd.randint(1, 90)), f"e{i}.dat"
        (root / "in" / name).write_bytes(data)
        row: dict[str, Any] = {
            "uid": f"http-{i:04d}",
            "created_at": f"2024-05-{1 + i % 2:02d}T{i % 24:02d}:15:00Z",
            "size_bytes": len(data),
            "source_path": f"in/{name}",
        }
        if kind == 0:
            row["content_type"] = "text/plain"
        rows.append(row)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(rows))
    return Packed(manifest, rows)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DES_", "AWS_"))}
    env.update(extra)
    return env


def des_pack(packed: Packed, output: str, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [
            "des-pack",
            "--input-json",
            str(packed.manifest),
            "--output-dir",
            output,
            "--n-bits",
            "4",
            "--big-file-threshold",
            str(BIG_THRESHOLD),
            "--no-progress",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def store_requests(self, kind: str | None = None) -> float:
        return sum(
            v
            for (name, labels), v in self.metrics().items()
            if name == "des_s3_range_calls_total"
            and (kind is None or dict(labels).get("type") == kind)
        )


@contextmanager
def run_service(tmp: Path, env: dict[str, str], argv: list[str] | None = None) -> Iterator[Service]:
    """Start the service (``uvicorn des_http:app`` unless ``argv`` says otherwise) on a free
    port and wait for /health."""
    port = free_port()
    cmd = argv or [sys.executable, "-m", "uvicorn", "des_http:app", "--no-access-log"]
    cmd = [*cmd, "--host", "127.0.0.1", "--port", str(port)]
    log = tmp / f"service-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    svc = Service(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"des-http exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{svc.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"des-http did not answer /health:\n{log.read_text()}")
            time.sleep(0.1)
        yield svc
    finally:
        stop_process(proc)


def file_url(row: dict[str, Any]) -> str:
    return f"/files/{quote(row['uid'], safe='')}?created_at={quote(row['created_at'], safe='')}"


def fetch_all_byte_exact(svc: Service, packed: Packed) -> None:
    with svc.client() as c:
        for row in packed.rows:
            r = c.get(file_url(row))
            assert r.status_code == 200, (row, r.text)
            assert r.content == packed.content(row), row["uid"]
            assert r.headers["content-length"] == str(row["size_bytes"])
            assert r.headers["etag"].startswith('"')
            if "content_type" in row:
                assert r.headers["content-type"] == row["content_type"]


def check_http_behaviour(svc: Service, packed: Packed) -> None:
    """HEAD without payload reads, 304, 206/416, If-Range, batch, problem JSON."""
    row = packed.rows[5]
    data = packed.content(row)
    with svc.client() as c:
        before = svc.store_requests("payload") + svc.store_requests("bigfile")
        head = c.head(file_url(row))
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        etag = head.headers["etag"]
        not_modified = c.get(file_url(row), headers={"If-None-Match": etag})
        assert (not_modified.status_code, not_modified.content) == (304, b"")
        after = svc.store_requests("payload") + svc.store_requests("bigfile")
        assert after == before

        part = c.get(file_url(row), headers={"Range": "bytes=3-12"})
        assert (part.status_code, part.content) == (206, data[3:13])
        assert part.headers["content-range"] == f"bytes 3-12/{len(data)}"
        stale = c.get(file_url(row), headers={"Range": "bytes=3-12", "If-Range": '"old"'})
        assert (stale.status_code, stale.content) == (200, data)
        fresh = c.get(file_url(row), headers={"Range": "bytes=3-12", "If-Range": etag})
        assert fresh.status_code == 206
        too_far = c.get(file_url(row), headers={"Range": f"bytes={len(data)}-"})
        assert too_far.status_code == 416
        assert too_far.headers["content-range"] == f"bytes */{len(data)}"

        big = next(r for r in packed.rows if r["size_bytes"] > BIG_THRESHOLD)
        big_data = packed.content(big)
        tail = c.get(file_url(big), headers={"Range": "bytes=-100"})
        assert (tail.status_code, tail.content) == (206, big_data[-100:])

        missing = c.get(f"/files/nope?created_at={quote(row['created_at'])}")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["cache-control"] == "no-store"
        bad = c.get(f"/files/{row['uid']}?created_at=soon")
        assert bad.status_code == 400
        assert "2024-01-01T00:00:00Z" in bad.json()["detail"]

        items = [{"uid": r["uid"], "created_at": r["created_at"]} for r in packed.rows]
        batch = c.post("/files/batch", json={"items": items})
        assert batch.status_code == 200
        got = split_multipart(batch.content, batch.headers["content-type"])
        assert len(got) == len(items)
        for headers, body in got:
            assert headers["x-des-status"] == "200"
            assert body == packed.content(packed.rows[int(headers["x-des-item"])])
        assert c.get("/ready").status_code == 200


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    boundary = content_type.split("boundary=", 1)[1].encode()
    out: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while body.startswith(b"--" + boundary + b"\r\n", pos):
        pos += len(boundary) + 4
        end = body.index(b"\r\n\r\n", pos)
        headers = dict(line.split(": ", 1) for line in body[pos:end].decode().lower().split("\r\n"))
        pos = end + 4
        n = int(headers["content-length"])
        out.append((headers, body[pos : pos + n]))
        pos += n + 2
    assert body[pos:] == b"--" + boundary + b"--\r\n"
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    return make_files(tmp_path_factory.mktemp("http-files"))


def test_local_backend_end_to_end(packed: Packed, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    des_pack(packed, str(out), clean_env())
    env = clean_env(
        DES_BACKEND="local",
        DES_BASE_DIR=str(out),
        DES_N_BITS="4",
        DES_STREAM_THRESHOLD_BYTES="8192",
    )
    # one worker: its /metrics are the whole service's (several need PROMETHEUS_MULTIPROC_DIR)
    with run_service(tmp_path, env, ["des-http", "--workers", "1"]) as svc:
        fetch_all_byte_exact(svc, packed)
        check_http_behaviour(svc, packed)
        assert httpx.get(f"{svc.url}/health").headers["server"] == "granian"
    lines = [json.loads(line) for line in svc.log.read_text().splitlines() if '"access"' in line]
    assert len(lines) >= len(packed.rows)
    assert all(line["request_id"] for line in lines)


def test_local_backend_with_two_workers_adds_up_metrics(packed: Packed, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    des_pack(packed, str(out), clean_env())
    mp = tmp_path / "prom"
    mp.mkdir()
    env = clean_env(DES_BASE_DIR=str(out), DES_N_BITS="4", PROMETHEUS_MULTIPROC_DIR=str(mp))
    argv = ["des-http", "--workers", "2", "--no-server-header"]  # as the k8s Deployment runs it
    with run_service(tmp_path, env, argv) as svc:
        deadline = time.monotonic() + 60
        while len({p.name for p in mp.glob("counter_*.db")}) < 2:  # both workers are up
            assert time.monotonic() < deadline, sorted(p.name for p in mp.iterdir())
            time.sleep(0.1)
        for row in packed.rows:  # a new connection each: the workers share the load
            assert httpx.get(svc.url + file_url(row), timeout=30).status_code == 200
        served = sum(r["size_bytes"] for r in packed.rows)
        metrics = svc.metrics()
        key = ("des_retrievals_total", (("backend", "local"), ("status", "200")))
        assert metrics[key] == len(packed.rows)
        assert metrics[("des_bytes_served_total", (("backend", "local"),))] == served
        # no server software named (granian's own header replaced)
        assert httpx.get(f"{svc.url}/health").headers.get_list("server") == ["des-http"]


def _s3_env(server: S3Server, **extra: str) -> dict[str, str]:
    return clean_env(**server.env(), DES_S3_ENDPOINT_URL=server.endpoint_url, **extra)


def test_s3_backend_end_to_end_with_request_counts(
    packed: Packed, tmp_path: Path, s3_server: S3Server
) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="http-e2e")
    des_pack(packed, "s3://http-e2e/des/", _s3_env(s3_server))
    env = _s3_env(
        s3_server,
        DES_BACKEND="s3",
        DES_S3_BUCKET="http-e2e",
        DES_S3_PREFIX="des/",
        DES_S3_REGION="us-east-1",
        DES_N_BITS="4",
    )
    with run_service(tmp_path, env) as svc, svc.client() as c:
        first = next(r for r in packed.rows if 0 < r["size_bytes"] <= BIG_THRESHOLD)
        base = svc.store_requests()
        assert c.get(file_url(first)).content == packed.content(first)
        cold = svc.store_requests() - base
        assert 2 <= cold <= 3
        assert c.get(file_url(first)).content == packed.content(first)
        assert svc.store_requests() - base - cold == 1  # warm: the payload range only
        fetch_all_byte_exact(svc, packed)
        check_http_behaviour(svc, packed)


def test_multi_s3_backend_with_two_zones(
    packed: Packed, tmp_path: Path, s3_server: S3Server
) -> None:
    client = s3_server.client()
    for bucket in ("http-zone-a", "http-zone-b"):
        client.create_bucket(Bucket=bucket)
    zones = {
        "n_bits": 4,
        "zones": [
            {
                "name": "zone-a",
                "range": {"start": 0, "end": 7},
                "s3": {
                    "bucket": "http-zone-a",
                    "region_name": "us-east-1",
                    "endpoint_url": s3_server.endpoint_url,
                    "prefix": "a/",
                },
            },
            {
                "name": "zone-b",
                "range": {"start": 8, "end": 15},
                "s3": {
                    "bucket": "http-zone-b",
                    "region_name": "us-east-1",
                    "endpoint_url": s3_server.endpoint_url,
                    "prefix": "b/",
                },
            },
        ],
    }
    zones_file = tmp_path / "zones.json"
    zones_file.write_text(json.dumps(zones))
    env = clean_env(**s3_server.env())
    des_pack(packed, "s3://ignored-with-zones/", env, "--zones-config", str(zones_file))
    for bucket in ("http-zone-a", "http-zone-b"):
        assert client.list_objects_v2(Bucket=bucket)["KeyCount"] > 0
    svc_env = clean_env(**s3_server.env(), DES_BACKEND="multi_s3", DES_ZONES_CONFIG=str(zones_file))
    with run_service(tmp_path, svc_env) as svc:
        fetch_all_byte_exact(svc, packed)
        check_http_behaviour(svc, packed)


def test_s3_unreachable_gives_503_with_retry_after(packed: Packed, tmp_path: Path) -> None:
    server = start_s3_server()
    try:
        server.client().create_bucket(Bucket="http-down")
        des_pack(packed, "s3://http-down/", _s3_env(server))
        env = _s3_env(
            server,
            DES_BACKEND="s3",
            DES_S3_BUCKET="http-down",
            DES_S3_REGION="us-east-1",
            DES_N_BITS="4",
            DES_RETRY_AFTER_SECONDS="9",
        )
        row = packed.rows[0]
        with run_service(tmp_path, env) as svc, svc.client() as c:
            assert c.get(file_url(row)).content == packed.content(row)
            server.stop()
            other = packed.rows[1]
            r = c.get(file_url(other))
            assert r.status_code == 503
            assert r.headers["retry-after"] == "9"
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"] == "urn:des:problem:storage-unavailable"
            ready = c.get("/ready")
            assert ready.status_code == 503
            assert c.get("/health").status_code == 200
    finally:
        server.stop()


def test_corrupt_big_file_is_never_delivered_complete(packed: Packed, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    des_pack(packed, str(out), clean_env())
    big = next(r for r in packed.rows if r["size_bytes"] > BIG_THRESHOLD)
    data = packed.content(big)
    (obj,) = [p for p in out.rglob("_bigFiles/*") if p.read_bytes() == data]
    raw = bytearray(obj.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    obj.write_bytes(bytes(raw))
    env = clean_env(DES_BASE_DIR=str(out), DES_N_BITS="4", DES_STREAM_THRESHOLD_BYTES="8192")
    with run_service(tmp_path, env) as svc, svc.client() as c:
        try:
            r = c.get(file_url(big))
        except httpx.RemoteProtocolError:
            pass  # a file past the first read chunk: body cut short, Content-Length unmet
        else:  # one within it: checked before any header (des-http 0.2.0)
            assert r.status_code == 500
            assert r.json()["type"] == "urn:des:problem:checksum-mismatch"
            assert data[:64] not in r.content
        small = next(r for r in packed.rows if 0 < r["size_bytes"] <= 8192)
        assert c.get(file_url(small)).content == packed.content(small)  # service still fine


def block_members(out: Path) -> list[str]:
    """Uids of the solid-block members in the shards under ``out`` (a local directory)."""
    from des_format import Codec, ShardReader

    uids: list[str] = []
    for shard in sorted(out.rglob("*.des")):
        if ".p" in shard.name or "_bigFiles" in shard.parts:
            continue
        with ShardReader.open_path(shard) as reader:
            uids += [e.uid for e in reader.iter_entries() if e.codec is Codec.ZSTD_BLOCK]
    return uids


def check_block_member(svc: Service, packed: Packed, uid: str) -> None:
    """A file inside a solid block, over HTTP: HEAD and 304 without payload reads, one
    payload read for a GET, Range and If-Range, and the batch endpoint."""
    row = next(r for r in packed.rows if r["uid"] == uid)
    data = packed.content(row)
    with svc.client() as c:
        assert c.get(file_url(row)).content == data  # warms the index
        before = svc.store_requests("payload")
        head = c.head(file_url(row))
        assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))
        etag = head.headers["etag"]
        assert c.get(file_url(row), headers={"If-None-Match": etag}).status_code == 304
        assert svc.store_requests("payload") == before
        assert c.get(file_url(row)).content == data
        assert svc.store_requests("payload") == before + 1  # the whole block, one request
        part = c.get(file_url(row), headers={"Range": "bytes=2-9"})
        assert (part.status_code, part.content) == (206, data[2:10])
        assert part.headers["content-range"] == f"bytes 2-9/{len(data)}"
        fresh = c.get(file_url(row), headers={"Range": "bytes=2-9", "If-Range": etag})
        assert (fresh.status_code, fresh.content) == (206, data[2:10])
        items = [{"uid": r["uid"], "created_at": r["created_at"]} for r in packed.rows]
        batch = c.post("/files/batch", json={"items": items})
        got = split_multipart(batch.content, batch.headers["content-type"])
        assert len(got) == len(items)
        for headers, body in got:  # in the order the service grouped them, each numbered
            assert headers["x-des-status"] == "200"
            assert body == packed.content(packed.rows[int(headers["x-des-item"])])


def test_solid_blocks_served_from_local_and_s3(tmp_path: Path, s3_server: S3Server) -> None:
    """Shards packed with ``des-pack --block-size`` serve every file byte-exact through the
    real service, locally and from S3 (moto's server), with the same HTTP behaviour."""
    files = make_files(tmp_path / "files", n=160)
    blocks = ["--block-size", "8KiB", "--block-member-max", "4KiB"]
    out = tmp_path / "shards"
    des_pack(files, str(out), clean_env(), *blocks)
    members = block_members(out)
    assert len(members) >= 20
    sizes = {r["uid"]: r["size_bytes"] for r in files.rows}
    members = [uid for uid in members if sizes[uid] >= 16]  # room for the Range checks
    local = clean_env(DES_BACKEND="local", DES_BASE_DIR=str(out), DES_N_BITS="4")
    with run_service(tmp_path, local, ["des-http", "--workers", "1"]) as svc:
        fetch_all_byte_exact(svc, files)
        check_block_member(svc, files, members[0])

    s3_server.client().create_bucket(Bucket="http-blocks")
    des_pack(files, "s3://http-blocks/des/", _s3_env(s3_server), *blocks)
    s3 = _s3_env(
        s3_server,
        DES_BACKEND="s3",
        DES_S3_BUCKET="http-blocks",
        DES_S3_PREFIX="des/",
        DES_S3_REGION="us-east-1",
        DES_N_BITS="4",
    )
    with run_service(tmp_path, s3) as svc:
        fetch_all_byte_exact(svc, files)
        check_block_member(svc, files, members[-1])
