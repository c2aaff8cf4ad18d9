"""Fixed layouts: header, footer, varints, bucket hash, keys."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest
from des_format import (
    ChecksumMismatch,
    CorruptShard,
    UnsupportedFormatVersion,
    bigfile_key,
    parse_footer,
    parse_header,
    part_key,
)
from des_format._layout import (
    FOOTER_SIZE,
    HEADER_SIZE,
    bucket_of,
    plan_bucket_count,
    read_varint,
    serialize_footer,
    serialize_header,
    uid_hash,
    write_varint,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_header_bytes_are_exact() -> None:
    head = serialize_header(0)
    assert head[:12] == b"DESF\x01\x00\x00\x00\x00\x00\x00\x00"
    assert head[12:] == struct.pack("<I", zlib.crc32(head[:12]))
    assert len(head) == HEADER_SIZE == 16
    assert parse_header(head).part == 0
    part = serialize_header(3)
    assert part[:4] == b"DESP"
    assert parse_header(part).part == 3


def test_header_rejects_bad_bytes() -> None:
    head = bytearray(serialize_header(0))
    head[9] ^= 1
    with pytest.raises(ChecksumMismatch, match="header checksum"):
        parse_header(bytes(head))
    with pytest.raises(CorruptShard, match="bad header magic"):
        parse_header(b"XXXX" + bytes(serialize_header(0))[4:])
    with pytest.raises(CorruptShard, match="needs 16 bytes"):
        parse_header(b"DESF")


def test_footer_round_trip_and_exact_layout() -> None:
    footer = serialize_footer(index_offset=1234, entry_count=7, bucket_count=4, directory_crc=99)
    assert len(footer) == FOOTER_SIZE == 48
    assert footer[:4] == b"DESF"
    assert footer[-4:] == b"DESF"
    assert struct.unpack_from("<HHQQIIII", footer, 4) == (1, 0, 1234, 7, 4, 99, 0, 0)
    parsed = parse_footer(footer)
    assert (parsed.index_offset, parsed.entry_count, parsed.bucket_count) == (1234, 7, 4)
    assert parsed.directory_crc == 99


def _with_crc(body: bytes) -> bytes:
    return body[:40] + struct.pack("<I", zlib.crc32(body[:40])) + b"DESF"


def test_footer_version_and_features_are_checked() -> None:
    footer = bytearray(
        serialize_footer(index_offset=16, entry_count=0, bucket_count=1, directory_crc=0)
    )
    footer[4:6] = struct.pack("<H", 2)
    with pytest.raises(UnsupportedFormatVersion, match="version 2 is not supported"):
        parse_footer(_with_crc(bytes(footer)))
    footer[4:6] = struct.pack("<H", 1)
    footer[6:8] = struct.pack("<H", 7)  # a newer minor version still reads
    assert parse_footer(_with_crc(bytes(footer))).minor == 7
    footer[32:36] = struct.pack("<I", 4)  # 0x1 is the dictionary, 0x2 solid blocks; 0x4 unknown
    with pytest.raises(UnsupportedFormatVersion, match="features 0x4 unknown"):
        parse_footer(_with_crc(bytes(footer)))
    footer[32:36] = struct.pack("<I", 1)  # the dictionary bit needs a length in 1..16 KiB
    with pytest.raises(CorruptShard, match="dictionary of 0 bytes"):
        parse_footer(_with_crc(bytes(footer)))
    footer[36:40] = struct.pack("<I", 16385)
    with pytest.raises(CorruptShard, match="dictionary of 16385 bytes"):
        parse_footer(_with_crc(bytes(footer)))
    footer[36:40] = struct.pack("<I", 16384)
    assert parse_footer(_with_crc(bytes(footer))).dictionary_size == 16384


def test_footer_bucket_count_must_be_power_of_two() -> None:
    footer = serialize_footer(index_offset=16, entry_count=0, bucket_count=3, directory_crc=0)
    with pytest.raises(CorruptShard, match="power of two"):
        parse_footer(footer)


def test_footer_crc_is_checked() -> None:
    footer = bytearray(
        serialize_footer(index_offset=16, entry_count=0, bucket_count=1, directory_crc=0)
    )
    footer[10] ^= 0x40
    with pytest.raises(ChecksumMismatch, match="footer checksum"):
        parse_footer(bytes(footer))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint_known_encodings(value: int, encoded: bytes) -> None:
    out = bytearray()
    write_varint(out, value)
    assert bytes(out) == encoded
    assert read_varint(encoded, 0) == (value, len(encoded))


def test_varint_rejects_overlong_and_truncated() -> None:
    with pytest.raises(CorruptShard, match="longer than 10 bytes"):
        read_varint(b"\x80" * 11, 0)
    with pytest.raises(CorruptShard, match="exceeds 64 bits"):
        read_varint(b"\xff" * 9 + b"\x7f", 0)
    with pytest.raises(CorruptShard, match="truncated"):
        read_varint(b"\x80\x80", 0)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    out = bytearray()
    write_varint(out, value)
    assert read_varint(bytes(out), 0) == (value, len(out))


def test_bucket_hash_is_fixed() -> None:
    # These values are part of the format (FORMAT.md section 2.4).
    assert uid_hash(b"doc-000001") == 0xD2988E132769A997
    assert uid_hash("zażółć".encode()) == 0x1F93BA1F4592D465
    assert bucket_of(b"doc-000001", 1) == 0
    assert bucket_of(b"doc-000001", 2) == 1  # top bit of 0xd2...
    assert bucket_of(b"doc-000001", 4096) == 0xD29


@given(st.binary(max_size=300))
def test_bucket_hash_is_blake2b(uid_bytes: bytes) -> None:
    digest = hashlib.blake2b(uid_bytes, digest_size=8, person=b"DES-idx1").digest()
    assert uid_hash(uid_bytes) == int.from_bytes(digest, "big")


def test_plan_bucket_count() -> None:
    assert plan_bucket_count(0) == 1
    assert plan_bucket_count(4096) == 1
    assert plan_bucket_count(4097) == 2
    assert plan_bucket_count(3 * 4096) == 4
    assert plan_bucket_count(10**12) == 4096


def test_part_and_bigfile_keys() -> None:
    assert part_key("20240101/A7.des", 2) == "20240101/A7.p2.des"
    assert part_key("A7", 1) == "A7.p1.des"
    with pytest.raises(ValueError, match="part numbers start at 1"):
        part_key("20240101/A7.des", 0)
    sha = "ab" * 32
    assert bigfile_key("20240101/A7.des", sha) == f"20240101/_bigFiles/{sha}"
    assert bigfile_key("A7.des", sha) == f"_bigFiles/{sha}"
    assert bigfile_key("p/20240101/A7.des", sha, prefix="/big/") == f"p/20240101/big/{sha}"
