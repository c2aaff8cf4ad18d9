"""Fixtures shared by every test suite in the workspace: real S3 and PostgreSQL servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from des_testing import S3Server, start_s3_server
from des_testing.postgres import drop_database, postgres_url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server process on 127.0.0.1 for the whole session."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (skipped, or failed under CI, when none answers)."""
    url, name = postgres_url()
    try:
        yield url
    finally:
        drop_database(name)
