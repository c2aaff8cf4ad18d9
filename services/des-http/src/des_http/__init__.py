"""DES retrieval service: ``GET /files/{uid}?created_at=...`` over FastAPI, with Range, ETag,
conditional requests, a batch endpoint, Prometheus metrics and optional bearer-token auth.

Build the app with :func:`create_app`; ``uvicorn des_http:app`` builds one from the ``DES_*``
environment variables on first access (never at import time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._app import BatchItem, BatchRequest, create_app
from ._auth import Scope, TokenRecord, TokenTable, parse_token_file, read_token_file
from ._metrics import ServiceMetrics
from ._problems import ERROR_TABLE, ConfigError, ProblemKind, plan_problem
from ._ranges import RangeKind, RangePlan, plan_range, serialize_content_range
from ._settings import HttpSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    app: FastAPI

__version__: str = __import__("importlib.metadata").metadata.version("des-http")

__all__ = [
    "ERROR_TABLE",
    "BatchItem",
    "BatchRequest",
    "ConfigError",
    "HttpSettings",
    "ProblemKind",
    "RangeKind",
    "RangePlan",
    "Scope",
    "ServiceMetrics",
    "TokenRecord",
    "TokenTable",
    "__version__",
    "app",
    "create_app",
    "parse_token_file",
    "plan_problem",
    "plan_range",
    "read_token_file",
    "serialize_content_range",
]


def __getattr__(name: str) -> Any:
    """``des_http.app``: the app for the current environment, built once, on first use."""
    if name == "app":
        from ._main import app_from_env

        built = app_from_env()
        globals()["app"] = built
        return built
    raise AttributeError(f"module 'des_http' has no attribute {name!r}")
