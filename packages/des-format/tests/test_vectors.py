"""Golden vectors of format 1 and the legacy DES2 vectors (R9)."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    BytesSource,
    Codec,
    LocalObjectStore,
    ShardReader,
    ShardRetriever,
    codec_available,
    read_index,
)
from des_format.testing import CountingSource

LEGACY_SHARDS = [
    "v1-mixed.des",
    "v2-none.des",
    "v2-zstd.des",
    "v2-lz4.des",
    "bigfiles-case/v2-bigfile.des",
]
GOLDEN_SHARDS = [
    "basic-none.des",
    "mixed-zstd.des",
    "lz4.des",
    "empty.des",
    "many.des",
    "bigfile.des",
    "rollover.des",
    "appended.des",
    "dictionary.des",
    "blocks.des",
]
RECIPE_NEEDS = {
    "mixed-zstd": ("zstd", "lz4"),
    "lz4": ("lz4",),
    "bigfile": ("zstd",),
    "dictionary": ("zstd",),
    "blocks": ("zstd",),
}


def _skip_without(names: tuple[str, ...]) -> None:
    for name in names:
        if not codec_available(Codec[name.upper()]):
            pytest.skip(f"the {name} library is not installed")


def _codecs_in(entries: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(sorted({e["codec"] for e in entries if e["codec"] != "none"}))


@pytest.mark.parametrize("name", LEGACY_SHARDS)
def test_legacy_shards_read_as_expected(legacy_dir: Path, name: str) -> None:
    expected = json.loads((legacy_dir / "expected.json").read_text(encoding="utf-8"))[name]
    with ShardReader.open_path(legacy_dir / name) as reader:
        assert reader.index.is_legacy
        assert reader.index.entry_count == len(expected)
        entries = {e.uid: e for e in reader.iter_entries()}
        assert sorted(entries) == sorted(e["uid"] for e in expected)
        for want in expected:
            entry = entries[want["uid"]]
            if entry.codec is not Codec.NONE:
                _skip_without((entry.codec.label,))
            data = reader.read(want["uid"])
            assert len(data) == want["size"]
            assert hashlib.sha256(data).hexdigest() == want["sha256"]
            assert entry.meta == want["meta"]
            assert entry.checksum is None
        assert reader.verify() == len(expected)


def test_legacy_versions_and_bigfiles(legacy_dir: Path) -> None:
    v1 = read_index(BytesSource((legacy_dir / "v1-mixed.des").read_bytes()))
    assert (v1.is_legacy, v1.format_version) == (True, 1)
    v2 = read_index(BytesSource((legacy_dir / "bigfiles-case/v2-bigfile.des").read_bytes()))
    assert v2.format_version == 2
    doc = v2.lookup("doc-000001")
    assert doc is not None
    assert doc.is_bigfile
    assert doc.bigfile_hash == "af4c48c244e957671399642c3e91afc53480338fd494c195923b397ef9c44520"


@pytest.mark.parametrize("name", ["v1-mixed.des", "v2-zstd.des"])
def test_legacy_index_version_found_without_the_header(legacy_dir: Path, name: str) -> None:
    """With a tail read that misses the header, the index is still parsed in 2 reads."""
    data = (legacy_dir / name).read_bytes()
    src = CountingSource(BytesSource(data))
    idx = read_index(src, tail_size=64)  # far smaller than the shard
    assert src.reads == 2  # tail + legacy index
    assert idx.format_version == data[4]
    full = read_index(BytesSource(data))
    assert list(idx.iter_entries()) == list(full.iter_entries())


def test_legacy_through_the_retriever(legacy_dir: Path) -> None:
    store = LocalObjectStore(legacy_dir)
    retriever = ShardRetriever(store)
    expected = json.loads((legacy_dir / "expected.json").read_text(encoding="utf-8"))
    for want in expected["bigfiles-case/v2-bigfile.des"]:
        entry = retriever.stat("bigfiles-case/v2-bigfile.des", want["uid"])
        if not codec_available(entry.codec):
            continue  # covered by test_legacy_shards_read_as_expected when installed
        got = retriever.read("bigfiles-case/v2-bigfile.des", want["uid"])
        assert hashlib.sha256(got).hexdigest() == want["sha256"]


def _golden_expected(golden_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((golden_dir / "expected.json").read_text("utf-8"))
    return loaded


@pytest.mark.parametrize("name", GOLDEN_SHARDS)
def test_golden_vectors_read_as_expected(golden_dir: Path, name: str) -> None:
    want = _golden_expected(golden_dir)[name]
    _skip_without(_codecs_in(want["entries"]))
    data = (golden_dir / name).read_bytes()
    assert len(data) == want["object_size"]
    assert hashlib.sha256(data).hexdigest() == want["sha256"]
    with ShardReader.open_path(golden_dir / name) as reader:
        assert reader.index.bucket_count == want["bucket_count"]
        assert reader.index.index_offset == want["index_offset"]
        assert reader.index.features == want.get("features", 0)
        dictionary = reader.index.dictionary
        if "dictionary_size" in want:
            assert dictionary is not None
            assert len(dictionary) == want["dictionary_size"]
            assert hashlib.sha256(dictionary).hexdigest() == want["dictionary_sha256"]
        else:
            assert dictionary is None
        entries = list(reader.iter_entries())
        assert [e.uid for e in entries] == [w["uid"] for w in want["entries"]]
        for entry, w in zip(entries, want["entries"], strict=True):
            got = {
                "uid": entry.uid,
                "size": entry.size,
                "stored_size": entry.stored_size,
                "codec": entry.codec.label,
                "crc32": None if entry.checksum is None else f"{entry.checksum:08x}",
                "sha256": hashlib.sha256(reader.read_entry(entry)).hexdigest(),
                "offset": entry.offset,
                "part": entry.part,
                "bigfile": entry.is_bigfile,
                "deleted": entry.deleted,
                "meta": entry.meta,
            }
            if entry.codec is Codec.ZSTD_BLOCK:
                got["block_offset"] = entry.block_offset
            assert got == w
        assert reader.verify() == len(entries)


@pytest.mark.parametrize(
    "recipe",
    [
        "basic-none",
        "mixed-zstd",
        "lz4",
        "empty",
        "many",
        "bigfile",
        "rollover",
        "appended",
        "dictionary",
        "blocks",
    ],
)
def test_writer_reproduces_golden_vectors_byte_for_byte(golden_dir: Path, recipe: str) -> None:
    _skip_without(RECIPE_NEEDS.get(recipe, ()))
    recipes = runpy.run_path(str(golden_dir / "make_golden.py"))["RECIPES"]
    files = recipes[recipe]()
    assert files
    for rel, data in files.items():
        assert (golden_dir / rel).read_bytes() == data, rel


def test_golden_recipes_cover_every_vector(golden_dir: Path) -> None:
    module = runpy.run_path(str(golden_dir / "make_golden.py"))
    assert module["SHARDS"] == GOLDEN_SHARDS
    assert sorted(_golden_expected(golden_dir)) == sorted(GOLDEN_SHARDS)
    on_disk = sorted(
        str(p.relative_to(golden_dir))
        for p in golden_dir.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".json")
    )
    assert len(on_disk) == 15
