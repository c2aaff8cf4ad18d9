"""HTTP byte ranges and conditional requests, as pure functions (no I/O, no framework).

This is the one place where HTTP's inclusive ``bytes=first-last`` becomes the half-open
:class:`des_format.ByteRange` used everywhere else, and back again for ``Content-Range``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from des_format import ByteRange

_RANGE_SPEC = re.compile(r"^([0-9]*)-([0-9]*)$")
# Positions past any real file are all alike; longer digit strings are not parsed (Python
# refuses int() of more than 4,300 digits, and parsing them would cost time for nothing).
_MAX_DIGITS = 20
_HUGE = 10**_MAX_DIGITS


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


class RangeKind(Enum):
    """What to answer to a request, judged from its ``Range`` header alone."""

    FULL = "full"  # no Range, an ignored one (syntax, unit, If-Range) or several ranges: 200
    PARTIAL = "partial"  # one satisfiable range: 206
    UNSATISFIABLE = "unsatisfiable"  # one range wholly outside the representation: 416


@dataclass(frozen=True, slots=True)
class RangePlan:
    kind: RangeKind
    byte_range: ByteRange | None = None  # half-open, set for PARTIAL only

    @property
    def is_partial(self) -> bool:
        return self.kind is RangeKind.PARTIAL


FULL = RangePlan(RangeKind.FULL)
UNSATISFIABLE = RangePlan(RangeKind.UNSATISFIABLE)


def plan_range(header: str | None, size: int) -> RangePlan:
    """Decide how to answer ``Range: <header>`` for a representation of ``size`` bytes.

    Follows RFC 9110 section 14: a header that is not a valid ``bytes`` range set is ignored
    (200 with the whole file), as is a request for several ranges (DES answers those with the
    whole file rather than ``multipart/byteranges``). One range that starts at or beyond the
    end, or a zero-length suffix, is unsatisfiable (416). ``last`` beyond the end is clipped.
    """
    if header is None:
        return FULL
    unit, sep, spec_set = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return FULL
    specs = [s.strip() for s in spec_set.split(",")]
    specs = [s for s in specs if s]  # RFC 9110 allows empty list elements
    if not specs:
        return FULL
    parsed: list[tuple[int | None, int | None]] = []
    for spec in specs:
        m = _RANGE_SPEC.match(spec)
        if m is None:
            return FULL
        first_s, last_s = m.groups()
        if not first_s and not last_s:
            return FULL
        first = _position(first_s) if first_s else None
        last = _position(last_s) if last_s else None
        if first is not None and last is not None and last < first:
            return FULL
        parsed.append((first, last))
    if len(parsed) > 1:
        return FULL
    first, last = parsed[0]
    if first is None:  # suffix range: the last `last` bytes
        assert last is not None
        if last == 0 or size == 0:
            return UNSATISFIABLE
        return RangePlan(RangeKind.PARTIAL, ByteRange(max(0, size - last), size))
    if first >= size:
        return UNSATISFIABLE
    end = size if last is None else min(last + 1, size)
    return RangePlan(RangeKind.PARTIAL, ByteRange(first, end))


def serialize_content_range(byte_range: ByteRange | None, size: int) -> str:
    """``Content-Range`` for a 206 (``bytes a-b/size``) or a 416 (``bytes */size``)."""
    if byte_range is None:
        return f"bytes */{size}"
    return f"bytes {byte_range.start}-{byte_range.end - 1}/{size}"


def parse_etags(header: str) -> list[str] | None:
    """The entity tags of an ``If-None-Match``/``If-Match`` list; ``None`` stands for ``*``.

    Tags keep their ``W/`` prefix and quotes; members that are not entity tags are dropped.
    """
    text = header.strip()
    if text == "*":
        return None
    tags: list[str] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch in " \t,":
            pos += 1
            continue
        weak = text.startswith("W/", pos)
        start = pos
        if weak:
            pos += 2
        if pos < len(text) and text[pos] == '"':
            close = text.find('"', pos + 1)
            if close < 0:
                break
            tags.append(text[start : close + 1])
            pos = close + 1
        else:  # not an entity tag: skip to the next comma
            nxt = text.find(",", pos)
            pos = len(text) if nxt < 0 else nxt + 1
    return tags


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def none_match(header: str | None, etag: str | None) -> bool:
    """True when ``If-None-Match`` matches ``etag`` (weak comparison): answer 304."""
    if header is None or not etag:
        return False
    tags = parse_etags(header)
    if tags is None:
        return True
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in tags)


def if_range_holds(header: str | None, etag: str | None) -> bool:
    """True when the ``Range`` header may be honoured under ``If-Range: <header>``.

    No If-Range: always. An entity tag: only a strong, byte-identical match. An HTTP date: never,
    since DES serves no ``Last-Modified``; the client then gets the whole file (RFC 9110 13.1.5).
    """
    if header is None:
        return True
    tag = header.strip()
    if not etag or tag.startswith("W/") or not tag.startswith('"'):
        return False
    return tag == etag
