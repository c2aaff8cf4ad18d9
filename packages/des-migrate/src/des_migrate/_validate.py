"""The validate step: each row's source exists and has the size the table says, and its uid
routes to a shard (the key, never a ``ShardLocation``, is computed per row).

A batch is validated in the verify worker process when it was fetched ahead (while the
previous batch is packed), else here, split over both cores when it is large."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ._batch import Batch
from ._source_db import FileRow
from ._steps import step_errors
from ._verify_worker import (
    LocalRow,
    Row,
    Validated,
    duplicate_uid,
    source_problem,
    validate_rows,
)

if TYPE_CHECKING:
    from ._orchestrator import MigrationOrchestrator

__all__ = ["apply_validated", "validate_batch", "validate_in_worker", "worker_rows"]


def validate_batch(orch: MigrationOrchestrator, batch: Batch) -> None:
    """Each source exists and has the size the table says; the uid routes to a shard.

    With a verify worker process and local sources, a batch of at least
    ``tuning.validate_split_min_rows`` rows is validated on both cores: its second half in
    the worker while this process does the first half (same keys, same reasons, same
    order as one pass: a uid of the second half already routed in the first is refused
    here as a duplicate)."""
    orch.step("validate")
    rows = batch.rows
    n_bits = orch.config.packer.n_bits
    split = len(rows)
    job: Future[Validated] | None = None
    verifier = orch.verifier
    if (
        verifier is not None
        and verifier.pid is not None
        and len(rows) >= max(2, orch.tuning.validate_split_min_rows)
        and not any(r.location.startswith("s3://") for r in rows)
    ):
        split = len(rows) // 2
        job = verifier.validate(worker_rows(rows[split:]), n_bits)
        if job is None:
            split = len(rows)
    with step_errors("validate"):
        _validate_here(orch, batch, rows[:split], n_bits)
        if job is not None:
            apply_validated(batch, rows[split:], job.result())


def _validate_here(
    orch: MigrationOrchestrator, batch: Batch, rows: Sequence[FileRow], n_bits: int
) -> None:
    """Validate ``rows`` in this process (sources on S3 are checked with a HEAD)."""
    if not any(r.location.startswith("s3://") for r in rows):
        local: list[LocalRow] = [(r.uid, r.created_at, r.location, r.size_bytes) for r in rows]
        apply_validated(batch, rows, validate_rows(local, n_bits))
        return
    from des_routing import RoutingError, locate_shard_key

    keys = batch.keys
    for row in rows:
        if row.uid in keys:
            batch.fail(row, "validate", duplicate_uid(row.uid))
            continue
        try:
            keys[row.uid] = locate_shard_key(row.uid, row.created_at, n_bits)
        except RoutingError as exc:
            batch.fail(row, "validate", f"cannot route uid: {exc}")
            continue
        if row.location.startswith("s3://") and row.size_bytes >= 0:
            problem = orch.sources.check_s3_source(row)
        else:
            problem = source_problem(row.location, row.size_bytes)
        if problem is not None:
            batch.fail(row, "validate", problem)


def validate_in_worker(orch: MigrationOrchestrator, batch: Batch) -> bool:
    """:meth:`validate` in the verify worker process (local sources only); False when it
    cannot be done there (no worker, or sources on S3)."""
    verifier = orch.verifier
    if verifier is None or verifier.pid is None:
        return False
    if any(r.location.startswith("s3://") for r in batch.rows):
        return False
    with batch.timed("validate"):
        orch.step("validate")
        job = verifier.validate(worker_rows(batch.rows), orch.config.packer.n_bits)
        if job is None:
            return False
        with step_errors("validate"):
            apply_validated(batch, batch.rows, job.result())
    return True


def worker_rows(rows: Sequence[FileRow]) -> list[Row]:
    """``rows`` as the verify worker's validate request takes them."""
    return [(r.uid, r.created_at.isoformat(), r.location, r.size_bytes) for r in rows]


def apply_validated(batch: Batch, rows: Sequence[FileRow], validated: Validated) -> None:
    """Record ``validate_rows``'s answer for ``rows`` (a run of ``batch.rows``) in ``batch``:
    shard keys, and failures in row order. A uid already given a key by an earlier run of
    the batch is refused as a duplicate, as one pass over the whole batch would."""
    keys, refused = validated
    reasons = dict(refused)
    batch_keys = batch.keys
    for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
        if key is None:
            batch.fail(row, "validate", reasons[i])
            continue
        if row.uid in batch_keys:
            batch.fail(row, "validate", duplicate_uid(row.uid))
            continue
        batch_keys[row.uid] = key
        reason = reasons.get(i)
        if reason is not None:
            batch.fail(row, "validate", reason)
