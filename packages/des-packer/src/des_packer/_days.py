"""Days and the shards of a day, for the operator commands that work across shards (``des ls
--day``, ``des find``, ``des export``).

A day's shards are found by listing the day's directory (local) or key prefix (S3; each zone's
bucket for ``multi_s3``): one listing per day, never one request per possible shard.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from des_format import ObjectStore

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


def day_shard_keys(store: ObjectStore, day: str) -> list[str]:
    """The head shard keys (``20240101/A7.des``) present for ``day`` in ``store``, sorted:
    one listing of the day (each zone's for a multi-zone store).

    ``store`` must declare ``supports_listing`` (local, S3 and multi-zone stores do); another
    raises ``StoreError``.
    """
    return sorted(
        f"{day}/{e.name}" for e in store.list_dir(day) if not e.is_dir and _HEAD.fullmatch(e.name)
    )
