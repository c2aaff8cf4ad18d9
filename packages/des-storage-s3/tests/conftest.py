"""Fixtures for des-storage-s3's tests: fresh buckets on the session's S3 server, and a
counting / fault-injecting proxy between the client under test and the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from des_storage_s3 import ClientSettings, RetryPolicy, make_client
from des_testing import FaultProxy, S3Server
from des_testing.s3server import ACCESS_KEY, REGION, SECRET_KEY, delete_bucket

# Fast but real backoff: retries happen, tests stay quick.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005, budget_seconds=5)


def client_settings(endpoint_url: str, **kw: Any) -> ClientSettings:
    return ClientSettings(
        region_name=REGION,
        endpoint_url=endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        **kw,
    )


@pytest.fixture
def direct(s3_server: S3Server) -> Any:
    """A client straight to the server (setup and checks; never counted)."""
    return s3_server.client()


@pytest.fixture
def bucket(direct: Any) -> Iterator[str]:
    """A fresh bucket, deleted with everything in it after the test."""
    name = f"des-{uuid.uuid4().hex[:16]}"
    direct.create_bucket(Bucket=name)
    yield name
    delete_bucket(direct, name)


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as p:
        yield p


@pytest.fixture
def client(proxy: FaultProxy) -> Any:
    """The client under test: every request goes through the counting proxy."""
    return make_client(client_settings(proxy.url, read_timeout=2.0, connect_timeout=2.0))


def _data_of(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking test bytes."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += i.to_bytes(8, "little") * 4 + (i * 2654435761 % 2**32).to_bytes(4, "big")
        i += 1
    return bytes(out[:n])


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return FAST_RETRY


@pytest.fixture(name="data_of")
def data_of_fixture() -> Any:
    """``data_of(n, seed=0) -> bytes``: deterministic test bytes."""
    return _data_of


@pytest.fixture(name="client_settings")
def client_settings_fixture() -> Any:
    """``client_settings(endpoint_url, **kw) -> ClientSettings`` with the test credentials."""
    return client_settings
