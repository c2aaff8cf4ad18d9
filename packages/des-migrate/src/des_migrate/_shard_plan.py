"""Planning a batch's shards: the day-aligned cut of a full batch, and the packer's plan built
from the shard keys validation computed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._source_db import FileRow

if TYPE_CHECKING:
    from des_packer import ManifestEntry, PackPlan

__all__ = ["plan_day_aligned_cut", "plan_from_keys"]


def plan_day_aligned_cut(rows: Sequence[FileRow]) -> int:
    """How many rows of a full batch to keep so the batch ends at a UTC day boundary.

    Shards are per day: a batch that stops in the middle of a day leaves the rest of that day
    to the next batch, which then appends to the same shards again (a local append rewrites
    the shard). Keeping only whole days avoids that. The rows of the last day are left for the
    next batch, unless that would drop half the batch or more (a day larger than the batch
    cannot be helped).
    """
    if not rows:
        return 0
    last_day = rows[-1].created_at.date()
    cut = len(rows)
    while cut > 0 and rows[cut - 1].created_at.date() == last_day:
        cut -= 1
    return cut if cut * 2 >= len(rows) and cut > 0 else len(rows)


def plan_from_keys(entries: Sequence[ManifestEntry], keys: dict[str, str], n_bits: int) -> PackPlan:
    """The plan ``des_packer.plan_shards(entries, n_bits=n_bits, on_duplicate="skip")`` gives,
    built from shard keys already computed (``keys``: uid -> ``des_routing`` object key).

    Entries are grouped by key, shards sorted by key, entries sorted by uid (stably); a uid
    seen twice in one shard keeps its first entry and rejects the others, as the planner does.
    """
    from des_packer import PackPlan, PlannedShard

    groups: dict[str, list[ManifestEntry]] = defaultdict(list)
    for entry in entries:
        groups[keys[entry.uid]].append(entry)
    shards: list[PlannedShard] = []
    rejected: list[tuple[str, str]] = []
    for key in sorted(groups):
        items = groups[key]
        items.sort(key=lambda e: e.uid)
        date_dir, _, name = key.partition("/")
        hexa = name.partition(".")[0]
        kept: list[ManifestEntry] = []
        for entry in items:
            if kept and kept[-1].uid == entry.uid:
                rejected.append(
                    (
                        entry.uid,
                        f"duplicate uid {entry.uid!r} on {date_dir}: another row of the batch "
                        "has the same uid and day; a uid may appear only once per day",
                    )
                )
                continue
            kept.append(entry)
        shards.append(PlannedShard(key, date_dir, int(hexa, 16), hexa, tuple(kept)))
    return PackPlan(tuple(shards), n_bits, 0, tuple(rejected))
