"""Changing published shards: the editor port (local directory here, S3 in des-storage-s3),
tombstones written through the append path, the erasure a delete does at once (continuation
part bytes overwritten, unreferenced big files removed), and the local shard lock.

Every change to a published shard is conditional on the version whose index was read (its
ETag): on S3 by If-Match, locally by comparing the file's identity under an exclusive lock
file right before the rename. A writer that finds the shard changed gets
:class:`PreconditionFailed` and starts again from the new version, so two writers (a packer
appending late files, a delete, a repack) never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._checksum import crc32
from ._codecs import Codec, compress, decompress_block
from ._errors import (
    CorruptShard,
    DesFormatError,
    ObjectNotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StoreError,
)
from ._index import ShardIndex, read_index
from ._layout import (
    DEFAULT_BIGFILES_PREFIX,
    DEFAULT_TAIL_SIZE,
    IndexEntry,
    bigfile_key,
    part_key,
)
from ._source import LocalObjectStore, ObjectStore, TailRead, _etag_of
from ._writer import ShardWriter, _fsync_dir

__all__ = [
    "BLOCK_ERASE_LEVELS",
    "BLOCK_KEPT_REASON",
    "DeleteResult",
    "LocalShardEditor",
    "ShardEditor",
    "StoreSource",
    "delete_entries",
    "erase_block",
    "fill_byte",
    "local_shard_lock",
    "member_erased",
    "payload_overwritten",
    "read_shard_index",
]

EDIT_TEMP_PREFIX = ".des-edit."
_COPY = 1 << 20
# A big-file object younger than this is kept by a delete: a packer publishes a big file
# shortly before the shard that references it (the rule des repack's sweep follows too).
DEFAULT_BIGFILE_GRACE_SECONDS = 3600.0
#: zstd levels tried, in order, when a solid block is re-encoded without a deleted member.
BLOCK_ERASE_LEVELS = (3, 1, 6, 9, 19)
#: Why a delete keeps the bytes of a solid-block member in a continuation part.
BLOCK_KEPT_REASON = "its solid block could not be re-encoded in place; des repack erases it"
_SKIPPABLE_MAGIC = 0x184D2A50  # zstd skippable frame: magic, 4-byte length, that many bytes
_SKIPPABLE_HEADER = 8


@runtime_checkable
class ShardEditor(Protocol):
    """Writes to the objects of a shard store (the reading side is ``store``).

    ``append`` and ``replace`` raise :class:`PreconditionFailed` when the object is no
    longer ``expected_etag``. ``put`` creates or overwrites an object no index references
    yet (a continuation part of a rebuilt shard). ``remove`` deletes an object with every
    stored version of it and returns how many object versions went away (0 when absent);
    ``purge_old_versions`` deletes only the versions that are not the current one.

    ``overwrite_range`` replaces the bytes ``[start, end)`` of the continuation part ``key``
    (same length, every other byte unchanged) with ``fill``: a byte value repeated, or
    exactly ``end - start`` given bytes (a re-encoded solid block). Only while the head of
    the shard ``shard_key`` still has ``shard_etag``; it returns False, having changed
    nothing, when the head has changed. ``modified`` is when an object was last written
    (POSIX seconds). ``bigfiles_prefix`` and ``bigfile_grace_seconds`` are what
    :func:`delete_entries` uses when its caller gives none.
    """

    bigfiles_prefix: str
    bigfile_grace_seconds: float

    @property
    def store(self) -> ObjectStore: ...

    def describe(self, key: str = "") -> str: ...

    def append(self, key: str, tail_path: str | os.PathLike[str], expected_etag: str) -> None: ...

    def replace(self, key: str, path: str | os.PathLike[str], expected_etag: str) -> None: ...

    def put(self, key: str, path: str | os.PathLike[str]) -> None: ...

    def remove(self, key: str) -> int: ...

    def purge_old_versions(self, key: str) -> int: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]: ...

    def scratch_dir(self) -> Path: ...

    def overwrite_range(
        self,
        key: str,
        start: int,
        end: int,
        fill: int | bytes,
        *,
        shard_key: str,
        shard_etag: str,
    ) -> bool: ...

    def modified(self, key: str) -> float: ...


class StoreSource:
    """One object of an :class:`ObjectStore` as a ``ByteSource``; ranges pinned to the ETag
    its tail read saw."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key
        self.etag: str | None = None
        self.size = 0

    def read_tail(self, n: int) -> TailRead:
        tail = self.store.read_tail(self.key, n)
        self.etag = tail.etag
        self.size = tail.object_size
        return tail

    def read_range(self, start: int, end: int) -> bytes:
        return self.store.read_range(self.key, start, end, if_match=self.etag)


