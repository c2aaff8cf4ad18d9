"""What a pack run did: per shard and in total."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PackReport", "ShardResult"]


@dataclass(frozen=True, slots=True)
class ShardResult:
    """One planned shard: ``status`` is written, appended, skipped (already complete) or
    failed. ``bytes_out`` counts the bytes this run stored (for an append: the new tail)."""

    key: str
    status: str
    files: int
    bytes_in: int
    bytes_out: int
    parts: int = 0
    duplicates: int = 0
    blocks: int = 0
    block_files: int = 0


@dataclass(frozen=True, slots=True)
class PackReport:
    """Totals of a run.

    ``files``/``bytes_in``: files packed by this run and their original bytes; ``bytes_out``:
    bytes stored (shard objects, parts, append tails, big files). ``failures``: (uid, reason) of
    entries left out (``on_error="skip"``). ``duplicates``: uids already present in their shard,
    not written again. Every planned entry not in ``failures`` is durable in the output.
    ``blocks``/``block_files``: solid blocks written (``block_size``) and the files in them.
    """

    files: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    shards_written: int = 0
    shards_appended: int = 0
    shards_skipped: int = 0
    failures: tuple[tuple[str, str], ...] = ()
    duplicates: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0
    shards: tuple[ShardResult, ...] = field(default=())
    blocks: int = 0
    block_files: int = 0

    @property
    def ratio(self) -> float:
        """bytes_in / bytes_out (1.0 when nothing was written)."""
        return self.bytes_in / self.bytes_out if self.bytes_out else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "ratio": round(self.ratio, 4),
            "shards_written": self.shards_written,
            "shards_appended": self.shards_appended,
            "shards_skipped": self.shards_skipped,
            "failed": len(self.failures),
            "failures": [{"uid": u, "reason": r} for u, r in self.failures],
            "duplicates": list(self.duplicates),
            "blocks": self.blocks,
            "block_files": self.block_files,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "shards": [
                {
                    "key": s.key,
                    "status": s.status,
                    "files": s.files,
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                    "parts": s.parts,
                    "duplicates": s.duplicates,
                    "blocks": s.blocks,
                    "block_files": s.block_files,
                }
                for s in self.shards
            ],
        }
