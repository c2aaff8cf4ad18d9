"""Fixtures shared by every test suite in the workspace: real S3 and PostgreSQL servers.

``s3_server`` is parametrized over the S3 servers a test runs against: moto's server and
SeaweedFS (a real S3-compatible server), each one process for the whole session. A test about
one server's behaviour, or one that needs fault injection only that server can be steered to
do, names the servers it runs on with ``@pytest.mark.s3_servers("moto", reason="...")``
(docs/S3-COMPATIBILITY.md lists them). ``DES_S3_SERVERS=moto`` (or ``seaweedfs``) runs only
one; without the ``weed`` binary the SeaweedFS runs skip, unless ``DES_REQUIRE_SEAWEEDFS=1``
(``.ci/run`` sets it) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from des_testing import S3Server, start_s3_server
from des_testing.postgres import drop_database, postgres_url

S3_SERVERS = ("moto", "seaweedfs")


def _selected_servers() -> tuple[str, ...]:
    raw = os.environ.get("DES_S3_SERVERS", "").strip()
    if not raw:
        return S3_SERVERS
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = [n for n in names if n not in S3_SERVERS]
    if unknown or not names:
        raise pytest.UsageError(
            f"DES_S3_SERVERS={raw!r}: unknown server {', '.join(unknown) or '(none)'}; "
            f"use a comma-separated list of {', '.join(S3_SERVERS)}"
        )
    return names


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "s3_servers(*names, reason): run this test's s3_server only on these servers "
        f"(of {', '.join(S3_SERVERS)}); reason says why (docs/S3-COMPATIBILITY.md lists them)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "s3_server" in metafunc.fixturenames:
        servers = _selected_servers()
        metafunc.parametrize("s3_server", servers, indirect=True, scope="session", ids=servers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the runs of ``s3_servers``-marked tests (or test parameters) on other
    servers."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("s3_servers")
        callspec = getattr(item, "callspec", None)
        server = callspec.params.get("s3_server") if callspec is not None else None
        if marker is not None:
            only = tuple(marker.args)
            if (
                not only
                or any(n not in S3_SERVERS for n in only)
                or not marker.kwargs.get("reason")
            ):
                raise pytest.UsageError(
                    f"{item.nodeid}: use @pytest.mark.s3_servers(name, ..., reason='why') "
                    f"with names from {', '.join(S3_SERVERS)}"
                )
            if server is not None and server not in only:
                dropped.append(item)
                continue
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[S3Server]:
    """One moto S3 server process on 127.0.0.1 for the whole session."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_s3_server() -> Iterator[S3Server]:
    """One SeaweedFS server process on 127.0.0.1 for the whole session (skipped, or failed
    under ``DES_REQUIRE_SEAWEEDFS=1``, when it cannot run)."""
    from des_testing.seaweed import SeaweedUnavailable, start_seaweed_server

    try:
        server = start_seaweed_server()
    except SeaweedUnavailable as exc:
        if os.environ.get("DES_REQUIRE_SEAWEEDFS") == "1":
            pytest.fail(f"{exc} (DES_REQUIRE_SEAWEEDFS=1 makes SeaweedFS mandatory)")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """The S3 server of this run of the test (see the module's docstring)."""
    name = getattr(request, "param", "moto")
    if name == "seaweedfs":
        server: S3Server = request.getfixturevalue("seaweed_s3_server")
    else:
        server = request.getfixturevalue("moto_s3_server")
    return server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (skipped, or failed under CI, when none answers)."""
    url, name = postgres_url()
    try:
        yield url
    finally:
        drop_database(name)
