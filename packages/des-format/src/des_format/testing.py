"""Test helpers for code built on des-format (standard library only; no pytest import).

- :class:`CountingStore` / :class:`CountingSource`: wrappers that count requests and bytes, so
  tests can assert exact request budgets (R2, R3).
- :func:`append_local`: append to (and delete from) a local shard as a packer does, a copy
  with the new tail renamed over the shard, so tests can change a shard under a reader.
- :func:`write_local_shard`: write files as one local shard, with continuation parts and big
  files beside it as a packer lays them out, and get each file's index entry back.
- :class:`ShardEditorConformance`: the same for every :class:`ShardEditor` (implement
  ``make_editor``, returning an editor over an empty store, and set ``self.scratch``).
- :class:`ObjectStoreConformance`: test methods every :class:`ObjectStore` implementation must
  pass. Subclass it in a test module as ``TestXxx`` and implement :meth:`make_store`::

      class TestLocalStore(ObjectStoreConformance):
          @pytest.fixture(autouse=True)
          def _dir(self, tmp_path):
              self.base = tmp_path

          def make_store(self):
              def put(key, data):
                  ...  # create or replace the object atomically
              return LocalObjectStore(self.base), put
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ._bigfiles import LocalBigFileSink
from ._codecs import Codec
from ._editor_conformance import ShardEditorConformance
from ._errors import ObjectNotFound, PreconditionFailed, RangeNotSatisfiable, StoreError
from ._layout import DEFAULT_BIG_FILE_THRESHOLD, IndexEntry, part_key
from ._read_index import read_index
from ._source import (
    DEFAULT_CHUNK_SIZE,
    ByteSource,
    ListEntry,
    LocalFileSource,
    ObjectInfo,
    ObjectStore,
    ObjectStoreBase,
    TailRead,
)
from ._writer import ShardWriter

__all__ = [
    "CountingSource",
    "CountingStore",
    "MemoryObjectStore",
    "ObjectStoreConformance",
    "Put",
    "Request",
    "ShardEditorConformance",
    "append_local",
    "write_local_shard",
]

Put = Callable[[str, bytes], None]


def append_local(path: Path, add: dict[str, bytes], delete: tuple[str, ...] = ()) -> None:
    """Append ``add`` (uncompressed) and tombstones for ``delete`` to the shard at ``path`` as
    a packer does: copy, write the new tail, fsync, rename over the shard."""
    old_size = path.stat().st_size
    with LocalFileSource(path) as src:
        index = read_index(src)
    tmp = path.with_suffix(".tmp")
    shutil.copyfile(path, tmp)
    with tmp.open("ab") as fh:
        w = ShardWriter(fh, codec="none", base_offset=old_size, existing=index)
        for uid, data in add.items():
            w.add(uid, data)
        for uid in delete:
            w.delete(uid)
        w.close()
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_local_shard(
    base: Path,
    key: str,
    files: Mapping[str, bytes],
    *,
    codec: str | Codec = "zstd",
    max_size: int | None = None,
    big_file_threshold: int = DEFAULT_BIG_FILE_THRESHOLD,
) -> dict[str, IndexEntry]:
    """Write ``files`` (in their order) as the shard ``key`` under ``base``: continuation parts
    beside the head once it reaches ``max_size``, files above ``big_file_threshold`` under
    ``_bigFiles`` of the day directory. Returns each file's index entry."""
    path = base / key
    path.parent.mkdir(parents=True, exist_ok=True)
    handles: list[BinaryIO] = []

    def open_part(n: int) -> BinaryIO:
        handles.append((base / part_key(key, n)).open("wb"))
        return handles[-1]

    entries: dict[str, IndexEntry] = {}
    try:
        with path.open("wb") as fh:
            w = ShardWriter(
                fh,
                codec=codec,
                max_size=max_size,
                open_part=open_part,
                big_file_threshold=big_file_threshold,
                bigfile_sink=LocalBigFileSink(path.parent),
            )
            for uid, data in files.items():
                entries[uid] = w.add(uid, data)
            w.close()
    finally:
        for h in handles:
            h.close()
    return entries


@dataclass
class Request:
    """One request seen by a counting wrapper."""

    method: str
    key: str
    start: int | None
    end: int | None
    nbytes: int
    if_match: str | None = None


@dataclass
class _Log:
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, req: Request) -> None:
        with self.lock:
            self.requests.append(req)


