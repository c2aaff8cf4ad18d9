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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from des_format import (
    DEFAULT_BIGFILES_PREFIX,
    Codec,
    DesFormatError,
    IndexEntry,
    LocalFileSource,
    ObjectNotFound,
    PreconditionFailed,
    PreparedBlock,
    ShardIndex,
    ShardReader,
    ShardWriter,
    bigfile_key,
    decode_payload,
    is_head_key,
    part_key,
    prepare_block,
    read_index,
    read_shard_index,
)

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

DEFAULT_BIGFILE_GRACE_SECONDS = 3600
_WINDOW = 8 << 20  # payload bytes fetched per range request while copying

# Test hook: called with a step name at each point a crash could matter (see tests).
StepHook = Callable[[str], None]


def _no_hook(step: str) -> None:
    pass


def _part_number(shard_key: str, key: str) -> int | None:
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


# ---- one shard -------------------------------------------------------------------------------


def _copy_windows(
    store: Any, key: str, etag: str, entries: list[IndexEntry]
) -> Iterator[tuple[IndexEntry, bytes]]:
    """Stored bytes of live inline entries, fetched in ranges of up to 8 MiB per object."""
    by_part: dict[int, list[IndexEntry]] = {}
    for e in entries:
        by_part.setdefault(e.part, []).append(e)
    for part in sorted(by_part):
        okey = key if part == 0 else part_key(key, part)
        pinned = etag if part == 0 else None
        group = sorted(by_part[part], key=lambda e: e.offset)
        i = 0
        while i < len(group):
            start = group[i].offset
            j = i
            end = start
            while j < len(group) and (
                j == i or group[j].offset + group[j].stored_size - start <= _WINDOW
            ):
                end = max(end, group[j].offset + group[j].stored_size)
                j += 1
            data = store.read_range(okey, start, end, if_match=pinned) if end > start else b""
            for e in group[i:j]:
                yield e, data[e.offset - start : e.offset - start + e.stored_size]
            i = j


def _build(  # noqa: PLR0917 - internal step with its full context
    store: Any,
    key: str,
    etag: str,
    old_entries: list[IndexEntry],
    workdir: Path,
    first_part: int,
    max_part_size: int | None,
    dictionary: bytes | None = None,
    recoded: dict[str, Codec] | None = None,
) -> tuple[Path, dict[int, Path], tuple[str, ...]]:
    """Write the rebuilt shard into ``workdir``; returns (head, {part: path}, erased uids).
    The shard's zstd dictionary (if any) is kept: payloads are copied as they are stored,
    but for the live members of solid blocks that hold deleted members, which are written
    as a new block (``recoded``, when given, gets the codec each of them was written with).
    """
    entries = sorted(old_entries, key=lambda e: e.uid.encode("utf-8"))
    inline = [e for e in entries if not e.deleted and not e.is_bigfile]
    # Solid blocks by (part, offset): their live members, and whether any member is deleted.
    block_live: dict[tuple[int, int], list[IndexEntry]] = {}
    block_dead: set[tuple[int, int]] = set()
    for e in entries:
        if e.codec is Codec.ZSTD_BLOCK and not e.is_bigfile and not e.erased:
            bkey = (e.part, e.offset)
            if e.deleted:
                block_dead.add(bkey)
            else:
                block_live.setdefault(bkey, []).append(e)
    blocks_done: set[tuple[int, int]] = set()
    part_paths: dict[int, Path] = {}
    part_files: list[BinaryIO] = []

    def open_part(n: int) -> BinaryIO:
        path = workdir / f"part{n}"
        part_paths[n] = path
        fh: BinaryIO = path.open("w+b")
        part_files.append(fh)
        return fh

    head = workdir / "head"
    erased: list[str] = []
    with head.open("w+b") as out:
        writer = ShardWriter(
            out,
            max_size=max_part_size,
            open_part=open_part if max_part_size is not None else None,
            first_part=first_part,
            dictionary=dictionary,
        )
        # Payloads in the order they were stored (one pass over each object), index by uid.
        for entry, stored in _copy_windows(store, key, etag, inline):
            if entry.codec is not Codec.ZSTD_BLOCK:
                writer.copy_stored(entry, stored)
                continue
            bkey = (entry.part, entry.offset)
            if bkey in blocks_done:
                continue  # every member of a block is written with its first one
            blocks_done.add(bkey)
            members = sorted(block_live[bkey], key=lambda e: e.block_offset)
            if bkey not in block_dead:
                writer.copy_block(members, stored)  # the block as it is stored
                continue
            written = _rewrite_block(writer, members, stored)
            if recoded is not None:
                recoded.update(written)
        for e in entries:
            if e.deleted:
                writer.add_erased(e.uid)
                if not e.erased:
                    erased.append(e.uid)
            elif e.is_bigfile:
                assert e.bigfile_hash is not None
                writer.add_bigfile(
                    e.uid, sha256=e.bigfile_hash, size=e.size, meta=e.meta, checksum=e.checksum
                )
        writer.close()
        out.flush()
        os.fsync(out.fileno())
    for fh in part_files:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
    return head, part_paths, tuple(erased)


