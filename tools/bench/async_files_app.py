"""GET /files through ``open_async_retriever`` under a minimal raw ASGI edge (benchmarks only).

A stand-in for des-http's GET path while its one GET/HEAD implementation is being rebuilt
(issue 17, part 2): it does what the service does per request (request id, routing,
``AsyncRetriever.open``, streaming the verified chunks, one JSON access-log line through
des-http's own logger) and nothing else (no auth, no ranges, no conditional requests, no
metrics). Settings come from the same ``DES_*`` variables; run under uvicorn as des-http runs:

    python tools/bench/async_files_app.py --port 8080
"""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import parse_qs

from des_format import DesFormatError, EntryDeleted, EntryNotFound
from des_http._logging import configure_logging, log_access, plan_request_id
from des_http._retrieval import media_type_of, open_async_retriever, plan_object_key
from des_routing import DesSettings


def build(settings: DesSettings) -> Any:
    retriever = open_async_retriever(settings)
    n_bits = settings.zones.n_bits if settings.zones is not None else settings.n_bits

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        started = time.perf_counter()
        scope.setdefault("state", {})
        request_id = plan_request_id(None)
        path: str = scope["path"]
        status, sent = 404, 0
        headers = [(b"x-request-id", request_id.encode())]
        if path == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        try:
            uid = path.removeprefix("/files/")
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            key = plan_object_key(uid, query["created_at"][0], n_bits)
            opened = await retriever.open(key, uid)
        except (EntryNotFound, EntryDeleted, KeyError, ValueError, DesFormatError) as exc:
            status = 410 if isinstance(exc, EntryDeleted) else 404
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            log_access(scope, request_id, status=status, sent=0, started=started, error=exc)
            return
        entry = opened.entry
        headers += [
            (b"content-length", str(entry.size).encode()),
            (b"content-type", media_type_of(entry).encode("latin-1")),
            (b"etag", entry.etag.encode("latin-1")),
        ]
        status = 200
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            async for chunk in opened.aiter_bytes():
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await opened.aclose()
            log_access(scope, request_id, status=status, sent=sent, started=started, error=None)

    return app


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    settings = DesSettings.from_env()
    configure_logging("INFO")
    uvicorn.run(
        build(settings),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
