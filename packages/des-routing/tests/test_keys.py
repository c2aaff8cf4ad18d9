"""Object keys: shard keys, continuation part keys and big-file keys."""

from __future__ import annotations

import pytest
from des_routing import (
    InvalidShardKey,
    ObjectKey,
    parse_date_dir,
    parse_object_key,
    shard_index_of_key,
)
from hypothesis import given
from hypothesis import strategies as st

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("key", "index"),
    [
        ("20240101/A7.des", 0xA7),
        ("20240101/00.des", 0),
        ("20240229/FFFF.des", 0xFFFF),
        ("19991231/5.des", 5),
        ("20240101/0A7.des", 0xA7),
    ],
)
def test_shard_index_of_key(key: str, index: int) -> None:
    assert shard_index_of_key(key) == index


def test_parse_object_key_kinds() -> None:
    assert parse_object_key("20240101/A7.des") == ObjectKey(
        "20240101/A7.des", "shard", "20240101", 0xA7, "A7", 0, "20240101/A7.des"
    )
    assert parse_object_key("20240101/A7.p2.des") == ObjectKey(
        "20240101/A7.p2.des", "part", "20240101", 0xA7, "A7", 2, "20240101/A7.des"
    )
    assert parse_object_key(f"20240101/_bigFiles/{SHA}") == ObjectKey(
        f"20240101/_bigFiles/{SHA}", "bigfile", "20240101", None, None, 0, None
    )


KEY_HELP = "expected 'YYYYMMDD/HEX.des' with 1-4 upper-case hex digits, e.g. '20240101/A7.des'"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "20240101/A7.p2.des",
            "'20240101/A7.p2.des' is continuation part 2 of shard '20240101/A7.des', not a "
            "shard key; use parse_object_key() to route part keys",
        ),
        (
            f"20240101/_bigFiles/{SHA}",
            f"'20240101/_bigFiles/{SHA}' is a big-file object key, not a shard key; big files "
            "belong to no single shard",
        ),
        ("20240101/a7.des", f"'20240101/a7.des' is not a DES object key: {KEY_HELP}"),
        ("20240101/A7", f"'20240101/A7' is not a DES object key: {KEY_HELP}"),
        ("20240101/12345.des", f"'20240101/12345.des' is not a DES object key: {KEY_HELP}"),
        ("20240101/.des", f"'20240101/.des' is not a DES object key: {KEY_HELP}"),
        ("20240101/A7.p0.des", f"'20240101/A7.p0.des' is not a DES object key: {KEY_HELP}"),
        ("A7.des", f"'A7.des' is not a DES object key: {KEY_HELP}"),
        ("des/20240101/A7.des", f"'des/20240101/A7.des' is not a DES object key: {KEY_HELP}"),
        (
            "2024-01-01/A7.des",
            "'2024-01-01/A7.des' is not a DES object key: date directory '2024-01-01' is not "
            "of the form YYYYMMDD",
        ),
        (
            "20240230/A7.des",
            "'20240230/A7.des' is not a DES object key: date directory '20240230' is not a "
            "calendar date",
        ),
    ],
)
def test_not_a_shard_key(key: str, message: str) -> None:
    with pytest.raises(InvalidShardKey) as info:
        shard_index_of_key(key)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_shard_index_of_key_checks_n_bits() -> None:
    assert shard_index_of_key("20240101/0A7.des", 12) == 0xA7
    with pytest.raises(InvalidShardKey) as info:
        shard_index_of_key("20240101/A7.des", 12)
    assert str(info.value) == (
        "'20240101/A7.des' is not a shard key for n_bits=12: expected 3 hex digits naming an "
        "index within 0..4095"
    )
    with pytest.raises(InvalidShardKey) as info:
        shard_index_of_key("20240101/3F.des", 5)
    assert str(info.value) == (
        "'20240101/3F.des' is not a shard key for n_bits=5: expected 2 hex digits naming an "
        "index within 0..31"
    )
    assert shard_index_of_key("20240101/1F.des", 5) == 0x1F


def test_bigfile_key_with_bad_hash_or_date() -> None:
    with pytest.raises(InvalidShardKey):
        parse_object_key("20240101/_bigFiles/" + "AB" * 32)  # upper-case hex is not ours
    with pytest.raises(InvalidShardKey):
        parse_object_key("2024011/_bigFiles/" + SHA)
    with pytest.raises(InvalidShardKey, match=r"^object key must be a str, got bytes$"):
        parse_object_key(b"20240101/A7.des")  # type: ignore[arg-type]


def test_parse_date_dir() -> None:
    assert str(parse_date_dir("20240229")) == "2024-02-29"
    with pytest.raises(InvalidShardKey, match="is not a calendar date"):
        parse_date_dir("20230229")


@given(index=st.integers(0, 0xFFFF), part=st.integers(1, 10_000))
def test_part_keys_name_their_head(index: int, part: int) -> None:
    head = f"20240101/{index:04X}.des"
    parsed = parse_object_key(f"20240101/{index:04X}.p{part}.des")
    assert (parsed.kind, parsed.shard_index, parsed.part, parsed.shard_key) == (
        "part",
        index,
        part,
        head,
    )
    assert shard_index_of_key(head) == index
