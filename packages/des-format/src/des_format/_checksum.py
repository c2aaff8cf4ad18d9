"""The one CRC-32 function behind every checksum of the format (payloads, buckets, directory,
dictionary, header, footer), on the write and the read side.

It is the IEEE 802.3 CRC-32 of ``zlib.crc32``. When the optional ``isal`` package is installed
(``pip install "des-format[fast]"``; des-packer installs it), its carry-less-multiply crc32 is
used instead: the same function, about three times faster on large buffers, so a shard is
byte-identical whichever one computed its checksums. ``isal`` is imported on the first checksum,
not with des_format. Set ``DES_CRC32=zlib`` in the environment to use the standard library's
even when ``isal`` is installed.
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol

__all__ = ["Crc32", "crc32", "crc32_backend", "load_fast_crc32"]


class Crc32(Protocol):
    """The signature of ``zlib.crc32``."""

    def __call__(self, data: bytes | bytearray | memoryview, value: int = 0, /) -> int: ...


# The check value of CRC-32/ISO-HDLC (the catalogue's name for this CRC).
_CHECK_INPUT, _CHECK_VALUE = b"123456789", 0xCBF43926

_chosen: list[tuple[Crc32, str]] = []  # (function, backend name) once chosen


def load_fast_crc32() -> Crc32 | None:
    """isal's crc32 when it is installed and computes the same function as zlib's, else None."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    fn: Crc32 = isal_zlib.crc32
    probe = bytes(range(256)) * 3
    if fn(_CHECK_INPUT) != _CHECK_VALUE or fn(probe, 12345) != zlib.crc32(probe, 12345):
        return None  # pragma: no cover - a broken build of isal
    return fn


def _resolve() -> tuple[Crc32, str]:
    if not _chosen:
        fast = None
        if os.environ.get("DES_CRC32", "").strip().lower() != "zlib":
            fast = load_fast_crc32()
        _chosen.append((zlib.crc32, "zlib") if fast is None else (fast, "isal"))
    return _chosen[0]


def crc32(data: bytes | bytearray | memoryview, value: int = 0, /) -> int:
    """The CRC-32 of ``data`` (any bytes-like object), continuing from ``value`` (the CRC-32 of
    the bytes before it): the same result as ``zlib.crc32(data, value)``."""
    impl = _chosen[0][0] if _chosen else _resolve()[0]
    return impl(data, value)


def crc32_backend() -> str:
    """Which implementation :func:`crc32` uses: ``"isal"`` or ``"zlib"``."""
    return _resolve()[1]
