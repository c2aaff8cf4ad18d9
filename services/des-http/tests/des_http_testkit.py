"""Helpers for the des-http tests (imported by name: the conftest puts this directory on
sys.path): a small packed data set on local disk, a store that records every request and can
be told to fail, and a harness around a TestClient."""

from __future__ import annotations

import os
import random
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from des_format import LocalBigFileSink, ObjectInfo, ObjectStoreBase, ShardWriter, TailRead
from des_http import HttpSettings
from des_routing import locate_shard
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

N_BITS = 8
DAY = "2024-03-05T10:20:30Z"
OTHER_DAY = "2024-03-06T01:00:00Z"


@dataclass(frozen=True)
class SampleFile:
    uid: str
    created_at: str
    data: bytes
    name: str | None = None
    content_type: str | None = None
    deleted: bool = False


def _random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# Several files per shard (uids 1000 + k*256 share shard k for numeric uids).
SAMPLES: tuple[SampleFile, ...] = (
    SampleFile("1001", DAY, b"hello, des\n" * 300, "greeting.txt", "text/plain"),
    SampleFile("1257", DAY, _random_bytes(1, 5000), "photo.png"),
    SampleFile("1513", DAY, _random_bytes(2, 3000)),
    SampleFile("1769", DAY, b""),
    SampleFile("2025", DAY, _random_bytes(3, 200_000), "blob.bin"),
    SampleFile("doc-\u00e9t\u00e9", DAY, "caf\u00e9 \u2615\n".encode() * 50, "notes.md"),
    SampleFile("1001", OTHER_DAY, b"same uid, another day"),
    SampleFile("2281", DAY, b"to be deleted", deleted=True),
)


def sample(uid: str, created_at: str = DAY) -> SampleFile:
    for s in SAMPLES:
        if s.uid == uid and s.created_at == created_at:
            return s
    raise KeyError(uid)


def object_key(s: SampleFile) -> str:
    return locate_shard(s.uid, s.created_at, N_BITS).object_key


def write_dataset(base: Path, files: tuple[SampleFile, ...] = SAMPLES, **writer: Any) -> None:
    """Pack ``files`` under ``base`` with des-format's writer, one shard per object key."""
    by_key: dict[str, list[SampleFile]] = defaultdict(list)
    for s in files:
        by_key[object_key(s)].append(s)
    for key, members in sorted(by_key.items()):
        path = base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            w = ShardWriter(fh, bigfile_sink=LocalBigFileSink(path.parent), **writer)
            for s in members:
                w.add(s.uid, s.data, name=s.name, content_type=s.content_type)
            for s in members:
                if s.deleted:
                    w.delete(s.uid)
            w.close()


@dataclass
class RecordingStore(ObjectStoreBase):
    """An ObjectStore wrapper that records each call; ``fail`` makes every call raise."""

    inner: Any
    calls: list[tuple[str, str]] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    fail: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _note(self, op: str, key: str) -> None:
        with self._lock:
            self.calls.append((op, key))
            self.threads.add(threading.current_thread().name)
        if self.fail is not None:
            raise self.fail

    def read_tail(self, key: str, n: int) -> TailRead:
        self._note("read_tail", key)
        return self.inner.read_tail(key, n)  # type: ignore[no-any-return]

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        self._note("read_range", key)
        return self.inner.read_range(key, start, end, if_match=if_match)  # type: ignore[no-any-return]

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = 1 << 20,
    ) -> Iterator[bytes]:
        self._note("iter_range", key)
        return self.inner.iter_range(  # type: ignore[no-any-return]
            key, start, end, if_match=if_match, chunk_size=chunk_size
        )

    def head(self, key: str) -> ObjectInfo:
        self._note("head", key)
        return self.inner.head(key)  # type: ignore[no-any-return]

    def describe(self, key: str = "") -> str:
        return self.inner.describe(key)  # type: ignore[no-any-return]


@dataclass
class Harness:
    client: TestClient
    store: RecordingStore
    registry: CollectorRegistry
    settings: HttpSettings

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"backend": "local", **labels})
        return 0.0 if value is None else value

    def payload_reads(self) -> float:
        return self.metric("des_s3_range_calls_total", type="payload") + self.metric(
            "des_s3_range_calls_total", type="bigfile"
        )

    def store_requests(self) -> float:
        return sum(
            self.metric("des_s3_range_calls_total", type=t)
            for t in ("tail", "index", "payload", "bigfile")
        )


MakeHarness = Callable[..., Harness]


def counters(registry: CollectorRegistry) -> dict[str, float]:
    """Every counter and gauge sample of ``registry``, and each histogram's count, by name and
    labels (latency sums and buckets left out: they differ between any two runs)."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created") or (
                family.type == "histogram" and not s.name.endswith("_count")
            ):
                continue
            out[s.name + repr(sorted(s.labels.items()))] = s.value
    return out


def files_url(uid: str, created_at: str = DAY) -> str:
    from urllib.parse import quote

    return f"/files/{quote(uid, safe='')}?created_at={quote(created_at, safe='')}"


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/mixed body built with Content-Length per part (strictly)."""
    m = re.search(r"boundary=([0-9a-f]+)", content_type)
    assert m, content_type
    delim = b"--" + m.group(1).encode()
    parts: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while True:
        assert body.startswith(delim, pos), body[pos : pos + 80]
        pos += len(delim)
        if body.startswith(b"--\r\n", pos):
            assert pos + 4 == len(body)
            return parts
        assert body.startswith(b"\r\n", pos)
        pos += 2
        end_head = body.index(b"\r\n\r\n", pos)
        headers: dict[str, str] = {}
        for line in body[pos:end_head].decode("ascii").split("\r\n"):
            k, _, v = line.partition(": ")
            headers[k.lower()] = v
        pos = end_head + 4
        length = int(headers["content-length"])
        parts.append((headers, body[pos : pos + length]))
        pos += length
        assert body.startswith(b"\r\n", pos)
        pos += 2


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
        fh.flush()
        os.fsync(fh.fileno())
