"""The GET/HEAD /files hot path: parameters read straight from the ASGI scope must equal what
Starlette's request objects give, and the front door must keep every behaviour."""

from __future__ import annotations

import posixpath
from urllib.parse import quote

import pytest
from des_format import IndexEntry
from des_http._files import file_params
from des_http._problems import BadRequest
from des_http._retrieval import (
    DEFAULT_MEDIA_TYPE,
    _media_type_of_suffix,
    media_type_of,
    plan_object_key,
    suffix_of,
)
from des_http_testkit import DAY, Harness, sample
from des_routing import InvalidCreatedAt, locate_shard, parse_created_at
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

HEADER_NAMES = [b"range", b"if-none-match", b"if-range", b"host", b"x-other"]
QUERY_ALPHABET = "created_at=&%+:-TZ0123456789ab;\u00e9 "


def _scope(query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/files/u1",
        "raw_path": b"/files/u1",
        "query_string": query,
        "headers": headers,
        "path_params": {"uid": "u1"},
    }


def _request(query: bytes, headers: list[tuple[bytes, bytes]]) -> Request:
    return Request(_scope(query, headers))


@settings(max_examples=300, deadline=None)
@given(
    query=st.one_of(
        st.text(QUERY_ALPHABET, max_size=40),
        st.text(QUERY_ALPHABET, max_size=30).map(lambda t: "created_at=" + t),
        st.lists(
            st.tuples(
                st.sampled_from(["created_at", "created_at ", "x", "created%5Fat"]),
                st.text(QUERY_ALPHABET, max_size=12),
            ),
            max_size=4,
        ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
    ).map(lambda t: t.encode("utf-8")),
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.binary(max_size=12)), max_size=6),
)
def test_file_params_equal_starlettes_query_and_headers(
    query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    request = _request(query, headers)
    expected_created_at = request.query_params.get("created_at")
    fresh = _scope(query, headers)
    if expected_created_at is None:
        with pytest.raises(BadRequest, match="created_at is required"):
            file_params(fresh)
        return
    assert file_params(fresh) == (
        "u1",
        expected_created_at,
        request.headers.get("range"),
        request.headers.get("if-none-match"),
        request.headers.get("if-range"),
    )


def test_plain_query_and_last_created_at_win(harness: Harness) -> None:
    s = sample("1001")
    plain = harness.client.get(f"/files/1001?created_at={DAY}")
    assert plain.status_code == 200
    assert plain.content == s.data
    # As Starlette reads a repeated parameter: the last one counts.
    twice = harness.client.get(f"/files/1001?created_at=nonsense&created_at={quote(DAY)}")
    assert twice.status_code == 200
    assert twice.content == s.data
    bad_last = harness.client.get(f"/files/1001?created_at={DAY}&created_at=nonsense")
    assert bad_last.status_code == 400
    assert bad_last.headers["content-type"] == "application/problem+json"


def test_front_door_keeps_request_id_and_range(harness: Harness) -> None:
    s = sample("1001")
    r = harness.client.get(
        f"/files/1001?created_at={DAY}",
        headers={"Range": "bytes=2-9", "X-Request-ID": "trace-7"},
    )
    assert r.status_code == 206
    assert r.content == s.data[2:10]
    assert r.headers["content-range"] == f"bytes 2-9/{len(s.data)}"
    assert r.headers["x-request-id"] == "trace-7"
    head = harness.client.head(f"/files/1001?created_at={DAY}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(s.data))
    assert len(head.headers["x-request-id"]) == 32


def test_cached_object_keys_match_routing_and_errors_are_not_cached() -> None:
    for _ in range(2):
        key = plan_object_key("1001", DAY, 8)
        assert key == locate_shard("1001", parse_created_at(DAY), 8).object_key
        with pytest.raises(InvalidCreatedAt):
            plan_object_key("1001", "2024-13-01T00:00:00Z", 8)


def test_created_at_is_checked_before_the_uid() -> None:
    with pytest.raises(InvalidCreatedAt):
        plan_object_key("bad\x01uid", "not a time", 8)


def _media_type_as_before(entry: IndexEntry) -> str:
    """media_type_of as first written (posixpath.splitext, a character loop)."""
    stored = entry.content_type
    if stored and all(32 <= ord(ch) < 127 for ch in stored):
        return stored
    meta = entry.meta or {}
    name = meta.get("name") or meta.get("filename")
    if isinstance(name, str) and name:
        return _media_type_of_suffix(posixpath.splitext(name)[1].lower())
    return DEFAULT_MEDIA_TYPE


names = st.text(alphabet="./aZ_x-ĳ\x00", max_size=12) | st.sampled_from(
    ["a.txt", ".bashrc", "..", "a/.x", "a/b.c/d", "x.tar.GZ", "dir.d/file", "...a", "a..b", ""]
)


@given(name=names)
def test_suffix_of_is_splitext(name: str) -> None:
    assert suffix_of(name) == posixpath.splitext(name)[1]


@given(
    content_type=st.none() | st.text(max_size=6) | st.sampled_from(["text/plain", "a\x7fb"]),
    name=st.none() | names | st.integers(),
    filename=st.none() | names,
)
def test_media_type_of_is_unchanged(content_type: object, name: object, filename: object) -> None:
    meta = {
        k: v
        for k, v in (("content_type", content_type), ("name", name), ("filename", filename))
        if v is not None
    }
    entry = IndexEntry("u", 1, 1, checksum=1, meta=meta)
    assert media_type_of(entry) == _media_type_as_before(entry)
