"""Reading packed files back before their rows are marked: which rows an earlier run already
packed, the verifier (a worker process for large cycles, else threads), and the comparison of
a shard's answer with its rows."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._batch import Batch
from ._errors import StepFailed
from ._source_db import FileRow
from ._steps import is_store_outage, step_errors
from ._verifier import WORKER_FILE, ShardAnswer, Verifier, brief

if TYPE_CHECKING:
    from ._orchestrator import MigrationOrchestrator

__all__ = ["compare_shard", "new_verifier", "split_already_packed"]


def split_already_packed(
    orch: MigrationOrchestrator, batch: Batch, rows: list[FileRow]
) -> tuple[list[FileRow], list[FileRow]]:
    """Rows whose uid is already in its shard (an earlier run packed it) vs. rows to pack.

    Each shard's index is read once for all its rows (the shard locks are held: nothing
    appends to it meanwhile), and each row is one lookup in it, in row order; a shard that
    does not exist yet means all its rows are to pack."""
    from des_format import DesFormatError, ObjectNotFound, ShardIndex, StoreSource, read_index

    present: list[FileRow] = []
    to_pack: list[FileRow] = []
    store = orch.object_store()
    indexes: dict[str, ShardIndex | DesFormatError | None] = {}
    with step_errors("pack"):
        for row in rows:
            key = batch.keys[row.uid]
            if key in indexes:
                index = indexes[key]
            else:
                try:
                    index = read_index(StoreSource(store, key))
                except ObjectNotFound:
                    index = None
                except DesFormatError as exc:
                    if is_store_outage(exc):
                        raise
                    index = exc
                indexes[key] = index
            if index is None:
                to_pack.append(row)
                continue
            try:
                if isinstance(index, DesFormatError):
                    raise index
                entry = index.lookup(row.uid)
            except DesFormatError as exc:
                if is_store_outage(exc):
                    raise
                batch.fail(row, "pack", f"shard {key} cannot be read: {brief(exc)}")
                continue
            if entry is None:
                to_pack.append(row)
            elif entry.deleted:
                batch.fail(
                    row,
                    "pack",
                    f"shard {key} holds a deletion marker for this uid; not packing it again",
                )
            else:
                present.append(row)
    return present, to_pack


def new_verifier(orch: MigrationOrchestrator, rows: int) -> Verifier:
    """A worker process reading from the configured output when the first batch has at
    least ``tuning.process_verify_min_rows`` rows; else threads (a store given to the
    constructor is always read in threads)."""
    threads = orch.config.packer.workers or os.cpu_count() or 1
    small = rows < orch.tuning.process_verify_min_rows
    if orch.store_given or small or not WORKER_FILE.is_file():
        return Verifier(orch.object_store(), threads)
    out = orch.output()
    if out.startswith("s3://"):
        bucket, _, prefix = out[len("s3://") :].partition("/")
        pk = orch.config.packer
        region = pk.s3_region_name or pk.s3_source.region_name or ""
        endpoint = pk.s3_endpoint_url or pk.s3_source.endpoint_url or ""
        return Verifier(("s3", bucket, prefix, region, endpoint), threads)
    return Verifier(("local", out), threads)


def compare_shard(
    orch: MigrationOrchestrator,
    key: str,
    rows: list[FileRow],
    got: ShardAnswer,
    earlier: set[str],
) -> dict[str, str]:
    """What is wrong with each row that does not check out, by uid (the rows left out
    check out), from the verifier's answer for its shard; a file an earlier run packed is
    compared with its source here."""
    shard_error, answers = got
    if shard_error is not None:
        raise StepFailed("verify", shard_error)
    problems: dict[str, str] = {}
    if not answers:  # every file checked out, nothing more asked
        return problems
    by_uid = {a[0]: a for a in answers}
    for row in rows:
        answer = by_uid.get(row.uid)
        if answer is None:  # checked out, nothing more asked
            continue
        _uid, problem, crc = answer
        if problem is None and row.uid in earlier:
            problem = (
                orch.sources.compare_with_source(row, crc)
                if crc is not None
                else "no CRC-32 read back to compare with the source"
            )
        if problem is not None:
            problems[row.uid] = problem
    return problems
