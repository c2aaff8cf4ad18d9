"""Signed, expiring links to one file: sign and verify, pure functions (standard library only).

A link is the service's own URL path with two more query parameters::

    /files/<uid>?created_at=2024-01-01T00:00:00Z&expires=1704070800&sig=<43 characters>

``sig`` is the HMAC-SHA256, under a key of at least 32 bytes (``DES_LINK_KEY``), of the uid,
the UTC day of created_at (``YYYYMMDD``: all routing needs) and the expiry (Unix seconds),
encoded as URL-safe base64 without padding. Whoever holds the link may read that one file,
until the expiry, with no other credential; the service checks it with the key alone (no
database). The signed message is length-prefixed, so no choice of uid can make two different
(uid, day, expiry) triples sign alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from enum import Enum
from urllib.parse import quote

from ._errors import SettingsError
from ._routing import date_dir_of, format_created_at, parse_date_dir, validate_uid

__all__ = [
    "LINK_KEY_VARIABLE",
    "MIN_LINK_KEY_BYTES",
    "LinkCheck",
    "link_key_from_env",
    "sign_link",
    "signed_link_path",
    "verify_link",
]

LINK_KEY_VARIABLE = "DES_LINK_KEY"
MIN_LINK_KEY_BYTES = 32
_DOMAIN = b"des-link-v1"


class LinkCheck(Enum):
    """The verdict on a presented link."""

    VALID = "valid"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad-signature"
    MALFORMED = "malformed"


def check_link_key(key: bytes, variable: str = LINK_KEY_VARIABLE) -> bytes:
    if len(key) < MIN_LINK_KEY_BYTES:
        raise SettingsError(
            f"{variable} is {len(key)} bytes; a link key needs at least {MIN_LINK_KEY_BYTES} "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def link_key_from_env(env: Mapping[str, str]) -> bytes | None:
    """The key of ``DES_LINK_KEY`` (its UTF-8 bytes), None when unset or empty; a key shorter
    than 32 bytes raises ``SettingsError``."""
    text = env.get(LINK_KEY_VARIABLE, "").strip()
    if not text:
        return None
    return check_link_key(text.encode("utf-8"))


def _message(uid: str, day: str, expires: int) -> bytes:
    parts = (_DOMAIN, uid.encode("utf-8"), day.encode("ascii"), str(expires).encode("ascii"))
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_link(key: bytes, uid: str, day: str, expires: int) -> str:
    """The ``sig`` of (uid, day ``YYYYMMDD``, expiry in Unix seconds)."""
    check_link_key(key)
    parse_date_dir(day)
    mac = hmac.new(key, _message(validate_uid(uid), day, int(expires)), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def verify_link(
    key: bytes, uid: str, day: str, expires: str | int, sig: str, *, now: float
) -> LinkCheck:
    """Check a presented link at time ``now`` (Unix seconds). Compares in constant time; an
    expired link is EXPIRED only when its signature is right (otherwise BAD_SIGNATURE)."""
    try:
        when = int(expires)
        parse_date_dir(day)
        validate_uid(uid)
    except (ValueError, TypeError):
        return LinkCheck.MALFORMED
    if not isinstance(expires, int) and not str(expires).isdigit():
        return LinkCheck.MALFORMED
    mac = hmac.new(key, _message(uid, day, when), hashlib.sha256)
    want = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
    if not hmac.compare_digest(want, sig.encode("ascii", "replace")):
        return LinkCheck.BAD_SIGNATURE
    if now >= when:
        return LinkCheck.EXPIRED
    return LinkCheck.VALID


def signed_link_path(key: bytes, uid: str, created_at: str, expires: int) -> str:
    """The service path of a signed link to ``uid`` (created at ``created_at``) valid until
    ``expires`` (Unix seconds)."""
    canonical = format_created_at(created_at)
    sig = sign_link(key, uid, date_dir_of(canonical), expires)
    return (
        f"/files/{quote(uid, safe='')}?created_at={quote(canonical, safe='')}"
        f"&expires={int(expires)}&sig={sig}"
    )
