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


@pytest.mark.s3_servers("seaweedfs", reason="checks the SeaweedFS test server itself")
def test_seaweedfs_enforces_credentials_on_127_0_0_1(s3_server: S3Server) -> None:
    """Only the test identity may act: a wrong secret and an unknown key are refused (moto
    checks no signature at all); the gateway listens on 127.0.0.1 only."""
    import boto3
    from botocore.exceptions import ClientError
    from des_testing.s3server import ACCESS_KEY, REGION

    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    for key, secret in ((ACCESS_KEY, "wrong-secret"), ("nobody", "nothing")):
        other = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )
        with pytest.raises(ClientError) as info:
            other.list_buckets()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "Buckets" in s3_server.client().list_buckets()


@pytest.mark.heavy
def test_seaweedfs_server_starts_resets_and_stops_clean() -> None:
    """A second SeaweedFS beside the session's (free ports, no fixed listener): buckets come
    and go with reset(), and stop() ends the process and removes its data directory."""
    from des_testing import SeaweedUnavailable, start_seaweed_server

    try:
        server = start_seaweed_server()
    except SeaweedUnavailable as exc:
        import os

        if os.environ.get("DES_REQUIRE_SEAWEEDFS") == "1":
            raise
        pytest.skip(str(exc))
    workdir = server.workdir
    assert workdir is not None
    assert workdir.is_dir()
    try:
        client = server.client()
        client.create_bucket(Bucket="one-bucket")
        client.put_object(Bucket="one-bucket", Key="k", Body=b"v")
        server.reset()
        assert client.list_buckets()["Buckets"] == []
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.poll() is not None
    assert not workdir.exists()
