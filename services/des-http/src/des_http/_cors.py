"""CORS for browsers on other origins (off unless ``DES_CORS_ORIGINS`` is set).

``DES_CORS_ORIGINS`` is ``*`` (any origin) or a comma-separated list of origins
(``https://app.example.com,http://localhost:3000``). Answers to an allowed origin carry
``Access-Control-Allow-Origin`` and expose ``ETag``, ``Content-Range``, ``Content-Length``,
``Accept-Ranges`` and ``X-Request-ID``; preflights (``OPTIONS`` with
``Access-Control-Request-Method``) are answered here, before authentication and without
touching storage, allowing ``GET``, ``HEAD`` and ``POST`` with the headers ``Range``,
``If-None-Match``, ``If-Range``, ``Authorization``, ``Content-Type`` and ``X-Request-ID``.
No credentials mode: bearer tokens travel in ``Authorization``, never in cookies.

:class:`CorsPolicy` decides (pure); :class:`CorsMiddleware` is the thin ASGI layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._problems import ConfigError

__all__ = ["CORS_VARIABLE", "CorsMiddleware", "CorsPolicy", "install_cors"]

CORS_VARIABLE = "DES_CORS_ORIGINS"
ALLOW_METHODS = b"GET, HEAD, POST"
ALLOW_HEADERS = b"Range, If-None-Match, If-Range, Authorization, Content-Type, X-Request-ID"
EXPOSE_HEADERS = b"ETag, Content-Range, Content-Length, Accept-Ranges, X-Request-ID"
MAX_AGE = b"600"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which origins may read answers: any (``*``) or the listed ones."""

    origins: frozenset[str]
    any_origin: bool = False

    @classmethod
    def parse(cls, text: str) -> CorsPolicy | None:
        """The policy of a ``DES_CORS_ORIGINS`` value (None when empty); ``ConfigError``
        naming a value that is not an origin."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            return None
        if items == ["*"]:
            return cls(frozenset(), any_origin=True)
        origins = set()
        for item in items:
            parts = urlsplit(item)
            if (
                item == "*"
                or parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ConfigError(
                    CORS_VARIABLE,
                    f"{item!r} is not an origin; write '*' alone, or origins such as "
                    "https://app.example.com,http://localhost:3000 (scheme, host, port only)",
                )
            origins.add(f"{parts.scheme}://{parts.netloc}".lower())
        return cls(frozenset(origins))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CorsPolicy | None:
        return cls.parse(env.get(CORS_VARIABLE, ""))

    def allow_origin(self, origin: bytes | None) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for a request's ``Origin``, or None."""
        if origin is None:
            return None
        if self.any_origin:
            return b"*"
        text = origin.decode("latin-1").lower()
        return origin if text in self.origins else None

    def response_headers(self, allowed: bytes) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"access-control-allow-origin", allowed),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
        ]
        if not self.any_origin:
            headers.append((b"vary", b"Origin"))
        return headers

    def preflight_headers(self, allowed: bytes) -> list[tuple[bytes, bytes]]:
        return [
            *self.response_headers(allowed),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            (b"content-length", b"0"),
        ]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class CorsMiddleware:
    """Answers preflights and adds the CORS headers to answers for allowed origins."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        allowed = self.policy.allow_origin(origin)
        if (
            scope["method"] == "OPTIONS"
            and origin is not None
            and _header(scope, b"access-control-request-method") is not None
        ):
            # A preflight: answered here, never reaching auth or storage. A refused origin
            # gets no CORS headers, which is how a browser learns the refusal.
            headers = (
                self.policy.preflight_headers(allowed)
                if allowed
                else [(b"content-length", b"0"), (b"vary", b"Origin")]
            )
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if allowed is None:
            await self.app(scope, receive, send)
            return
        extra = self.policy.response_headers(allowed)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def install_cors(app: Any, policy: CorsPolicy | None) -> None:
    """Put CORS in front of everything ``app`` (des-http's app) answers: its middleware
    stack, its front door for ``GET``/``HEAD /files`` and its quick path (which then leaves
    requests with an ``Origin`` to the front door)."""
    if policy is None:
        return
    app.add_middleware(CorsMiddleware, policy=policy)
    if app.files_front is not None:
        app.files_front = CorsMiddleware(app.files_front, policy)
    quick: Callable[[Scope], Any] | None = app.quick_answer
    if quick is not None:

        def quick_without_origin(scope: Scope) -> Any:
            return None if _header(scope, b"origin") is not None else quick(scope)

        app.quick_answer = quick_without_origin
