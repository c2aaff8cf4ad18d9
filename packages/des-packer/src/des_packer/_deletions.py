"""Which files were deleted, and whether their bytes are gone: ``des deletions``.

Everything is read from the shards themselves (their indexes hold the tombstones), so the
listing needs no database and holds nothing of the files' content: uid, shard, state, and
for a hidden file its stored size.

States:

- ``hidden``: the file reads as deleted (HTTP 410) but its bytes are still in the shard's
  head object (or in its big-file object, kept because a live file shares it or because it
  is younger than the grace period); ``des repack`` erases them.
- ``erasing``: the current objects no longer hold the file's bytes, but objects that may
  still hold them remain: part objects no index references, older object versions (S3
  buckets that keep versions), or big files of the day no index references. Running
  ``des repack`` (or, for a file whose tombstone a repack has not rewritten yet, ``des
  delete``) again removes them.
- ``erased``: no object of the store holds the file's bytes any more: a repack rewrote the
  shard without them, or the delete overwrote them in their continuation part or removed
  their big-file object. (Until a repack, the tombstone itself still records the file's
  size, CRC-32 and metadata, as every tombstone does before erasure.)

A tombstone not yet rewritten by a repack is checked against the objects themselves: the
stored range of an entry in a continuation part is read (it must hold only the delete's
filler byte), and a big file's object is looked up in the day's listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from des_format import (
    DEFAULT_BIGFILES_PREFIX,
    DesFormatError,
    IndexEntry,
    ShardEditor,
    ShardIndex,
    bigfile_key,
    part_key,
    payload_overwritten,
    read_shard_index,
)

from ._repack import iter_heads
from ._repack_plan import part_number, stored_shares

__all__ = ["DeletionRecord", "iter_deletions"]


@dataclass(frozen=True, slots=True)
class DeletionRecord:
    uid: str
    shard: str
    state: str  # hidden | erasing | erased
    stored_bytes: int  # bytes still stored for a hidden file, else 0
    leftovers: int = 0  # objects that may still hold erased bytes (state erasing)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uid": self.uid, "shard": self.shard, "state": self.state}
        if self.state == "hidden":
            out["stored_bytes"] = self.stored_bytes
        if self.leftovers:
            out["leftovers"] = self.leftovers
        return out


def _leftovers(editor: ShardEditor, key: str, referenced: set[int]) -> int:
    """Objects that may still hold bytes an erased index no longer references."""
    stem = key[:-4] if key.endswith(".des") else key
    count = 0
    versions = editor.capabilities.versions
    for other in editor.list_keys(f"{stem}.p"):
        n = part_number(key, other)
        if n is None:
            continue
        if n not in referenced:
            count += 1
        elif versions:
            count += editor.old_versions(other)
    if versions:
        count += editor.old_versions(key)
    return count


def _bigfile_prefix(day: str, bigfiles_prefix: str) -> str:
    return f"{day}/{bigfiles_prefix.strip('/')}/" if day else f"{bigfiles_prefix}/"


def _unreferenced_bigfiles(present: list[str], prefix: str, refs: set[str]) -> int:
    return sum(1 for k in present if "/" not in k[len(prefix) :] and k[len(prefix) :] not in refs)


def _old_versions(editor: ShardEditor, key: str) -> int:
    return editor.old_versions(key) if editor.capabilities.versions else 0


def _not_repacked(
    editor: ShardEditor,
    key: str,
    e: IndexEntry,
    present: set[str],
    bigfiles_prefix: str,
    *,
    stored: int,
) -> DeletionRecord:
    """The state of a tombstone a repack has not rewritten yet, from the objects
    (``stored``: its stored bytes, a solid-block member's share of its block)."""
    if e.is_bigfile:
        assert e.bigfile_hash is not None
        bkey = bigfile_key(key, e.bigfile_hash, bigfiles_prefix)
        if bkey in present:
            return DeletionRecord(e.uid, key, "hidden", stored)
        okey = bkey
    elif e.part == 0 or not payload_overwritten(editor.store, key, e):
        return DeletionRecord(e.uid, key, "hidden", stored)
    else:
        okey = part_key(key, e.part)
    left = _old_versions(editor, okey)
    return DeletionRecord(e.uid, key, "erasing" if left else "erased", 0, left)


def iter_deletions(
    editor: ShardEditor,
    prefix: str = "",
    *,
    bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
    errors: list[tuple[str, str]] | None = None,
) -> Iterator[DeletionRecord]:
    """Every tombstone of the shards under ``prefix``, with its state, sorted by shard key
    then uid. Shards that cannot be read are reported into ``errors`` (key, message)."""
    store = editor.store
    by_day: dict[str, list[tuple[str, ShardIndex]]] = {}
    for key in iter_heads(editor, prefix, bigfiles_prefix):
        try:
            index, _etag = read_shard_index(store, key)
        except DesFormatError as exc:
            if errors is not None:
                errors.append((key, f"{type(exc).__name__}: {exc}"))
            continue
        day = key.rsplit("/", 1)[0] if "/" in key else ""
        by_day.setdefault(day, []).append((key, index))
    for day in sorted(by_day):
        shards = by_day[day]
        refs: set[str] = set()
        has_erased = deleted_bigfiles = False
        for _key, index in shards:
            for e in index.iter_entries():
                if e.is_bigfile and e.bigfile_hash:
                    refs.add(e.bigfile_hash)
                    deleted_bigfiles = deleted_bigfiles or e.deleted
                has_erased = has_erased or e.erased
        prefix_b = _bigfile_prefix(day, bigfiles_prefix)
        present = list(editor.list_keys(prefix_b)) if has_erased or deleted_bigfiles else []
        day_left = _unreferenced_bigfiles(present, prefix_b, refs) if has_erased else 0
        present_set = set(present)
        for key, index in sorted(shards, key=lambda item: item[0]):
            tombstones = sorted((e for e in index.iter_entries() if e.deleted), key=lambda e: e.uid)
            if not tombstones:
                continue
            left: int | None = None
            shares = stored_shares(list(index.iter_entries()))
            for e in tombstones:
                if not e.erased:
                    yield _not_repacked(
                        editor, key, e, present_set, bigfiles_prefix, stored=shares[e.uid]
                    )
                    continue
                if left is None:
                    referenced = {
                        x.part for x in index.iter_entries() if not x.is_bigfile and x.part
                    }
                    left = _leftovers(editor, key, referenced) + day_left
                state = "erasing" if left else "erased"
                yield DeletionRecord(e.uid, key, state, 0, left)
