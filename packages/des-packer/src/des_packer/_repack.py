"""Erasing deleted files: rebuild shards without the bytes of their tombstoned entries.

A repack of one shard is copy on write:

1. read the shard's index (and the ETag it was read at);
2. build a new shard in scratch space: every live payload copied as stored (no
   recompression; a solid block whose members are all live is copied once, as it is),
   live big files referenced as before, every deleted entry written as an *erased*
   tombstone (uid only: no size, checksum, hash or metadata); a solid block with deleted
   members is decoded and its live members compressed again as a new block, so no
   deleted byte survives inside it; continuation parts get part numbers above every
   existing one, so no object an index references is ever overwritten;
3. verify the new shard (index, every payload's checksum, every big file present);
4. publish the new parts, then replace the head object only if it still has the ETag of
   step 1 (S3: If-Match; local: lock file + compare + rename). If another writer (a packer
   appending late files, a delete) changed the shard meanwhile, the new parts are removed
   and the repack starts again from the new version;
5. clean up: remove part objects the new index does not reference and every older version
   of the shard's objects (S3 buckets that keep versions), then sweep the day's
   ``_bigFiles/`` objects no index references any more.

Killing the process at any instant leaves the old shard (steps 1-4) or the new one (after
the rename/replace), both complete; leftovers of an interrupted run (unreferenced parts,
old versions, unreferenced big files) are removed by the next run and reported by
``des deletions`` meanwhile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from des_format import (
    DEFAULT_BIGFILE_GRACE_SECONDS,
    DEFAULT_BIGFILES_PREFIX,
    Codec,
    DesFormatError,
    LocalFileSource,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    ShardEditor,
    ShardIndex,
    is_head_key,
    part_key,
    read_index,
    read_shard_index,
)

from ._repack_build import build_shard
from ._repack_plan import (
    RepackOptions,
    RepackReport,
    ShardDeletionStats,
    ShardRepack,
    part_number,
    plan_repack,
    scan_shard,
)
from ._repack_verify import verify_rebuilt

__all__ = [
    "DEFAULT_BIGFILE_GRACE_SECONDS",
    "RepackOptions",
    "RepackReport",
    "ShardDeletionStats",
    "ShardRepack",
    "is_head_key",
    "plan_repack",
    "repack",
    "repack_shard",
    "scan_shard",
]

# Test hook: called with a step name at each point a crash could matter (see tests).
StepHook = Callable[[str], None]


def _no_hook(step: str) -> None:
    pass


def _changed(store: ObjectStore, key: str, etag: str) -> bool:
    try:
        return bool(store.head(key).etag != etag)
    except ObjectNotFound:
        return True


def clean_shard(editor: ShardEditor, key: str, index: ShardIndex, hook: StepHook = _no_hook) -> int:
    """Remove the part objects of ``key`` its index does not reference and every old
    version of its objects; returns how many objects/versions went away."""
    referenced = {e.part for e in index.iter_entries() if not e.is_bigfile and e.part}
    stem = key[:-4] if key.endswith(".des") else key
    removed = 0
    for other in list(editor.list_keys(f"{stem}.p")):
        n = part_number(key, other)
        if n is None:
            continue
        if n not in referenced:
            removed += int(editor.remove(other))
            hook("removed-part")
        else:
            removed += int(editor.purge_old_versions(other))
    removed += int(editor.purge_old_versions(key))
    if editor.capabilities.temp_files:
        removed += editor.remove_stale_temps(key)
    return removed


def repack_shard(
    editor: ShardEditor,
    key: str,
    *,
    max_part_size: int | None = None,
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
    attempts: int = 5,
    hook: StepHook = _no_hook,
) -> ShardRepack:
    """Rebuild the shard at ``key`` without the bytes of its deleted entries (see the module
    docstring for the steps and their crash safety)."""
    store = editor.store
    for attempt in range(1, attempts + 1):
        index, etag = read_shard_index(store, key)
        if index.is_legacy:
            raise DesFormatError(f"{editor.describe(key)} is a legacy DES2 shard; not repacked")
        entries = list(index.iter_entries())
        existing_parts = {
            n for k in editor.list_keys(f"{key[:-4]}.p") if (n := part_number(key, k))
        }
        referenced = {e.part for e in entries if not e.is_bigfile and e.part}
        first_part = max(existing_parts | referenced | {0}) + 1
        in_parts = [e for e in entries if not e.is_bigfile and e.part]
        blocks = {
            (e.part, e.offset): e.stored_size for e in in_parts if e.codec is Codec.ZSTD_BLOCK
        }
        before = (
            index.object_size
            + sum(e.stored_size for e in in_parts if e.codec is not Codec.ZSTD_BLOCK)
            + sum(blocks.values())  # a solid block once, not once per member
        )
        workdir = Path(tempfile.mkdtemp(prefix="repack.", dir=editor.scratch_dir()))
        try:
            recoded: dict[str, Codec] = {}
            try:
                head, parts, erased = build_shard(
                    store,
                    key,
                    etag,
                    entries,
                    workdir,
                    first_part,
                    max_part_size,
                    index.dictionary,
                    recoded,
                )
                verify_rebuilt(store, key, head, parts, entries, bigfiles_prefix, recoded)
            except DesFormatError:
                # A writer changed the shard while it was copied: a delete may have
                # overwritten the bytes of an entry this (older) index still lists as live.
                if attempt < attempts and _changed(store, key, etag):
                    continue
                raise
            hook("built")
            for n in sorted(parts):
                editor.put(part_key(key, n), parts[n])
                hook("part-published")
            try:
                editor.replace(key, head, etag)
            except PreconditionFailed:
                for n in sorted(parts):
                    editor.remove(part_key(key, n))
                if attempt == attempts:
                    raise
                continue
            hook("published")
            after = head.stat().st_size + sum(p.stat().st_size for p in parts.values())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        new_index, _ = read_shard_index(store, key)
        removed = clean_shard(editor, key, new_index, hook)
        hook("cleaned")
        return ShardRepack(key, erased, before, after, attempt, removed)
    raise AssertionError("unreachable")  # pragma: no cover


# ---- big files ------------------------------------------------------------------------------


def sweep_bigfiles(
    editor: ShardEditor,
    day_dir: str,
    referenced: set[str],
    *,
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
    grace_seconds: float = DEFAULT_BIGFILE_GRACE_SECONDS,
    now: float | None = None,
    hook: StepHook = _no_hook,
) -> list[str]:
    """Remove the big-file objects of ``day_dir`` whose hash no entry (live or hidden) of the
    day's shards references and that are older than ``grace_seconds`` (a packer publishes
    a big file shortly before the shard that references it). Returns the keys removed."""
    prefix = f"{day_dir}/{bigfiles_prefix.strip('/')}/" if day_dir else f"{bigfiles_prefix}/"
    now = time.time() if now is None else now
    removed: list[str] = []
    for k in list(editor.list_keys(prefix)):
        sha = k[len(prefix) :]
        if "/" in sha or sha in referenced:
            continue
        if grace_seconds > 0 and now - editor.modified(k) < grace_seconds:
            continue
        editor.remove(k)
        hook("removed-bigfile")
        removed.append(k)
    return removed


# ---- a round --------------------------------------------------------------------------------


def iter_heads(editor: ShardEditor, prefix: str, bigfiles_prefix: str) -> Iterator[str]:
    for key in editor.list_keys(prefix):
        if is_head_key(key, bigfiles_prefix):
            yield key


def repack(editor: ShardEditor, options: RepackOptions, hook: StepHook = _no_hook) -> RepackReport:
    """One bounded round: scan the shards under ``options.prefix``, repack the chosen ones,
    clean leftovers of earlier runs, sweep unreferenced big files of the days touched."""
    store = editor.store
    stats: list[ShardDeletionStats] = []
    indexes: dict[str, ShardIndex] = {}
    failures: list[tuple[str, str]] = []
    for key in iter_heads(editor, options.prefix, options.bigfiles_prefix):
        try:
            index, _etag = read_shard_index(store, key)
        except DesFormatError as exc:
            failures.append((key, f"{type(exc).__name__}: {exc}"))
            continue
        indexes[key] = index
        stats.append(scan_shard(key, index))
    over = plan_repack(stats, threshold=options.threshold, max_shards=None)
    chosen = over if options.max_shards is None else over[: options.max_shards]
    if options.dry_run:
        return RepackReport(
            len(stats), tuple(chosen), (), len(over) - len(chosen), 0, (), tuple(failures), True
        )
    done: list[ShardRepack] = []
    for s in chosen:
        try:
            done.append(
                repack_shard(
                    editor,
                    s.key,
                    max_part_size=options.max_part_size,
                    bigfiles_prefix=options.bigfiles_prefix,
                    attempts=options.attempts,
                    hook=hook,
                )
            )
            indexes[s.key] = read_shard_index(store, s.key)[0]
        except DesFormatError as exc:
            failures.append((s.key, f"{type(exc).__name__}: {exc}"))
    # Leftovers of interrupted runs: shards already holding erased tombstones.
    repacked = {r.key for r in done}
    cleaned = 0
    for s in stats:
        if s.key in repacked or not s.erased:
            continue
        try:
            cleaned += clean_shard(editor, s.key, indexes[s.key], hook)
        except DesFormatError as exc:
            failures.append((s.key, f"{type(exc).__name__}: {exc}"))
    # Big files: per day directory holding erased tombstones, keep what any entry references.
    days: dict[str, set[str]] = {}
    touched: set[str] = set()
    for key, index in indexes.items():
        day = key.rsplit("/", 1)[0] if "/" in key else ""
        refs = days.setdefault(day, set())
        for e in index.iter_entries():
            if e.is_bigfile and e.bigfile_hash:
                refs.add(e.bigfile_hash)
            elif e.erased:
                touched.add(day)
    swept: list[str] = []
    for day in sorted(touched):
        if not _whole_day(options.prefix, day):
            continue  # a prefix inside a day does not see every shard that may reference
        try:
            swept += sweep_bigfiles(
                editor,
                day,
                days.get(day, set()),
                bigfiles_prefix=options.bigfiles_prefix,
                grace_seconds=options.bigfile_grace_seconds,
                hook=hook,
            )
        except DesFormatError as exc:
            failures.append((day, f"{type(exc).__name__}: {exc}"))
    return RepackReport(
        len(stats),
        tuple(chosen),
        tuple(done),
        len(over) - len(chosen),
        cleaned,
        tuple(swept),
        tuple(failures),
        False,
    )


def _whole_day(prefix: str, day: str) -> bool:
    """Whether scanning ``prefix`` saw every shard of ``day``."""
    return not prefix or (day + "/").startswith(prefix) or prefix == day


def read_local_index(path: str | os.PathLike[str]) -> ShardIndex:
    with LocalFileSource(path) as src:
        return read_index(src)
