"""Canonical metadata JSON (the index's metadata table): built without json.dumps for plain
objects, always exactly json.dumps's bytes, and refusing what json refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from des_format._index import canonical_meta
from hypothesis import given, settings
from hypothesis import strategies as st

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _reference(meta: dict[str, Any]) -> bytes:
    return json.dumps(
        meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


@given(st.dictionaries(st.text(max_size=12), _values, max_size=6))
@settings(max_examples=500, deadline=None)
def test_canonical_meta_is_exactly_json_dumps(meta: dict[str, Any]) -> None:
    try:
        want: bytes | type[BaseException] = _reference(meta)
    except (TypeError, ValueError) as exc:  # lone surrogates in text: not UTF-8
        want = type(exc)
    if isinstance(want, bytes):
        assert canonical_meta(meta) == want
    else:
        with pytest.raises(want):
            canonical_meta(meta)


@pytest.mark.parametrize(
    ("meta", "error"),
    [
        ({"x": float("nan")}, ValueError),
        ({"x": float("inf")}, ValueError),
        ({"x": {1, 2}}, TypeError),
        ({"x": b"bytes"}, TypeError),
        ({1: "a", "b": "c"}, TypeError),  # mixed key types cannot be sorted
        ({"x": "\ud800"}, UnicodeEncodeError),
    ],
)
def test_canonical_meta_refuses_what_json_refuses(
    meta: dict[Any, Any], error: type[BaseException]
) -> None:
    with pytest.raises(error):
        _reference(meta)
    with pytest.raises(error):
        canonical_meta(meta)


def test_canonical_meta_keeps_json_forms_of_subclasses() -> None:
    class Flag(int):
        pass

    meta = {"b": True, "i": Flag(3), "f": -0.0, "big": 10**30, "n": None, "s": 'q"\n\u2028'}
    assert canonical_meta(meta) == _reference(meta)
