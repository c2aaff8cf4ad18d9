"""The raw front for warm GET/HEAD /files (``_WarmFront``): for any request, the same status,
headers, body, metrics and access-log line as the general path (access log, auth, the
Starlette handlers) gives."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import des_http._app as des_app
import pytest
from des_format import LocalObjectStore
from des_format._source import NOWAIT_READS
from des_http import HttpSettings, create_app, parse_token_file
from des_http._app import _WarmFront
from des_http._logging import JsonFormatter
from des_http_testkit import DAY, N_BITS, OTHER_DAY, counters, files_url, sample
from des_routing import DesSettings
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.skipif(
    not NOWAIT_READS, reason="no preadv2 with RWF_NOWAIT on this platform"
)

TOKEN = "warm-front-token"
ADMIN = "warm-front-admin"
TOKENS = (
    f"read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()} frontend\n"
    f"admin sha256:{hashlib.sha256(ADMIN.encode()).hexdigest()} ops\n"
)
UIDS = ["1001", "1257", "1513", "1769", "2025", "doc-\u00e9t\u00e9", "2281", "4242", "a\ufffdb"]
CREATED = [DAY, quote(DAY), quote(DAY, safe=""), OTHER_DAY, "2024-13-01T00:00:00Z", "x%ZZ"]


@dataclass
class Pair:
    """Two apps over the same shards: ``warm`` as built, ``general`` without the raw front."""

    warm: TestClient
    general: TestClient
    warm_registry: CollectorRegistry
    general_registry: CollectorRegistry


def _app(base: Path, registry: CollectorRegistry, tokens: bool, raw: bool) -> TestClient:
    des = DesSettings(backend="local", base_dir=base, n_bits=N_BITS)
    app = create_app(
        HttpSettings(des=des),
        store=LocalObjectStore(base),
        registry=registry,
        tokens=parse_token_file(TOKENS) if tokens else None,
    )
    assert isinstance(app.files_front, _WarmFront)
    if not raw:
        app.files_front = app.files_front.general
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(params=[False, True], ids=["open", "tokens"])
def pair(request: pytest.FixtureRequest, dataset_dir: Path) -> Iterator[Pair]:
    regs = CollectorRegistry(), CollectorRegistry()
    warm = _app(dataset_dir, regs[0], request.param, raw=True)
    general = _app(dataset_dir, regs[1], request.param, raw=False)
    for client in (warm, general):  # every shard's index cached: warm answers possible
        for uid in UIDS[:6]:
            client.head(files_url(uid), headers={"Authorization": f"Bearer {ADMIN}"})
    yield Pair(warm, general, *regs)
    warm.close()
    general.close()


request_strategy = st.tuples(
    st.sampled_from(["GET", "HEAD"]),
    st.sampled_from(UIDS),
    st.sampled_from(CREATED),
    st.sampled_from(["", "&x=1", "+"]),
    st.fixed_dictionaries(
        {},
        optional={
            "X-Request-ID": st.sampled_from(["trace-1", "bad id", "r" * 129]),
            "Range": st.sampled_from(["bytes=0-9", "bytes=-5", "bytes=9999999-", "x"]),
            "If-None-Match": st.sampled_from(['"nope"', "*"]),
            "If-Range": st.sampled_from(['"nope"', "W/x"]),
            "Authorization": st.sampled_from([f"Bearer {TOKEN}", f"Bearer {ADMIN}", "Bearer x"]),
        },
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(requests=st.lists(request_strategy, min_size=1, max_size=8))
def test_raw_answers_equal_the_general_path(pair: Pair, requests: list[Any]) -> None:
    for method, uid, created_at, extra, headers in requests:
        url = f"/files/{quote(uid, safe='')}?created_at={created_at}{extra}"
        rw = pair.warm.request(method, url, headers=headers)
        rg = pair.general.request(method, url, headers=headers)
        assert rw.status_code == rg.status_code, (method, url, headers)
        # A fresh request id differs between the apps (problem bodies carry it too): each is
        # replaced by a placeholder of its length.
        sides = []
        for r in (rw, rg):
            rid = r.headers["x-request-id"]
            sides.append(
                (
                    [(k, "#" * len(v) if v == rid else v) for k, v in r.headers.multi_items()],
                    r.content.replace(rid.encode(), b"<id>"),
                )
            )
        assert sides[0] == sides[1], (method, url, headers)
    assert counters(pair.warm_registry) == counters(pair.general_registry)


def test_warm_answers_skip_the_handlers(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw front answers a warm plain GET and HEAD itself; anything else reaches the
    handlers (seen through Starlette's Request, which only the general path builds)."""
    built: list[str] = []
    original = des_app.Request

    class Spy(original):  # type: ignore[misc, valid-type]
        def __init__(self, scope: Any, *args: Any) -> None:
            built.append(scope["path"])
            super().__init__(scope, *args)

    monkeypatch.setattr("des_http._app.Request", Spy)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    s = sample("1257")
    r = pair.warm.get(files_url("1257"), headers=auth)
    assert (r.status_code, r.content) == (200, s.data)
    assert pair.warm.head(files_url("1513"), headers=auth).status_code == 200
    assert built == []
    ranged = pair.warm.get(files_url("1257"), headers={**auth, "Range": "bytes=0-3"})
    assert (ranged.status_code, ranged.content) == (206, s.data[:4])
    assert pair.warm.get(files_url("4242"), headers=auth).status_code == 404
    assert built == ["/files/1257", "/files/4242"]


