"""Bad input against des-http, each with its expected answer: hostile uids, created_at in wrong
formats or far away, hostile Range headers, oversized and malformed batches. Nothing crashes
(no 5xx), nothing returns wrong bytes, every error is problem JSON with a clear detail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from des_format import LocalObjectStore, ShardWriter
from des_http import HttpSettings, create_app
from des_routing import DesSettings, locate_shard
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

DAY = "2024-03-05T10:20:30Z"
FILES = {
    "plain": b"0123456789" * 10,
    "a/b": b"a uid with a slash",
    "..": b"dot dot",
    "\ufffd\ufffd": b"two replacement characters",
    "caf\u00e9": b"utf-8 uid",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = tmp_path_factory.mktemp("badinput-http")
    by_key: dict[str, list[str]] = {}
    for uid in FILES:
        by_key.setdefault(locate_shard(uid, DAY, 8).object_key, []).append(uid)
    for key, uids in by_key.items():
        (base / key).parent.mkdir(parents=True, exist_ok=True)
        with open(base / key, "wb") as fh:
            w = ShardWriter(fh)
            for uid in uids:
                w.add(uid, FILES[uid], content_type="text/plain")
            w.close()
    settings = HttpSettings(
        des=DesSettings(backend="local", base_dir=base, n_bits=8), max_batch_items=5
    )
    app = create_app(settings, store=LocalObjectStore(base), registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def problem(r: object) -> dict[str, object]:
    resp = r  # an httpx.Response
    assert resp.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = json.loads(resp.content)  # type: ignore[attr-defined]
    assert body["status"] == resp.status_code  # type: ignore[attr-defined]
    assert "Traceback" not in body["detail"]
    return body  # type: ignore[no-any-return]


# ---- uids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_uid", "status", "kind"),
    [
        ("%2e%2e", 200, None),  # the uid "..": a stored file, never a path
        ("..%2f..%2fetc%2fpasswd", 404, "not-found"),
        ("a%2Fb", 200, None),  # a uid with a slash (before the fix: 404, route not matched)
        ("a/b", 200, None),
        ("%2Fetc%2Fpasswd", 404, "not-found"),
        ("a%00b", 400, "invalid-uid"),
        ("a%01b", 400, "invalid-uid"),
        ("%0d%0aX-Injected:%201", 400, "invalid-uid"),
        ("a%7fb", 400, "invalid-uid"),
        ("a%c2%85b", 400, "invalid-uid"),  # U+0085, a C1 control
        ("x" * 2000, 400, "invalid-uid"),
        ("%ff%fe", 400, "invalid-uid"),  # not UTF-8 (before the fix: read as U+FFFD U+FFFD)
        ("%c3%28", 400, "invalid-uid"),
        ("%ed%a0%80", 400, "invalid-uid"),  # an encoded surrogate
        ("%EF%BF%BD%EF%BF%BD", 200, None),  # the real U+FFFD U+FFFD uid
        ("caf%C3%A9", 200, None),
    ],
)
def test_hostile_uids(client: TestClient, raw_uid: str, status: int, kind: str | None) -> None:
    r = client.get(f"/files/{raw_uid}?created_at={DAY}")
    assert r.status_code == status, r.content
    if kind is None:
        from urllib.parse import unquote

        assert r.content == FILES[unquote(raw_uid)]
    else:
        assert problem(r)["type"] == f"urn:des:problem:{kind}"
    h = client.head(f"/files/{raw_uid}?created_at={DAY}")
    assert h.status_code == status


def test_non_utf8_uid_detail(client: TestClient) -> None:
    body = problem(client.get(f"/files/%ff?created_at={DAY}"))
    assert body["detail"] == (
        "uid is not valid UTF-8 once percent-decoded; uids are UTF-8 text "
        "(percent-encode its UTF-8 bytes)"
    )


def test_long_uid_detail(client: TestClient) -> None:
    body = problem(client.get(f"/files/{'x' * 2000}?created_at={DAY}"))
    assert body["detail"] == (
        "uid is 2000 bytes of UTF-8, at most 1024 are allowed (starts with '" + "x" * 32 + "')"
    )


# ---- created_at -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_at",
    [
        "2024-13-01T00:00:00Z",
        "2024-02-30",
        "yesterday",
        "1700000000",
        "2024/03/05",
        "05-03-2024",
        "2024-03-05T25:00:00Z",
        "2024-03-05T10:20:30+25:00",
        "NaN",
        "99999-01-01",
        "-2024-01-01",
        "2024-03-05T10:20:30.%00",
        "",
        "%ff%fe",
    ],
)
def test_wrong_created_at_formats(client: TestClient, created_at: str) -> None:
    body = problem(client.get(f"/files/plain?created_at={created_at}"))
    assert body["status"] == 400
    assert body["type"] == "urn:des:problem:invalid-created-at"
    assert "ISO 8601" in str(body["detail"])


@pytest.mark.parametrize(
    "created_at",
    ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2999-01-01"],
)
def test_far_past_or_future_dates_are_not_found(client: TestClient, created_at: str) -> None:
    body = problem(client.get(f"/files/plain?created_at={created_at}"))
    assert (body["status"], body["type"]) == (404, "urn:des:problem:not-found")


@pytest.mark.parametrize("created_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_dates_that_leave_the_calendar_in_utc(client: TestClient, created_at: str) -> None:
    body = problem(client.get("/files/plain", params={"created_at": created_at}))
    assert (body["status"], body["type"]) == (400, "urn:des:problem:invalid-created-at")
    assert body["detail"] == (
        f"created_at {created_at!r} is outside the years 1..9999 once converted to UTC"
    )


def test_missing_created_at(client: TestClient) -> None:
    body = problem(client.get("/files/plain"))
    assert (body["status"], body["type"]) == (400, "urn:des:problem:invalid-request")


# ---- Range ----------------------------------------------------------------------------------

DATA = FILES["plain"]


@pytest.mark.parametrize(
    ("header", "status", "body"),
    [
        ("bytes=5-2", 200, DATA),  # reversed: ignored
        ("bytes=0-0,5-6", 200, DATA),  # several ranges: the whole file
        ("bytes=0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1", 200, DATA),
        ("bytes=-", 200, DATA),
        ("bytes=--1", 200, DATA),
        ("bites=0-1", 200, DATA),
        ("bytes=a-b", 200, DATA),
        ("bytes=0x10-0x20", 200, DATA),
        ("bytes=" + "9" * 5000 + "-", 416, None),  # huge start: past the end
        ("bytes=0-" + "9" * 5000, 206, DATA),  # huge end: clipped to the file
        ("bytes=-" + "9" * 5000, 206, DATA),  # huge suffix: the whole file as 206
        ("bytes=100-", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=98-", 206, DATA[98:]),
        ("bytes=2-4", 206, DATA[2:5]),
    ],
)
def test_hostile_ranges(client: TestClient, header: str, status: int, body: bytes | None) -> None:
    r = client.get(f"/files/plain?created_at={DAY}", headers={"Range": header})
    assert r.status_code == status
    if body is None:
        problem(r)
        assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    else:
        assert r.content == body
        if status == 206:
            start = len(DATA) - len(body)
            if header == "bytes=2-4":
                start = 2
            assert r.headers["content-range"] == f"bytes {start}-{start + len(body) - 1}/100"


def test_non_ascii_range_header_is_ignored(client: TestClient) -> None:
    r = client.get(f"/files/plain?created_at={DAY}", headers={"Range": b"bytes=\xc3\xa9-1"})
    assert (r.status_code, r.content) == (200, DATA)


# ---- batch ----------------------------------------------------------------------------------


def test_oversized_batch_is_413(client: TestClient) -> None:
    items = [{"uid": "plain", "created_at": DAY}] * 6
    body = problem(client.post("/files/batch", json={"items": items}))
    assert (body["status"], body["type"]) == (413, "urn:des:problem:batch-too-large")


def test_huge_batch_body_is_refused_cleanly(client: TestClient) -> None:
    items = [{"uid": "x" * 1000, "created_at": DAY}] * 5000  # ~5 MB of JSON
    r = client.post("/files/batch", json={"items": items})
    assert r.status_code in (400, 413)
    problem(r)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"[]",
        b'{"items": []}',
        b'{"items": {}}',
        b'{"items": [1]}',
        b'{"items": [{"uid": "plain"}]}',
        b'{"items": [{"uid": 5, "created_at": 1}]}',
        b'{"items": [{"uid": "plain", "created_at": "x", "extra": 1}]}',
        b"\xff\xfe",
        b'{"items": [{"uid": "' + b"x" * 1025 + b'", "created_at": "2024-01-01"}]}',
    ],
)
def test_malformed_batch_bodies_are_400(client: TestClient, payload: bytes) -> None:
    r = client.post("/files/batch", content=payload, headers={"Content-Type": "application/json"})
    body = problem(r)
    assert (body["status"], body["type"]) == (400, "urn:des:problem:invalid-request")


def test_bad_item_gets_its_own_400_part(client: TestClient) -> None:
    items = [
        {"uid": "plain", "created_at": DAY},
        {"uid": "a\u0000b", "created_at": DAY},
        {"uid": "plain", "created_at": "yesterday"},
    ]
    r = client.post("/files/batch", json={"items": items})
    assert r.status_code == 200
    statuses = sorted(
        line.split(b": ")[1].strip()
        for line in r.content.split(b"\r\n")
        if line.lower().startswith(b"x-des-status")
    )
    assert statuses == [b"200", b"400", b"400"]
    assert DATA in r.content


def test_delete_with_non_utf8_uid_deletes_nothing(tmp_path: Path) -> None:
    """%ff%fe must not be read as U+FFFD U+FFFD: a DELETE would tombstone another file."""
    uid = "\ufffd\ufffd"
    key = locate_shard(uid, DAY, 8).object_key
    (tmp_path / key).parent.mkdir(parents=True)
    with open(tmp_path / key, "wb") as fh:
        w = ShardWriter(fh)
        w.add(uid, b"keep me")
        w.close()
    settings = HttpSettings(des=DesSettings(backend="local", base_dir=tmp_path, n_bits=8))
    app = create_app(settings, registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.delete(f"/files/%ff%fe?created_at={DAY}")
        body = problem(r)
        assert (body["status"], body["type"]) == (400, "urn:des:problem:invalid-uid")
        got = c.get(f"/files/%EF%BF%BD%EF%BF%BD?created_at={DAY}")
        assert (got.status_code, got.content) == (200, b"keep me")
