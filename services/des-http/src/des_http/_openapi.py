"""The OpenAPI document: every endpoint, parameter, response and error, as served."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An error, as RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:des:problem:not-found"]},
        "title": {"type": "string", "examples": ["File not found"]},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE_CONTENT = {"application/octet-stream": _BINARY, "*/*": _BINARY}


def _header(description: str, schema_type: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": schema_type}}


_FILE_HEADERS = {
    "ETag": _header("Strong validator derived from the stored checksum and size."),
    "Cache-Control": _header("`public, max-age=31536000, immutable` unless configured."),
    "Accept-Ranges": _header("Always `bytes`."),
    "Content-Length": _header("Bytes in the body (for HEAD: what GET would send).", "integer"),
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
    }
    if headers:
        out["headers"] = headers
    return out


_NO_STORE = {"Cache-Control": _header("Always `no-store` on errors.")}
_RETRY = {
    **_NO_STORE,
    "Retry-After": _header("Seconds to wait before retrying.", "integer"),
}

FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The whole file (also the answer to several ranges at once).",
        "content": _FILE_CONTENT,
        "headers": _FILE_HEADERS,
    },
    206: {
        "description": "The one requested byte range.",
        "content": _FILE_CONTENT,
        "headers": {
            **_FILE_HEADERS,
            "Content-Range": _header("`bytes first-last/size`."),
        },
    },
    304: {
        "description": "If-None-Match matched: the client's copy is current.",
        "headers": {"ETag": _FILE_HEADERS["ETag"]},
    },
    400: _problem(
        "The uid or created_at is malformed (the detail says the expected format).", _NO_STORE
    ),
    404: _problem("No file with this uid was packed for this created_at.", _NO_STORE),
    410: _problem("The file was deleted (its shard holds a deletion marker).", _NO_STORE),
    416: _problem(
        "The one requested range lies outside the file.",
        {**_NO_STORE, "Content-Range": _header("`bytes */size`.")},
    ),
    500: _problem("Stored data failed verification or cannot be read.", _NO_STORE),
    503: _problem(
        "The storage backend is unreachable, or the store's layout record changed to other "
        "settings while the service ran (`store-layout-changed`); retry later.",
        _RETRY,
    ),
}

BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "A `multipart/mixed` stream with one part per item. Each part has headers "
            "`X-DES-Item`, `X-DES-Uid`, `X-DES-Status` and `Content-Length`; its body is the "
            "file (`application/octet-stream`) or a problem JSON."
        ),
        "content": {"multipart/mixed": {"schema": {"type": "string", "format": "binary"}}},
    },
    400: _problem('The body is not a JSON object `{"items": [{uid, created_at}, ...]}`.'),
    413: _problem("More items than DES_MAX_BATCH_ITEMS.", _NO_STORE),
    503: _problem(
        "The store's layout record changed to other settings while the service ran "
        "(`store-layout-changed`); retry later.",
        _RETRY,
    ),
}

READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: _problem(
        "The storage backend did not answer, or the store's layout record no longer agrees "
        "with the service's settings (the detail names both values).",
        _RETRY,
    ),
}

API_DESCRIPTION = """\
Serves files packed into DES shards. A file is addressed by its `uid` and `created_at`;
the shard holding it is computed from them (no lookup service), then read with byte-range
requests: footer and index (cached), then the payload.

Errors are `application/problem+json` with `Cache-Control: no-store`.

Authentication is optional (off by default). When the service is started with
`DES_AUTH_TOKENS_FILE`, every endpoint but `/health` needs `Authorization: Bearer <token>`;
tokens with scope `read` may use the file endpoints, `/ready` and this document, `/metrics`
needs scope `admin`.
"""


def install_openapi(app: FastAPI, *, auth: bool, max_batch_items: int | None = None) -> None:
    """Replace FastAPI's generated document with the service's own (400 instead of 422,
    problem JSON on every error, bearer auth when enabled, the configured batch limit)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=API_DESCRIPTION,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        batch_items = schemas.get("BatchRequest", {}).get("properties", {}).get("items")
        if max_batch_items is not None and batch_items is not None:
            batch_items["maxItems"] = max_batch_items  # more is a 413 (DES_MAX_BATCH_ITEMS)
        if auth:
            components["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token listed (as a SHA-256 digest) in DES_AUTH_TOKENS_FILE.",
                }
            }
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = _problem("The request is malformed.", _NO_STORE)
                if auth and path != "/health":
                    operation["security"] = [{"bearer": []}]
                    responses["401"] = _problem(
                        "No valid bearer token.",
                        {**_NO_STORE, "WWW-Authenticate": _header('`Bearer realm="des"`.')},
                    )
                    responses["403"] = _problem(
                        "The token's scope does not cover this endpoint.",
                        {**_NO_STORE, "WWW-Authenticate": _header("Names the needed scope.")},
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