def read_shard_index(
    store: ObjectStore, key: str, *, tail_size: int = DEFAULT_TAIL_SIZE
) -> tuple[ShardIndex, str]:
    """The index of the shard at ``key`` and the ETag it was read at (``ObjectNotFound``
    when there is no shard)."""
    src = StoreSource(store, key)
    index = read_index(src, tail_size=tail_size)
    if src.etag is None:
        raise StoreError(f"{store.describe(key)} has no ETag; it cannot be changed safely")
    return index, src.etag


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
            bigfiles_prefix
            if bigfiles_prefix is not None
            else getattr(editor, "bigfiles_prefix", DEFAULT_BIGFILES_PREFIX),
            bigfile_grace_seconds
            if bigfile_grace_seconds is not None
            else float(getattr(editor, "bigfile_grace_seconds", DEFAULT_BIGFILE_GRACE_SECONDS)),
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


# ---- erasing at delete time -------------------------------------------------------------


def fill_byte(entry: IndexEntry) -> int:
    """The byte a delete overwrites the stored bytes of ``entry`` with.

    0, so that a reader still holding the old index fails: a compressed payload no longer
    starts with a frame, and a raw one no longer matches its CRC-32. For a raw file whose
    content would pass its own check once overwritten (a file of zeros), the first of 0xFF,
    0x01, 0x02, ... whose run does not match the CRC-32.

    For a member of a solid block (codec ``ZSTD_BLOCK``) the filler replaces the member's
    original bytes inside its decompressed block (:func:`erase_block`), so the same rule
    applies to its ``size`` original bytes.
    """
    if entry.codec is Codec.ZSTD_BLOCK:
        n = entry.size
    elif entry.codec is Codec.NONE:
        n = entry.stored_size
    else:
        return 0
    if entry.checksum is None or n == 0:
        return 0
    candidates: list[int] = [0x00, 0xFF, *range(1, 0xFF)]
    for fill in candidates:
        if _crc_of_run(fill, n) != entry.checksum:
            return fill
    return 0  # pragma: no cover - no length makes every run of one byte share a CRC-32


def _crc_of_run(fill: int, n: int) -> int:
    block = bytes([fill]) * min(n, _COPY)
    crc = 0
    left = n
    while left:
        step = min(left, len(block))
        crc = crc32(block[:step], crc)
        left -= step
    return crc


def payload_overwritten(store: ObjectStore, key: str, entry: IndexEntry) -> bool:
    """Whether the stored bytes of the tombstone ``entry`` (an inline entry of a
    continuation part of the shard at ``key``) now hold only :func:`fill_byte` bytes, or
    its part object is gone. Reads the range (in chunks). For a solid-block member: whether
    its block decodes and the member's range of it holds only its filler
    (:func:`member_erased`)."""
    if entry.is_bigfile or entry.part == 0:
        raise ValueError(f"{entry.uid!r} is not stored in a continuation part")
    if entry.stored_size == 0:
        return True
    okey = part_key(key, entry.part)
    if entry.codec is Codec.ZSTD_BLOCK:
        try:
            stored = store.read_range(okey, entry.offset, entry.offset + entry.stored_size)
        except ObjectNotFound:
            return True
        return member_erased(entry, stored)
    fill = fill_byte(entry)
    block = bytes([fill]) * min(entry.stored_size, _COPY)
    try:
        for chunk in store.iter_range(okey, entry.offset, entry.offset + entry.stored_size):
            if chunk != block[: len(chunk)]:
                return False
    except ObjectNotFound:
        return True
    return True


