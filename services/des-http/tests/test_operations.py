"""/health, /ready, /metrics, access logs and the OpenAPI document."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from des_format import StorageUnavailable
from des_http._logging import JsonFormatter, plan_request_id
from des_http_testkit import DAY, Harness, MakeHarness, files_url, sample


def test_health(harness: Harness) -> None:
    r = harness.client.get("/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_ready_when_the_backend_answers(harness: Harness) -> None:
    r = harness.client.get("/ready")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "backend": "local"})
    assert harness.store.calls == [("head", "19700101/00.des")]


def test_not_ready_when_the_shard_directory_is_missing(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    h = make_harness(base_dir=tmp_path / "absent")
    r = h.client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["type"] == "urn:des:problem:not-ready"
    # the variable is named, the server's path is not shown
    assert body["detail"] == (
        "the shard directory (DES_BASE_DIR) does not exist or is not a directory"
    )
    assert str(tmp_path) not in r.text
    assert r.headers["retry-after"] == "5"


def test_not_ready_when_storage_is_unreachable(harness: Harness) -> None:
    harness.store.fail = StorageUnavailable("timed out")
    r = harness.client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["type"] == "urn:des:problem:not-ready"
    assert body["detail"] == (
        "storage does not answer for the shard directory: the store did not answer "
        "(StorageUnavailable)"
    )


def test_metrics_count_retrievals_requests_cache_and_bytes(harness: Harness) -> None:
    c = harness.client
    assert c.get(files_url("1001")).status_code == 200
    assert c.get(files_url("1257")).status_code == 200
    assert c.get(files_url("2537")).status_code == 404
    assert c.get(files_url("1001", "nope")).status_code == 400
    text = c.get("/metrics").text
    assert 'des_retrievals_total{backend="local",status="200"} 2.0' in text
    assert 'des_retrievals_total{backend="local",status="404"} 1.0' in text
    assert 'des_retrievals_total{backend="local",status="400"} 1.0' in text
    assert 'des_retrieval_seconds_count{backend="local"} 4.0' in text
    assert 'des_s3_range_calls_total{backend="local",type="payload"} 2.0' in text
    assert 'des_s3_range_calls_total{backend="local",type="tail"} 1.0' in text
    served = len(sample("1001").data) + len(sample("1257").data)
    assert f'des_bytes_served_total{{backend="local"}} {float(served)}' in text
    assert harness.metric("des_index_cache_misses_total") == 1
    assert harness.metric("des_index_cache_hits_total") == 2
    assert harness.metric("des_index_cache_bytes") > 0
    assert harness.metric("des_index_cache_entries") >= 1


def test_access_log_is_one_json_line_per_request_with_request_id(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="des_http.access")
    r1 = harness.client.get(files_url("1001"), headers={"X-Request-ID": "abc-123"})
    r2 = harness.client.get(files_url("2537"), headers={"X-Request-ID": "bad id with spaces"})
    assert r1.headers["x-request-id"] == "abc-123"
    assert r2.headers["x-request-id"] != "bad id with spaces"
    assert len(r2.headers["x-request-id"]) == 32
    records = [r for r in caplog.records if r.name == "des_http.access"]
    assert len(records) == 2
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    assert lines[0]["request_id"] == "abc-123"
    assert lines[0]["method"] == "GET"
    assert lines[0]["path"] == "/files/1001"
    assert lines[0]["query"] == "created_at=2024-03-05T10%3A20%3A30Z"
    assert lines[0]["status"] == 200
    assert lines[0]["bytes"] == len(sample("1001").data)
    assert lines[0]["duration_ms"] >= 0
    assert lines[1]["status"] == 404
    assert lines[1]["request_id"] == r2.headers["x-request-id"]


def test_plan_request_id() -> None:
    assert plan_request_id("a.b:c-d_e") == "a.b:c-d_e"
    assert plan_request_id("x" * 129) != "x" * 129
    assert len(plan_request_id(None)) == 32


def test_openapi_describes_every_endpoint_and_error(harness: Harness) -> None:
    doc = harness.client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {"/files/{uid}", "/files/batch", "/health", "/ready", "/metrics"}
    get = paths["/files/{uid}"]["get"]
    assert set(get["responses"]) == {
        "200", "206", "304", "400", "404", "410", "416", "500", "503"
    }  # fmt: skip
    assert set(paths["/files/{uid}"]["head"]["responses"]) == set(get["responses"])
    params = {(p["in"], p["name"]) for p in get["parameters"]}
    assert params == {
        ("path", "uid"),
        ("query", "created_at"),
        ("header", "Range"),
        ("header", "If-None-Match"),
        ("header", "If-Range"),
    }
    assert get["responses"]["404"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert set(paths["/files/batch"]["post"]["responses"]) == {"200", "400", "413", "503"}
    assert "503" in paths["/ready"]["get"]["responses"]
    text = json.dumps(doc)
    assert "422" not in text
    assert "HTTPValidationError" not in text
    assert "securitySchemes" not in text


def test_several_apps_live_in_one_process(make_harness: MakeHarness) -> None:
    a, b = make_harness(), make_harness()
    a.client.get(files_url("1001", DAY))
    assert a.metric("des_retrievals_total", status="200") == 1
    assert b.metric("des_retrievals_total", status="200") == 0