def test_access_log_lines_are_the_same(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="des_http.access")
    lines: list[list[dict[str, Any]]] = []
    for client in (pair.warm, pair.general):
        caplog.clear()
        for method in ("GET", "HEAD"):
            r = client.request(
                method,
                files_url("1001"),
                headers={"X-Request-ID": "same", "Authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 200
        records = [r for r in caplog.records if r.name == "des_http.access"]
        parsed = [json.loads(JsonFormatter().format(r)) for r in records]
        for line in parsed:
            assert line.pop("duration_ms") >= 0
            line.pop("ts")
        lines.append(parsed)
    assert lines[0] == lines[1]
    assert [line["bytes"] for line in lines[0]] == [len(sample("1001").data), 0]


@given(
    content_type=st.none() | st.sampled_from(["text/csv", "bad\x01type", "", 7]),
    name=st.none() | st.integers() | st.sampled_from(["a.TXT", "b.txt", ".bashrc", "x/y.json", ""]),
    filename=st.none() | st.sampled_from(["c.png", "d", "e.tar.gz"]),
    checksum=st.none() | st.integers(0, 2**32 - 1),
    bigfile_hash=st.none() | st.just("ab" * 32),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_headers_of_equal_base_headers_for_any_metadata(
    dataset_dir: Path,
    content_type: object,
    name: object,
    filename: object,
    checksum: int | None,
    bigfile_hash: str | None,
) -> None:
    from des_format import IndexEntry

    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
    app = create_app(HttpSettings(des=des), registry=CollectorRegistry())
    front = app.files_front
    assert isinstance(front, _WarmFront)
    meta = {
        k: v
        for k, v in (("content_type", content_type), ("name", name), ("filename", filename))
        if v is not None
    }
    entry = IndexEntry("u", 12, 12, checksum=checksum, bigfile_hash=bigfile_hash, meta=meta)
    for _ in range(2):  # the second time from the front's caches
        expected = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in front.service.base_headers(entry).items()
        ]
        assert front.headers_of(entry) == [*expected, (b"content-length", b"12")]


@given(
    value=st.text(
        st.sampled_from(list("0123456789-T:Zz.%3Aa+éx /"))
        | st.characters(blacklist_categories=("Cs",)),
        max_size=40,
    )
    | st.sampled_from(
        [quote(DAY), quote(DAY, safe=""), DAY.replace(":", "%3a"), "%3A%", "%%3A", "%FF%C3%A9"]
    )
)
def test_created_at_of_decodes_as_starlette_does(value: str) -> None:
    """The query's one ``created_at`` (no ``&`` or ``+``, which never take this path) reads
    as Starlette's ``QueryParams`` reads it, percent-escapes and invalid UTF-8 included."""
    from starlette.datastructures import QueryParams

    raw = value.encode("utf-8")
    if b"&" in raw or b"+" in raw or b"#" in raw:
        return
    query = b"created_at=" + raw
    assert des_app._created_at_of(query) == QueryParams(query.decode("latin-1"))["created_at"]


def test_entry_with_an_etag_no_header_may_carry_takes_the_general_path(
    dataset_dir: Path,
) -> None:
    from des_format import IndexEntry

    des = DesSettings(backend="local", base_dir=dataset_dir, n_bits=N_BITS)
    front = create_app(HttpSettings(des=des), registry=CollectorRegistry()).files_front
    assert isinstance(front, _WarmFront)
    bad = IndexEntry("u", 12, 12, checksum=None, bigfile_hash="ab\ncd" * 4, meta={})
    assert front.headers_of(bad) is None
    good = IndexEntry("u", 12, 12, checksum=None, bigfile_hash="ab" * 32, meta={})
    assert front.headers_of(good) is not None
