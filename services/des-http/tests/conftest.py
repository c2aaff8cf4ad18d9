"""Fixtures of the des-http unit tests; the helpers live in des_http_testkit.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from des_format import LocalObjectStore
from des_http import HttpSettings, create_app
from des_http_testkit import N_BITS, Harness, MakeHarness, RecordingStore, write_dataset
from des_routing import DesSettings
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("des-data")
    write_dataset(base)
    return base


@pytest.fixture
def make_harness(dataset_dir: Path) -> Iterator[MakeHarness]:
    clients: list[TestClient] = []

    def make(base_dir: Path | None = None, **http: Any) -> Harness:
        base = base_dir or dataset_dir
        des = DesSettings(backend="local", base_dir=base, n_bits=N_BITS)
        settings = HttpSettings(des=des, **http)
        store = RecordingStore(LocalObjectStore(base))
        registry = CollectorRegistry()
        app = create_app(settings, store=store, registry=registry)
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return Harness(client, store, registry, settings)

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def harness(make_harness: MakeHarness) -> Harness:
    return make_harness()
