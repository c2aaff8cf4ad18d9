"""The store's layout record: its JSON, its checks, the create-only local write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from des_format import (
    FORMAT_VERSION,
    LAYOUT_KEY,
    DesFormatError,
    LayoutMismatch,
    LocalObjectStore,
    StoreLayout,
    ensure_local_layout,
    read_store_layout,
    zones_digest,
)


def test_round_trip_and_create_only(tmp_path: Path) -> None:
    first = StoreLayout(n_bits=6, bigfiles_prefix="_big", zones_digest=None)
    assert StoreLayout.from_bytes(first.to_bytes(), "x") == first
    assert read_store_layout(LocalObjectStore(tmp_path)) is None
    assert ensure_local_layout(tmp_path, first) == first
    # a second writer with other settings gets the record already there, unchanged
    assert ensure_local_layout(tmp_path, StoreLayout(n_bits=9)) == first
    assert read_store_layout(LocalObjectStore(tmp_path)) == first
    assert [p.name for p in tmp_path.iterdir()] == [LAYOUT_KEY]  # no temporary file left


def test_check_names_both_values() -> None:
    layout = StoreLayout(n_bits=8)
    layout.check("s3://b/p", n_bits=8, bigfiles_prefix="_bigFiles/", zones_digest=None)
    layout.check("s3://b/p", n_bits=None)  # nothing given: nothing to disagree with
    with pytest.raises(LayoutMismatch) as info:
        layout.check("s3://b/p", n_bits=10, bigfiles_prefix="_other")
    assert str(info.value) == (
        "s3://b/p was written with n_bits 8 (not 10); big-file prefix '_bigFiles' (not "
        "'_other'); use the store's values (DES_N_BITS=8, DES_BIGFILES_PREFIX=_bigFiles) or "
        "another store"
    )
    digest = zones_digest([("a", 0, 127), ("b", 128, 255)])
    assert digest == zones_digest([("a", 0, 127), ("b", 128, 255)])
    assert digest != zones_digest([("a", 0, 99), ("b", 100, 255)])
    with pytest.raises(LayoutMismatch, match="zone map none \\(a single store\\) \\(not sha256:"):
        layout.check("x", n_bits=8, zones_digest=digest)


def test_newer_format_and_damaged_records_are_refused(tmp_path: Path) -> None:
    newer = StoreLayout(n_bits=8, format_version=FORMAT_VERSION + 1)
    with pytest.raises(LayoutMismatch, match=f"shard format version {FORMAT_VERSION + 1}"):
        newer.check("x", n_bits=None)
    doc = json.loads(StoreLayout(n_bits=8).to_bytes())
    for bad in (b"not json", json.dumps({**doc, "record": "x"}).encode(), b'{"record": 1}'):
        with pytest.raises(DesFormatError, match="is not a readable DES layout record"):
            StoreLayout.from_bytes(bad, "the record")
    (tmp_path / LAYOUT_KEY).write_bytes(b"{}")
    with pytest.raises(DesFormatError, match="remove it"):
        read_store_layout(LocalObjectStore(tmp_path))
