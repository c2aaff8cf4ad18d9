from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from des_packer import (
    ManifestEntry,
    ManifestError,
    PackConfigError,
    parse_shard_range,
    plan_shards,
)
from des_routing import RoutingError, locate_shard
from hypothesis import given, settings
from hypothesis import strategies as st


def _offset(minutes: int) -> tzinfo:
    return timezone(timedelta(minutes=minutes))


def entry(uid: str, day: int = 1, size: int = 10) -> ManifestEntry:
    return ManifestEntry(uid, datetime(2024, 1, day, 12, tzinfo=UTC), size, f"/src/{uid}")


def test_groups_by_routed_key_and_sorts_by_uid() -> None:
    entries = [entry(f"u{i}", day=1 + i % 2) for i in range(40)]
    plan = plan_shards(entries, n_bits=4)
    keys = [s.key for s in plan.shards]
    assert keys == sorted(keys)
    assert plan.files == 40
    assert plan.bytes == 400
    for shard in plan.shards:
        uids = [e.uid for e in shard.entries]
        assert uids == sorted(uids)
        for e in shard.entries:
            loc = locate_shard(e.uid, e.created_at, 4)
            assert (loc.object_key, loc.shard_index, loc.shard_hex, loc.date_dir) == (
                shard.key,
                shard.shard_index,
                shard.shard_hex,
                shard.date_dir,
            )


def test_duplicate_uid_same_day_fails_and_other_days_are_fine() -> None:
    assert plan_shards([entry("a", 1), entry("a", 2)]).files == 2
    msg = "duplicate uid 'a' on 20240101: a uid may appear only once"
    with pytest.raises(ManifestError, match=msg):
        plan_shards([entry("a", 1), entry("b"), entry("a", 1, size=5)])


def test_duplicate_skip_keeps_the_first() -> None:
    plan = plan_shards([entry("a", 1, 1), entry("a", 1, 2), entry("b")], on_duplicate="skip")
    assert [(e.uid, e.size_bytes) for s in plan.shards for e in s.entries] in (
        [("a", 1), ("b", 10)],
        [("b", 10), ("a", 1)],
    )
    assert [u for u, _ in plan.rejected] == ["a"]


def test_shard_range_filters() -> None:
    entries = [entry(f"{i}") for i in range(32)]  # digit uids: index = int(uid) % 16
    plan = plan_shards(entries, n_bits=4, shard_range=(2, 3))
    assert sorted(e.uid for s in plan.shards for e in s.entries) == sorted(["2", "3", "18", "19"])
    assert plan.out_of_range == 28


def test_invalid_uid_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="control character"):
        plan_shards([entry("bad\x01uid")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", "is not of the form A-B"),
        ("a-b", "is not of the form A-B"),
        ("9-3", "must satisfy 0 <= A <= B <= 255"),
        ("0-256", "must satisfy 0 <= A <= B <= 255"),
    ],
)
def test_parse_shard_range_errors(text: str, message: str) -> None:
    with pytest.raises(PackConfigError, match=message):
        parse_shard_range(text, 8)
    assert parse_shard_range("0-255", 8) == (0, 255)


@settings(max_examples=50, deadline=None)
@given(
    uids=st.sets(st.text("abcdef0123", min_size=1, max_size=6), min_size=1, max_size=40),
    cut=st.integers(min_value=0, max_value=40),
    seed=st.randoms(use_true_random=False),
)
def test_any_split_gives_the_same_shards(uids: set[str], cut: int, seed: object) -> None:
    entries = [entry(u, day=1 + len(u) % 3) for u in sorted(uids)]
    whole = plan_shards(entries, n_bits=4)
    shuffled = list(entries)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    left = plan_shards(shuffled[:cut], n_bits=4)
    right = plan_shards(shuffled[cut:], n_bits=4)
    merged: dict[str, list[str]] = {}
    for part in (left, right):
        for s in part.shards:
            merged.setdefault(s.key, []).extend(e.uid for e in s.entries)
    assert {k: sorted(v) for k, v in merged.items()} == {
        s.key: [e.uid for e in s.entries] for s in whole.shards
    }
    lo_hi = plan_shards(shuffled, n_bits=4, shard_range=(0, 7))
    hi = plan_shards(shuffled, n_bits=4, shard_range=(8, 15))
    assert tuple(sorted(lo_hi.shards + hi.shards, key=lambda s: s.key)) == whole.shards


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 10**30).map(str)),
            st.datetimes(
                min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.none()
            ),
            st.one_of(st.just(UTC), st.integers(-23 * 60, 23 * 60).map(_offset)),
        ),
        min_size=1,
        max_size=30,
    ),
    n_bits=st.integers(3, 17),  # 3 and 17: the n_bits error, as locate_shard words it
)
def test_each_entry_lands_where_locate_shard_says(
    rows: list[tuple[str, datetime, tzinfo]], n_bits: int
) -> None:
    """The planner computes locations itself (once per shard); they equal locate_shard's,
    for any uid, offset (the UTC day decides) and n_bits; bad uids and n_bits fail alike."""
    entries = [ManifestEntry(u, t.replace(tzinfo=tz), 1, "/s") for u, t, tz in rows]
    try:
        expected = [locate_shard(e.uid, e.created_at, n_bits) for e in entries]
    except RoutingError as exc:
        error = str(exc)
        with pytest.raises(ManifestError) as info:
            plan_shards(entries, n_bits=n_bits, on_duplicate="skip")
        assert str(info.value) == error
        return
    plan = plan_shards(entries, n_bits=n_bits, on_duplicate="skip")
    got = {
        id(e): (s.key, s.date_dir, s.shard_index, s.shard_hex)
        for s in plan.shards
        for e in s.entries
    }
    rejected = [u for u, _ in plan.rejected]
    for e, loc in zip(entries, expected, strict=True):
        where = (loc.object_key, loc.date_dir, loc.shard_index, loc.shard_hex)
        assert got.get(id(e), where) == where
    assert len(got) + len(rejected) == len(entries)
    assert [s.key for s in plan.shards] == sorted({loc.object_key for loc in expected})
