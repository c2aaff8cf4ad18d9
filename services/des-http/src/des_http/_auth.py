"""Optional bearer-token authentication (off unless ``DES_AUTH_TOKENS_FILE`` is set).

The tokens file holds SHA-256 digests of tokens, never the tokens themselves, one per line::

    # scope  digest                                                                    name
    read     sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  frontend
    admin    sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752  ops

``des-http hash-token`` prints the line for a token read from standard input. A presented
token is hashed and compared with every stored digest through :func:`hmac.compare_digest`.
Scopes: ``read`` (files, batch, readiness, the API document) and ``admin`` (everything,
including ``/metrics``). ``/health`` never needs a token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ._problems import ConfigError, Forbidden, Unauthorized

TOKENS_VARIABLE = "DES_AUTH_TOKENS_FILE"


class Scope(Enum):
    READ = "read"
    ADMIN = "admin"

    def covers(self, needed: Scope) -> bool:
        return self is Scope.ADMIN or needed is Scope.READ


@dataclass(frozen=True, slots=True)
class TokenRecord:
    digest: bytes  # SHA-256 of the token's UTF-8 bytes
    scope: Scope
    name: str


def digest_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def serialize_token_line(token: str, scope: Scope, name: str) -> str:
    """The tokens-file line for ``token`` (what ``des-http hash-token`` prints)."""
    return f"{scope.value} sha256:{digest_token(token).hex()} {name}".rstrip()


@dataclass(frozen=True, slots=True)
class TokenTable:
    records: tuple[TokenRecord, ...]

    def authenticate(self, token: str) -> TokenRecord | None:
        """The record for ``token``; every digest is compared, matching or not."""
        presented = digest_token(token)
        found: TokenRecord | None = None
        for record in self.records:
            if hmac.compare_digest(presented, record.digest) and found is None:
                found = record
        return found

    def authorize(self, authorization: str | None, needed: Scope) -> TokenRecord:
        """Check an ``Authorization`` header; raise ``Unauthorized`` or ``Forbidden``."""
        if not authorization:
            raise Unauthorized(
                "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'",
                invalid_token=False,
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "only bearer tokens are accepted: send 'Authorization: Bearer <token>'",
                invalid_token=True,
            )
        record = self.authenticate(token)
        if record is None:
            raise Unauthorized("the bearer token is not valid", invalid_token=True)
        if not record.scope.covers(needed):
            raise Forbidden(
                f"this endpoint needs a token with scope {needed.value!r}; "
                f"the token has scope {record.scope.value!r}",
                needed_scope=needed.value,
            )
        return record


def parse_token_file(text: str, source: str = TOKENS_VARIABLE) -> TokenTable:
    """Parse a tokens file (see the module doc). Errors name the file and line."""
    records: list[TokenRecord] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        where = f"{TOKENS_VARIABLE} ({source}), line {lineno}"
        if len(fields) < 2:
            raise ConfigError(
                TOKENS_VARIABLE,
                f"{where}: expected '<read|admin> sha256:<64 hex digits> [name]'",
            )
        scope_s, digest_s = fields[0], fields[1]
        name = fields[2].strip() if len(fields) == 3 else f"token-{lineno}"
        try:
            scope = Scope(scope_s.lower())
        except ValueError:
            raise ConfigError(
                TOKENS_VARIABLE, f"{where}: unknown scope {scope_s!r}; use 'read' or 'admin'"
            ) from None
        algo, _, hexdigest = digest_s.partition(":")
        if algo.lower() != "sha256" or len(hexdigest) != 64:
            raise ConfigError(
                TOKENS_VARIABLE,
                f"{where}: expected a digest 'sha256:<64 hex digits>' "
                "(des-http hash-token prints one), not a token",
            )
        try:
            digest = bytes.fromhex(hexdigest)
        except ValueError:
            raise ConfigError(TOKENS_VARIABLE, f"{where}: the digest is not hexadecimal") from None
        records.append(TokenRecord(digest, scope, name))
    if not records:
        raise ConfigError(
            TOKENS_VARIABLE,
            f"{source} lists no token; add one or unset {TOKENS_VARIABLE} to turn auth off",
        )
    return TokenTable(tuple(records))


def read_token_file(path: str | os.PathLike[str]) -> TokenTable:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            TOKENS_VARIABLE, f"cannot read the tokens file {os.fspath(path)!r}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            TOKENS_VARIABLE,
            f"the tokens file {os.fspath(path)!r} is not UTF-8 text (byte {exc.start})",
        ) from None
    return parse_token_file(text, os.fspath(path))


def needed_scope(path: str, method: str = "GET") -> Scope | None:
    """The scope an endpoint needs (``None``: open to everyone)."""
    if method == "DELETE":
        return Scope.ADMIN
    if path == "/health":
        return None
    if path == "/metrics":
        return Scope.ADMIN
    return Scope.READ
