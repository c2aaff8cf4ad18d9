"""plan_coalesced_ranges (pure) and IndexCache accounting."""

from __future__ import annotations

import io
import itertools

import pytest
from des_format import (
    ByteRange,
    BytesSource,
    CoalescedRange,
    IndexCache,
    ShardIndex,
    ShardWriter,
    plan_coalesced_ranges,
    read_index,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_plan_examples() -> None:
    ranges = [(100, 200), (0, 50), (210, 300), (1000, 1100), (60, 60)]
    assert plan_coalesced_ranges(ranges, max_gap=10) == [
        CoalescedRange(0, 60, (1, 4)),
        CoalescedRange(100, 300, (0, 2)),
        CoalescedRange(1000, 1100, (3,)),
    ]
    assert plan_coalesced_ranges(ranges, max_gap=0) == [
        CoalescedRange(0, 50, (1,)),
        CoalescedRange(60, 60, (4,)),
        CoalescedRange(100, 200, (0,)),
        CoalescedRange(210, 300, (2,)),
        CoalescedRange(1000, 1100, (3,)),
    ]
    assert plan_coalesced_ranges([ByteRange(0, 10), ByteRange(5, 8)], max_gap=0) == [
        CoalescedRange(0, 10, (0, 1))
    ]
    assert plan_coalesced_ranges([], max_gap=5) == []


def test_plan_respects_max_span() -> None:
    ranges = [(0, 100), (100, 200), (200, 300)]
    assert plan_coalesced_ranges(ranges, max_gap=0, max_span=200) == [
        CoalescedRange(0, 200, (0, 1)),
        CoalescedRange(200, 300, (2,)),
    ]
    assert plan_coalesced_ranges([(0, 500)], max_gap=0, max_span=100) == [
        CoalescedRange(0, 500, (0,))
    ]


def test_plan_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="invalid byte range"):
        plan_coalesced_ranges([(10, 5)], max_gap=0)


ranges_st = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 500)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=40,
)


@settings(deadline=None)
@given(ranges_st, st.integers(0, 2000), st.one_of(st.none(), st.integers(1, 5000)))
def test_plan_properties(ranges: list[tuple[int, int]], gap: int, span: int | None) -> None:
    plan = plan_coalesced_ranges(ranges, gap, span)
    members = sorted(i for c in plan for i in c.members)
    assert members == list(range(len(ranges)))  # every range exactly once
    for c in plan:
        for i in c.members:
            s, e = ranges[i]
            assert c.start <= s
            assert e <= c.end
        if span is not None and len(c.members) > 1:
            # over the span only when one range alone is (the others inside it ride along)
            assert c.end - c.start <= span or (c.start, c.end) in [ranges[i] for i in c.members]
    for a, b in itertools.pairwise(plan):
        assert a.end <= b.start or a.start <= b.start  # ordered by start
    total = sum(e - s for s, e in ranges)
    if gap == 0 and span is None:
        # with no gap allowed, reads never fetch a byte no range asked for
        assert sum(c.end - c.start for c in plan) <= total


def _index(n: int) -> ShardIndex:
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    for i in range(n):
        w.add(f"k{i}", b"x")
    w.close()
    return read_index(BytesSource(out.getvalue()))


def test_cache_lru_and_stats() -> None:
    a, b, c = _index(3), _index(3), _index(3)
    size = a.nbytes
    cache = IndexCache(2 * size)
    cache.put("a", '"1"', a)
    cache.put("b", '"2"', b)
    assert cache.get("a") == ('"1"', a)
    cache.put("c", '"3"', c)  # evicts b, the least recently used
    assert cache.get("b") is None
    assert cache.get("c") == ('"3"', c)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.entries) == (2, 1, 1, 2)
    assert stats.bytes == 2 * size
    cache.discard("a", c)  # c is not what "a" holds: kept
    assert len(cache) == 2
    cache.discard("a")
    assert len(cache) == 1
    assert cache.stats().bytes == size


def test_cache_refuses_indexes_larger_than_its_bound() -> None:
    idx = _index(3)
    cache = IndexCache(10)
    cache.put("a", None, idx)
    assert len(cache) == 0
    assert cache.stats().bytes == 0


def test_cache_resize_tracks_decoded_buckets() -> None:
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    for i in range(5000):
        w.add(f"uid-{i:06d}", b"")
    w.close()
    data = out.getvalue()
    src = BytesSource(data)
    idx = read_index(src, tail_size=4096)  # buckets are outside the tail: loaded lazily
    cache = IndexCache(1 << 30)
    cache.put("k", None, idx)
    before = cache.stats().bytes
    assert idx.lookup("uid-000001") is not None
    cache.resize("k", idx)
    after = cache.stats().bytes
    assert after > before
    assert after == idx.nbytes


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "get", "lookup", "discard"]), st.integers(0, 5)),
        max_size=60,
    ),
    st.integers(0, 40_000),
)
def test_cache_never_exceeds_its_bound(ops: list[tuple[str, int]], bound: int) -> None:
    indexes = [_big_index(i) for i in range(6)]
    cache = IndexCache(bound)
    for op, i in ops:
        key = f"k{i}"
        if op == "put":
            cache.put(key, None, indexes[i])
        elif op == "get":
            cache.get(key)
        elif op == "lookup":
            indexes[i].lookup(f"uid-{i * 7:06d}")  # grows the index (one bucket decoded)
            cache.resize(key, indexes[i])
        else:
            cache.discard(key)
        stats = cache.stats()
        assert stats.bytes <= bound
        assert stats.entries == len(cache)


_BIG: dict[int, bytes] = {}


def _big_index(i: int) -> ShardIndex:
    if i not in _BIG:
        out = io.BytesIO()
        w = ShardWriter(out, codec="none")
        for j in range(3000):
            w.add(f"uid-{j:06d}", b"")
        w.close()
        _BIG[i] = out.getvalue()
    return read_index(BytesSource(_BIG[i]), tail_size=1024)
