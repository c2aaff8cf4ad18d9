"""Manifest entries and the manifest reader.

A manifest is either a JSON list of objects (as in the product README; parsed whole, so its
memory is that of the parsed document) or JSON Lines, one object per line (streamed: one line
in memory at a time). Each object has ``uid``, ``created_at``, ``size_bytes`` and
``source_path`` (``source`` is accepted too), optionally ``content_type`` and ``meta``.
Relative source paths are relative to the manifest's own directory.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from des_routing import RoutingError, parse_created_at

from ._errors import ManifestError

__all__ = [
    "ManifestEntry",
    "ManifestRecord",
    "iter_manifest_records",
    "parse_manifest_entry",
    "read_manifest",
]

_REQUIRED = ("uid", "created_at", "size_bytes", "source_path")
# created_at text -> its parsed value: manifests repeat timestamps (files of one second or
# minute), and a datetime is immutable, so entries share one (bounded; emptied when full)
_CREATED_AT: dict[str, datetime] = {}
_CREATED_AT_MAX = 65536
_FIELDS_HINT = "every entry needs uid, created_at, size_bytes and source_path"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file to pack.

    ``created_at`` may be given as a datetime or an ISO 8601 string; it is stored as an aware
    UTC datetime. ``source`` is a local path or an ``s3://bucket/key`` URI.
    """

    uid: str
    created_at: datetime
    size_bytes: int
    source: str
    content_type: str | None = None
    meta: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.created_at, datetime) or self.created_at.tzinfo is None:
            object.__setattr__(self, "created_at", parse_created_at(self.created_at))
        if isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, int):
            raise ValueError(f"size_bytes must be an integer, got {self.size_bytes!r}")
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes must not be negative, got {self.size_bytes}")


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One raw object of a manifest and where it came from (for messages)."""

    where: str
    value: object


def iter_manifest_records(path: str | os.PathLike[str]) -> Iterator[ManifestRecord]:
    """Yield the raw objects of a manifest file, streaming JSON Lines.

    Raises ``ManifestError`` for a file that cannot be read or is not JSON.
    """
    for prefix, number, value in _iter_values(path):
        yield ManifestRecord(f"{prefix}{number}", value)


def _iter_values(path: str | os.PathLike[str]) -> Iterator[tuple[str, int, object]]:
    """``(prefix, number, value)`` per object: its location is ``f"{prefix}{number}"``
    (``m.json entry #3``, ``m.jsonl line 7``), a string made only when a message needs it."""
    p = Path(path)
    name = p.name
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise ManifestError(
            f"cannot read manifest {p}: {exc.strerror}; check the --input-json path"
        ) from None
    with fh:
        first = _first_significant_byte(fh)
        if first == b"[":
            try:
                doc = json.load(fh)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ManifestError(
                    f"manifest {p} is not valid JSON: {exc}; write a JSON list of objects "
                    "or one JSON object per line (JSON Lines)"
                ) from None
            prefix = f"{name} entry #"
            for i, item in enumerate(doc, start=1):
                yield prefix, i, item
            return
        prefix = f"{name} line "
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ManifestError(
                    f"not valid JSON ({exc}); each line of a JSON Lines manifest must be "
                    "one JSON object",
                    where=f"{prefix}{lineno}",
                ) from None
            yield prefix, lineno, value


def _first_significant_byte(fh: Any) -> bytes:
    while True:
        b: bytes = fh.read(1)
        if not b:
            fh.seek(0)
            return b""
        if b == b"\xef":  # UTF-8 byte order mark
            fh.read(2)
            continue
        if not b.isspace():
            fh.seek(fh.tell() - 1)
            return b


def _error(message: str, where: str, number: object, uid: str | None) -> ManifestError:
    """The error for the entry at ``f"{where}{number}"``, naming its uid if it has one."""
    at = f"{where}{number}"
    if uid is not None:
        at = f"{at} (uid {uid!r})" if at else f"uid {uid!r}"
    return ManifestError(message, where=at, uid=uid)


def parse_manifest_entry(
    value: object, *, where: str = "", base_dir: str | os.PathLike[str] | None = None
) -> ManifestEntry:
    """Validate one manifest object and build its entry; relative paths join ``base_dir``."""
    return _parse_entry(value, where, "", None if base_dir is None else os.fspath(base_dir))


def _parse_entry(value: object, where: str, number: object, base_dir: str | None) -> ManifestEntry:
    # Called once per entry (20,000 times for the benchmark manifest): the checks run in the
    # order of the messages, and the entry's location (f"{where}{number}") is made only for
    # an error.
    if not isinstance(value, dict):
        raise _error(
            f"expected a JSON object, got {type(value).__name__}; {_FIELDS_HINT}",
            where,
            number,
            None,
        )
    raw_uid = value.get("uid")
    uid = raw_uid if isinstance(raw_uid, str) else None
    created_raw = value.get("created_at")
    size = value.get("size_bytes")
    source_value = value.get("source_path", value.get("source"))
    if raw_uid is None or created_raw is None or size is None or source_value is None:
        present = (raw_uid, created_raw, size, source_value)
        missing = [f for f, v in zip(_REQUIRED, present, strict=True) if v is None]
        names = ", ".join(missing)
        raise _error(
            f"missing field{'s' if len(missing) > 1 else ''} {names}; {_FIELDS_HINT}",
            where,
            number,
            uid,
        )
    if uid is None or not uid.strip():
        raise _error(f"uid must be a non-empty string, got {raw_uid!r}", where, number, uid)
    if not isinstance(created_raw, str):
        raise _error(
            f"created_at must be an ISO 8601 string such as 2024-01-01T00:00:00Z, "
            f"got {created_raw!r}",
            where,
            number,
            uid,
        )
    created_at = _CREATED_AT.get(created_raw)
    if created_at is None:
        try:
            created_at = parse_created_at(created_raw)
        except (RoutingError, ValueError) as exc:
            raise _error(
                f"cannot parse created_at {created_raw!r} ({exc}); use ISO 8601 such as "
                "2024-01-01T00:00:00Z",
                where,
                number,
                uid,
            ) from None
        if len(_CREATED_AT) >= _CREATED_AT_MAX:
            _CREATED_AT.clear()
        _CREATED_AT[created_raw] = created_at
    if isinstance(size, bool) or not isinstance(size, int):
        raise _error(
            f"size_bytes must be a whole number of bytes, got {size!r}", where, number, uid
        )
    if size < 0:
        raise _error(
            f"size_bytes must not be negative, got {size}; give the file's size in bytes",
            where,
            number,
            uid,
        )
    if not isinstance(source_value, str) or not source_value:
        raise _error(
            f"source_path must be a non-empty string (a path or s3://bucket/key), "
            f"got {source_value!r}",
            where,
            number,
            uid,
        )
    content_type = value.get("content_type")
    if content_type is not None:
        if not isinstance(content_type, str):
            raise _error(f"content_type must be a string, got {content_type!r}", where, number, uid)
        content_type = sys.intern(content_type)  # a handful of distinct values, shared
    meta = value.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _error(f"meta must be a JSON object, got {meta!r}", where, number, uid)
    source = source_value
    if (
        base_dir is not None
        and "://" not in source
        and not (source.startswith("/") if _POSIX else os.path.isabs(source))
    ):
        source = join_relative(base_dir, source)
    # ManifestEntry(...) without its checks, all made above (half the cost of an entry)
    entry: ManifestEntry = _new_object(ManifestEntry)
    _set_uid(entry, uid)
    _set_created_at(entry, created_at)
    _set_size(entry, size)
    _set_source(entry, source)
    _set_content_type(entry, content_type)
    _set_meta(entry, meta)
    return entry


# The slot setters of ManifestEntry (a frozen dataclass): _parse_entry fills an entry whose
# values it has checked with these, as ManifestEntry.__init__ would.
_new_object = object.__new__
_slots: Mapping[str, Any] = vars(ManifestEntry)
_set_uid = _slots["uid"].__set__
_set_created_at = _slots["created_at"].__set__
_set_size = _slots["size_bytes"].__set__
_set_source = _slots["source"].__set__
_set_content_type = _slots["content_type"].__set__
_set_meta = _slots["meta"].__set__


_POSIX = os.path is posixpath  # os.path.isabs(source) is then source.startswith("/")


@functools.lru_cache(maxsize=1024)
def _normalized_dir(base_dir: str, rel_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, rel_dir))


