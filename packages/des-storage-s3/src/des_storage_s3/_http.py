"""HTTP range headers <-> half-open ranges: the one place where ``bytes=a-b`` (inclusive) is
converted. Pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from des_format import ByteRange

DEFAULT_CHUNK_SIZE = 1 << 20  # the ObjectStore protocol's default streaming chunk

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A parsed ``Content-Range``: the half-open range sent and the object's total size."""

    byte_range: ByteRange
    total: int | None


def serialize_range(start: int, end: int) -> str:
    """``[start, end)`` as a Range header value; the range must not be empty."""
    if start < 0 or end <= start:
        raise ValueError(f"cannot request the empty or invalid range [{start}, {end})")
    return f"bytes={start}-{end - 1}"


def serialize_suffix_range(n: int) -> str:
    """The last ``n`` bytes (``n >= 1``) as a suffix Range header value."""
    if n < 1:
        raise ValueError(f"a suffix range needs n >= 1, got {n}")
    return f"bytes=-{n}"


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``bytes a-b/total`` (or ``bytes a-b/*``); None when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    if last < first:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    if total is not None and last >= total:
        return None
    return ContentRange(ByteRange(first, last + 1), total)


def parse_unsatisfied_size(value: str | None) -> int | None:
    """The object size from a 416's ``Content-Range: bytes */size``; None when absent."""
    if not value:
        return None
    m = _UNSATISFIED.match(value)
    return int(m.group(1)) if m else None
