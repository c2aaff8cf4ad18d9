"""PostgreSQL on 127.0.0.1:5432: a fresh database per caller (a unique name, so several
pytest processes share the server), or a clear skip.

Set ``DES_REQUIRE_POSTGRES=1`` (``.ci/run`` does) to turn the skip into a failure.
"""

from __future__ import annotations

import os
import uuid

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin_url() -> str:
    return os.environ.get("DES_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def require_postgres() -> str:
    """Return the admin URL if PostgreSQL answers; otherwise skip (or fail under CI)."""
    import pytest

    url = _admin_url()
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {url.split('@')[-1]}: {exc.__class__.__name__}"
        if os.environ.get("DES_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (DES_REQUIRE_POSTGRES=1 makes this mandatory)")
        pytest.skip(reason)
    return url


def postgres_url() -> tuple[str, str]:
    """Create a fresh database; return ``(url, name)``. The caller drops it when done."""
    import sqlalchemy as sa

    admin = require_postgres()
    # The pytest-xdist worker (gw0, gw1, ...) in the name: whose database it is, at a glance.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"des_test_{worker}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    base = admin.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
