"""The stdlib sources and stores, and the ObjectStore conformance suite run against them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from des_format import (
    BytesSource,
    LocalFileSource,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    RangeNotSatisfiable,
    StoreError,
)
from des_format.testing import MemoryObjectStore, ObjectStoreConformance, Put


class TestLocalObjectStoreConformance(ObjectStoreConformance):
    @pytest.fixture(autouse=True)
    def _base(self, tmp_path: Path) -> None:
        self.base = tmp_path

    def make_store(self) -> tuple[ObjectStore, Put]:
        store = LocalObjectStore(self.base)

        def put(key: str, data: bytes) -> None:
            path = store.path_for(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)

        return store, put


class TestMemoryObjectStoreConformance(ObjectStoreConformance):
    def make_store(self) -> tuple[ObjectStore, Put]:
        store = MemoryObjectStore()

        def put(key: str, data: bytes) -> None:
            store.put(key, data)

        return store, put


def test_conformance_suite_catches_a_broken_store() -> None:
    class Broken(MemoryObjectStore):
        def read_range(
            self, key: str, start: int, end: int, *, if_match: str | None = None
        ) -> bytes:
            return super().read_range(key, start, end)  # ignores If-Match

    class Suite(ObjectStoreConformance):
        def make_store(self) -> tuple[ObjectStore, Put]:
            store = Broken()

            def put(key: str, data: bytes) -> None:
                store.put(key, data)

            return store, put

    with pytest.raises(AssertionError, match="expected PreconditionFailed"):
        Suite().test_if_match()


@pytest.mark.parametrize(
    "key", ["", "/abs.des", "../up.des", "a/../b.des", "a//b.des", "a\\b.des", "a/./b"]
)
def test_local_store_refuses_keys_leaving_base(tmp_path: Path, key: str) -> None:
    with pytest.raises(StoreError, match="invalid object key"):
        LocalObjectStore(tmp_path).read_tail(key, 10)


def test_local_store_reopens_replaced_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "k.des").write_bytes(b"old")
    assert store.read_tail("k.des", 10).data == b"old"
    (tmp_path / "new.tmp").write_bytes(b"newer")
    os.replace(tmp_path / "new.tmp", tmp_path / "k.des")
    assert store.read_tail("k.des", 10).data == b"newer"
    store.close()


def test_bytes_and_file_sources(tmp_path: Path) -> None:
    src = BytesSource(b"0123456789", etag='"e"')
    assert src.read_range(2, 5) == b"234"
    assert src.read_tail(3).data == b"789"
    assert src.read_tail(30).object_size == 10
    with pytest.raises(RangeNotSatisfiable):
        src.read_range(5, 11)
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdef")
    with LocalFileSource(path) as fsrc:
        assert fsrc.read_range(1, 3) == b"bc"
        tail = fsrc.read_tail(4)
        assert (tail.data, tail.object_size) == (b"cdef", 6)
        assert tail.etag is not None
    with pytest.raises(ObjectNotFound, match="no such shard"):
        LocalFileSource(tmp_path / "none.des")
