"""CORS (DES_CORS_ORIGINS) and signed links (DES_LINK_KEY) at the service's edge."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from des_http import ConfigError, HttpSettings
from des_http_testkit import DAY, MakeHarness, files_url, sample
from des_routing import SettingsError, sign_link, signed_link_path

KEY = b"0123456789abcdef0123456789abcdef"
TOKEN = "t0ken-for-reads"
ORIGIN = "http://app.example:8080"


def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()} app\n")
    return path


def test_preflight_answered_without_storage_or_token(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    h = make_harness(cors_origins=ORIGIN, auth_tokens_file=tokens(tmp_path))
    r = h.client.options(
        files_url("1001"),
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range, authorization",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "Range" in r.headers["access-control-allow-headers"]
    assert "Authorization" in r.headers["access-control-allow-headers"]
    assert r.headers["access-control-allow-methods"] == "GET, HEAD, POST"
    assert r.headers["vary"] == "Origin"
    assert h.store.calls == []
    refused = h.client.options(
        files_url("1001"),
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert refused.status_code == 204
    assert "access-control-allow-origin" not in refused.headers
    assert h.store.calls == []


@pytest.mark.parametrize("nowait", [True, False])
def test_answers_carry_cors_headers_for_allowed_origins(
    make_harness: MakeHarness, nowait: bool
) -> None:
    h = make_harness(cors_origins=f"https://other.example, {ORIGIN}", nowait_reads=nowait)
    s = sample("1001")
    for _ in range(2):  # cold, then warm (the quick path when reads without I/O are on)
        r = h.client.get(files_url("1001"), headers={"Origin": ORIGIN})
        assert r.status_code == 200
        assert r.content == s.data
        assert r.headers["access-control-allow-origin"] == ORIGIN
        expose = r.headers["access-control-expose-headers"]
        for name in ("ETag", "Content-Range", "Content-Length"):
            assert name in expose
    r = h.client.get(files_url("1001"), headers={"Origin": ORIGIN, "Range": "bytes=0-4"})
    assert r.status_code == 206
    assert r.content == s.data[:5]
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = h.client.get(files_url("1001"), headers={"Origin": "http://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    r = h.client.get(files_url("1001"))
    assert "access-control-allow-origin" not in r.headers


def test_any_origin_and_off_by_default(make_harness: MakeHarness) -> None:
    h = make_harness(cors_origins="*")
    r = h.client.get(files_url("1001"), headers={"Origin": "http://x.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "vary" not in r.headers
    off = make_harness()
    r = off.client.get(files_url("1001"), headers={"Origin": "http://x.example"})
    assert "access-control-allow-origin" not in r.headers
    r = off.client.options(
        files_url("1001"),
        headers={"Origin": "http://x.example", "Access-Control-Request-Method": "GET"},
    )
    assert r.status_code == 405


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("example.com", "'example.com' is not an origin"),
        ("https://a.example/path", "'https://a.example/path' is not an origin"),
        ("*, https://a.example", "'*' is not an origin; write '*' alone"),
    ],
)
def test_bad_cors_origins_are_refused_at_start(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        HttpSettings.from_env({"DES_CORS_ORIGINS": value})
    assert info.value.variable == "DES_CORS_ORIGINS"


def test_short_link_key_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="DES_LINK_KEY is 5 bytes"):
        HttpSettings.from_env({"DES_LINK_KEY": "short"})
    assert HttpSettings.from_env({"DES_LINK_KEY": KEY.decode()}).link_key == KEY


def test_signed_link_reads_without_a_token(make_harness: MakeHarness, tmp_path: Path) -> None:
    h = make_harness(link_key=KEY, auth_tokens_file=tokens(tmp_path))
    s = sample("doc-\u00e9t\u00e9")
    assert h.client.get(files_url(s.uid)).status_code == 401
    path = signed_link_path(KEY, s.uid, DAY, int(time.time()) + 600)
    r = h.client.get(path)
    assert r.status_code == 200
    assert r.content == s.data
    r = h.client.head(path)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(s.data))
    r = h.client.get(path, headers={"Range": "bytes=2-5"})
    assert r.status_code == 206
    assert r.content == s.data[2:6]
    # the link names one file: another uid (or day) with the same parameters is refused
    other = path.replace(quote(s.uid, safe=""), "1001")
    r = h.client.get(other)
    assert r.status_code == 403
    assert r.json()["detail"] == "the link's signature does not match this file and expiry"
    assert r.headers["content-type"] == "application/problem+json"
    # and it opens nothing else
    r = h.client.get(f"/ready?{path.split('?')[1]}")
    assert r.status_code == 401


def test_expired_and_forged_links_get_403(make_harness: MakeHarness, tmp_path: Path) -> None:
    h = make_harness(link_key=KEY, auth_tokens_file=tokens(tmp_path))
    expired = signed_link_path(KEY, "1001", DAY, 1_700_000_000)
    r = h.client.get(expired)
    assert r.status_code == 403
    assert r.json()["detail"] == "this link expired at 2023-11-14T22:13:20Z; ask for a new one"
    assert r.json()["type"].endswith("link-refused")
    assert h.client.head(expired).status_code == 403
    forged = signed_link_path(b"x" * 32, "1001", DAY, int(time.time()) + 600)
    assert h.client.get(forged).status_code == 403
    no_expiry = f"{files_url('1001')}&sig={sign_link(KEY, '1001', '20240305', 1)}"
    r = h.client.get(no_expiry)
    assert r.status_code == 403
    assert r.json()["detail"] == "a signed link needs created_at, expires and sig"
    assert h.store.calls == []  # refused before any storage request


def test_links_refused_when_no_key_is_configured(make_harness: MakeHarness) -> None:
    h = make_harness()
    path = signed_link_path(KEY, "1001", DAY, int(time.time()) + 600)
    r = h.client.get(path)
    assert r.status_code == 403
    assert "signed links are not enabled on this service (DES_LINK_KEY" in r.json()["detail"]


def test_sig_is_never_logged(
    make_harness: MakeHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_harness(link_key=KEY, auth_tokens_file=tokens(tmp_path))
    good = signed_link_path(KEY, "1001", DAY, int(time.time()) + 600)
    bad = signed_link_path(KEY, "1001", DAY, 1_700_000_000)
    with caplog.at_level(logging.INFO, logger="des_http.access"):
        assert h.client.get(good).status_code == 200
        assert h.client.get(bad).status_code == 403
    lines = [r for r in caplog.records if r.name == "des_http.access"]
    assert len(lines) == 2
    for record, status in zip(lines, (200, 403), strict=True):
        fields = record.__dict__["fields"]
        assert fields["status"] == status
        assert fields["query"] == "created_at=2024-03-05T10%3A20%3A30Z"
        text = json.dumps(fields)
        for secret in (good.split("sig=")[1], bad.split("sig=")[1]):
            assert secret not in text


def test_a_parameter_ending_in_sig_is_not_a_link(make_harness: MakeHarness) -> None:
    h = make_harness(link_key=KEY)
    r = h.client.get(files_url("1001") + "&xsig=1")
    assert r.status_code == 200
    assert r.content == sample("1001").data
