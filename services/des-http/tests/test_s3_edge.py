"""des-http over real S3 servers (moto's server and SeaweedFS, both over HTTP on 127.0.0.1):
a 200's headers leave only once the payload is there (410 for a file deleted behind a warm
index, 503 when the store fails), and ``/ready`` asks every zone and names the one that does
not answer (no bucket names, paths or secrets).

Credentials refused is tested on SeaweedFS only: moto's server accepts any key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from des_http import HttpSettings, create_app
from des_http_testkit import DAY, SampleFile, files_url, write_dataset
from des_routing import DesSettings
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "testing"))
from des_testing import free_port

BIG = bytes(range(256)) * (3 * 4096)  # 3 MiB, stored as a big file
FILES = (
    SampleFile("1001", DAY, b"small file\n" * 100, "small.txt"),
    SampleFile("1257", DAY, BIG, "big.bin"),
)


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's S3 server of this run: moto and SeaweedFS (the root conftest)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


_buckets = iter(range(1_000_000))


def _bucket(s3: Any, name: str) -> str:
    bucket = f"{name}-{os.getpid()}-{next(_buckets)}"
    s3.client().create_bucket(Bucket=bucket)
    return bucket


def _upload(s3: Any, bucket: str, base: Path, prefix: str = "des/") -> None:
    client = s3.client()
    for path in sorted(base.rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=bucket,
                Key=prefix + path.relative_to(base).as_posix(),
                Body=path.read_bytes(),
            )


def _app(des: DesSettings, **http: Any) -> TestClient:
    settings = HttpSettings(des=des, **http)
    return TestClient(
        create_app(settings, registry=CollectorRegistry()), raise_server_exceptions=False
    )


def _s3_settings(s3: Any, bucket: str, endpoint: str | None = None) -> DesSettings:
    return DesSettings.from_env(
        {
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": bucket,
            "DES_S3_PREFIX": "des/",
            "DES_S3_ENDPOINT_URL": endpoint or s3.endpoint_url,
            "DES_S3_REGION": "us-east-1",
            "DES_N_BITS": "8",
        }
    )


def test_a_big_file_deleted_behind_a_warm_index_is_410(s3: Any, tmp_path: Path) -> None:
    base = tmp_path / "shards"
    write_dataset(base, FILES, big_file_threshold=1 << 20)
    assert list(base.rglob("_bigFiles/*"))
    bucket = _bucket(s3, "gone")
    _upload(s3, bucket, base)
    des = _s3_settings(s3, bucket)
    reader = _app(des)  # a replica whose index cache is warm
    first = reader.get(files_url("1257"))
    assert (first.status_code, first.content) == (200, BIG)
    deleter = _app(des)
    done = deleter.delete(files_url("1257"))
    assert done.status_code == 200
    # what `des delete --bigfile-grace 0` does next: the big file's object removed at once
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="des/")["Contents"]
    big_keys = [o["Key"] for o in listed if "/_bigFiles/" in o["Key"]]
    assert len(big_keys) == 1
    client.delete_object(Bucket=bucket, Key=big_keys[0])
    # the warm replica finds out before any header leaves: a 410, never 200 then nothing
    after = reader.get(files_url("1257"))
    assert after.status_code == 410
    assert after.headers["content-type"] == "application/problem+json"
    assert after.json()["type"] == "urn:des:problem:deleted"
    assert reader.head(files_url("1257")).status_code == 410
    assert reader.get(files_url("1001")).content == FILES[0].data


def test_a_failing_store_is_a_503_problem_before_any_header(s3: Any, tmp_path: Path) -> None:
    # an endpoint where nothing listens: every read fails to connect
    des = _s3_settings(s3, "nowhere", endpoint=f"http://127.0.0.1:{free_port()}")
    client = _app(des, retry_after_seconds=9)
    for method in ("GET", "HEAD"):
        r = client.request(method, files_url("1257"))
        assert r.status_code == 503, method
        assert r.headers["retry-after"] == "9"
        assert r.headers["content-type"] == "application/problem+json"
    body = client.get(files_url("1001")).json()
    assert body["type"] == "urn:des:problem:storage-unavailable"
    ready = client.get("/ready")
    assert ready.status_code == 503
    detail = ready.json()["detail"]
    assert detail.startswith("storage does not answer for the S3 bucket (DES_S3_BUCKET): ")
    assert "cannot be reached" in detail
    assert "127.0.0.1" not in detail


def test_ready_checks_that_the_bucket_exists(s3: Any) -> None:
    bucket = _bucket(s3, "ready")
    assert _app(_s3_settings(s3, bucket)).get("/ready").status_code == 200
    missing = _app(_s3_settings(s3, bucket + "-missing")).get("/ready")
    assert missing.status_code == 503
    detail = missing.json()["detail"]
    assert detail == (
        "storage does not answer for the S3 bucket (DES_S3_BUCKET): the bucket does not "
        "exist (NoSuchBucket)"
    )
    assert bucket not in missing.text


def _zones_file(tmp_path: Path, s3: Any, buckets: dict[str, str], **keys: str) -> Path:
    zones = []
    names = sorted(buckets)
    step = 256 // len(names)
    for i, name in enumerate(names):
        zone: dict[str, Any] = {
            "name": name,
            "range": {"start": i * step, "end": 255 if i == len(names) - 1 else (i + 1) * step - 1},
            "s3": {
                "bucket": buckets[name],
                "endpoint_url": s3.endpoint_url,
                "region_name": "us-east-1",
                "prefix": "des/",
            },
        }
        if name in keys:
            zone["s3"]["credentials"] = {
                "access_key_id": keys[name],
                "secret_access_key": "not-the-secret",
            }
        zones.append(zone)
    path = tmp_path / "zones.json"
    path.write_text(json.dumps({"n_bits": 8, "zones": zones}))
    return path


def test_ready_names_each_zone_that_does_not_answer(s3: Any, tmp_path: Path) -> None:
    good = _bucket(s3, "zone-a")
    path = _zones_file(tmp_path, s3, {"east": good, "west": good + "-gone"})
    des = DesSettings.from_env({"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(path)})
    r = _app(des).get("/ready")
    assert r.status_code == 503
    assert r.json()["detail"] == (
        "storage does not answer for zone 'west': the bucket does not exist (NoSuchBucket)"
    )
    assert good not in r.text
    path = _zones_file(tmp_path, s3, {"east": good, "west": good})
    des = DesSettings.from_env({"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(path)})
    ok = _app(des).get("/ready")
    assert (ok.status_code, ok.json()) == (200, {"status": "ready", "backend": "multi_s3"})


@pytest.mark.s3_servers("seaweedfs", reason="moto's server accepts any key")
def test_ready_names_a_zone_whose_credentials_are_refused(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seaweed = s3_server
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    good = _bucket(seaweed, "creds")
    path = _zones_file(tmp_path, seaweed, {"east": good, "west": good}, west="AKIAWRONGKEY")
    des = DesSettings.from_env({"DES_BACKEND": "multi_s3", "DES_ZONES_CONFIG": str(path)})
    r = _app(des).get("/ready")
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert detail.startswith("storage does not answer for zone 'west': the credentials were ")
    assert "east" not in detail
    assert "not-the-secret" not in r.text
    assert "AKIAWRONGKEY" not in r.text


def test_answers_carry_no_bucket_or_key(s3: Any, tmp_path: Path) -> None:
    bucket = _bucket(s3, "quiet")
    des = _s3_settings(s3, bucket)
    r = _app(des).get(files_url("4242"))
    assert r.status_code == 404
    assert bucket not in r.text
    assert "des/" not in r.text


def _samples(registry: CollectorRegistry, backend: str) -> dict[str, float]:
    wanted = ("des_retrievals_total", "des_bytes_served_total", "des_retrieval_seconds_count")
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name in wanted:
                labels = {k: v for k, v in s.labels.items() if k != "backend"}
                assert s.labels["backend"] == backend
                out[s.name + repr(sorted(labels.items()))] = s.value
    return out


def test_local_and_s3_answer_log_and_count_alike(
    s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from des_http._logging import JsonFormatter

    base = tmp_path / "shards"
    write_dataset(base, FILES, big_file_threshold=1 << 20)
    bucket = _bucket(s3, "alike")
    _upload(s3, bucket, base)
    backends = {
        "local": DesSettings(backend="local", base_dir=base, n_bits=8),
        "s3": _s3_settings(s3, bucket),
    }
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", files_url("1001"), {}),
        ("GET", files_url("1001"), {"Range": "bytes=5-20"}),
        ("HEAD", files_url("1257"), {}),
        ("GET", files_url("1257"), {"Range": "bytes=-100"}),
        ("GET", files_url("1257"), {}),
        ("GET", files_url("4242"), {}),
        ("GET", files_url("1001"), {"Range": "bytes=999999-"}),
        ("GET", "/files/1001", {}),
    ]
    seen: dict[str, list[Any]] = {}
    counted: dict[str, dict[str, float]] = {}
    for name, des in backends.items():
        registry = CollectorRegistry()
        client = TestClient(
            create_app(HttpSettings(des=des), registry=registry), raise_server_exceptions=False
        )
        caplog.clear()
        answers = []
        with caplog.at_level(logging.INFO, logger="des_http.access"):
            for method, url, headers in requests:
                r = client.request(method, url, headers={"X-Request-ID": "same", **headers})
                answers.append((r.status_code, dict(r.headers), r.content))
        etag = client.head(files_url("1001")).headers["etag"]
        r = client.get(files_url("1001"), headers={"If-None-Match": etag, "X-Request-ID": "same"})
        answers.append((r.status_code, dict(r.headers), r.content))
        logs = []
        for record in caplog.records:
            if record.name == "des_http.access":
                line = json.loads(JsonFormatter().format(record))
                for volatile in ("ts", "duration_ms"):
                    line.pop(volatile)
                logs.append(line)
        seen[name] = [answers, logs]
        counted[name] = _samples(registry, str(des.backend))
    assert seen["local"][0] == seen["s3"][0]  # status, every header, body
    assert seen["local"][1] == seen["s3"][1]  # access-log lines
    assert len(seen["local"][1]) == len(requests)
    assert counted["local"] == counted["s3"]