def _rewrite_block(
    writer: ShardWriter, members: list[IndexEntry], stored: bytes
) -> dict[str, Codec]:
    """Write the live ``members`` of a solid block that also holds deleted members as a
    new block of their own (decoded, each checked against its CRC-32, compressed again):
    the deleted members' bytes, or the filler a delete left in their place, are not
    carried over. Members :func:`prepare_block` leaves alone are written alone. Returns
    the codec each member was written with."""
    decoded: dict[tuple[int, int], bytes] = {}
    files = [(m.uid, decode_payload(m, stored, None, decoded), dict(m.meta)) for m in members]
    out: dict[str, Codec] = {}
    for item in prepare_block(files):
        if isinstance(item, PreparedBlock):
            for e in writer.add_block(item):
                out[e.uid] = e.codec
        else:
            out[item.uid] = writer.add_prepared(item).codec
    return out


def _verify(  # noqa: PLR0917 - internal step with its full context
    store: Any,
    key: str,
    head: Path,
    parts: dict[int, Path],
    old: list[IndexEntry],
    bigfiles_prefix: str,
    recoded: dict[str, Codec] | None = None,
) -> None:
    """The rebuilt shard holds every live entry of ``old`` with the same content (checksums
    verified), every deleted uid as a tombstone, and every big file it references exists.
    ``recoded``: the codec written for members of rewritten solid blocks (the others keep
    theirs)."""
    recoded = recoded or {}
    src = LocalFileSource(head)
    reader = ShardReader(src, part_source=lambda n: LocalFileSource(parts[n]))
    try:
        reader.verify(deep=False)
        new = reader.index
        if new.entry_count != len(old):
            raise DesFormatError(
                f"rebuilt {key} has {new.entry_count} entries, the old one {len(old)}"
            )
        for e in old:
            n = new.lookup(e.uid)
            if n is None or n.deleted != e.deleted:
                raise DesFormatError(f"rebuilt {key} lost or changed {e.uid!r}")
            if e.deleted:
                continue
            if e.is_bigfile:
                assert e.bigfile_hash is not None
                info = store.head(bigfile_key(key, e.bigfile_hash, bigfiles_prefix))
                if info.size != e.size:
                    raise DesFormatError(f"big file of {e.uid!r} is {info.size} bytes")
                continue
            codec = recoded.get(e.uid, e.codec)
            if (n.checksum, n.size, n.codec, n.meta) != (e.checksum, e.size, codec, e.meta):
                raise DesFormatError(f"rebuilt {key} changed the entry of {e.uid!r}")
            reader.read_entry(n)  # decompresses and checks the CRC-32
    finally:
        reader.close()


def _changed(store: Any, key: str, etag: str) -> bool:
    try:
        return bool(store.head(key).etag != etag)
    except ObjectNotFound:
        return True


def clean_shard(editor: Any, key: str, index: ShardIndex, hook: StepHook = _no_hook) -> int:
    """Remove the part objects of ``key`` its index does not reference and every old
    version of its objects; returns how many objects/versions went away."""
    referenced = {e.part for e in index.iter_entries() if not e.is_bigfile and e.part}
    stem = key[:-4] if key.endswith(".des") else key
    removed = 0
    for other in list(editor.list_keys(f"{stem}.p")):
        n = _part_number(key, other)
        if n is None:
            continue
        if n not in referenced:
            removed += int(editor.remove(other))
            hook("removed-part")
        else:
            removed += int(editor.purge_old_versions(other))
    removed += int(editor.purge_old_versions(key))
    stale = getattr(editor, "remove_stale_temps", None)
    if callable(stale):
        removed += int(stale(key))
    return removed


def repack_shard(
    editor: Any,
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
            n for k in editor.list_keys(f"{key[:-4]}.p") if (n := _part_number(key, k))
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
                head, parts, erased = _build(
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
                _verify(store, key, head, parts, entries, bigfiles_prefix, recoded)
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
    editor: Any,
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
        if grace_seconds > 0 and now - _modified(editor, k) < grace_seconds:
            continue
        editor.remove(k)
        hook("removed-bigfile")
        removed.append(k)
    return removed


def _modified(editor: Any, key: str) -> float:
    modified = getattr(editor, "modified", None)
    if callable(modified):
        return float(modified(key))
    path = getattr(editor, "path", None)
    if callable(path):
        return float(Path(path(key)).stat().st_mtime)
    return 0.0


# ---- a round --------------------------------------------------------------------------------


def iter_heads(editor: Any, prefix: str, bigfiles_prefix: str) -> Iterator[str]:
    for key in editor.list_keys(prefix):
        if is_head_key(key, bigfiles_prefix):
            yield key


def repack(editor: Any, options: RepackOptions, hook: StepHook = _no_hook) -> RepackReport:
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
