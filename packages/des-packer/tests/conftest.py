"""Fixtures of des-packer's tests; the helpers live in des_packer_testkit.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from des_packer_testkit import DataSet, make_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> DataSet:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def make_data(tmp_path: Path) -> Callable[..., DataSet]:
    def make(**kw: Any) -> DataSet:
        return make_dataset(tmp_path / kw.pop("where", "data"), **kw)

    return make
