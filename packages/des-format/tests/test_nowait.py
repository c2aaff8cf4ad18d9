"""Reads that never wait for I/O: ``LocalFileSource.read_range_nowait`` (preadv2 with
RWF_NOWAIT), ``LocalObjectStore.read_range_nowait`` and ``ShardRetriever.read_nowait`` /
``stat_nowait``, which answer from memory or return None for the caller's blocking path."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    ChecksumMismatch,
    EntryDeleted,
    IndexCache,
    LocalBigFileSink,
    LocalFileSource,
    LocalObjectStore,
    PreconditionFailed,
    ShardRetriever,
    ShardWriter,
)
from des_format._source import NOWAIT_READS, filesystem_type, mount_type_of
from des_format.testing import MemoryObjectStore, append_local

KEY = "20240101/A7.des"

needs_nowait = pytest.mark.skipif(
    not NOWAIT_READS, reason="no preadv2 with RWF_NOWAIT on this platform"
)


def data_of(i: int) -> bytes:
    return (f"file {i} ".encode() * (40 + i))[: 300 + 7 * i]


def write_shard(base: Path, n: int, *, codec: str = "none", **extra: bytes) -> Path:
    path = base / KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        w = ShardWriter(
            fh, codec=codec, bigfile_sink=LocalBigFileSink(path.parent), big_file_threshold=4096
        )
        for i in range(n):
            w.add(f"uid-{i}", data_of(i))
        for uid, data in extra.items():
            w.add(uid, data)
        w.close()
    return path


def evict(path: Path) -> None:
    """Drop the file's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def st_etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


class Notes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def __call__(self, kind: str, nbytes: int) -> None:
        self.seen.append((kind, nbytes))


# ---- LocalFileSource / LocalObjectStore ----


@needs_nowait
def test_file_in_the_page_cache_reads_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    body = os.urandom(100_000)
    path.write_bytes(body)
    with LocalFileSource(path) as src:
        assert src.read_range_nowait(10, 70_010) == body[10:70_010]
        assert src.read_range_nowait(5, 5) == b""
        # Outside the file, or backwards: None, for read_range to raise the proper error.
        assert src.read_range_nowait(99_999, 100_001) is None
        assert src.read_range_nowait(-1, 3) is None
        assert src.read_range_nowait(9, 3) is None
        assert src.nowait_supported