def join_relative(base_dir: str, source: str) -> str:
    """``os.path.normpath(os.path.join(base_dir, source))``, normalizing each directory once:
    a manifest names thousands of files in a few directories."""
    head, _, name = source.rpartition("/")
    if os.sep != "/" or name in ("", ".", "..") or source.startswith("/"):
        return os.path.normpath(os.path.join(base_dir, source))
    # normpath keeps a last plain component as it is, after its normalized directory
    parent = _normalized_dir(base_dir, head)
    if parent == ".":
        return name
    return parent + name if parent.endswith("/") else f"{parent}/{name}"


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestEntry]:
    """Yield the validated entries of a manifest; the first invalid entry raises."""
    return iter_entries(path)


def iter_entries(
    path: str | os.PathLike[str], rejected: list[tuple[str, str]] | None = None
) -> Iterator[ManifestEntry]:
    """``read_manifest``; with ``rejected``, an invalid entry is appended to it as (its uid, or
    else its location; the message) instead of raised."""
    base = str(Path(path).resolve().parent)
    for prefix, number, value in _iter_values(path):
        try:
            entry = _parse_entry(value, prefix, number, base)
        except ManifestError as exc:
            if rejected is None:
                raise
            rejected.append((exc.uid or f"{prefix}{number}", str(exc)))
            continue
        yield entry
