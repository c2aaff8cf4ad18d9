"""Helpers shared by the des-routing tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

README_ZONES_YAML = """\
n_bits: 8
zones:
  - name: zone-a
    range: { start: 0, end: 127 }
    s3:
      bucket: des-zone-a
      region_name: us-east-1
      endpoint_url: https://s3.example.com
      prefix: des-a/
  - name: zone-b
    range: { start: 128, end: 255 }
    s3:
      bucket: des-zone-b
      region_name: us-east-1
      endpoint_url: https://s3.example.com
      prefix: des-b/
"""

README_ZONES: dict[str, Any] = {
    "n_bits": 8,
    "zones": [
        {
            "name": "zone-a",
            "range": {"start": 0, "end": 127},
            "s3": {
                "bucket": "des-zone-a",
                "region_name": "us-east-1",
                "endpoint_url": "https://s3.example.com",
                "prefix": "des-a/",
            },
        },
        {
            "name": "zone-b",
            "range": {"start": 128, "end": 255},
            "s3": {
                "bucket": "des-zone-b",
                "region_name": "us-east-1",
                "endpoint_url": "https://s3.example.com",
                "prefix": "des-b/",
            },
        },
    ],
}


@pytest.fixture
def zones_obj() -> dict[str, Any]:
    """A fresh, mutable copy of the product README's zones config."""
    return copy.deepcopy(README_ZONES)


@pytest.fixture
def zones_yaml_text() -> str:
    """The product README's zones config as YAML text (usable without PyYAML)."""
    return README_ZONES_YAML


@pytest.fixture
def zones_yaml() -> str:
    """The README's zones YAML, for tests that parse it: they skip, saying why, without the
    ``yaml`` extra (the suite also runs with no extras installed)."""
    pytest.importorskip("yaml", reason="YAML zones files need PyYAML: des-routing[yaml]")
    return README_ZONES_YAML
