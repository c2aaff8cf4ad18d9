"""boto3 S3 clients with the package's defaults: short timeouts, no hidden retries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How to reach one S3 endpoint.

    botocore's own retries are disabled (``total_max_attempts=1``): this package retries
    itself, so request counts and retry budgets are exact. Checksums are only computed
    where S3 requires them, which keeps S3-compatible servers happy.
    """

    region_name: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile_name: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_pool_connections: int = 32
    addressing_style: str = "auto"


def make_client(settings: ClientSettings | None = None) -> S3Client:
    """Build an S3 client from ``settings`` (missing credentials come from the environment)."""
    import boto3
    from botocore.config import Config

    s = settings or ClientSettings()
    config = Config(
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
        max_pool_connections=s.max_pool_connections,
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3=cast(Any, {"addressing_style": s.addressing_style}),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(profile_name=s.profile_name) if s.profile_name else None
    kwargs: dict[str, Any] = {
        "region_name": s.region_name,
        "endpoint_url": s.endpoint_url,
        "config": config,
    }
    if s.access_key_id is not None:
        kwargs["aws_access_key_id"] = s.access_key_id
        kwargs["aws_secret_access_key"] = s.secret_access_key
        kwargs["aws_session_token"] = s.session_token
    if session is not None:
        return session.client("s3", **kwargs)
    return boto3.session.Session().client("s3", **kwargs)
