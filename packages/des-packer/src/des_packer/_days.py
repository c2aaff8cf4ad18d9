"""Days and the shards of a day, for the operator commands that work across shards (``des ls
--day``, ``des find``, ``des export``).

A day's shards are found by listing the day's directory (local) or key prefix (S3; each zone's
bucket for ``multi_s3``): one listing per day, never one request per possible shard.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from ._errors import PackerError

__all__ = ["MAX_DAYS", "day_range", "day_shard_keys", "parse_day"]

#: The most days one ``--from/--to`` range may span (ten years): a bound, so that a typo in a
#: year cannot start a listing of centuries.
MAX_DAYS = 3660

_HEAD = re.compile(r"[0-9A-F]{1,4}\.des")


class DayError(PackerError, ValueError):
    """A day or a range of days that cannot be used (the message names the fix)."""


def parse_day(text: str, what: str = "--day") -> date:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` as a date."""
    raw = text.strip().replace("-", "")
    if len(raw) == 8 and raw.isascii() and raw.isdigit():
        try:
            return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        except ValueError:
            pass
    raise DayError(f"{what} {text!r} is not a day; write it as YYYYMMDD, e.g. 20240101")


def day_range(start: str, end: str | None) -> list[str]:
    """The ``YYYYMMDD`` names of the days ``start``..``end`` (inclusive), at most MAX_DAYS."""
    first = parse_day(start, "--from")
    last = first if end is None else parse_day(end, "--to")
    if last < first:
        raise DayError(f"--to {last:%Y%m%d} is before --from {first:%Y%m%d}; swap them")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise DayError(
            f"--from {first:%Y%m%d} --to {last:%Y%m%d} spans {count} days; at most "
            f"{MAX_DAYS} at a time: split the range"
        )
    return [f"{first + timedelta(days=i):%Y%m%d}" for i in range(count)]


def day_shard_keys(store: Any, day: str) -> list[str]:
    """The head shard keys (``20240101/A7.des``) present for ``day`` in ``store``, sorted.

    ``store`` is a ``des_format.LocalObjectStore``, a ``des_storage_s3.S3ObjectStore`` or a
    ``des_storage_s3.MultiZoneObjectStore`` (each zone's store is listed).
    """
    return sorted(set(_keys(store, day)))


def _keys(store: Any, day: str) -> Iterator[str]:
    stores = getattr(store, "stores", None)
    if isinstance(stores, dict):  # multi-zone: every zone may hold shards of the day
        for zone_store in stores.values():
            yield from _keys(zone_store, day)
        return
    path_for = getattr(store, "path_for", None)
    if path_for is not None:  # LocalObjectStore
        folder = path_for(day)
        try:
            names = [p.name for p in folder.iterdir() if p.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            if _HEAD.fullmatch(name):
                yield f"{day}/{name}"
        return
    client = getattr(store, "client", None)
    if client is None:
        raise TypeError(f"cannot list the shards of {store.describe()}")
    root = store.prefix.strip("/")
    full = f"{root}/{day}/" if root else f"{day}/"
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=store.bucket, Prefix=full, Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(full) :]
            if _HEAD.fullmatch(name):
                yield f"{day}/{name}"
