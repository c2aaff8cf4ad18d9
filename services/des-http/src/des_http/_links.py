"""Signed, expiring links (``des link``; ``des_routing.sign_link``/``verify_link``).

A ``GET``/``HEAD /files/{uid}`` whose query holds ``sig`` is a link: :class:`LinkGate`
checks it with ``DES_LINK_KEY`` alone (no database, no request to storage) before the bearer
token check. A valid link lets the request through without a token (for that file only: the
signature covers the uid of the path and the day of ``created_at``); an expired, forged or
malformed one is refused with 403, and so is any link when no key is configured. The
``expires`` and ``sig`` parameters are taken out of the request's query before anything
logs it, so the access log never holds a usable link.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

from des_routing import LinkCheck, RoutingError, date_dir_of, verify_link
from starlette.types import ASGIApp, Receive, Scope, Send

from ._problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX

__all__ = ["SIGNED_LINK", "LinkGate", "is_link", "is_signed_link"]

#: Set (True) in the request's state for a request let through by a valid link.
SIGNED_LINK = "des_signed_link"
_PROBLEM_TYPE = PROBLEM_TYPE_PREFIX + "link-refused"


def is_signed_link(scope: Scope) -> bool:
    state = scope.get("state")
    return bool(state and state.get(SIGNED_LINK))


def is_link(scope: Scope) -> bool:
    """Whether a request carries a signed link (``sig`` in a ``GET``/``HEAD /files`` query)."""
    query: bytes = scope.get("query_string", b"")
    return (
        b"sig=" in query
        and scope["method"] in ("GET", "HEAD")
        and scope["path"].startswith("/files/")
        and len(scope["path"]) > 7
    )


def judge(
    key: bytes | None, uid: str, params: list[tuple[str, str]], now: float
) -> tuple[LinkCheck, str]:
    """(verdict, the reason a client is told) for the query parameters of a link."""
    if key is None:
        return LinkCheck.MALFORMED, (
            "signed links are not enabled on this service (DES_LINK_KEY is not set)"
        )
    found = dict(params)
    created_at, expires, sig = found.get("created_at"), found.get("expires"), found.get("sig")
    if created_at is None or expires is None or sig is None:
        return LinkCheck.MALFORMED, "a signed link needs created_at, expires and sig"
    try:
        day = date_dir_of(created_at)
    except RoutingError:
        return LinkCheck.MALFORMED, "the link's created_at is not an ISO 8601 time"
    verdict = verify_link(key, uid, day, expires, sig, now=now)
    if verdict is LinkCheck.EXPIRED:
        when = datetime.fromtimestamp(int(expires), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return verdict, f"this link expired at {when}; ask for a new one"
    if verdict is LinkCheck.BAD_SIGNATURE:
        return verdict, "the link's signature does not match this file and expiry"
    if verdict is LinkCheck.MALFORMED:
        return verdict, "the link's expires is not a whole number of seconds"
    return verdict, ""


class LinkGate:
    """Checks signed links before authentication; see the module doc."""

    def __init__(
        self, app: ASGIApp, key: bytes | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.key = key
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_link(scope):
            await self.app(scope, receive, send)
            return
        params = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if not any(k == "sig" for k, _ in params):  # "sig=" inside another parameter
            await self.app(scope, receive, send)
            return
        verdict, reason = judge(self.key, scope["path"][7:], params, self.clock())
        rest = [(k, v) for k, v in params if k not in ("sig", "expires")]
        # The same dict the access log reads when it writes its line: no sig in the log.
        scope["query_string"] = urlencode(rest).encode("latin-1")
        if verdict is LinkCheck.VALID:
            scope.setdefault("state", {})[SIGNED_LINK] = True
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "type": _PROBLEM_TYPE,
                "title": "Link refused",
                "status": 403,
                "detail": reason,
                "instance": scope["path"],
            },
            separators=(",", ":"),
        ).encode("utf-8")
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode("latin-1")),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
