"""The real servers the suites rely on answer as expected."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from des_testing import S3Server


def test_s3_server_round_trip_with_range(s3_server: S3Server) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="smoke")
    client.put_object(Bucket="smoke", Key="k", Body=b"0123456789")
    got = client.get_object(Bucket="smoke", Key="k", Range="bytes=-4")
    assert got["Body"].read() == b"6789"
    assert got["ContentRange"] == "bytes 6-9/10"


@pytest.mark.postgres
def test_postgres_answers(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 41 + 1")).scalar_one() == 42
    engine.dispose()
