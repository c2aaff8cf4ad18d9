"""Signed links: sign/verify are pure, bound to uid, day and expiry, and refuse short keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from des_routing import (
    LinkCheck,
    SettingsError,
    link_key_from_env,
    sign_link,
    signed_link_path,
    verify_link,
)
from hypothesis import given
from hypothesis import strategies as st

KEY = b"k" * 32


def test_signature_is_hmac_sha256_urlsafe_base64() -> None:
    sig = sign_link(KEY, "uid-1", "20240101", 1_700_000_000)
    parts = [b"des-link-v1", b"uid-1", b"20240101", b"1700000000"]
    msg = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    want = base64.urlsafe_b64encode(hmac.new(KEY, msg, hashlib.sha256).digest()).rstrip(b"=")
    assert sig == want.decode()
    assert len(sig) == 43
    assert not set(sig) & set("=+/")


def test_verify_verdicts() -> None:
    sig = sign_link(KEY, "uid-1", "20240101", 1000)
    assert verify_link(KEY, "uid-1", "20240101", "1000", sig, now=999) is LinkCheck.VALID
    assert verify_link(KEY, "uid-1", "20240101", "1000", sig, now=1000) is LinkCheck.EXPIRED
    assert verify_link(KEY, "uid-2", "20240101", "1000", sig, now=0) is LinkCheck.BAD_SIGNATURE
    assert verify_link(KEY, "uid-1", "20240102", "1000", sig, now=0) is LinkCheck.BAD_SIGNATURE
    assert verify_link(KEY, "uid-1", "20240101", "1001", sig, now=0) is LinkCheck.BAD_SIGNATURE
    assert verify_link(b"x" * 32, "uid-1", "20240101", "1000", sig, now=0) is (
        LinkCheck.BAD_SIGNATURE
    )
    # an expired link with a wrong signature says nothing about the expiry
    assert verify_link(KEY, "uid-2", "20240101", "1000", sig, now=5000) is (LinkCheck.BAD_SIGNATURE)
    assert verify_link(KEY, "uid-1", "20240101", "soon", sig, now=0) is LinkCheck.MALFORMED
    assert verify_link(KEY, "uid-1", "2024-01-01", "1000", sig, now=0) is LinkCheck.MALFORMED
    assert verify_link(KEY, "uid-1", "20240101", "-5", sig, now=0) is LinkCheck.MALFORMED
    assert verify_link(KEY, "uid-1", "20240101", "1000", "é" * 43, now=0) is (
        LinkCheck.BAD_SIGNATURE
    )


@given(
    uid=st.text(min_size=1, max_size=40).filter(lambda u: u.isprintable()),
    other=st.text(min_size=1, max_size=40).filter(lambda u: u.isprintable()),
    expires=st.integers(0, 2**40),
)
def test_signature_binds_the_uid(uid: str, other: str, expires: int) -> None:
    sig = sign_link(KEY, uid, "20240229", expires)
    assert verify_link(KEY, uid, "20240229", str(expires), sig, now=-1) is LinkCheck.VALID
    if other != uid:
        assert verify_link(KEY, other, "20240229", str(expires), sig, now=-1) is (
            LinkCheck.BAD_SIGNATURE
        )


def test_path_round_trips_through_a_url() -> None:
    path = signed_link_path(KEY, "a/b c", "2024-01-01T12:30:00+02:00", 2_000_000_000)
    url = urlsplit(path)
    assert unquote(url.path) == "/files/a/b c"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert q["created_at"] == "2024-01-01T10:30:00Z"
    assert q["expires"] == "2000000000"
    assert verify_link(KEY, "a/b c", "20240101", q["expires"], q["sig"], now=0) is (LinkCheck.VALID)


def test_key_from_env() -> None:
    assert link_key_from_env({}) is None
    assert link_key_from_env({"DES_LINK_KEY": " "}) is None
    assert link_key_from_env({"DES_LINK_KEY": "z" * 32}) == b"z" * 32
    with pytest.raises(SettingsError, match="DES_LINK_KEY is 31 bytes; a link key needs at"):
        link_key_from_env({"DES_LINK_KEY": "z" * 31})
    with pytest.raises(SettingsError, match="at least 32"):
        sign_link(b"short", "u", "20240101", 1)
