"""des-stats: what a migration would move and write, before it runs.

Totals, oldest and newest are aggregated in SQL. Per-day and per-shard figures need the shard
index, which is a function of the uid (des_routing), so rows are streamed in keyset pages and
folded into counters keyed by (day, shard index): memory grows with days x 2**n_bits, never
with the number of rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from des_routing import MAX_N_BITS, MIN_N_BITS, locate_shard

from ._source_db import SourceDatabase

DEFAULT_TARGET_SHARD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DayStats:
    day: str  # YYYYMMDD, the shard directory
    files: int
    bytes: int
    shards: int


@dataclass(frozen=True, slots=True)
class ShardIndexStats:
    shard_index: int
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class MigrationStats:
    cutoff: datetime
    n_bits: int
    files: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None
    per_day: tuple[DayStats, ...]
    per_shard_index: tuple[ShardIndexStats, ...]
    shards_to_write: int
    average_shard_bytes: int
    target_shard_bytes: int
    recommended_n_bits: int

    def to_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat().replace("+00:00", "Z") if d is not None else None

        return {
            "cutoff": iso(self.cutoff),
            "n_bits": self.n_bits,
            "files": self.files,
            "bytes": self.bytes,
            "oldest": iso(self.oldest),
            "newest": iso(self.newest),
            "shards_to_write": self.shards_to_write,
            "average_shard_bytes": self.average_shard_bytes,
            "target_shard_bytes": self.target_shard_bytes,
            "recommended_n_bits": self.recommended_n_bits,
            "per_day": [
                {"day": d.day, "files": d.files, "bytes": d.bytes, "shards": d.shards}
                for d in self.per_day
            ],
            "per_shard_index": [
                {"shard_index": s.shard_index, "files": s.files, "bytes": s.bytes}
                for s in self.per_shard_index
            ],
        }


def plan_n_bits(
    bytes_per_day: list[int],
    target_shard_bytes: int,
    *,
    min_bits: int = MIN_N_BITS,
    max_bits: int = MAX_N_BITS,
) -> int:
    """The largest n_bits whose average shard (mean bytes per day / 2**n) still reaches the target.

    Shards smaller than the target bring back the per-object costs DES exists to avoid, so the
    recommendation errs towards fewer, bigger shards; a day smaller than the target gets
    ``min_bits``.
    """
    if target_shard_bytes <= 0:
        raise ValueError("target_shard_bytes must be positive")
    days = [b for b in bytes_per_day if b > 0]
    if not days:
        return min_bits
    mean = sum(days) / len(days)
    if mean < target_shard_bytes:
        return min_bits
    n = math.floor(math.log2(mean / target_shard_bytes))
    # floating point guard: make sure 2**n shards really stay at or above the target
    while n > 0 and mean / (1 << n) < target_shard_bytes:
        n -= 1
    return max(min_bits, min(max_bits, n))


def compute_stats(
    db: SourceDatabase,
    cutoff: datetime,
    *,
    n_bits: int = 8,
    target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
    page_size: int = 5000,
    include_failed: bool = True,
) -> MigrationStats:
    """Stream the eligible rows once and aggregate them (bounded memory)."""
    totals = db.totals(cutoff, include_failed=include_failed)
    cells: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for row in db.iter_eligible(cutoff, page_size=page_size, include_failed=include_failed):
        loc = locate_shard(row.uid, row.created_at, n_bits)
        cell = cells[(loc.date_dir, loc.shard_index)]
        cell[0] += 1
        cell[1] += max(row.size_bytes, 0)

    days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    shards: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for (day, index), (files, nbytes) in cells.items():
        d = days[day]
        d[0] += files
        d[1] += nbytes
        d[2] += 1
        s = shards[index]
        s[0] += files
        s[1] += nbytes
    per_day = tuple(DayStats(day, f, b, n) for day, (f, b, n) in sorted(days.items()))
    per_shard = tuple(ShardIndexStats(i, f, b) for i, (f, b) in sorted(shards.items()))
    shards_to_write = len(cells)
    total_bytes = sum(c[1] for c in cells.values())
    return MigrationStats(
        cutoff=cutoff,
        n_bits=n_bits,
        files=totals.files,
        bytes=totals.bytes,
        oldest=totals.oldest,
        newest=totals.newest,
        per_day=per_day,
        per_shard_index=per_shard,
        shards_to_write=shards_to_write,
        average_shard_bytes=total_bytes // shards_to_write if shards_to_write else 0,
        target_shard_bytes=target_shard_bytes,
        recommended_n_bits=plan_n_bits([d.bytes for d in per_day], target_shard_bytes),
    )


def format_stats(stats: MigrationStats, *, max_rows: int = 40) -> str:
    """A human-readable report."""
    lines = [
        f"cutoff:              {stats.cutoff.isoformat()}",
        f"eligible files:      {stats.files}",
        f"eligible bytes:      {stats.bytes} ({_human(stats.bytes)})",
        f"oldest:              {stats.oldest.isoformat() if stats.oldest else '-'}",
        f"newest:              {stats.newest.isoformat() if stats.newest else '-'}",
        f"n_bits:              {stats.n_bits}",
        f"shards to write:     {stats.shards_to_write}",
        f"average shard:       {_human(stats.average_shard_bytes)}",
        f"target shard:        {_human(stats.target_shard_bytes)}",
        f"recommended n_bits:  {stats.recommended_n_bits}",
        "",
        "per day (day, files, bytes, shards):",
    ]
    for d in stats.per_day[:max_rows]:
        lines.append(f"  {d.day}  {d.files:>10}  {d.bytes:>14}  {d.shards:>6}")
    if len(stats.per_day) > max_rows:
        lines.append(f"  ... {len(stats.per_day) - max_rows} more days (use --json for all)")
    lines.append("per shard index (index, files, bytes):")
    for s in stats.per_shard_index[:max_rows]:
        lines.append(f"  {s.shard_index:>5}  {s.files:>10}  {s.bytes:>14}")
    if len(stats.per_shard_index) > max_rows:
        more = len(stats.per_shard_index) - max_rows
        lines.append(f"  ... {more} more shard indexes (use --json for all)")
    return "\n".join(lines)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"
