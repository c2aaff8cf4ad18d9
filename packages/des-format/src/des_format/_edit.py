"""Changing published shards: the editor port (local directory here, S3 in des-storage-s3),
tombstones written through the append path, and the local shard lock.

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
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._errors import ObjectNotFound, PreconditionFailed, StoreError
from ._index import ShardIndex, read_index
from ._layout import DEFAULT_TAIL_SIZE, IndexEntry
from ._source import LocalObjectStore, ObjectStore, TailRead, _etag_of
from ._writer import ShardWriter, _fsync_dir

__all__ = [
    "DeleteResult",
    "LocalShardEditor",
    "ShardEditor",
    "StoreSource",
    "delete_entries",
    "local_shard_lock",
    "read_shard_index",
]

EDIT_TEMP_PREFIX = ".des-edit."
_COPY = 1 << 20


@runtime_checkable
class ShardEditor(Protocol):
    """Writes to the objects of a shard store (the reading side is ``store``).

    ``append`` and ``replace`` raise :class:`PreconditionFailed` when the object is no
    longer ``expected_etag``. ``put`` creates or overwrites an object no index references
    yet (a continuation part of a rebuilt shard). ``remove`` deletes an object with every
    stored version of it and returns how many object versions went away (0 when absent);
    ``purge_old_versions`` deletes only the versions that are not the current one.
    """

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
    """What :func:`delete_entries` did to one shard."""

    key: str
    deleted: tuple[str, ...]  # uids tombstoned by this call
    already: tuple[str, ...]  # uids that were deleted before
    missing: tuple[str, ...]  # uids the shard does not hold
    attempts: int  # 1 unless another writer changed the shard meanwhile


def delete_entries(
    editor: ShardEditor, key: str, uids: Iterable[str], *, attempts: int = 5
) -> DeleteResult:
    """Tombstone ``uids`` in the shard at ``key`` through the append path: a tail holding a
    new index (the same entries, these ones flagged deleted) and footer is added after the
    current bytes, conditional on the ETag the index was read at. Reads answer
    ``EntryDeleted`` from then on; the payload bytes stay until a repack erases them.

    Raises ``ObjectNotFound`` when there is no shard at ``key`` and
    :class:`PreconditionFailed` when the shard kept changing for ``attempts`` tries.
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
        if not todo:
            return DeleteResult(key, (), tuple(already), tuple(missing), attempt)
        if index.is_legacy:
            raise StoreError(
                f"{editor.describe(key)} is a legacy DES2 shard, which cannot hold tombstones;"
                " repack it into the current format first",
                key=key,
            )
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
        return DeleteResult(key, tuple(todo), tuple(already), tuple(missing), attempt)
    raise AssertionError("unreachable")  # pragma: no cover


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

    def __init__(self, base_dir: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.store = LocalObjectStore(base_dir)
        self.base_dir = self.store.base_dir
        self.fsync = fsync

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