@needs_nowait
def test_bytes_not_in_memory_give_none_then_read_range_waits_for_them(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    body = os.urandom(1 << 20)
    path.write_bytes(body)
    if filesystem_type(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("tmpfs pages cannot be evicted: every read is from memory")
    evict(path)
    with LocalFileSource(path) as src:
        assert src.read_range_nowait(600_000, 604_096) is None  # EAGAIN
        assert src.nowait_supported  # EAGAIN is not "unsupported"
        assert src.read_range(600_000, 604_096) == body[600_000:604_096]
        assert src.read_range_nowait(600_000, 604_096) == body[600_000:604_096]


def test_unsupported_nowait_reads_turn_themselves_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_shard(tmp_path, 3)
    store = LocalObjectStore(tmp_path)
    store.nowait_reads = True
    store.read_range(KEY, 0, 16)  # opens the descriptor
    calls: list[int] = []

    def refuse(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        calls.append(flags)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "preadv", refuse)
    monkeypatch.setattr(os, "RWF_NOWAIT", 8, raising=False)
    monkeypatch.setattr("des_format._source.NOWAIT_READS", True)
    store._open[KEY].nowait_supported = True
    assert store.read_range_nowait(KEY, 0, 16) is None
    assert store.nowait_reads is False
    assert store.read_range_nowait(KEY, 0, 16) is None
    assert len(calls) == 1  # never asked again
    assert store.read_range(KEY, 0, 16) == path.read_bytes()[:16]


@needs_nowait
def test_store_reads_only_open_descriptors_of_unchanged_shards(tmp_path: Path) -> None:
    path = write_shard(tmp_path, 3)
    store = LocalObjectStore(tmp_path)
    if not store.nowait_reads:
        pytest.skip(f"{tmp_path} is on {filesystem_type(tmp_path)}, not a local filesystem")
    raw = path.read_bytes()
    # Nothing open for the key yet: opening a file may wait for the disk.
    assert store.read_range_nowait(KEY, 0, 16) is None
    etag = store.head(KEY).etag
    assert store.read_range_nowait(KEY, 0, 16, if_match=etag) == raw[:16]
    assert store.read_range_nowait(KEY, 0, 16, if_match='"other"') is None
    assert store.read_range_nowait(KEY, 0, len(raw) + 1) is None
    # Replaced by a rename: the old descriptor still reads the old bytes from memory, but
    # the path names another file now, so no answer; read_range refuses the old ETag.
    append_local(path, {"late": b"late"})
    assert store.read_range_nowait(KEY, 0, 16, if_match=etag) is None
    assert store.read_range_nowait(KEY, 0, 16) is None
    with pytest.raises(PreconditionFailed):
        store.read_range(KEY, 0, 16, if_match=etag)
    fresh = store.head(KEY).etag
    assert fresh != etag
    assert store.read_range_nowait(KEY, 0, 16, if_match=fresh) == raw[:16]


def test_mount_type_of_reads_mountinfo() -> None:
    mountinfo = "\n".join(
        [
            "22 27 0:21 / /proc rw,relatime - proc proc rw",
            "27 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
            "30 27 0:40 / /data rw,relatime shared:9 - nfs4 srv:/export rw",
            "31 30 253:2 / /data/local rw,relatime - xfs /dev/vdb rw",
            "32 27 0:41 / /mnt/my\\040disk rw - btrfs /dev/vdc rw",
            "33 27 0:42 / /data rw - tmpfs tmpfs rw",
            "garbage line",
        ]
    )
    assert mount_type_of(mountinfo, "/") == "ext4"
    assert mount_type_of(mountinfo, "/home/u") == "ext4"
    assert mount_type_of(mountinfo, "/proc/self") == "proc"
    assert mount_type_of(mountinfo, "/data/local/des") == "xfs"
    assert mount_type_of(mountinfo, "/data/localx") == "tmpfs"  # mounted over the nfs4
    assert mount_type_of(mountinfo, "/mnt/my disk/des") == "btrfs"
    assert mount_type_of(mountinfo, "/mnt/my") == "ext4"
    assert mount_type_of("", "/") is None


@pytest.mark.skipif(not Path("/proc/self/mountinfo").exists(), reason="no /proc/self/mountinfo")
def test_no_nowait_reads_off_local_filesystems() -> None:
    assert filesystem_type("/proc") == "proc"
    assert LocalObjectStore("/proc").nowait_reads is False


# ---- ShardRetriever.read_nowait / stat_nowait ----


@needs_nowait
def test_read_nowait_answers_warm_reads_like_read(tmp_path: Path, codec_name: str) -> None:
    write_shard(tmp_path, 20, codec=codec_name, empty=b"")
    notes = Notes()
    cache = IndexCache(1 << 20)
    r = ShardRetriever(LocalObjectStore(tmp_path), cache=cache, observer=notes)
    assert r.store.nowait_reads  # type: ignore[attr-defined]
    # Cold: the index is not cached, nothing is read and nothing counted.
    assert r.read_nowait(KEY, "uid-3") is None
    assert r.stat_nowait(KEY, "uid-3") is None
    assert (cache.stats().hits, cache.stats().misses, notes.seen) == (0, 0, [])
    assert r.read(KEY, "uid-3") == data_of(3)
    before = list(notes.seen)
    hits = cache.stats().hits
    for i in range(20):
        found = r.read_nowait(KEY, f"uid-{i}")
        assert found is not None
        entry, data = found
        assert data == data_of(i)
        assert entry == r.stat(KEY, f"uid-{i}")
    # Each answer counted as read() counts it: one cache hit, one payload request.
    assert cache.stats().hits == hits + 20 + 20  # + the 20 stat() calls
    assert cache.stats().misses == 1
    stored = [r.stat(KEY, f"uid-{i}").stored_size for i in range(20)]
    assert notes.seen == before + [("payload", n) for n in stored]
    empty = r.read_nowait(KEY, "empty")
    assert empty is not None
    assert empty[1] == b""
    n = r.stat(KEY, "empty").stored_size
    assert notes.seen[len(before) + 20 :] == ([("payload", n)] if n else [])


@needs_nowait
def test_read_nowait_leaves_everything_unusual_to_read(tmp_path: Path) -> None:
    path = write_shard(tmp_path, 5, codec="none", big=b"B" * 5000, mid=b"m" * 2000)
    notes = Notes()
    cache = IndexCache(1 << 20)
    r = ShardRetriever(LocalObjectStore(tmp_path), cache=cache, observer=notes)
    r.stat(KEY, "uid-0")
    notes.seen.clear()
    stats = cache.stats()
    assert r.read_nowait(KEY, "big") is None  # a big file (its own object)
    assert r.read_nowait(KEY, "mid", max_bytes=1999) is None  # over the size cap
    assert r.read_nowait(KEY, "never-stored") is None  # a miss needs a HEAD
    assert (notes.seen, cache.stats()) == ([], stats)
    found = r.read_nowait(KEY, "mid", max_bytes=2000)
    assert found is not None
    assert found[1] == b"m" * 2000

    # A deleted file: the cached index does not know yet, the shard was replaced.
    append_local(path, {}, delete=("uid-1",))
    notes.seen.clear()
    stats = cache.stats()
    assert r.read_nowait(KEY, "uid-1") is None
    assert r.read_nowait(KEY, "uid-2") is None  # any file of the replaced shard
    assert (notes.seen, cache.stats()) == ([], stats)
    with pytest.raises(EntryDeleted):
        r.read(KEY, "uid-1")
    # Under the fresh index: the tombstone is for read() (410), the rest reads from memory.
    r.read(KEY, "uid-2")
    assert r.read_nowait(KEY, "uid-1") is None
    assert r.stat_nowait(KEY, "uid-1") is None
    assert r.read_nowait(KEY, "uid-2") is not None


@needs_nowait
def test_read_nowait_never_answers_with_bytes_that_fail_their_checksum(tmp_path: Path) -> None:
    path = write_shard(tmp_path, 3, codec="none")
    r = ShardRetriever(LocalObjectStore(tmp_path), cache=IndexCache(1 << 20))
    entry = r.stat(KEY, "uid-1")
    assert r.read_nowait(KEY, "uid-1") is not None
    st = path.stat()
    with open(path, "r+b") as fh:  # in place, then the old mtime: the ETag stays the same
        fh.seek(entry.offset + 5)
        fh.write(b"\x00")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert r.store.head(KEY).etag == st_etag(st)
    assert r.read_nowait(KEY, "uid-1") is None
    with pytest.raises(ChecksumMismatch):
        r.read(KEY, "uid-1")


def test_stat_nowait_works_from_any_cached_index() -> None:
    import io

    mem = MemoryObjectStore()
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    w.add("a", b"A" * 10)
    w.add("gone", b"G")
    w.delete("gone")
    w.close()
    mem.put(KEY, out.getvalue())
    cache = IndexCache(1 << 20)
    r = ShardRetriever(mem, cache=cache)
    assert r.stat_nowait(KEY, "a") is None  # not cached yet
    r.stat(KEY, "a")
    hits = cache.stats().hits
    entry = r.stat_nowait(KEY, "a")
    assert entry is not None
    assert entry.size == 10
    assert cache.stats().hits == hits + 1
    assert r.stat_nowait(KEY, "gone") is None
    assert r.stat_nowait(KEY, "other") is None
    # A store without non-blocking reads: payloads always go through read().
    assert r.read_nowait(KEY, "a") is None
    assert ShardRetriever(mem).stat_nowait(KEY, "a") is None  # no cache at all


def test_conditional_answers_need_no_payload_and_no_nowait_store() -> None:
    import io

    mem = MemoryObjectStore()
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    w.add("a", b"A" * 10)
    w.close()
    mem.put(KEY, out.getvalue())
    cache = IndexCache(1 << 20)
    notes = Notes()
    r = ShardRetriever(mem, cache=cache, observer=notes)
    r.stat(KEY, "a")
    notes.seen.clear()
    hits = cache.stats().hits
    seen: list[int] = []

    def not_modified(entry: Any) -> bool:
        seen.append(entry.size)
        return False

    found = r.read_nowait(KEY, "a", only_if=not_modified)
    assert found is not None
    assert (found[0].size, found[1], seen) == (10, None, [10])
    assert cache.stats().hits == hits + 1
    assert notes.seen == []  # the payload was never asked for
    # When the bytes are wanted, this store cannot give them without waiting.
    assert r.read_nowait(KEY, "a", only_if=lambda e: True) is None
    assert cache.stats().hits == hits + 1


def test_lookup_loaded_is_is_loaded_then_lookup() -> None:
    import io

    mem = MemoryObjectStore()
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    for i in range(3000):  # an index of many buckets, far larger than the tail read
        w.add(f"uid-{i}", b"x")
    w.delete("uid-7")
    w.close()
    mem.put(KEY, out.getvalue())
    r = ShardRetriever(mem, cache=IndexCache(1 << 24), tail_size=4096)
    r.stat(KEY, "uid-1")
    index = r.index(KEY)[1]
    assert index.bucket_count > 1
    assert index.decoded_buckets == 1
    loaded_any = unloaded_any = False
    for uid in [f"uid-{i}" for i in range(0, 3000, 37)] + ["uid-7", "uid-1", "nope", "ż"]:
        loaded = index.is_loaded(uid)
        loaded_any |= loaded
        unloaded_any |= not loaded
        found = index.lookup_loaded(uid)
        assert found == (loaded, index.lookup(uid) if loaded else None)
        if not loaded:
            r.stat(KEY, "uid-1")  # nothing fetched by lookup_loaded
            assert not index.is_loaded(uid)
            index.lookup(uid)  # now fetched
            assert index.lookup_loaded(uid) == (True, index.lookup(uid))
    assert loaded_any
    assert unloaded_any
