"""Shared fixtures for the des-format tests (test modules cannot import each other under
``--import-mode=importlib``, so helpers are fixtures)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from des_format import Codec, ShardWriter, codec_available

VECTORS = Path(__file__).parent / "vectors"


def _build_shard(files: dict[str, bytes], **writer_kwargs: Any) -> bytes:
    out = io.BytesIO()
    writer = ShardWriter(out, **writer_kwargs)
    for uid, data in files.items():
        writer.add(uid, data)
    writer.close()
    return out.getvalue()


@pytest.fixture
def build_shard() -> Callable[..., bytes]:
    """``build_shard(files, **writer_kwargs) -> bytes``: a shard holding ``files`` in order."""
    return _build_shard


@pytest.fixture
def legacy_dir() -> Path:
    return VECTORS / "legacy"


@pytest.fixture
def golden_dir() -> Path:
    return VECTORS / "golden"


def _available(name: str) -> str:
    if not codec_available(Codec[name.upper()]):
        pytest.skip(f"the {name} library is not installed")
    return name


@pytest.fixture(params=["none", "zstd", "lz4"])
def codec_name(request: pytest.FixtureRequest) -> str:
    """Each codec; zstd and lz4 skip only when their library is not installed."""
    return _available(request.param)


@pytest.fixture(params=["zstd", "lz4"])
def compressing_codec_name(request: pytest.FixtureRequest) -> str:
    """Each codec that compresses (skips only when its library is not installed)."""
    return _available(request.param)
