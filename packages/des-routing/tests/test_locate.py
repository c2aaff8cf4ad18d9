"""locate_shard and its building blocks: exact locations, properties and every validation error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from des_routing import (
    InvalidCreatedAt,
    InvalidNBits,
    InvalidUid,
    RoutingError,
    ShardLocation,
    date_dir_of,
    format_created_at,
    format_shard_hex,
    locate_shard,
    locate_shard_key,
    parse_created_at,
    shard_count,
    shard_index_of_key,
    shard_index_of_uid,
    shard_key,
    validate_n_bits,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FOX = "The quick brown fox jumps over the lazy dog"  # CRC-32 check value 0x414FA339
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)


# --- exact, hand-computed locations -------------------------------------------------------


def test_product_readme_example_location() -> None:
    loc = locate_shard("uid-123", "2024-01-01T00:00:00Z")
    # crc32(b"uid-123") = 0x452462CE; & 0xFF = 0xCE
    assert loc == ShardLocation(
        uid="uid-123",
        created_at=JAN1,
        date_dir="20240101",
        shard_index=0xCE,
        shard_hex="CE",
        object_key="20240101/CE.des",
    )


@pytest.mark.parametrize(
    ("n_bits", "index", "shard_hex"),
    [(4, 0x9, "9"), (8, 0x39, "39"), (12, 0x339, "339"), (16, 0xA339, "A339")],
)
def test_non_digit_uid_uses_crc32_low_bits(n_bits: int, index: int, shard_hex: str) -> None:
    loc = locate_shard(FOX, JAN1, n_bits)
    assert (loc.shard_index, loc.shard_hex) == (index, shard_hex)
    assert loc.object_key == f"20240101/{shard_hex}.des"


@pytest.mark.parametrize(
    ("n_bits", "index", "shard_hex"),
    # 123456789 = 0x75BCD15
    [(4, 0x5, "5"), (8, 0x15, "15"), (12, 0xD15, "D15"), (16, 0xCD15, "CD15")],
)
def test_digit_uid_uses_int_modulo(n_bits: int, index: int, shard_hex: str) -> None:
    loc = locate_shard("123456789", JAN1, n_bits)
    assert (loc.shard_index, loc.shard_hex) == (index, shard_hex)


def test_digit_rule_is_not_the_crc_rule() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert locate_shard("123456789", JAN1).shard_index == 0x15  # not 0x26


@pytest.mark.parametrize(
    ("uid", "n_bits", "shard_hex"),
    [
        ("0", 4, "0"),
        ("0", 8, "00"),
        ("0", 12, "000"),
        ("0", 16, "0000"),
        ("10", 8, "0A"),
        ("31", 5, "1F"),  # 5 bits -> 2 hex digits
        ("32", 5, "00"),
        ("511", 9, "1FF"),  # 9 bits -> 3 hex digits
        ("512", 9, "000"),
        ("007", 8, "07"),  # leading zeros are just digits
        ("65535", 16, "FFFF"),
        ("65536", 16, "0000"),
        ("4096", 12, "000"),
        ("4095", 12, "FFF"),
        ("15", 4, "F"),
        ("16", 4, "0"),
        ("255", 8, "FF"),
        ("256", 8, "00"),
        ("257", 8, "01"),
    ],
)
def test_hex_padding(uid: str, n_bits: int, shard_hex: str) -> None:
    assert locate_shard(uid, JAN1, n_bits).shard_hex == shard_hex


def test_long_digit_uid_is_int_modulo() -> None:
    uid = "9" * 1024  # 10**1024 - 1 = -1 mod 2**16
    assert locate_shard(uid, JAN1, 16).shard_index == 0xFFFF
    assert locate_shard("1" + "0" * 1023, JAN1, 16).shard_index == 0


def test_non_ascii_digits_use_crc32() -> None:
    # "١٢٣" (Arabic-Indic digits): str.isdigit() is true, but they are not ASCII digits
    assert locate_shard("١٢٣", JAN1).shard_index == 0x7B  # crc32 = 0x5731A97B
    assert locate_shard("café", JAN1).shard_index == 0xB5  # crc32 = 0x98AD42B5
    assert locate_shard("12a", JAN1).shard_index == zlib.crc32(b"12a") & 0xFF


@pytest.mark.parametrize(
    ("created_at", "date_dir"),
    [
        ("2024-01-01T00:00:00Z", "20240101"),
        ("2024-01-01T23:59:59.999999Z", "20240101"),
        ("2024-01-01T00:30:00+02:00", "20231231"),  # 2023-12-31T22:30Z
        ("2024-01-01T23:30:00-01:00", "20240102"),  # 2024-01-02T00:30Z
        ("2024-02-29T12:00:00.5+00:00", "20240229"),
        ("2024-03-01T01:00:00+05:30", "20240229"),
        ("2024-01-01T00:00:00", "20240101"),  # no offset: UTC
        ("2024-01-01t10:00:00z", "20240101"),  # RFC 3339 lower case
        ("2024-06-30", "20240630"),
        (datetime(2024, 7, 1, 1, 0, tzinfo=timezone(timedelta(hours=3))), "20240630"),
        (datetime(2024, 7, 1, 1, 0), "20240701"),  # naive: UTC
    ],
)
def test_date_dir_is_utc_calendar_date(created_at: str | datetime, date_dir: str) -> None:
    loc = locate_shard("uid-123", created_at)
    assert loc.date_dir == date_dir
    assert loc.object_key == f"{date_dir}/CE.des"
    assert loc.created_at.tzinfo is UTC
    assert date_dir_of(created_at) == date_dir


def test_parse_created_at_values() -> None:
    assert parse_created_at("2024-01-01T02:00:00+02:00") == JAN1
    assert parse_created_at("2024-01-01T00:00:00.250Z") == JAN1.replace(microsecond=250000)
    assert parse_created_at(" 2024-01-01T00:00:00Z\n") == JAN1
    naive = parse_created_at(datetime(2024, 1, 1))
    assert naive == JAN1
    assert naive.tzinfo is UTC


def test_format_created_at() -> None:
    assert format_created_at("2024-01-01T02:00:00+02:00") == "2024-01-01T00:00:00Z"
    assert format_created_at(JAN1.replace(microsecond=5)) == "2024-01-01T00:00:00.000005Z"
    assert format_created_at(datetime(2024, 5, 6, 7, 8, 9)) == "2024-05-06T07:08:09Z"


def test_shard_helpers() -> None:
    assert shard_count(8) == 256
    assert shard_count(16) == 65536
    assert format_shard_hex(0xA7, 8) == "A7"
    assert format_shard_hex(0xA7, 12) == "0A7"
    assert shard_key("20240101", 0xA7) == "20240101/A7.des"
    assert shard_key("20240101", 5, 4) == "20240101/5.des"
    assert shard_index_of_uid("uid-123") == 0xCE
    assert shard_index_of_uid("123456789", 16) == 0xCD15
    with pytest.raises(ValueError, match=r"^shard_index 256 is outside 0\.\.255 for n_bits=8$"):
        format_shard_hex(256, 8)
    with pytest.raises(ValueError, match=r"^shard_index must be an int, got str$"):
        format_shard_hex("A7", 8)  # type: ignore[arg-type]


# --- validation errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_bits", "message"),
    [
        (3, "n_bits must be within 4..16 (16..65536 shards per day), got 3"),
        (17, "n_bits must be within 4..16 (16..65536 shards per day), got 17"),
        (0, "n_bits must be within 4..16 (16..65536 shards per day), got 0"),
        (-8, "n_bits must be within 4..16 (16..65536 shards per day), got -8"),
        ("8", "n_bits must be an integer within 4..16, got str '8'"),
        (8.0, "n_bits must be an integer within 4..16, got float 8.0"),
        (True, "n_bits must be an integer within 4..16, got bool True"),
        (None, "n_bits must be an integer within 4..16, got NoneType None"),
    ],
)
def test_invalid_n_bits(n_bits: object, message: str) -> None:
    with pytest.raises(InvalidNBits) as info:
        locate_shard("uid", JAN1, n_bits)  # type: ignore[arg-type]
    assert str(info.value) == message
    with pytest.raises(InvalidNBits):
        validate_n_bits(n_bits)


@pytest.mark.parametrize(
    ("uid", "message"),
    [
        ("", "uid must not be empty"),
        (b"uid-1", "uid must be a str, got bytes b'uid-1'"),
        (123, "uid must be a str, got int 123"),
        (None, "uid must be a str, got NoneType None"),
        (
            "a\nb",
            "uid 'a\\nb' contains control character U+000A at position 1; "
            "uids must be printable text",
        ),
        (
            "\x00",
            "uid '\\x00' contains control character U+0000 at position 0; "
            "uids must be printable text",
        ),
        (
            "ab\x7f",
            "uid 'ab\\x7f' contains control character U+007F at position 2; "
            "uids must be printable text",
        ),
        (
            "x\x85",
            "uid 'x\\x85' contains control character U+0085 at position 1; "
            "uids must be printable text",
        ),
        (
            "a\ud800b",
            "uid 'a\\ud800b' is not encodable as UTF-8 (lone surrogate at position 1)",
        ),
        (
            "é" * 513,
            f"uid is 1026 bytes of UTF-8, at most 1024 are allowed (starts with {'é' * 32!r})",
        ),
        (
            "x" * 1025,
            f"uid is 1025 bytes of UTF-8, at most 1024 are allowed (starts with {'x' * 32!r})",
        ),
    ],
)
def test_invalid_uid(uid: object, message: str) -> None:
    with pytest.raises(InvalidUid) as info:
        locate_shard(uid, JAN1)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert isinstance(info.value, RoutingError)
    assert isinstance(info.value, ValueError)


def test_uid_limits_accepted() -> None:
    assert locate_shard("x" * 1024, JAN1).uid == "x" * 1024
    assert locate_shard("é" * 512, JAN1).uid == "é" * 512  # exactly 1024 bytes
    assert locate_shard("a b/c\u00a0d", JAN1).uid == "a b/c\u00a0d"  # spaces, slash, NBSP


HELP = (
    "expected an ISO 8601 timestamp such as '2024-01-01T00:00:00Z', "
    "'2024-01-01T02:00:00+02:00' or '2024-01-01T00:00:00.250Z' (a value without an offset "
    "is taken as UTC), or a datetime"
)


@pytest.mark.parametrize(
    ("created_at", "message"),
    [
        ("", f"created_at is empty: {HELP}"),
        ("   ", f"created_at is empty: {HELP}"),
        ("yesterday", f"invalid created_at 'yesterday': {HELP}"),
        ("2024-13-01T00:00:00Z", f"invalid created_at '2024-13-01T00:00:00Z': {HELP}"),
        ("2024-01-01T00:00:00+25:00", f"invalid created_at '2024-01-01T00:00:00+25:00': {HELP}"),
        ("01/02/2024", f"invalid created_at '01/02/2024': {HELP}"),
        (1704067200, f"invalid created_at 1704067200 (int): {HELP}"),
        (None, f"invalid created_at None (NoneType): {HELP}"),
        (
            date(2024, 1, 1),
            f"invalid created_at datetime.date(2024, 1, 1) (a date without a time): {HELP}",
        ),
        (
            "0001-01-01T00:30:00+01:00",
            "created_at '0001-01-01T00:30:00+01:00' is outside the years 1..9999 once "
            "converted to UTC",
        ),
    ],
)
def test_invalid_created_at(created_at: object, message: str) -> None:
    with pytest.raises(InvalidCreatedAt) as info:
        locate_shard("uid", created_at)  # type: ignore[arg-type]
    assert str(info.value) == message


# --- properties ---------------------------------------------------------------------------

uids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
).filter(lambda s: len(s.encode()) <= 1024)
digit_uids = st.text(alphabet="0123456789", min_size=1, max_size=60)
n_bits_st = st.integers(min_value=4, max_value=16)
aware = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.timezones(),
)


@settings(max_examples=300)
@given(uid=uids, n_bits=n_bits_st, created_at=aware)
def test_location_properties(uid: str, n_bits: int, created_at: datetime) -> None:
    loc = locate_shard(uid, created_at, n_bits)
    assert loc == locate_shard(uid, created_at, n_bits)  # deterministic
    assert 0 <= loc.shard_index < 2**n_bits
    assert loc.shard_hex == loc.shard_hex.upper()
    assert len(loc.shard_hex) == -(-n_bits // 4)
    assert int(loc.shard_hex, 16) == loc.shard_index
    assert shard_index_of_key(loc.object_key, n_bits) == loc.shard_index
    assert loc.date_dir == created_at.astimezone(UTC).strftime("%Y%m%d")
    assert loc.object_key == f"{loc.date_dir}/{loc.shard_hex}.des"
    assert loc.created_at == created_at.astimezone(UTC)
    # the same instant written with any offset routes to the same object
    assert locate_shard(uid, created_at.isoformat(), n_bits) == loc
    if not (uid.isascii() and uid.isdigit()):
        assert loc.shard_index == zlib.crc32(uid.encode()) % 2**n_bits


def _outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except RoutingError as exc:
        return type(exc), str(exc)


@settings(max_examples=300)
@given(
    uid=st.one_of(uids, digit_uids, st.text(max_size=8), st.just("x" * 1025)),
    created_at=st.one_of(
        aware, aware.map(lambda d: d.isoformat()), st.datetimes(), st.text(max_size=30)
    ),
    n_bits=st.one_of(n_bits_st, st.integers(min_value=-2, max_value=20)),
)
def test_locate_shard_key_is_locate_shard_object_key(
    uid: str, created_at: str | datetime, n_bits: int
) -> None:
    expected = _outcome(lambda: locate_shard(uid, created_at, n_bits).object_key)
    assert _outcome(lambda: locate_shard_key(uid, created_at, n_bits)) == expected


@given(uid=digit_uids, n_bits=n_bits_st)
def test_digit_rule_is_int_mod(uid: str, n_bits: int) -> None:
    assert shard_index_of_uid(uid, n_bits) == int(uid) % 2**n_bits


@given(created_at=aware)
def test_format_created_at_round_trips(created_at: datetime) -> None:
    assert parse_created_at(format_created_at(created_at)) == created_at.astimezone(UTC)


def test_routing_does_not_depend_on_hash_seed() -> None:
    names = ["uid-123", FOX, "café", "x" * 300, "123456789", "日本語のファイル"]
    expected = [locate_shard(n, JAN1, 12).object_key for n in names]
    code = (
        "import json, sys; from des_routing import locate_shard; "
        "print(json.dumps([locate_shard(n, '2024-01-01T00:00:00Z', 12).object_key "
        "for n in json.loads(sys.argv[1])]))"
    )
    for seed in ("0", "1", "random"):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(names)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert json.loads(out) == expected
