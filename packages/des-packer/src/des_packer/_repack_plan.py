"""Planning a repack, from shard indexes alone: what each shard holds (live, hidden and
erased entries, :func:`scan_shard`), which shards a round rebuilds (:func:`plan_repack`,
pure), the options of a round and the reports it returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from des_format import (
    DEFAULT_BIGFILE_GRACE_SECONDS,
    DEFAULT_BIGFILES_PREFIX,
    Codec,
    IndexEntry,
    ShardIndex,
)

__all__ = [
    "RepackOptions",
    "RepackReport",
    "ShardDeletionStats",
    "ShardRepack",
    "part_number",
    "plan_repack",
    "scan_shard",
    "stored_shares",
]


def part_number(shard_key: str, key: str) -> int | None:
    stem = shard_key[:-4] if shard_key.endswith(".des") else shard_key
    if not (key.startswith(f"{stem}.p") and key.endswith(".des")):
        return None
    digits = key[len(stem) + 2 : -4]
    return int(digits) if digits.isdigit() and int(digits) >= 1 else None


@dataclass(frozen=True, slots=True)
class ShardDeletionStats:
    """Deletion bookkeeping of one shard, from its index alone."""

    key: str
    live: int
    live_bytes: int  # stored bytes of live entries (big files: their size)
    hidden: int  # tombstones whose bytes are still stored
    hidden_bytes: int
    erased: int  # tombstones already erased by a repack
    parts: frozenset[int] = field(default_factory=frozenset)  # parts the index references

    @property
    def deleted_share(self) -> float:
        """Share of the shard's stored bytes that belong to deleted files (0..1)."""
        total = self.live_bytes + self.hidden_bytes
        return self.hidden_bytes / total if total else (1.0 if self.hidden else 0.0)


def stored_shares(entries: list[IndexEntry]) -> dict[str, int]:
    """Stored bytes of each entry, a solid-block member counting its share of the block's
    stored bytes (in proportion to its original size), not the whole block that its
    ``stored_size`` names."""
    block_sizes: dict[tuple[int, int], int] = {}
    for e in entries:
        if e.codec is Codec.ZSTD_BLOCK and not e.erased and not e.is_bigfile:
            block_sizes[(e.part, e.offset)] = block_sizes.get((e.part, e.offset), 0) + e.size
    out: dict[str, int] = {}
    for e in entries:
        stored = e.stored_size
        if e.codec is Codec.ZSTD_BLOCK and not e.erased and not e.is_bigfile:
            total = block_sizes[(e.part, e.offset)]
            stored = e.stored_size * e.size // total if total else 0
        out[e.uid] = stored
    return out


def scan_shard(key: str, index: ShardIndex) -> ShardDeletionStats:
    """Counts of one shard from its index (stored bytes as :func:`stored_shares` counts
    them)."""
    live = live_bytes = hidden = hidden_bytes = erased = 0
    parts: set[int] = set()
    entries = list(index.iter_entries())
    shares = stored_shares(entries)
    for e in entries:
        if not e.is_bigfile and e.part:
            parts.add(e.part)
        stored = shares[e.uid]
        if e.erased:
            erased += 1
        elif e.deleted:
            hidden += 1
            hidden_bytes += stored
        else:
            live += 1
            live_bytes += stored
    return ShardDeletionStats(key, live, live_bytes, hidden, hidden_bytes, erased, frozenset(parts))


def plan_repack(
    stats: Iterable[ShardDeletionStats], *, threshold: float, max_shards: int | None
) -> list[ShardDeletionStats]:
    """The shards a round repacks: those with deleted bytes still stored and a deleted share
    of at least ``threshold``, largest deleted share first (then by key), at most
    ``max_shards``. Pure."""
    chosen = [s for s in stats if s.hidden and s.deleted_share >= threshold]
    chosen.sort(key=lambda s: (-s.deleted_share, s.key))
    return chosen if max_shards is None else chosen[:max_shards]


@dataclass(frozen=True, slots=True)
class RepackOptions:
    threshold: float = 0.0  # repack shards whose deleted share is at least this
    max_shards: int | None = None  # shards per round (None: all chosen)
    prefix: str = ""  # only shards under this key prefix (e.g. "20240101/")
    dry_run: bool = False
    max_part_size: int | None = None  # rollover size of rebuilt shards (None: one object)
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX
    bigfile_grace_seconds: float = DEFAULT_BIGFILE_GRACE_SECONDS
    attempts: int = 5


@dataclass(frozen=True, slots=True)
class ShardRepack:
    """What repacking one shard did."""

    key: str
    erased: tuple[str, ...]  # uids whose bytes this repack removed
    bytes_before: int
    bytes_after: int
    attempts: int
    removed_objects: int  # old parts and old versions deleted


@dataclass(frozen=True, slots=True)
class RepackReport:
    scanned: int
    chosen: tuple[ShardDeletionStats, ...]
    repacked: tuple[ShardRepack, ...]
    remaining: int  # shards over the threshold left for later rounds
    cleaned_objects: int  # leftovers (parts, versions) removed outside repacked shards
    bigfiles_removed: tuple[str, ...]
    failures: tuple[tuple[str, str], ...]
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "chosen": [
                {
                    "shard": s.key,
                    "deleted_share": round(s.deleted_share, 6),
                    "hidden": s.hidden,
                    "hidden_bytes": s.hidden_bytes,
                    "live": s.live,
                }
                for s in self.chosen
            ],
            "repacked": [
                {
                    "shard": r.key,
                    "erased": len(r.erased),
                    "bytes_before": r.bytes_before,
                    "bytes_after": r.bytes_after,
                    "attempts": r.attempts,
                }
                for r in self.repacked
            ],
            "remaining": self.remaining,
            "cleaned_objects": self.cleaned_objects,
            "bigfiles_removed": list(self.bigfiles_removed),
            "failures": [{"shard": k, "error": e} for k, e in self.failures],
        }
