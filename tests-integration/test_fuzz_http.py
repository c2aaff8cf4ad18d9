"""schemathesis over the whole OpenAPI document with authentication ON (des-http's own
conformance test covers auth off): with an admin token every answer is as documented and never
a 5xx; without a token, or with a wrong one, every operation but /health answers a documented
401 problem, whatever the generated request."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from des_format import LocalObjectStore, ShardWriter
from des_http import HttpSettings, create_app
from des_routing import DesSettings, locate_shard
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis import Case
from schemathesis.checks import (
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    unsupported_method,
)

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

ADMIN = "admin-token-for-fuzzing"
READER = "read-token-for-fuzzing"
DAY = "2024-01-01T00:00:00Z"


def _app() -> Any:
    base = Path(tempfile.mkdtemp(prefix="des-fuzz-http-"))
    for uid in ("1", "a/b", "caf\u00e9"):
        key = base / locate_shard(uid, DAY, 8).object_key
        key.parent.mkdir(parents=True, exist_ok=True)
        with open(key, "wb") as fh:
            w = ShardWriter(fh)
            w.add(uid, f"file {uid}".encode())
            w.close()
    tokens = base / "tokens"
    tokens.write_text(
        "".join(
            f"{scope} sha256:{hashlib.sha256(t.encode()).hexdigest()} {scope}-client\n"
            for scope, t in (("admin", ADMIN), ("read", READER))
        )
    )
    des = DesSettings(backend="local", base_dir=base, n_bits=8)
    return create_app(
        HttpSettings(des=des, auth_tokens_file=tokens, max_batch_items=10),
        store=LocalObjectStore(base),
        registry=CollectorRegistry(),
    )


APP = _app()
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", APP, headers={"Authorization": f"Bearer {ADMIN}"}
)
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _with_auth(case: Case, value: str | None) -> None:
    """Set (or drop) the Authorization header, whatever schemathesis generated for it."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if value is not None:
        headers["Authorization"] = value
    case.headers = headers


def _excluded(case: Case) -> list[Any]:
    # More than DES_MAX_BATCH_ITEMS items is documented (maxItems) and answered 413, a status
    # schemathesis does not count as a rejection; every other invalid body must be a 400.
    return [negative_data_rejection] if case.path == "/files/batch" else []


@schema.parametrize()
@FUZZ
def test_with_admin_token_every_answer_is_as_documented(case: Case) -> None:
    _with_auth(case, f"Bearer {ADMIN}")
    # The auth checks of schemathesis would resend this case's (valid) token; rejection of
    # missing and wrong tokens is tested for every operation by the next test instead.
    response = case.call_and_validate(
        excluded_checks=[ignored_auth, missing_required_header, *_excluded(case)]
    )
    documented = case.method.lower() in schema.raw_schema["paths"][case.path]
    if documented and case.path == "/files/batch" and response.status_code >= 400:
        assert response.status_code in (400, 413), response.status_code


@schema.parametrize()
@FUZZ
def test_without_token_only_health_answers(case: Case) -> None:
    for auth in (None, "Bearer wrong", "Basic eDp5", f"Bearer {ADMIN} x", "Bearer "):
        _with_auth(case, auth)
        response = case.call()
        documented = case.method.lower() in schema.raw_schema["paths"][case.path]
        if case.path == "/health" and documented:
            assert response.status_code == 200
            continue
        if case.path == "/health":
            # Undocumented methods: 405, or 401 for DELETE (it needs an admin token anywhere).
            assert response.status_code in (401, 405), (case.method, response.status_code)
            continue
        # Authentication comes before routing: an undocumented method is a 401 too.
        assert response.status_code == 401, (case.method, case.path, response.status_code)
        assert response.headers["content-type"] == ["application/problem+json"]
        assert response.headers["www-authenticate"][0].startswith("Bearer")
        case.validate_response(response)


@schema.parametrize()
@FUZZ
def test_read_token_never_reaches_metrics(case: Case) -> None:
    _with_auth(case, f"Bearer {READER}")
    response = case.call()
    documented = case.method.lower() in schema.raw_schema["paths"][case.path]
    if case.path == "/metrics" and documented:
        assert response.status_code == 403
    else:
        assert response.status_code < 500
        # A read token asking for a method that needs admin (DELETE) gets 403 before routing.
        case.validate_response(
            response,
            excluded_checks=[
                unsupported_method,
                ignored_auth,
                missing_required_header,
                *_excluded(case),
            ],
        )
