"""des:// through fsspec: open, ls, info, ranged reads (exact request counts), pandas reading
archived CSV files, on a local store and on S3 (moto's server over HTTP)."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
from des_format import LocalBigFileSink, LocalObjectStore, ShardWriter
from des_fsspec import DesFileSystem
from des_routing import locate_shard_key

N_BITS = 4
DAY = "20240101"
CSV = b"city,visits\nLyon,3\nOslo,5\nLima,8\n"
RAW = random.Random(5).randbytes(60_000)
BIG = random.Random(6).randbytes(70_000)
FILES: dict[str, tuple[bytes, str | None, str]] = {
    # uid: (bytes, content type, codec)
    "table-1": (CSV, "text/csv", "zstd"),
    "raw/blob": (RAW, "application/octet-stream", "none"),
    "notes": (b"hello " * 500, "text/plain", "lz4"),
    "big-1": (BIG, None, "none"),
    "gone": (b"deleted file", None, "zstd"),
}


def write_store(base: Path) -> None:
    by_key: dict[str, list[str]] = {}
    for uid in FILES:
        by_key.setdefault(locate_shard_key(uid, "2024-01-01T12:00:00Z", N_BITS), []).append(uid)
    for key, uids in by_key.items():
        path = base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            w = ShardWriter(
                fh, big_file_threshold=65_536, bigfile_sink=LocalBigFileSink(path.parent)
            )
            for uid in uids:
                data, ctype, codec = FILES[uid]
                w.add(uid, data, content_type=ctype, codec=codec)
            if "gone" in uids:
                w.delete("gone")
            w.close()


class Counting:
    """An ObjectStore wrapper recording (method, key, bytes asked)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_tail(self, key: str, n: int) -> Any:
        self.calls.append(("read_tail", key, n))
        return self.inner.read_tail(key, n)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> Any:
        self.calls.append(("read_range", key, end - start))
        return self.inner.read_range(key, start, end, if_match=if_match)

    def iter_range(self, key: str, start: int, end: int, **kw: Any) -> Iterator[bytes]:
        self.calls.append(("iter_range", key, end - start))
        return self.inner.iter_range(key, start, end, **kw)

    def head(self, key: str) -> Any:
        self.calls.append(("head", key, 0))
        return self.inner.head(key)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    base = tmp_path / "des"
    write_store(base)
    return base


def check_filesystem(fs: Any, opts: dict[str, Any]) -> None:
    assert fs.ls("des://", detail=False) == [DAY]
    listed = fs.ls(f"des://{DAY}")
    live = sorted(u for u in FILES if u != "gone")
    assert [i["name"] for i in listed] == sorted(f"{DAY}/{u}" for u in live)
    for item in listed:
        uid = item["name"].split("/", 1)[1]
        data, ctype, _ = FILES[uid]
        assert item["size"] == len(data)
        assert item["content_type"] == ctype
        assert item["type"] == "file"
        assert item["checksum"].startswith(("crc32:", "sha256:"))
        assert fs.info(item["name"]) == item
        assert fs.cat_file(f"des://{item['name']}") == data
        with fs.open(f"des://{item['name']}", "rb") as fh:
            assert fh.read() == data
        with fsspec.open(f"des://{item['name']}", "rb", **opts) as fh:
            fh.seek(len(data) // 3)
            assert fh.read(100) == data[len(data) // 3 : len(data) // 3 + 100]
    with pytest.raises(FileNotFoundError, match="no such file"):
        fs.info(f"des://{DAY}/gone")
    with pytest.raises(FileNotFoundError, match="no such file"):
        fs.open(f"des://{DAY}/missing")
    with pytest.raises(FileNotFoundError, match="expected des://YYYYMMDD/<uid>"):
        fs.info("des://2024-01-01/table-1")
    with pytest.raises(NotImplementedError, match="read-only"):
        fs.open(f"des://{DAY}/table-1", "wb")
    # pandas reads an archived CSV file straight from des://
    frame = pd.read_csv(f"des://{DAY}/table-1", storage_options=opts)
    assert frame.to_dict("list") == {"city": ["Lyon", "Oslo", "Lima"], "visits": [3, 5, 8]}


def test_local_store_through_fsspec(store_dir: Path) -> None:
    opts = {"backend": "local", "base_dir": str(store_dir), "n_bits": N_BITS}
    fs = fsspec.filesystem("des", **opts)
    assert isinstance(fs, DesFileSystem)
    check_filesystem(fs, opts)


def test_environment_when_no_options(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DES_BACKEND", "local")
    monkeypatch.setenv("DES_BASE_DIR", str(store_dir))
    monkeypatch.setenv("DES_N_BITS", str(N_BITS))
    with fsspec.open(f"des://{DAY}/notes", "rb", skip_instance_cache=True) as fh:
        assert fh.read() == FILES["notes"][0]
    with pytest.raises(ValueError, match="unknown des:// storage option"):
        fsspec.filesystem("des", bucket="x", skip_instance_cache=True)


def test_ranged_reads_fetch_only_their_bytes(store_dir: Path) -> None:
    store = Counting(LocalObjectStore(store_dir))
    fs = DesFileSystem(store=store, n_bits=N_BITS, skip_instance_cache=True)
    key = locate_shard_key("raw/blob", "2024-01-01T00:00:00Z", N_BITS)
    with fs.open(f"des://{DAY}/raw/blob") as fh:
        assert [c[0] for c in store.calls] == ["read_tail"]  # the index, once
        store.calls.clear()
        fh.seek(50_000)
        assert fh.read(10) == RAW[50_000:50_010]
        assert store.calls == [("read_range", key, 10)]
        store.calls.clear()
        fh.seek(7)
        assert fh.read(3) == RAW[7:10]
        assert store.calls == [("read_range", key, 3)]
    store.calls.clear()
    with fs.open(f"des://{DAY}/big-1") as fh:  # a big file: its own object, exact ranges
        fh.seek(60_000)
        assert fh.read(5) == BIG[60_000:60_005]
    assert [c[2] for c in store.calls if c[0] == "read_range"] == [5]
    store.calls.clear()
    notes = FILES["notes"][0]
    with fs.open(f"des://{DAY}/notes") as fh:  # compressed: read and checked once
        assert fh.entry.codec.label == "lz4"
        assert fh.entry.stored_size < len(notes)
        fh.seek(5)
        assert fh.read(4) == notes[5:9]
        assert fh.read(4) == notes[9:13]
    reads = [c for c in store.calls if c[0] in ("read_range", "iter_range")]
    assert len(reads) == 1


def test_s3_store_through_fsspec(store_dir: Path, s3_server: Any, monkeypatch: Any) -> None:
    pytest.importorskip("des_storage_s3")  # des-fsspec[s3]; installed in the workspace
    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    client.create_bucket(Bucket="archive")
    for path in store_dir.rglob("*"):
        if path.is_file():
            key = f"des/{path.relative_to(store_dir).as_posix()}"
            client.put_object(Bucket="archive", Key=key, Body=path.read_bytes())
    opts = {
        "backend": "s3",
        "s3_bucket": "archive",
        "s3_prefix": "des",
        "s3_endpoint_url": s3_server.endpoint_url,
        "s3_region": "us-east-1",
        "n_bits": N_BITS,
    }
    fs = fsspec.filesystem("des", **opts)
    check_filesystem(fs, opts)
    # a CSV read by pandas from a file object too (the protocol works with open_files)
    (of,) = fsspec.open_files(f"des://{DAY}/table-1", "rb", **opts)
    with of as fh:
        assert pd.read_csv(io.BytesIO(fh.read()))["visits"].sum() == 16