class CountingStore(ObjectStoreBase):
    """An :class:`ObjectStore` wrapper recording every request (method, key, range, bytes).

    It lists what the inner store lists (each listing is a ``list_dir`` request) and never
    reads without waiting; its parts are the inner store's parts, each counted into the same
    log.
    """

    def __init__(self, inner: ObjectStore, *, _log: _Log | None = None) -> None:
        self.inner = inner
        self._log = _log if _log is not None else _Log()

    @property
    def requests(self) -> list[Request]:
        return list(self._log.requests)

    @property
    def count(self) -> int:
        return len(self._log.requests)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._log.requests)

    def by_method(self) -> Counter[str]:
        return Counter(r.method for r in self._log.requests)

    def reset(self) -> None:
        with self._log.lock:
            self._log.requests.clear()

    def read_tail(self, key: str, n: int) -> TailRead:
        tail = self.inner.read_tail(key, n)
        self._log.add(Request("read_tail", key, None, None, len(tail.data)))
        return tail

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        try:
            data = self.inner.read_range(key, start, end, if_match=if_match)
        except Exception:
            self._log.add(Request("read_range", key, start, end, 0, if_match))
            raise
        self._log.add(Request("read_range", key, start, end, len(data), if_match))
        return data

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        req = Request("iter_range", key, start, end, 0, if_match)
        self._log.add(req)
        for chunk in self.inner.iter_range(
            key, start, end, if_match=if_match, chunk_size=chunk_size
        ):
            req.nbytes += len(chunk)
            yield chunk

    def head(self, key: str) -> ObjectInfo:
        info = self.inner.head(key)
        self._log.add(Request("head", key, None, None, 0))
        return info

    def describe(self, key: str = "") -> str:
        return self.inner.describe(key)

    @property
    def supports_listing(self) -> bool:
        return self.inner.supports_listing

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        entries = list(self.inner.list_dir(prefix, limit=limit))
        self._log.add(Request("list_dir", prefix, None, None, 0))
        return iter(entries)

    def parts(self) -> Mapping[str, ObjectStore]:
        inner = self.inner.parts()
        if list(inner.values()) == [self.inner]:
            return {name: self for name in inner}
        return {name: CountingStore(part, _log=self._log) for name, part in inner.items()}

    def close(self) -> None:
        self.inner.close()


class CountingSource:
    """A :class:`ByteSource` wrapper counting reads and bytes."""

    def __init__(self, inner: ByteSource) -> None:
        self.inner = inner
        self.reads = 0
        self.nbytes = 0
        self.ranges: list[tuple[int, int] | str] = []

    def read_range(self, start: int, end: int) -> bytes:
        data = self.inner.read_range(start, end)
        self.reads += 1
        self.nbytes += len(data)
        self.ranges.append((start, end))
        return data

    def read_tail(self, n: int) -> TailRead:
        tail = self.inner.read_tail(n)
        self.reads += 1
        self.nbytes += len(tail.data)
        self.ranges.append(f"tail:{n}")
        return tail

    def close(self) -> None:
        self.inner.close()


