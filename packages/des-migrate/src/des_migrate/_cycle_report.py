"""What a migration cycle reports: the cycle's totals and the files it left unarchived."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "CycleReport", "FileFailure", "replace_report", "write_failures"]

log = logging.getLogger("des_migrate")

STEPS = ("fetch", "validate", "pack", "verify", "mark", "cleanup")


@dataclass(frozen=True, slots=True)
class FileFailure:
    """A file left unarchived, the step that refused it and why."""

    uid: str
    step: str
    reason: str


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did. ``status``: success, partial (some files failed), failure (a step
    failed for a whole batch, or the database could not be read) or empty (nothing eligible)."""

    status: str
    batches: int = 0
    fetched: int = 0
    migrated: int = 0
    bytes_migrated: int = 0
    already_packed: int = 0
    failures: tuple[FileFailure, ...] = ()
    deleted_sources: int = 0
    error: str | None = None
    dry_run: bool = False
    shards: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0
    #: wall seconds per step over the cycle's batches (verify: the wait after the pack)
    step_seconds: tuple[tuple[str, float], ...] = ()

    @property
    def exit_code(self) -> int:
        """0 success (or nothing to do), 3 partial failure, 1 failure."""
        return {"success": 0, "empty": 0, "partial": 3}.get(self.status, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "dry_run": self.dry_run,
            "batches": self.batches,
            "fetched": self.fetched,
            "migrated": self.migrated,
            "bytes_migrated": self.bytes_migrated,
            "already_packed": self.already_packed,
            "deleted_sources": self.deleted_sources,
            "failed": len(self.failures),
            "failures": [{"uid": f.uid, "step": f.step, "reason": f.reason} for f in self.failures],
            "shards": list(self.shards),
            "error": self.error,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds},
        }


def replace_report(report: CycleReport, **changes: Any) -> CycleReport:
    return dataclasses.replace(report, **changes)


def write_failures(path: str | None, failures: Sequence[FileFailure], stamp: str) -> None:
    """Append ``failures`` to the report file (JSON Lines), if one is configured."""
    if not path or not failures:
        return
    try:
        with Path(path).open("a", encoding="utf-8") as fh:
            for f in failures:
                rec = {"time": stamp, "uid": f.uid, "step": f.step, "reason": f.reason}
                fh.write(json.dumps(rec) + "\n")
    except OSError as exc:
        log.error("cannot write report file %s: %s", path, exc.strerror)
