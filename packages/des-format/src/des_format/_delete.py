"""Deleting files from a published shard (:func:`delete_entries`): tombstones through the
append path, then the erasure a delete can do at once (continuation-part bytes overwritten,
solid blocks re-encoded, unreferenced big files removed) through a :class:`ShardEditor`."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ._codecs import Codec
from ._editor import (
    EDIT_TEMP_PREFIX,
    ShardEditor,
    is_head_key,
    read_shard_index,
)
from ._erase import (
    BLOCK_KEPT_REASON,
    block_members,
    erase_block,
    fill_byte,
    member_erased,
    payload_overwritten,
)
from ._errors import (
    CorruptShard,
    DesFormatError,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
)
from ._index import ShardIndex
from ._layout import IndexEntry, bigfile_key, part_key
from ._writer import ShardWriter


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What :func:`delete_entries` did to one shard.

    ``gone`` and ``kept`` cover every uid of ``deleted`` and ``already``: ``gone`` are the
    files whose bytes no current object holds any more (their bytes in a continuation part
    are overwritten, their big-file object removed, or a repack erased them); ``kept`` pairs
    the others with the reason their bytes stay until ``des repack`` (or a later delete).
    """

    key: str
    deleted: tuple[str, ...]  # uids tombstoned by this call
    already: tuple[str, ...]  # uids that were deleted before
    missing: tuple[str, ...]  # uids the shard does not hold
    attempts: int  # 1 unless another writer changed the shard meanwhile
    gone: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()
    overwritten: tuple[str, ...] = ()  # part keys whose bytes this call overwrote
    bigfiles_removed: tuple[str, ...] = ()  # big-file keys this call removed

    def why_kept(self, uid: str) -> str | None:
        """Why the bytes of ``uid`` are still stored (None when they are gone)."""
        return next((why for u, why in self.kept if u == uid), None)


def delete_entries(
    editor: ShardEditor,
    key: str,
    uids: Iterable[str],
    *,
    attempts: int = 5,
    bigfiles_prefix: str | None = None,
    bigfile_grace_seconds: float | None = None,
    now: float | None = None,
) -> DeleteResult:
    """Delete ``uids`` from the shard at ``key``.

    1. Tombstones, through the append path: a tail holding a new index (the same entries,
       these ones flagged deleted) and footer is added after the current bytes, conditional
       on the ETag the index was read at. Reads answer ``EntryDeleted`` from then on.
    2. Then, for every deleted uid (now or before, so running a delete again finishes what
       an interrupted one left): the stored bytes of an entry in a continuation part are
       overwritten with :func:`fill_byte` bytes, in place (a solid-block member: its block
       re-encoded with the member's bytes replaced, :func:`erase_block`, or kept for a
       repack when no encoding fits in the block's stored size), and the big-file object of
       a big file is removed when no live entry of the day's shards references it and it is
       older than ``bigfile_grace_seconds``. A replica still holding the old index then fails the
       payload check (or finds no object) and re-reads the index. Bytes in the shard's head
       object stay until a repack.

    ``bigfiles_prefix`` and ``bigfile_grace_seconds`` default to the editor's. Raises
    ``ObjectNotFound`` when there is no shard at ``key`` and :class:`PreconditionFailed`
    when the shard kept changing for ``attempts`` tries.
    """
    wanted = list(dict.fromkeys(uids))
    for attempt in range(1, attempts + 1):
        index, etag = read_shard_index(editor.store, key)
        todo: list[str] = []
        already: list[str] = []
        missing: list[str] = []
        for uid in wanted:
            entry = index.lookup(uid)
            if entry is None:
                missing.append(uid)
            elif entry.deleted:
                already.append(uid)
            else:
                todo.append(uid)
        if todo and index.is_legacy:
            raise StoreError(
                f"{editor.describe(key)} is a legacy DES2 shard, which cannot hold tombstones;"
                " repack it into the current format first",
                key=key,
            )
        if todo:
            fd, tmp = tempfile.mkstemp(prefix=EDIT_TEMP_PREFIX, dir=editor.scratch_dir())
            try:
                with os.fdopen(fd, "w+b") as fh:
                    writer = ShardWriter(fh, base_offset=index.object_size, existing=index)
                    for uid in todo:
                        writer.delete(uid)
                    writer.close()
                try:
                    editor.append(key, tmp, etag)
                except PreconditionFailed:
                    if attempt == attempts:
                        raise
                    continue
            finally:
                Path(tmp).unlink(missing_ok=True)
        erasure = _Erasure(
            editor,
            key,
            bigfiles_prefix if bigfiles_prefix is not None else editor.bigfiles_prefix,
            bigfile_grace_seconds
            if bigfile_grace_seconds is not None
            else editor.bigfile_grace_seconds,
            time.time() if now is None else now,
        )
        erasure.run([*todo, *already], attempts)
        return DeleteResult(
            key,
            tuple(todo),
            tuple(already),
            tuple(missing),
            attempt,
            tuple(erasure.gone),
            tuple(erasure.kept),
            tuple(erasure.overwritten),
            tuple(erasure.removed),
        )
    raise AssertionError("unreachable")  # pragma: no cover


