"""The planner: pure code from manifest entries to shards (no I/O).

Entries are grouped by the object key des-routing computes from ``(uid, created_at, n_bits)``
(one group per ``(date_dir, shard_hex)``); inside a group they are sorted by uid, so any split of
a manifest (by lines, by ``--shard-range``) gives the same groups and the same shard bytes.
A group larger than the shard size limit still has one head object: the writer rolls payloads
over into continuation parts whose keys the head's index names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from operator import attrgetter

from des_routing import (
    RoutingError,
    date_dir_of,
    format_shard_hex,
    parse_created_at,
    shard_index_of_uid,
    shard_key,
)

from ._errors import ManifestError, PackConfigError
from ._manifest import ManifestEntry

__all__ = ["PackPlan", "PlannedShard", "parse_shard_range", "plan_shards"]

_uid = attrgetter("uid")  # the sort key of a shard's entries


@dataclass(frozen=True, slots=True)
class PlannedShard:
    """One shard object to write: its key and its entries, sorted by uid."""

    key: str
    date_dir: str
    shard_index: int
    shard_hex: str
    entries: tuple[ManifestEntry, ...]

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries)


@dataclass(frozen=True, slots=True)
class PackPlan:
    """Shards sorted by key; ``rejected`` lists duplicate entries (uid, reason) left out."""

    shards: tuple[PlannedShard, ...]
    n_bits: int
    out_of_range: int = 0
    rejected: tuple[tuple[str, str], ...] = ()

    @property
    def files(self) -> int:
        return sum(s.files for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)


def parse_shard_range(text: str, n_bits: int) -> tuple[int, int]:
    """Parse ``"A-B"`` (inclusive shard indexes, decimal) and check it against ``n_bits``."""
    top = (1 << n_bits) - 1
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise PackConfigError(
            f"--shard-range {text!r} is not of the form A-B (for example 0-{top})"
        )
    lo, hi = int(parts[0]), int(parts[1])
    if lo > hi or hi > top:
        raise PackConfigError(
            f"--shard-range {text!r} must satisfy 0 <= A <= B <= {top} for --n-bits {n_bits}"
        )
    return lo, hi


def plan_shards(
    entries: Iterable[ManifestEntry],
    *,
    n_bits: int = 8,
    shard_range: tuple[int, int] | None = None,
    on_duplicate: str = "fail",
) -> PackPlan:
    """Group entries into shards; a uid seen twice on the same day is an error.

    With ``on_duplicate="skip"`` the first entry (in manifest order) is kept and the others are
    listed in ``PackPlan.rejected``.
    """
    # Per entry only what locate_shard checks and computes (the same errors in the same
    # order: uid, n_bits, created_at), grouped by (UTC day, shard index) packed in one int;
    # the date directory and key strings are made once per shard.
    groups: dict[int, tuple[str, list[ManifestEntry]]] = {}
    out_of_range = 0
    for entry in entries:
        try:
            index = shard_index_of_uid(entry.uid, n_bits)
            created_at = entry.created_at
            if created_at.tzinfo is not UTC:
                created_at = parse_created_at(created_at)
        except RoutingError as exc:
            raise ManifestError(f"{exc}", uid=entry.uid) from None
        if shard_range is not None and not (shard_range[0] <= index <= shard_range[1]):
            out_of_range += 1
            continue
        group_id = created_at.toordinal() << 16 | index  # index < 2**16 (n_bits <= 16)
        group = groups.get(group_id)
        if group is None:
            groups[group_id] = group = (date_dir_of(created_at), [])
        group[1].append(entry)
    located: dict[str, tuple[str, int, str, list[ManifestEntry]]] = {}
    for group_id, (date_dir, items) in groups.items():
        index = group_id & 0xFFFF
        hexa = format_shard_hex(index, n_bits)
        located[shard_key(date_dir, index, n_bits)] = (date_dir, index, hexa, items)
    del groups
    rejected: list[tuple[str, str]] = []
    shards: list[PlannedShard] = []
    for key in sorted(located):
        date_dir, index, hexa, items = located.pop(key)
        items.sort(key=_uid)  # stable: the first of equal uids stays first
        kept: list[ManifestEntry] = []
        for entry in items:
            if kept and kept[-1].uid == entry.uid:
                reason = (
                    f"duplicate uid {entry.uid!r} on {date_dir}: a uid may appear only once "
                    "per day; remove the extra entry from the manifest"
                )
                if on_duplicate != "skip":
                    raise ManifestError(reason, uid=entry.uid)
                rejected.append((entry.uid, reason))
                continue
            kept.append(entry)
        shards.append(PlannedShard(key, date_dir, index, hexa, tuple(kept)))
    return PackPlan(tuple(shards), n_bits, out_of_range, tuple(rejected))
