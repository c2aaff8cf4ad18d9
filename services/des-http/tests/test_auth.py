"""Optional bearer-token authentication: tokens file, scopes, 401/403 problem answers."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from des_http import ConfigError, Scope, parse_token_file, read_token_file
from des_http_testkit import MakeHarness, files_url, sample

READ_TOKEN = "r3ad-t0ken-Zq"
ADMIN_TOKEN = "adm1n-t0ken"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(
        "# scope digest name\n"
        f"read sha256:{digest(READ_TOKEN)} frontend\n"
        "\n"
        f"admin   SHA256:{digest(ADMIN_TOKEN).upper()}   ops team\n",
        encoding="utf-8",
    )
    return path


def test_parse_token_file_reads_scopes_and_names(tmp_path: Path) -> None:
    table = read_token_file(tokens_file(tmp_path))
    assert [(r.scope, r.name) for r in table.records] == [
        (Scope.READ, "frontend"),
        (Scope.ADMIN, "ops team"),
    ]
    assert table.authenticate(READ_TOKEN) == table.records[0]
    assert table.authenticate(ADMIN_TOKEN) == table.records[1]
    assert table.authenticate("nope") is None
    assert table.authenticate(digest(READ_TOKEN)) is None  # the digest is not a token


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("read\n", "line 1: expected '<read|admin> sha256:<64 hex digits> [name]'"),
        (f"write sha256:{'0' * 64}\n", "line 1: unknown scope 'write'; use 'read' or 'admin'"),
        ("# c\nread my-secret-token\n", "line 2: expected a digest 'sha256:<64 hex digits>'"),
        (f"read sha256:{'z' * 64}\n", "line 1: the digest is not hexadecimal"),
        ("# only comments\n", "lists no token"),
    ],
)
def test_bad_token_files_name_the_variable_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_token_file(text, "/etc/des/tokens")
    assert info.value.variable == "DES_AUTH_TOKENS_FILE"
    assert str(info.value).startswith("DES_AUTH_TOKENS_FILE: ")
    assert message in str(info.value)
    assert "my-secret-token" not in str(info.value)


def test_unreadable_tokens_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^DES_AUTH_TOKENS_FILE: cannot read the tokens file"):
        read_token_file(tmp_path / "missing")


def test_auth_is_off_by_default(make_harness: MakeHarness) -> None:
    h = make_harness()
    assert h.client.get(files_url("1001")).status_code == 200
    assert h.client.get("/metrics").status_code == 200


def test_enabled_auth_guards_every_endpoint_but_health(
    make_harness: MakeHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_harness(auth_tokens_file=tokens_file(tmp_path))
    c = h.client
    caplog.set_level(logging.INFO, logger="des_http")
    assert c.get("/health").status_code == 200

    for path in (files_url("1001"), "/ready", "/metrics", "/openapi.json"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == 'Bearer realm="des"'
        assert r.headers["content-type"] == "application/problem+json"
        assert json.loads(r.content)["type"] == "urn:des:problem:unauthorized"
    r = c.post("/files/batch", json={"items": []})
    assert r.status_code == 401

    bad = c.get(files_url("1001"), headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer realm="des", error="invalid_token"'
    basic = c.get(files_url("1001"), headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401

    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    ok = c.get(files_url("1001"), headers=read)
    assert (ok.status_code, ok.content) == (200, sample("1001").data)
    assert c.get("/ready", headers=read).status_code == 200
    denied = c.get("/metrics", headers=read)
    assert denied.status_code == 403
    assert denied.headers["www-authenticate"] == (
        'Bearer realm="des", error="insufficient_scope", scope="admin"'
    )
    assert json.loads(denied.content)["detail"] == (
        "this endpoint needs a token with scope 'admin'; the token has scope 'read'"
    )
    admin = c.get("/metrics", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert admin.status_code == 200

    logged = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert READ_TOKEN not in logged
    assert ADMIN_TOKEN not in logged
    assert "'principal': 'frontend'" in logged


def test_openapi_declares_bearer_auth_when_enabled(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    h = make_harness(auth_tokens_file=tokens_file(tmp_path))
    doc = h.client.get("/openapi.json", headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    get = doc["paths"]["/files/{uid}"]["get"]
    assert get["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(get["responses"])
    assert "security" not in doc["paths"]["/health"]["get"]
