"""schemathesis against the service's own OpenAPI document: no 5xx, every answer as documented
(status, content type, headers, body schema). Bounded so it runs in seconds."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from des_format import LocalObjectStore
from des_http import HttpSettings, create_app
from des_http_testkit import N_BITS, write_dataset
from des_routing import DesSettings
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis import Case


def _app(base: Path) -> object:
    base.mkdir(parents=True, exist_ok=True)
    write_dataset(base)
    des = DesSettings(backend="local", base_dir=base, n_bits=N_BITS)
    return create_app(
        HttpSettings(des=des, max_batch_items=20),
        store=LocalObjectStore(base),
        registry=CollectorRegistry(),
    )


_DATA = Path(tempfile.mkdtemp(prefix="des-http-st-"))
atexit.register(shutil.rmtree, _DATA, True)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(_DATA))


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_is_as_documented(case: Case) -> None:
    case.call_and_validate()
