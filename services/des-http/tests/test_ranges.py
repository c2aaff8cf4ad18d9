"""Range and conditional-request planning (pure functions)."""

from __future__ import annotations

import pytest
from des_format import ByteRange
from des_http import RangeKind, plan_range, serialize_content_range
from des_http._ranges import if_range_holds, none_match, parse_etags
from hypothesis import given
from hypothesis import strategies as st


def test_no_header_is_the_whole_file() -> None:
    assert plan_range(None, 10).kind is RangeKind.FULL


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, ByteRange(0, 1)),
        ("bytes=0-", 10, ByteRange(0, 10)),
        ("bytes=9-", 10, ByteRange(9, 10)),
        ("bytes=2-100", 10, ByteRange(2, 10)),
        ("bytes=-3", 10, ByteRange(7, 10)),
        ("bytes=-30", 10, ByteRange(0, 10)),
        ("bytes= 1-2 ,", 10, ByteRange(1, 3)),
    ],
)
def test_single_ranges_become_half_open(header: str, size: int, expected: ByteRange) -> None:
    plan = plan_range(header, size)
    assert plan.kind is RangeKind.PARTIAL
    assert plan.byte_range == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    assert plan_range(header, size).kind is RangeKind.UNSATISFIABLE


@pytest.mark.parametrize(
    "header",
    ["", "bytes", "bytes=", "bytes=-", "bytes=a-b", "bytes=3-2", "bytes=0-1,2-3", "lines=0-1",
     "bytes=+1-2", "bytes=1-2-3", "bytes=0x1-2"],
)  # fmt: skip
def test_ignored_headers_give_the_whole_file(header: str) -> None:
    assert plan_range(header, 10).kind is RangeKind.FULL


def test_content_range_is_inclusive() -> None:
    assert serialize_content_range(ByteRange(0, 10), 10) == "bytes 0-9/10"
    assert serialize_content_range(None, 42) == "bytes */42"


@given(
    data=st.binary(max_size=300),
    first=st.integers(min_value=0, max_value=400),
    length=st.one_of(st.none(), st.integers(min_value=0, max_value=400)),
)
def test_first_last_range_matches_python_slicing(
    data: bytes, first: int, length: int | None
) -> None:
    last = None if length is None else first + length
    header = f"bytes={first}-{'' if last is None else last}"
    plan = plan_range(header, len(data))
    expected = data[first : None if last is None else last + 1]
    if first >= len(data):
        assert plan.kind is RangeKind.UNSATISFIABLE
    else:
        assert plan.byte_range is not None
        assert data[plan.byte_range.start : plan.byte_range.end] == expected
        cr = serialize_content_range(plan.byte_range, len(data))
        assert cr == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"


@given(data=st.binary(max_size=300), suffix=st.integers(min_value=1, max_value=400))
def test_suffix_range_matches_python_slicing(data: bytes, suffix: int) -> None:
    plan = plan_range(f"bytes=-{suffix}", len(data))
    if not data:
        assert plan.kind is RangeKind.UNSATISFIABLE
    else:
        assert plan.byte_range is not None
        assert data[plan.byte_range.start : plan.byte_range.end] == data[-suffix:]


@given(st.text(max_size=40), st.integers(min_value=0, max_value=1000))
def test_any_header_plans_without_error_and_within_bounds(header: str, size: int) -> None:
    plan = plan_range(header, size)
    if plan.byte_range is not None:
        assert 0 <= plan.byte_range.start < plan.byte_range.end <= size


def test_parse_etags() -> None:
    assert parse_etags('"a", W/"b" ,junk, "c,d"') == ['"a"', 'W/"b"', '"c,d"']
    assert parse_etags(" * ") is None


def test_none_match_uses_weak_comparison() -> None:
    assert none_match('W/"x"', '"x"')
    assert none_match('"y", "x"', '"x"')
    assert none_match("*", '"x"')
    assert not none_match('"y"', '"x"')
    assert not none_match(None, '"x"')


def test_if_range_needs_a_strong_identical_tag() -> None:
    assert if_range_holds(None, '"x"')
    assert if_range_holds('"x"', '"x"')
    assert not if_range_holds('W/"x"', '"x"')
    assert not if_range_holds('"y"', '"x"')
    assert not if_range_holds("Wed, 21 Oct 2015 07:28:00 GMT", '"x"')
