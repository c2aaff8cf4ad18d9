"""``DELETE /files/{uid}?created_at=...``: tombstone one file (admin scope when auth is on).

The tombstone goes into the shard's own index through the append path (des-format's
``delete_entries``), conditional on the version read, so every replica and every backend sees
it without a request more on the read path: the shard's ETag changes, which invalidates
cached indexes at their next payload read (If-Match). Bytes that
live in a continuation part or an unshared big-file object are erased at once (des-format's
delete-time erasure); bytes in the head object stay until ``des repack`` erases them. The
answer says which (``state``: ``erased`` or ``hidden``, with ``kept_because``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from des_format import EntryNotFound, ShardEditor, delete_entries
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from ._params import FILE_PARAMETERS, checked_uid
from ._problems import BadRequest
from ._retrieval import plan_object_key

if TYPE_CHECKING:
    from ._app import _Service

__all__ = ["DeleteResponse", "install_delete_route"]


class DeleteResponse(BaseModel):
    uid: str = Field(examples=["doc-000001"])
    state: str = Field(
        description=(
            "Reads answer 410 from now on in both states. erased: no current object holds "
            "the file's bytes any more; hidden: they stay until `des repack` erases them "
            "(kept_because says why)."
        ),
        examples=["hidden", "erased"],
    )
    already_deleted: bool = Field(description="The file had been deleted before this call.")
    kept_because: str | None = Field(
        default=None,
        description="Why the bytes are still stored (null when state is erased).",
        examples=["payload in the head object: des repack erases it"],
    )


DELETE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": DeleteResponse, "description": "Deleted (or already deleted)."},
    400: {"description": "Missing or invalid created_at or uid."},
    401: {"description": "No or unknown bearer token (when auth is on)."},
    403: {"description": "The token lacks the admin scope."},
    404: {"description": "No such file."},
    503: {
        "description": (
            "Storage unreachable, the shard kept changing, or the store's layout record "
            "changed under the service; retry."
        )
    },
}


class _LazyEditor:
    def __init__(self, make: Callable[[], ShardEditor]) -> None:
        self._make = make
        self._editor: ShardEditor | None = None
        self._lock = threading.Lock()

    def get(self) -> ShardEditor:
        with self._lock:
            if self._editor is None:
                self._editor = self._make()
            return self._editor


def install_delete_route(
    app: FastAPI, service: _Service, make_editor: Callable[[], ShardEditor]
) -> None:
    """Add ``DELETE /files/{uid}`` to ``app``. ``make_editor()`` builds the shard editor on
    the first delete (``des_storage_s3.open_editor(settings)`` by default)."""

    editor = _LazyEditor(make_editor)

    def tombstone(key: str, uid: str) -> DeleteResponse:
        result = delete_entries(editor.get(), key, [uid])
        if result.missing:
            raise EntryNotFound(uid)
        if service.cache is not None:
            service.cache.discard(key)
        kept = result.why_kept(uid)
        return DeleteResponse(
            uid=uid,
            state="erased" if uid in result.gone else "hidden",
            already_deleted=uid in result.already,
            kept_because=kept,
        )

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        # Starlette's Allow names the methods of the first route matching the path only;
        # name those of every route with the same path template.
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            methods: set[str] = set()
            template: str | None = None
            for route in app.router.routes:
                path = getattr(route, "path", None)
                if template is None and route.matches(dict(request.scope))[0] is Match.PARTIAL:
                    template = path
                if template is not None and path == template:
                    methods.update(getattr(route, "methods", None) or ())
            if methods:
                exc = StarletteHTTPException(
                    405, detail=exc.detail, headers={"Allow": ", ".join(sorted(methods))}
                )
        return service.error(request, exc)

    app.add_exception_handler(StarletteHTTPException, method_not_allowed)

    @app.delete(
        "/files/{uid:des_uid}",
        operation_id="delete_file",
        summary="Delete a file",
        description=(
            "Marks the file deleted in its shard's index: from then on GET and HEAD answer "
            "410 Gone on every replica. Bytes in continuation parts and unshared big files are "
            "erased at once; bytes in the head object later by `des repack` (see `state`). "
            "Needs the admin scope when authentication is on. Idempotent."
        ),
        response_model=DeleteResponse,
        responses=DELETE_RESPONSES,
        openapi_extra={"parameters": FILE_PARAMETERS[:2]},  # uid, created_at
        tags=["files"],
    )
    async def delete_file(request: Request) -> Response:
        try:
            service.check_layout()
            uid = checked_uid(request)
            created_at = request.query_params.get("created_at")
            if created_at is None:
                raise BadRequest(
                    "the query parameter created_at is required: the file's creation time as "
                    "ISO 8601, e.g. ?created_at=2024-01-01T00:00:00Z"
                )
            key = plan_object_key(uid, created_at, service.n_bits)
            body = await service.in_thread(tombstone, key, uid)
        except Exception as exc:  # noqa: BLE001 - every error becomes a problem answer
            return service.error(request, exc)
        return JSONResponse(body.model_dump(), 200)
