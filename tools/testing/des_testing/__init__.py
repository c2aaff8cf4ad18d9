"""Test support shared by every DES test suite (not a distribution; on pytest's pythonpath).

Real parts: an S3 server (moto's server mode) as a separate process on 127.0.0.1, and the
PostgreSQL server on 127.0.0.1:5432.
"""

from .postgres import postgres_url, require_postgres
from .proxy import FaultProxy
from .s3server import S3Server, delete_bucket, free_port, start_s3_server

__all__ = [
    "FaultProxy",
    "S3Server",
    "delete_bucket",
    "free_port",
    "postgres_url",
    "require_postgres",
    "start_s3_server",
]