def member_erased(entry: IndexEntry, stored: bytes) -> bool:
    """Whether the solid-block member ``entry`` is erased in its block's stored bytes
    ``stored``: the block decodes and the member's range holds only its :func:`fill_byte`."""
    if entry.codec is not Codec.ZSTD_BLOCK:
        raise ValueError(f"{entry.uid!r} is not a solid-block member")
    if entry.size == 0:
        return True
    start = entry.block_offset
    try:
        block = decompress_block(stored, start + entry.size, uid=entry.uid)
    except CorruptShard:
        return False
    return block[start : start + entry.size] == bytes([fill_byte(entry)]) * entry.size


def erase_block(
    stored: bytes, members: Sequence[IndexEntry], *, levels: Sequence[int] = BLOCK_ERASE_LEVELS
) -> bytes | None:
    """New stored bytes for a solid block whose deleted members are erased, of exactly
    ``len(stored)`` bytes, or None when no encoding fits.

    ``stored`` is the block's current stored bytes; ``members`` are the index entries of
    the block's members (``deleted`` ones are erased, the others must stay). The block is
    decoded, the range of every deleted member is replaced with its :func:`fill_byte` run
    (earlier erasures stay so: the result is the same whichever were done before), and the
    result is encoded as one zstd frame with each of ``levels`` in turn until one is exactly
    ``len(stored)`` bytes, or at most 8 bytes shorter and then padded with a zstd skippable
    frame (which readers skip). The new bytes are decoded again before they are returned:
    every byte but the deleted members' ranges is the old one. ``CorruptShard`` when the
    block does not decode or a live member's bytes fail their CRC-32.
    """
    if not members:
        raise ValueError("a solid block has members")
    for m in members:
        if m.codec is not Codec.ZSTD_BLOCK:
            raise ValueError(f"{m.uid!r} is not a solid-block member")
    uid = members[0].uid
    need = max(m.block_offset + m.size for m in members)
    old = decompress_block(stored, need, uid=uid)
    new = bytearray(old)
    live = [m for m in members if not m.deleted]
    for m in live:
        part = old[m.block_offset : m.block_offset + m.size]
        if m.checksum is not None and crc32(part) != m.checksum:
            raise CorruptShard(f"solid block of {m.uid!r}: the member fails its CRC-32")
    for m in members:
        if m.deleted and m.size:
            new[m.block_offset : m.block_offset + m.size] = bytes([fill_byte(m)]) * m.size
    want = bytes(new)
    for m in live:
        if (
            want[m.block_offset : m.block_offset + m.size]
            != old[m.block_offset : m.block_offset + m.size]
        ):
            raise ValueError(f"{m.uid!r} overlaps a deleted member of its block")
    size = len(stored)
    for level in levels:
        frame = compress(Codec.ZSTD, want, level)
        if len(frame) == size:
            out = frame
        elif len(frame) <= size - _SKIPPABLE_HEADER:
            pad = size - _SKIPPABLE_HEADER - len(frame)
            out = frame + struct.pack("<II", _SKIPPABLE_MAGIC, pad) + bytes(pad)
        else:
            continue
        # what every reader will see: the same decoded block, but for the erased ranges
        if decompress_block(out, need, uid=uid) != want:  # pragma: no cover - zstd bug
            raise AssertionError(f"re-encoded solid block of {uid!r} does not round-trip")
        return out
    return None


def _block_members(index: ShardIndex) -> dict[tuple[int, int], list[IndexEntry]]:
    """Solid-block members of ``index`` (tombstones included) by block: (part, offset)."""
    out: dict[tuple[int, int], list[IndexEntry]] = {}
    for e in index.iter_entries():
        if e.codec is Codec.ZSTD_BLOCK and not e.erased and not e.is_bigfile:
            out.setdefault((e.part, e.offset), []).append(e)
    return out


def is_head_key(key: str, bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX) -> bool:
    """Whether ``key`` names a shard head object (``.../HH.des``, not a ``.pN.des`` part,
    not a big file)."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".des") or f"/{bigfiles_prefix.strip('/')}/" in f"/{key}":
        return False
    head, dot, tail = name[:-4].rpartition(".")
    return not (dot and head and tail.startswith("p") and tail[1:].isdigit())


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
                self._blocks = _block_members(index)
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


# ---- the local directory ------------------------------------------------------------------


@contextlib.contextmanager
def local_shard_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive lock for renaming a new version over the local shard ``path``:
    an ``flock`` on the shard's directory (no lock files; one lock per day directory).
    Everyone who replaces a shard (packer appends, deletes, repacks) takes it around the
    compare-and-rename, so a check of the current version cannot go stale before the
    rename."""
    import fcntl

    directory = Path(path).parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _current_etag(path: Path) -> str | None:
    try:
        return _etag_of(os.stat(path))
    except FileNotFoundError:
        return None


