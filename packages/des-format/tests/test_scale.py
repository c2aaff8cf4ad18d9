"""R2 at scale: cold reads of one file from shards of 10, 10,000 and 1,000,000 entries take at
most 3 reads (2 when the index fits in the tail) and transfer bounded metadata; a lookup
decodes one bucket, never the whole index."""

from __future__ import annotations

import io

import pytest
from des_format import DEFAULT_TAIL_SIZE, BytesSource, ShardReader, ShardWriter
from des_format.testing import CountingSource

_BUILT: dict[int, tuple[bytes, int]] = {}


def uid(i: int) -> str:
    return f"u{i:09d}"  # 10 characters, like the uids the issue asks about


def shard_of(n: int) -> tuple[bytes, int]:
    """(shard bytes, index bytes) for n entries of 0..6 bytes; built once per session."""
    if n not in _BUILT:
        out = io.BytesIO()
        w = ShardWriter(out, codec="none")
        for i in range(n):
            w.add(uid(i), b"abcdef"[: i % 7])
        summary = w.close()
        _BUILT[n] = (out.getvalue(), summary.index_bytes)
    return _BUILT[n]


@pytest.mark.parametrize(
    ("n", "max_reads"),
    [(10, 2), (10_000, 3), pytest.param(1_000_000, 3, marks=pytest.mark.slow)],
)
def test_cold_read_budget(n: int, max_reads: int) -> None:
    data, index_bytes = shard_of(n)
    for i in (0, n // 3, n - 1):
        src = CountingSource(BytesSource(data))
        reader = ShardReader(src)
        assert reader.read(uid(i)) == b"abcdef"[: i % 7]
        payload_bytes = i % 7
        assert src.reads <= max_reads
        metadata = src.nbytes - payload_bytes
        # bounded: the tail read plus at most one bucket (a few KiB), whatever n is
        assert metadata <= DEFAULT_TAIL_SIZE + 16 * 1024
        if index_bytes + 16 <= DEFAULT_TAIL_SIZE:
            assert src.reads == (2 if payload_bytes else 1)
        assert reader.index.decoded_buckets == 1
        if reader.index.bucket_count > 1:
            assert reader.index.nbytes < 200_000


@pytest.mark.slow
def test_million_entry_index_is_compact() -> None:
    data, index_bytes = shard_of(1_000_000)
    per_entry = index_bytes / 1_000_000
    assert per_entry <= 32
    src = CountingSource(BytesSource(data))
    reader = ShardReader(src)
    assert reader.index.entry_count == 1_000_000
    assert reader.index.bucket_count == 4096
    entry = reader.lookup(uid(777_777))
    assert entry is not None
    assert entry.size == 777_777 % 7
    assert src.reads == 2  # tail + one bucket
    assert src.nbytes <= DEFAULT_TAIL_SIZE + 16 * 1024
    assert reader.lookup("u999999999") is None
