"""Deterministic routing: ``(uid, created_at, n_bits)`` -> shard location. No I/O, no state.

The rule is the one archives of the earlier release were written with, so they stay routable:

- a uid made only of ASCII digits maps to ``int(uid) % 2**n_bits``;
- any other uid maps to ``zlib.crc32(uid.encode("utf-8")) & (2**n_bits - 1)``;
- the date directory is the UTC calendar date of ``created_at`` (naive datetimes are UTC);
- ``shard_hex`` is upper-case hex zero-padded to ``ceil(n_bits / 4)`` digits;
- the object key is ``YYYYMMDD/<shard_hex>.des``.

Python's ``hash()`` is never used, so the mapping is the same in every process and version.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from des_routing._errors import InvalidCreatedAt, InvalidNBits, InvalidShardKey, InvalidUid

__all__ = [
    "MAX_N_BITS",
    "MAX_UID_BYTES",
    "MIN_N_BITS",
    "SHARD_SUFFIX",
    "ObjectKey",
    "ShardLocation",
    "date_dir_of",
    "format_created_at",
    "format_shard_hex",
    "locate_shard",
    "locate_shard_key",
    "parse_created_at",
    "parse_date_dir",
    "parse_object_key",
    "shard_count",
    "shard_index_of_key",
    "shard_index_of_uid",
    "shard_key",
    "validate_n_bits",
    "validate_uid",
]

MIN_N_BITS = 4
MAX_N_BITS = 16
MAX_UID_BYTES = 1024
SHARD_SUFFIX = ".des"

_CREATED_AT_HELP = (
    "expected an ISO 8601 timestamp such as '2024-01-01T00:00:00Z', "
    "'2024-01-01T02:00:00+02:00' or '2024-01-01T00:00:00.250Z' (a value without an offset "
    "is taken as UTC), or a datetime"
)


@dataclass(frozen=True, slots=True)
class ShardLocation:
    """Where a file lives: its date directory, shard index and the shard's object key."""

    uid: str
    created_at: datetime  # always timezone-aware, in UTC
    date_dir: str  # "YYYYMMDD"
    shard_index: int  # 0 .. 2**n_bits - 1
    shard_hex: str  # upper-case, zero-padded to ceil(n_bits / 4) digits
    object_key: str  # "YYYYMMDD/<shard_hex>.des"