class MemoryObjectStore(ObjectStoreBase):
    """An in-memory :class:`ObjectStore` for unit tests. ``put`` replaces an object and gives
    it a new ETag (a counter, so equal bytes written twice still change the ETag). It lists
    its keys as S3 does (a directory is a prefix that keys continue)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._version = 0

    def put(self, key: str, data: bytes, etag: str | None = None) -> str:
        with self._lock:
            self._version += 1
            tag = etag if etag is not None else f'"mem-{self._version}"'
            self.objects[key] = (bytes(data), tag)
            return tag

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def _get(self, key: str, if_match: str | None = None) -> tuple[bytes, str]:
        try:
            data, etag = self.objects[key]
        except KeyError:
            raise ObjectNotFound(f"no such object: mem://{key}", key=key) from None
        if if_match is not None and if_match != etag:
            raise PreconditionFailed(f"mem://{key} changed since it was indexed", key=key)
        return data, etag

    def read_tail(self, key: str, n: int) -> TailRead:
        data, etag = self._get(key)
        return TailRead(data[max(0, len(data) - n) :], len(data), etag)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        data, _etag = self._get(key, if_match)
        if start < 0 or end < start or end > len(data):
            raise RangeNotSatisfiable(
                f"range [{start}, {end}) outside mem://{key} ({len(data)} bytes)", key=key
            )
        return data[start:end]

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        blob = self.read_range(key, start, end, if_match=if_match)
        for pos in range(0, len(blob), chunk_size):
            yield blob[pos : pos + chunk_size]

    def head(self, key: str) -> ObjectInfo:
        data, etag = self._get(key)
        return ObjectInfo(len(data), etag)

    def describe(self, key: str = "") -> str:
        return f"mem://{key}"

    @property
    def supports_listing(self) -> bool:
        return True

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        start = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        with self._lock:
            keys = [k for k in self.objects if k.startswith(start)]
        found: dict[str, bool] = {}
        for key in keys:
            name, sep, _rest = key[len(start) :].partition("/")
            found[name] = found.get(name, False) or bool(sep)
        entries = [ListEntry(name, is_dir) for name, is_dir in found.items()]
        return iter(entries[:limit])


def _raises(exc_type: type[BaseException], fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except exc_type as exc:
        return exc
    raise AssertionError(f"expected {exc_type.__name__}")


class ObjectStoreConformance:
    """Behaviour every :class:`ObjectStore` must show. Implement :meth:`make_store`.

    ``put(key, data)`` must create or replace an object (a replacement gets a new ETag).
    Keys are DES object keys (``YYYYMMDD/HH.des``), with shard indexes on both sides of
    0x80, so a multi-zone store routes them to more than one zone.

    The declared capabilities are checked as declared: a store with ``supports_listing``
    must list exactly what was put (one without must refuse with ``StoreError``), every key
    lives in exactly one of ``parts()``, ``read_range_nowait`` gives None or exactly the
    bytes (always None without ``supports_nowait_reads``), and a closed store still reads.
    """

    payload = bytes(range(256)) * 40 + b"tail-end"  # 10,248 bytes

    def make_store(self) -> tuple[ObjectStore, Put]:
        raise NotImplementedError

    def _store_with(self, key: str, data: bytes) -> ObjectStore:
        store, put = self.make_store()
        put(key, data)
        return store

    def test_read_range_returns_exact_bytes(self) -> None:
        store = self._store_with("20240101/A7.des", self.payload)
        assert store.read_range("20240101/A7.des", 0, 10) == self.payload[:10]
        assert store.read_range("20240101/A7.des", 300, 4000) == self.payload[300:4000]
        end = len(self.payload)
        assert store.read_range("20240101/A7.des", end - 8, end) == b"tail-end"

    def test_read_range_empty_range(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        assert store.read_range("20240101/B7.des", 5, 5) == b""

    def test_read_range_outside_object(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        size = len(self.payload)
        _raises(RangeNotSatisfiable, lambda: store.read_range("20240101/B7.des", size, size + 10))
        _raises(
            RangeNotSatisfiable, lambda: store.read_range("20240101/B7.des", size - 1, size + 1)
        )

    def test_read_tail_suffix_and_size(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        tail = store.read_tail("20240101/B7.des", 100)
        assert tail.data == self.payload[-100:]
        assert tail.object_size == len(self.payload)
        assert isinstance(tail.etag, str)
        assert tail.etag

    def test_read_tail_longer_than_object(self) -> None:
        store = self._store_with("20240101/5A.des", b"0123456789")
        tail = store.read_tail("20240101/5A.des", 65536)
        assert tail.data == b"0123456789"
        assert tail.object_size == 10

    def test_read_tail_of_empty_object(self) -> None:
        store = self._store_with("20240101/E0.des", b"")
        tail = store.read_tail("20240101/E0.des", 64)
        assert tail.data == b""
        assert tail.object_size == 0

    def test_head_matches_tail_etag(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        info = store.head("20240101/B7.des")
        assert info.size == len(self.payload)
        assert info.etag == store.read_tail("20240101/B7.des", 16).etag

    def test_missing_object(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        _raises(ObjectNotFound, lambda: store.read_tail("20240101/FF.des", 10))
        _raises(ObjectNotFound, lambda: store.read_range("20240101/FF.des", 0, 1))
        _raises(ObjectNotFound, lambda: store.head("20240101/FF.des"))
        _raises(ObjectNotFound, lambda: list(store.iter_range("20240101/FF.des", 0, 1)))

    def test_if_match(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        etag = store.head("20240101/B7.des").etag
        assert store.read_range("20240101/B7.des", 0, 4, if_match=etag) == self.payload[:4]
        _raises(
            PreconditionFailed,
            lambda: store.read_range("20240101/B7.des", 0, 4, if_match='"other"'),
        )
        _raises(
            PreconditionFailed,
            lambda: list(store.iter_range("20240101/B7.des", 0, 4, if_match='"other"')),
        )

    def test_replaced_object_gets_new_etag(self) -> None:
        store, put = self.make_store()
        put("20240101/B7.des", self.payload)
        old = store.head("20240101/B7.des").etag
        put("20240101/B7.des", self.payload + b"appended")
        new = store.read_tail("20240101/B7.des", 8)
        assert new.data == b"appended"
        assert new.etag != old
        _raises(PreconditionFailed, lambda: store.read_range("20240101/B7.des", 0, 4, if_match=old))

    def test_iter_range_chunks(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        chunks = list(store.iter_range("20240101/B7.des", 100, 5100, chunk_size=1000))
        assert b"".join(chunks) == self.payload[100:5100]
        assert all(0 < len(c) <= 1000 for c in chunks)

    def test_describe_names_the_key(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        assert "20240101/B7.des" in store.describe("20240101/B7.des")

    # -- declared capabilities: listing, parts, reads without waiting, close ----------------

    #: Keys on both sides of 0x80 (two zones of a multi-zone store), in two days, and a big
    #: file one level deeper.
    listed = (
        "20240101/A7.des",
        "20240101/5A.des",
        "20240102/B7.des",
        "20240101/_bigFiles/" + "ab" * 32,
    )

    def _store_with_listed(self) -> ObjectStore:
        store, put = self.make_store()
        for key in self.listed:
            put(key, key.encode())
        return store

    def test_list_dir(self) -> None:
        store = self._store_with_listed()
        if not store.supports_listing:
            _raises(StoreError, lambda: list(store.list_dir("20240101")))
            return
        root = sorted(store.list_dir(""), key=lambda e: e.name)
        assert root == [ListEntry("20240101", True), ListEntry("20240102", True)]
        day = sorted(store.list_dir("20240101"), key=lambda e: e.name)
        assert day == [
            ListEntry("5A.des", False),
            ListEntry("A7.des", False),
            ListEntry("_bigFiles", True),
        ]
        assert list(store.list_dir("20240102/")) == [ListEntry("B7.des", False)]
        assert list(store.list_dir("20240101/_bigFiles")) == [ListEntry("ab" * 32, False)]
        assert list(store.list_dir("20991231")) == []
        one = list(store.list_dir("20240101", limit=1))
        assert len(one) == 1
        assert one[0] in set(store.list_dir("20240101"))

    def test_parts_hold_every_key_once(self) -> None:
        store = self._store_with_listed()
        parts = store.parts()
        assert parts
        for part in parts.values():
            assert dict(part.parts()) == {"": part}  # a part is a plain store
        for key in self.listed:
            holders = []
            for name, part in parts.items():
                try:
                    part.head(key)
                except ObjectNotFound:
                    continue
                holders.append(name)
            assert len(holders) == 1, (key, holders)
        if len(parts) == 1:
            assert list(parts.values()) == [store]
        if store.supports_listing:
            listed = {e for part in parts.values() for e in part.list_dir("20240101")}
            assert listed == set(store.list_dir("20240101"))

    def test_read_range_nowait(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        etag = store.head("20240101/B7.des").etag
        assert store.read_range("20240101/B7.des", 0, 10) == self.payload[:10]
        got = store.read_range_nowait("20240101/B7.des", 0, 10, if_match=etag)
        if not store.supports_nowait_reads:
            assert got is None
        # None whenever the read would need I/O; else exactly the bytes read_range gives.
        assert got in (None, self.payload[:10])
        assert store.read_range_nowait("20240101/FF.des", 0, 1) is None
        size = len(self.payload)
        assert store.read_range_nowait("20240101/B7.des", size, size + 1) is None
        assert store.read_range_nowait("20240101/B7.des", 0, 4, if_match='"other"') is None

    def test_close_then_read_again(self) -> None:
        store = self._store_with("20240101/B7.des", self.payload)
        assert store.read_range("20240101/B7.des", 0, 4) == self.payload[:4]
        store.close()
        store.close()
        assert store.read_range("20240101/B7.des", 4, 8) == self.payload[4:8]
