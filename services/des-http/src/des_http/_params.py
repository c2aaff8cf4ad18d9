"""The parameters of the file endpoints: how the OpenAPI document describes them, the
``{uid}`` path convertor, and the uid check the routes share (``_app``, ``_delete``)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.convertors import Convertor, register_url_convertor

from ._files import uid_of

UID_DESCRIPTION = (
    "The file's uid, as given to the packer: printable text of at most 1,024 bytes of UTF-8."
)
UID_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
CREATED_AT_DESCRIPTION = (
    "The file's creation time, ISO 8601 in UTC, e.g. `2024-01-01T00:00:00Z` "
    "(with the packer's n_bits it names the shard holding the file)."
)


# The file endpoints read their parameters themselves (FastAPI's per-parameter resolution
# was half of the CPU time of a request); this is how the OpenAPI document describes them.
FILE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "uid",
        "in": "path",
        "required": True,
        "description": UID_DESCRIPTION,
        "schema": {"type": "string", "minLength": 1, "pattern": UID_PATTERN},
    },
    {
        "name": "created_at",
        "in": "query",
        "required": True,
        "description": CREATED_AT_DESCRIPTION,
        "schema": {"type": "string", "format": "date-time"},
        "example": "2024-01-01T00:00:00Z",
    },
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "One byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. "
        "Several ranges are answered with the whole file (200).",
        "schema": {"type": "string"},
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "ETags the client holds; a match is answered 304 Not Modified.",
        "schema": {"type": "string"},
    },
    {
        "name": "If-Range",
        "in": "header",
        "required": False,
        "description": "Honour Range only if the file's ETag is this (strong) one.",
        "schema": {"type": "string"},
    },
]


class _UidConvertor(Convertor[str]):
    """The uid path segment: anything, slashes and newlines included (validated later, so a
    uid with a control character gets a 400 that says so, not a 404 from the router)."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("des_uid", _UidConvertor())


def checked_uid(request: Request) -> str:
    """The ``{uid}`` path parameter, refused (InvalidUid) if its bytes are not UTF-8."""
    uid: str = request.path_params["uid"]
    if "\ufffd" in uid:
        uid_of({"path": "/files/" + uid, "raw_path": request.scope.get("raw_path")})
    return uid