def validate_n_bits(n_bits: object) -> int:
    """Return ``n_bits`` if it is an int within 4..16, else raise :class:`InvalidNBits`."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, int):
        raise InvalidNBits(
            f"n_bits must be an integer within {MIN_N_BITS}..{MAX_N_BITS}, "
            f"got {type(n_bits).__name__} {n_bits!r}"
        )
    if not MIN_N_BITS <= n_bits <= MAX_N_BITS:
        raise InvalidNBits(
            f"n_bits must be within {MIN_N_BITS}..{MAX_N_BITS} "
            f"({2**MIN_N_BITS}..{2**MAX_N_BITS} shards per day), got {n_bits}"
        )
    return n_bits


def shard_count(n_bits: int) -> int:
    """Number of shards per day for ``n_bits``: ``2**n_bits``."""
    return 1 << validate_n_bits(n_bits)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validate_uid(uid: object) -> str:
    """Return ``uid`` if it is a usable uid, else raise :class:`InvalidUid`.

    A uid is a non-empty ``str`` of at most 1,024 bytes of UTF-8 without control characters
    (U+0000..U+001F, U+007F..U+009F).
    """
    if not isinstance(uid, str):
        raise InvalidUid(f"uid must be a str, got {type(uid).__name__} {uid!r}")
    if not uid:
        raise InvalidUid("uid must not be empty")
    try:
        encoded = uid.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidUid(
            f"uid {uid[:64]!r} is not encodable as UTF-8 (lone surrogate at position {exc.start})"
        ) from None
    if len(encoded) > MAX_UID_BYTES:
        raise InvalidUid(
            f"uid is {len(encoded)} bytes of UTF-8, at most {MAX_UID_BYTES} are allowed "
            f"(starts with {uid[:32]!r})"
        )
    control = _CONTROL_RE.search(uid)
    if control is not None:
        raise InvalidUid(
            f"uid {uid[:64]!r} contains control character U+{ord(control.group()):04X} at "
            f"position {control.start()}; uids must be printable text"
        )
    return uid


def _index_of_valid_uid(uid: str, n_bits: int) -> int:
    if uid.isascii() and uid.isdigit():
        # 10**k is a multiple of 2**n_bits once k >= n_bits, so only the last n_bits digits
        # matter: this equals int(uid) % 2**n_bits without converting 1,024-digit numbers.
        return int(uid[-n_bits:]) & ((1 << n_bits) - 1)
    return zlib.crc32(uid.encode("utf-8")) & ((1 << n_bits) - 1)


def shard_index_of_uid(uid: str, n_bits: int = 8) -> int:
    """The shard index of ``uid`` (the date plays no part in it)."""
    return _index_of_valid_uid(validate_uid(uid), validate_n_bits(n_bits))


def format_shard_hex(shard_index: int, n_bits: int = 8) -> str:
    """Upper-case hex of ``shard_index`` zero-padded to ``ceil(n_bits / 4)`` digits."""
    validate_n_bits(n_bits)
    if isinstance(shard_index, bool) or not isinstance(shard_index, int):
        raise ValueError(f"shard_index must be an int, got {type(shard_index).__name__}")
    if not 0 <= shard_index < (1 << n_bits):
        raise ValueError(
            f"shard_index {shard_index} is outside 0..{(1 << n_bits) - 1} for n_bits={n_bits}"
        )
    return f"{shard_index:0{(n_bits + 3) // 4}X}"


def parse_created_at(value: str | datetime) -> datetime:
    """Parse ``value`` into a timezone-aware UTC datetime.

    Strings are ISO 8601 (``2024-01-01T00:00:00Z``, ``+02:00`` offsets, fractional seconds).
    Naive datetimes and strings without an offset are taken as UTC.
    """
    given: object = value  # callers without type checking pass anything
    if isinstance(given, datetime):
        parsed = given
    elif isinstance(given, str):
        text = given.strip()
        if not text:
            raise InvalidCreatedAt(f"created_at is empty: {_CREATED_AT_HELP}")
        try:
            # RFC 3339 allows a lower-case "t" and "z"; ISO 8601 text has no other letters.
            parsed = datetime.fromisoformat(text.upper())
        except ValueError:
            raise InvalidCreatedAt(f"invalid created_at {value!r}: {_CREATED_AT_HELP}") from None
    else:
        kind = "a date without a time" if isinstance(given, date) else type(given).__name__
        raise InvalidCreatedAt(f"invalid created_at {value!r} ({kind}): {_CREATED_AT_HELP}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidCreatedAt(
            f"created_at {value!r} is outside the years 1..9999 once converted to UTC"
        ) from None


def format_created_at(value: str | datetime) -> str:
    """Canonical text of a timestamp: ``2024-01-01T00:00:00Z`` (``.ffffff`` only when needed)."""
    dt = parse_created_at(value)
    text = dt.replace(tzinfo=None).isoformat(
        timespec="microseconds" if dt.microsecond else "seconds"
    )
    return text + "Z"


def date_dir_of(created_at: str | datetime) -> str:
    """The ``YYYYMMDD`` directory of ``created_at`` (its UTC calendar date)."""
    dt = parse_created_at(created_at)
    return f"{dt.year:04d}{dt.month:02d}{dt.day:02d}"


def shard_key(date_dir: str, shard_index: int, n_bits: int = 8) -> str:
    """The object key ``YYYYMMDD/<HEX>.des`` of a shard."""
    parse_date_dir(date_dir)
    return f"{date_dir}/{format_shard_hex(shard_index, n_bits)}{SHARD_SUFFIX}"


def _route(
    uid: str, created_at: str | datetime, n_bits: int
) -> tuple[str, datetime, int, str, str]:
    """(uid, created_at in UTC, shard index, date directory, shard hex), checked in the order
    whose first failure both locate functions report."""
    valid_uid = validate_uid(uid)
    bits = validate_n_bits(n_bits)
    dt = parse_created_at(created_at)
    index = _index_of_valid_uid(valid_uid, bits)
    return (
        valid_uid,
        dt,
        index,
        f"{dt.year:04d}{dt.month:02d}{dt.day:02d}",
        f"{index:0{(bits + 3) // 4}X}",
    )


def locate_shard(uid: str, created_at: str | datetime, n_bits: int = 8) -> ShardLocation:
    """Compute where ``uid`` created at ``created_at`` lives. Pure: no lookup, no I/O."""
    valid_uid, dt, index, date_dir, shard_hex = _route(uid, created_at, n_bits)
    return ShardLocation(
        uid=valid_uid,
        created_at=dt,
        date_dir=date_dir,
        shard_index=index,
        shard_hex=shard_hex,
        object_key=f"{date_dir}/{shard_hex}{SHARD_SUFFIX}",
    )


def locate_shard_key(uid: str, created_at: str | datetime, n_bits: int = 8) -> str:
    """``locate_shard(uid, created_at, n_bits).object_key`` (same value, same errors), without
    building the :class:`ShardLocation`: for callers that need only the key, per request."""
    _, _, _, date_dir, shard_hex = _route(uid, created_at, n_bits)
    return f"{date_dir}/{shard_hex}{SHARD_SUFFIX}"


def parse_date_dir(text: str) -> date:
    """Parse a ``YYYYMMDD`` directory name into a date (raises :class:`InvalidShardKey`)."""
    if not (isinstance(text, str) and len(text) == 8 and text.isascii() and text.isdigit()):
        raise InvalidShardKey(f"date directory {text!r} is not of the form YYYYMMDD")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise InvalidShardKey(f"date directory {text!r} is not a calendar date") from None


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """What a DES object key names.

    ``kind`` is ``"shard"`` (``YYYYMMDD/A7.des``), ``"part"`` (continuation part n,
    ``YYYYMMDD/A7.p2.des``) or ``"bigfile"`` (``YYYYMMDD/<prefix>/<sha256>``, which belongs to
    no single shard, so ``shard_index`` and ``shard_hex`` are ``None`` for it).
    """

    key: str
    kind: Literal["shard", "part", "bigfile"]
    date_dir: str
    shard_index: int | None
    shard_hex: str | None
    part: int  # 0 for shards and big files
    shard_key: str | None  # the head shard's key for shards and parts


_SHARD_RE = re.compile(r"(?P<hex>[0-9A-F]{1,4})(?:\.p(?P<part>[1-9][0-9]{0,8}))?\.des")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_KEY_HELP = "expected 'YYYYMMDD/HEX.des' with 1-4 upper-case hex digits, e.g. '20240101/A7.des'"


def parse_object_key(key: str) -> ObjectKey:
    """Classify a DES object key (relative to the store's prefix)."""
    if not isinstance(key, str):
        raise InvalidShardKey(f"object key must be a str, got {type(key).__name__}")
    parts = key.split("/")
    if len(parts) == 3 and parts[1] and _SHA256_RE.fullmatch(parts[2]):
        parse_date_dir(parts[0])
        return ObjectKey(key, "bigfile", parts[0], None, None, 0, None)
    if len(parts) != 2:
        raise InvalidShardKey(f"{key!r} is not a DES object key: {_KEY_HELP}")
    date_text, name = parts
    try:
        parse_date_dir(date_text)
    except InvalidShardKey as exc:
        raise InvalidShardKey(f"{key!r} is not a DES object key: {exc}") from None
    match = _SHARD_RE.fullmatch(name)
    if match is None:
        raise InvalidShardKey(f"{key!r} is not a DES object key: {_KEY_HELP}")
    hex_text = match["hex"]
    head = f"{date_text}/{hex_text}{SHARD_SUFFIX}"
    part = match["part"]
    if part is None:
        return ObjectKey(key, "shard", date_text, int(hex_text, 16), hex_text, 0, head)
    return ObjectKey(key, "part", date_text, int(hex_text, 16), hex_text, int(part), head)


def shard_index_of_key(key: str, n_bits: int | None = None) -> int:
    """The shard index named by a shard key: ``shard_index_of_key("20240101/A7.des") == 0xA7``.

    Continuation part keys and big-file keys are not shard keys and raise
    :class:`InvalidShardKey`. With ``n_bits`` the hex width and range are checked too.
    """
    parsed = parse_object_key(key)
    if parsed.kind == "part":
        raise InvalidShardKey(
            f"{key!r} is continuation part {parsed.part} of shard {parsed.shard_key!r}, "
            "not a shard key; use parse_object_key() to route part keys"
        )
    if parsed.kind == "bigfile":
        raise InvalidShardKey(
            f"{key!r} is a big-file object key, not a shard key; big files belong to no "
            "single shard"
        )
    assert parsed.shard_index is not None
    assert parsed.shard_hex is not None
    if n_bits is not None:
        bits = validate_n_bits(n_bits)
        width = (bits + 3) // 4
        if len(parsed.shard_hex) != width or parsed.shard_index >= (1 << bits):
            raise InvalidShardKey(
                f"{key!r} is not a shard key for n_bits={bits}: expected {width} hex digits "
                f"naming an index within 0..{(1 << bits) - 1}"
            )
    return parsed.shard_index
