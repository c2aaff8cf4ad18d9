"""The edge and the one GET/HEAD implementation, in process: limits, redaction, HEAD on the
operations endpoints, no redirects, caches keyed on parsed values, impossible sizes, and the
async retriever seam."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from des_http import HttpSettings, create_app
from des_http._logging import JsonFormatter, redact_query
from des_http._retrieval import _parse_short_created_at, _shard_key_of, plan_object_key
from des_http_testkit import DAY, Harness, MakeHarness, files_url, sample
from des_routing import DesSettings
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry


def test_a_long_url_is_414_before_any_lookup(make_harness: MakeHarness) -> None:
    h = make_harness(max_url_bytes=1024)
    r = h.client.get(files_url("1001") + "&x=" + "a" * 1024)
    assert r.status_code == 414
    assert r.json()["type"] == "urn:des:problem:uri-too-long"
    assert "DES_HTTP_MAX_URL_BYTES" in r.json()["detail"]
    assert h.store.calls == []
    assert h.client.get(files_url("1001")).status_code == 200


def test_a_batch_body_over_the_limit_is_413_unread(make_harness: MakeHarness) -> None:
    h = make_harness(max_batch_body_bytes=2048)
    items = [{"uid": "1001", "created_at": DAY}] * 40  # ~2.2 KB of JSON
    r = h.client.post("/files/batch", content=json.dumps({"items": items}).encode())
    assert r.status_code == 413
    assert r.json()["type"] == "urn:des:problem:request-too-large"
    assert "DES_MAX_BATCH_BODY_BYTES" in r.json()["detail"]

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        yield b'{"items": ['
        for _ in range(100):
            yield b'{"uid": "1001", "created_at": "2024-03-05T10:20:30Z"},'

    r = h.client.post("/files/batch", content=chunks())
    assert r.status_code == 413
    assert h.store.calls == []
    ok = h.client.post("/files/batch", json={"items": items[:5]})
    assert ok.status_code == 200


def test_operations_answer_head(harness: Harness) -> None:
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        got = harness.client.get(path)
        head = harness.client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]


def test_no_trailing_slash_redirects(harness: Harness) -> None:
    r = harness.client.get("/health/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers
    assert "evil.example" not in r.text


def test_secret_query_values_never_reach_the_access_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="des_http.access"):
        r = harness.client.get(files_url("1001") + "&access_token=s3cr3t&X-Amz-Signature=abc")
    assert r.status_code == 200
    lines = [JsonFormatter().format(rec) for rec in caplog.records if rec.name.endswith("access")]
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert "s3cr3t" not in lines[0]
    assert "abc" not in line["query"]
    assert line["query"].endswith("&access_token=REDACTED&X-Amz-Signature=REDACTED")


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        (b"created_at=2024-01-01T00:00:00Z", "created_at=2024-01-01T00:00:00Z"),
        (b"token=a&sig=b&keep=c", "token=REDACTED&sig=REDACTED&keep=c"),
        (
            b"api_key=x&PASSWORD=y&session_id=z",
            "api_key=REDACTED&PASSWORD=REDACTED&session_id=REDACTED",
        ),
        (b"tokenless", "tokenless"),
    ],
)
def test_redact_query(query: bytes, logged: str) -> None:
    assert redact_query(query) == logged


def test_padded_created_at_spellings_share_one_cache_entry() -> None:
    _shard_key_of.cache_clear()
    _parse_short_created_at.cache_clear()
    keys = {plan_object_key("u1", DAY + " " * (k + 20), 8) for k in range(2000)}
    assert len(keys) == 1
    assert _shard_key_of.cache_info().currsize == 1
    assert _parse_short_created_at.cache_info().currsize <= 12  # only short spellings kept
    assert plan_object_key("u1", DAY, 8) in keys


@dataclass
class _Entry:
    uid: str
    size: int
    etag: str = '"des-1-1"'
    content_type: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


class _File:
    whole: bytes | None = None  # streamed through aiter_bytes

    def __init__(self, entry: _Entry, data: bytes) -> None:
        self._entry = entry
        self._data = data
        self.closed = False

    @property
    def entry(self) -> _Entry:
        return self._entry

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield self._data

    async def aclose(self) -> None:
        self.closed = True


class _Retriever:
    """An in-process AsyncRetriever holding one file per uid."""

    cache = None

    def __init__(self, files: dict[str, tuple[_Entry, bytes]]) -> None:
        self.files = files
        self.opened: list[_File] = []

    async def stat(self, key: str, uid: str) -> _Entry:
        return self.files[uid][0]

    async def open(self, key: str, uid: str) -> _File:
        entry, data = self.files[uid]
        opened = _File(entry, data)
        self.opened.append(opened)
        return opened

    async def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | BaseException]]:
        for uid in uids:
            yield uid, self.files[uid][1]


def _client(retriever: _Retriever, tmp_path: Any) -> TestClient:
    settings = HttpSettings(des=DesSettings(backend="local", base_dir=tmp_path, n_bits=8))
    app = create_app(settings, async_retriever=retriever, registry=CollectorRegistry())  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


def test_a_size_no_file_can_have_is_a_500_not_a_content_length(tmp_path: Any) -> None:
    huge = _Entry("huge", 2**64 - 1)
    retriever = _Retriever({"huge": (huge, b"x" * 100), "ok": (_Entry("ok", 3), b"abc")})
    client = _client(retriever, tmp_path)
    for method in ("GET", "HEAD"):
        r = client.request(method, files_url("huge"))
        assert r.status_code == 500, method
        assert r.headers["content-length"] != str(2**64 - 1)
        assert r.headers["content-type"] == "application/problem+json"
    assert client.get(files_url("huge")).json()["type"] == "urn:des:problem:corrupt-shard"
    assert all(f.closed for f in retriever.opened)
    assert client.get(files_url("ok")).content == b"abc"


def test_any_async_retriever_serves_through_the_same_handler(tmp_path: Any) -> None:
    data = bytes(range(256)) * 10
    retriever = _Retriever({"f": (_Entry("f", len(data), content_type="text/plain"), data)})
    client = _client(retriever, tmp_path)
    r = client.get(files_url("f"), headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.content) == (206, data[10:20])
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert client.get(files_url("f"), headers={"If-None-Match": '"des-1-1"'}).status_code == 304
    r = client.get(files_url("f"))
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, data, "text/plain")
    assert all(f.closed for f in retriever.opened)


def test_the_quick_path_and_handlers_share_one_edge(harness: Harness) -> None:
    # the same request id handling and problem shape from the file handler and FastAPI routes
    for url in (files_url("999999"), "/nope"):
        r = harness.client.get(url, headers={"X-Request-ID": "rid-1"})
        assert r.status_code == 404
        assert r.headers["x-request-id"] == "rid-1"
        assert r.json()["request_id"] == "rid-1"
    assert harness.client.get(files_url("1001")).content == sample("1001").data