class LocalShardEditor:
    """A :class:`ShardEditor` for shards in a local directory.

    New versions are written to a temporary file in the shard's directory, fsynced, and
    renamed over the shard under :func:`local_shard_lock` after checking that the shard is
    still the version whose ETag the caller read. Local files have no older versions.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        fsync: bool = True,
        bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
        bigfile_grace_seconds: float = DEFAULT_BIGFILE_GRACE_SECONDS,
    ) -> None:
        self.store = LocalObjectStore(base_dir)
        self.base_dir = self.store.base_dir
        self.fsync = fsync
        self.bigfiles_prefix = bigfiles_prefix
        self.bigfile_grace_seconds = bigfile_grace_seconds

    def describe(self, key: str = "") -> str:
        return self.store.describe(key)

    def path(self, key: str) -> Path:
        return self.store.path_for(key)

    def scratch_dir(self) -> Path:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        return self.base_dir

    def _temp(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f"{EDIT_TEMP_PREFIX}{final.name}.{secrets.token_hex(6)}")

    def _flush(self, path: Path) -> None:
        if self.fsync:
            with path.open("rb") as fh:
                os.fsync(fh.fileno())

    def _publish(self, tmp: Path, final: Path, expected_etag: str | None) -> None:
        """Rename ``tmp`` over ``final`` if ``final`` is still ``expected_etag`` (None:
        no check)."""
        try:
            self._flush(tmp)
            with local_shard_lock(final):
                if expected_etag is not None and _current_etag(final) != expected_etag:
                    raise PreconditionFailed(
                        f"{final} changed since its index was read (another writer); read it again",
                        key=str(final),
                    )
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        if self.fsync:
            _fsync_dir(final.parent)

    def append(self, key: str, tail_path: str | os.PathLike[str], expected_etag: str) -> None:
        final = self.path(key)
        tmp = self._temp(final)
        try:
            with final.open("rb") as old, tmp.open("wb") as out:
                st = os.fstat(old.fileno())
                if _etag_of(st) != expected_etag:
                    raise PreconditionFailed(
                        f"{final} changed since its index was read (another writer)", key=key
                    )
                left = st.st_size
                while left and (chunk := old.read(min(left, _COPY))):
                    out.write(chunk)
                    left -= len(chunk)
                with open(tail_path, "rb") as tail:
                    while chunk := tail.read(_COPY):
                        out.write(chunk)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise ObjectNotFound(f"no such object: {final}", key=key) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._publish(tmp, final, expected_etag)

    def _copy_in(self, key: str, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        final = self.path(key)
        tmp = self._temp(final)
        try:
            with open(path, "rb") as src, tmp.open("wb") as out:
                while chunk := src.read(_COPY):
                    out.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, final

    def replace(self, key: str, path: str | os.PathLike[str], expected_etag: str) -> None:
        tmp, final = self._copy_in(key, path)
        self._publish(tmp, final, expected_etag)

    def put(self, key: str, path: str | os.PathLike[str]) -> None:
        tmp, final = self._copy_in(key, path)
        self._publish(tmp, final, None)

    def remove(self, key: str) -> int:
        final = self.path(key)
        try:
            final.unlink()
        except FileNotFoundError:
            return 0
        if self.fsync:
            _fsync_dir(final.parent)
        return 1

    def purge_old_versions(self, key: str) -> int:
        return 0

    def old_versions(self, key: str) -> int:
        return 0

    def modified(self, key: str) -> float:
        try:
            return self.path(key).stat().st_mtime
        except FileNotFoundError:
            raise ObjectNotFound(f"no such object: {self.path(key)}", key=key) from None

    def overwrite_range(
        self,
        key: str,
        start: int,
        end: int,
        fill: int | bytes,
        *,
        shard_key: str,
        shard_etag: str,
    ) -> bool:
        """Overwrite ``[start, end)`` of the part file ``key`` with ``fill`` (a byte value
        repeated, or exactly ``end - start`` bytes), under the shard's lock and only while
        the shard head is still ``shard_etag``.

        A fill byte is written in place (``pwrite``, then ``fsync``): no byte outside the
        range is written, so a crash at any point leaves every other entry of the part
        intact and the range old, new or partly overwritten (the tombstone is already
        durable, and a delete run again finishes the range), and a part of many megabytes
        is not copied for a few bytes. Given bytes (a re-encoded solid block, which also
        holds live files) are written to a copy of the part that is fsynced and renamed
        over it: a torn write inside the block would make its live members unreadable, so
        the block must change all at once; readers that opened the old file keep reading
        it whole. Either way two deletes in one part cannot undo each other, and the lock
        keeps a repack from replacing the head (and then removing or renumbering the part)
        between the check and the write.
        """
        if isinstance(fill, (bytes, bytearray, memoryview)) and len(fill) != end - start:
            raise ValueError(f"{len(fill)} bytes given for the range [{start}, {end})")
        final = self.path(shard_key)
        part = self.path(key)
        with local_shard_lock(final):
            if _current_etag(final) != shard_etag:
                return False
            if not isinstance(fill, int):
                self._replace_range(key, part, start, end, bytes(fill))
                return True
            try:
                fd = os.open(part, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise ObjectNotFound(f"no such object: {part}", key=key) from None
            try:
                size = os.fstat(fd).st_size
                if not 0 <= start <= end <= size:
                    raise RangeNotSatisfiable(
                        f"range [{start}, {end}) outside {part} ({size} bytes)", key=key
                    )
                block = bytes([fill]) * min(end - start, _COPY)
                pos = start
                while pos < end:
                    pos += os.pwrite(fd, block[: min(len(block), end - pos)], pos)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return True

    def _replace_range(self, key: str, part: Path, start: int, end: int, data: bytes) -> None:
        """Publish a copy of ``part`` whose bytes ``[start, end)`` are ``data`` (the shard's
        lock held): written to a temporary file beside it, fsynced, renamed over it."""
        tmp = self._temp(part)
        try:
            try:
                src = part.open("rb")
            except FileNotFoundError:
                raise ObjectNotFound(f"no such object: {part}", key=key) from None
            with src, tmp.open("wb") as out:
                size = os.fstat(src.fileno()).st_size
                if not 0 <= start <= end <= size:
                    raise RangeNotSatisfiable(
                        f"range [{start}, {end}) outside {part} ({size} bytes)", key=key
                    )
                left = start
                while left:
                    chunk = src.read(min(left, _COPY))
                    if not chunk:
                        raise CorruptShard(f"{part} shrank while it was being copied")
                    out.write(chunk)
                    left -= len(chunk)
                out.write(data)
                src.seek(end)
                while chunk := src.read(_COPY):
                    out.write(chunk)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            os.replace(tmp, part)
        finally:
            tmp.unlink(missing_ok=True)
        if self.fsync:
            _fsync_dir(part.parent)

    def remove_stale_temps(self, key: str, older_than: float = 3600.0) -> int:
        """Remove temporary files a killed writer left beside ``key`` (``.des-edit.*``, which
        may hold a copy of an older version of the shard) once they are ``older_than``
        seconds old; returns how many went away."""
        import time

        final = self.path(key)
        limit = time.time() - older_than
        removed = 0
        for tmp in final.parent.glob(f"{EDIT_TEMP_PREFIX}{final.name}.*"):
            try:
                if tmp.stat().st_mtime < limit:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (a folder such as ``20240101/`` or a key prefix), sorted;
        temporary and lock files are left out."""
        folder = prefix.rpartition("/")[0]
        root = self.base_dir / folder if folder else self.base_dir
        if not root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.base_dir).as_posix()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    yield key
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]


def entry_payload_key(key: str, entry: IndexEntry) -> str:
    """The object holding an inline entry's payload (the shard or its part)."""
    from ._layout import part_key

    return key if entry.part == 0 else part_key(key, entry.part)