class _Erasure:
    """Step 2 of :func:`delete_entries`: what can be erased at once, for one shard."""

    def __init__(
        self, editor: ShardEditor, key: str, bigfiles_prefix: str, grace: float, now: float
    ) -> None:
        self.editor = editor
        self.key = key
        self.bigfiles_prefix = bigfiles_prefix
        self.grace = grace
        self.now = now
        self.gone: list[str] = []
        self.kept: list[tuple[str, str]] = []
        self.overwritten: list[str] = []
        self.removed: list[str] = []
        self._live_hashes: set[str] | None = None
        self._blocks: dict[tuple[int, int], list[IndexEntry]] | None = None

    def run(self, uids: list[str], attempts: int) -> None:
        pending = list(uids)
        for attempt in range(1, attempts + 1):
            index, etag = read_shard_index(self.editor.store, self.key)
            self._blocks = None
            again: list[str] = []
            for uid in pending:
                entry = index.lookup(uid)
                if entry is None or not entry.deleted:
                    continue  # not ours to erase (cannot happen after step 1)
                if not self._one(entry, etag, index):
                    again.append(uid)
            if not again:
                return
            if attempt == attempts:
                raise PreconditionFailed(
                    f"{self.editor.describe(self.key)} kept changing while deleted bytes were"
                    " being overwritten; run the delete again",
                    key=self.key,
                )
            pending = again

    def _one(self, entry: IndexEntry, etag: str, index: ShardIndex) -> bool:
        """Erase what can be erased of one tombstone; False when the head changed first."""
        if entry.erased:
            self.gone.append(entry.uid)  # a repack did it
        elif entry.is_bigfile:
            self._bigfile(entry)
        elif entry.part == 0:
            self.kept.append(
                (entry.uid, "its bytes are in the shard's head object until a repack erases them")
            )
        elif entry.stored_size == 0:
            self.gone.append(entry.uid)
        elif entry.codec is Codec.ZSTD_BLOCK:
            return self._member(entry, etag, index)
        else:
            return self._part(entry, etag)
        return True

    def _part(self, entry: IndexEntry, etag: str) -> bool:
        okey = part_key(self.key, entry.part)
        start, end = entry.offset, entry.offset + entry.stored_size
        if not payload_overwritten(self.editor.store, self.key, entry):
            try:
                done = self.editor.overwrite_range(
                    okey, start, end, fill_byte(entry), shard_key=self.key, shard_etag=etag
                )
            except ObjectNotFound:
                done = True  # no part object: nothing left to overwrite
            if not done:
                return False
            self.overwritten.append(okey)
        # Older versions of the part (S3 buckets that keep versions) still hold the bytes;
        # a delete interrupted before this point leaves them for the next run.
        self.editor.purge_old_versions(okey)
        self.gone.append(entry.uid)
        return True

    def _member(self, entry: IndexEntry, etag: str, index: ShardIndex) -> bool:
        """A solid-block member in a part: its block is decoded, re-encoded with every
        deleted member's bytes replaced by filler (:func:`erase_block`) and written over
        the block's range, so the block's other members keep reading byte-exact."""
        okey = part_key(self.key, entry.part)
        start, end = entry.offset, entry.offset + entry.stored_size
        try:
            stored: bytes | None = self.editor.store.read_range(okey, start, end)
        except ObjectNotFound:
            stored = None  # no part object: nothing left to overwrite
        if stored is not None and not member_erased(entry, stored):
            if self._blocks is None:
                self._blocks = block_members(index)
            members = self._blocks.get((entry.part, entry.offset), [entry])
            try:
                new = erase_block(stored, members)
            except (CorruptShard, ValueError) as exc:
                self.kept.append((entry.uid, f"its solid block cannot be erased in place: {exc}"))
                return True
            if new is None:
                self.kept.append((entry.uid, BLOCK_KEPT_REASON))
                return True
            try:
                done = self.editor.overwrite_range(
                    okey, start, end, new, shard_key=self.key, shard_etag=etag
                )
            except ObjectNotFound:
                done = True
            if not done:
                return False
            self.overwritten.append(okey)
        self.editor.purge_old_versions(okey)
        self.gone.append(entry.uid)
        return True

    def _bigfile(self, entry: IndexEntry) -> None:
        assert entry.bigfile_hash is not None
        if entry.bigfile_hash in self._live():
            self.kept.append(
                (entry.uid, "a live file has the same content, stored once in one big-file object")
            )
            return
        bkey = bigfile_key(self.key, entry.bigfile_hash, self.bigfiles_prefix)
        try:
            age = self.now - self.editor.modified(bkey)
        except ObjectNotFound:
            age = None  # gone already; remove() still clears older versions
        if age is not None and age < self.grace:
            self.kept.append(
                (
                    entry.uid,
                    f"its big-file object is younger than the grace period ({self.grace:g} s):"
                    " a packer may be publishing a shard that references it; delete again later",
                )
            )
            return
        if self.editor.remove(bkey):
            self.removed.append(bkey)
        self.gone.append(entry.uid)

    def _live(self) -> set[str]:
        """Hashes of the big files live entries of the day's shards reference (every head
        of the day directory read once per delete)."""
        if self._live_hashes is None:
            day = self.key.rsplit("/", 1)[0] + "/" if "/" in self.key else ""
            live: set[str] = set()
            for head in self.editor.list_keys(day):
                if "/" in head[len(day) :] or not is_head_key(head, self.bigfiles_prefix):
                    continue
                try:
                    index, _etag = read_shard_index(self.editor.store, head)
                except ObjectNotFound:
                    continue
                except DesFormatError as exc:
                    raise StoreError(
                        f"cannot tell whether {self.editor.describe(head)} references a big"
                        f" file, so none was removed: {exc}",
                        key=head,
                    ) from exc
                for e in index.iter_entries():
                    if e.is_bigfile and not e.deleted and e.bigfile_hash:
                        live.add(e.bigfile_hash)
            self._live_hashes = live
        return self._live_hashes
