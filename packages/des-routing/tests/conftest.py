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
def zones_yaml() -> str:
    """The product README's zones config as YAML text."""
    return README_ZONES_YAML
