"""The local directory as a :class:`~des_format._editor.ShardEditor`: new versions written
beside the shard, fsynced and renamed over it under the day directory's lock, fill bytes
written in place."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from ._editor import DEFAULT_BIGFILE_GRACE_SECONDS, EDIT_TEMP_PREFIX, EditorCapabilities
from ._errors import CorruptShard, ObjectNotFound, PreconditionFailed, RangeNotSatisfiable
from ._fsync import fsync_dir
from ._layout import DEFAULT_BIGFILES_PREFIX
from ._source import LocalObjectStore, _etag_of

_COPY = 1 << 20


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

    #: Local files have no older versions; a killed writer may leave temporary files; a
    #: fill byte is written in place.
    capabilities = EditorCapabilities(versions=False, temp_files=True, in_place_writes=True)

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
            fsync_dir(final.parent)

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
            fsync_dir(final.parent)
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
            fsync_dir(part.parent)

    def remove_stale_temps(self, key: str, older_than: float = 3600.0) -> int:
        """Remove temporary files a killed writer left beside ``key`` (``.des-edit.*``, which
        may hold a copy of an older version of the shard) once they are ``older_than``
        seconds old; returns how many went away."""
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
