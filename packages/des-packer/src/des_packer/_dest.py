"""Where shards go: a local directory (S3 lives in ``_s3dest.py``).

Local crash safety: every object is written under a temporary name in its final directory
(``.des-tmp.<shard name>.*``), flushed and fsynced, then renamed into place (parts and big files
before the head object), and the directory is fsynced. Readers only ever see complete objects.
An append copies the old shard to a temporary file, writes the new tail there and renames it over
the old one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from des_format import ByteSource

from ._errors import PackConfigError, PackerError

__all__ = ["Destination", "ExistingShard", "LocalDestination", "Transaction"]

TEMP_PREFIX = ".des-tmp."


@dataclass(frozen=True, slots=True)
class ExistingShard:
    """A shard already in the output: its index, size and version tag."""

    index: Any  # des_format.ShardIndex
    size: int
    etag: str | None
    source: ByteSource | None = None  # kept open while the index is in use; see ``release``

    def release(self) -> None:
        if self.source is not None:
            self.source.close()


class Transaction(Protocol):
    """The objects of one shard being written; nothing is visible before ``commit``."""

    out: BinaryIO

    def open_part(self, n: int) -> BinaryIO: ...

    def add_bigfile(self, staged: Path, key: str) -> None: ...

    def commit(self) -> int: ...

    def abort(self) -> None: ...


class Destination(Protocol):
    def describe(self, key: str = "") -> str: ...

    def cleanup(self, shard_key: str) -> int: ...

    def existing(self, shard_key: str) -> ExistingShard | None: ...

    def stage_path(self, shard_key: str) -> Path: ...

    def begin(self, shard_key: str, existing: ExistingShard | None) -> Transaction: ...

    def close(self) -> None: ...


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_names(directory: Path) -> list[str]:
    """Names of the packer's temporary files in ``directory`` (none if it does not exist)."""
    try:
        with os.scandir(directory) as it:
            return [e.name for e in it if e.name.startswith(TEMP_PREFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _temp_name(shard_key: str, what: str) -> str:
    return f"{TEMP_PREFIX}{shard_key.rsplit('/', 1)[-1]}.{what}.{secrets.token_hex(6)}"


class LocalDestination:
    """Shards under a base directory, keys ``YYYYMMDD/<HEX>.des``."""

    def __init__(self, base_dir: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.base_dir = Path(base_dir)
        if self.base_dir.exists() and not self.base_dir.is_dir():
            raise PackConfigError(
                f"--output-dir {self.base_dir} exists and is not a directory; "
                "give a directory (it is created when missing)"
            )
        self.fsync = fsync
        self._leftovers: dict[Path, list[str]] = {}  # day directory -> temporary files in it
        self._made: set[Path] = set()  # directories this run created (removed if left empty)

    def make_dir(self, directory: Path) -> bool:
        """Create ``directory`` (and its parents); True if this call created it. A directory
        this run created and left empty (every shard in it failed) goes at ``close``."""
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            return False
        self._made.add(directory)
        return True

    def made_dirs(self) -> frozenset[Path]:
        """The directories this run created (for a packing process to hand to its parent)."""
        return frozenset(self._made)

    def adopt_dirs(self, dirs: frozenset[Path]) -> None:
        """Directories another process of this run created: removed at ``close`` if empty."""
        self._made.update(dirs)

    def describe(self, key: str = "") -> str:
        return str(self.base_dir / key) if key else str(self.base_dir)

    def path(self, key: str) -> Path:
        return self.base_dir.joinpath(*key.split("/"))

    def cleanup(self, shard_key: str) -> int:
        """Remove temporary files a killed run left for this shard; return how many.

        A day directory is listed once, when the first of its shards comes up (not once per
        shard): what a killed run left is there before this run starts, and the temporary
        files this run makes belong to shards it has already cleaned."""
        directory = self.path(shard_key).parent
        names = self._leftovers.get(directory)
        if names is None:
            names = self._leftovers[directory] = _temp_names(directory)
        prefix = f"{TEMP_PREFIX}{shard_key.rsplit('/', 1)[-1]}."
        mine = [n for n in names if n.startswith(prefix)]
        for n in mine:
            (directory / n).unlink(missing_ok=True)
            names.remove(n)
        return len(mine)

    def existing(self, shard_key: str) -> ExistingShard | None:
        from des_format import LocalFileSource, read_index

        path = self.path(shard_key)
        if not path.exists():
            return None
        src = LocalFileSource(path)
        try:
            index = read_index(src)
        except BaseException:
            src.close()
            raise
        return ExistingShard(index, src.size, src.etag, src)

    def stage_path(self, shard_key: str) -> Path:
        directory = self.path(shard_key).parent
        self.make_dir(directory)
        return directory / _temp_name(shard_key, "big")

    def begin(self, shard_key: str, existing: ExistingShard | None) -> LocalTransaction:
        return LocalTransaction(self, shard_key, existing)

    def close(self) -> None:
        """Remove the directories this run created and left empty (deepest first): a run
        whose shards of a day all failed leaves no empty day directory behind."""
        for directory in sorted(self._made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty (a shard was written), or gone
                directory.rmdir()
        self._made.clear()


class LocalTransaction:
    def __init__(
        self, dest: LocalDestination, shard_key: str, existing: ExistingShard | None
    ) -> None:
        self.dest = dest
        self.key = shard_key
        self.final = dest.path(shard_key)
        self.directory = self.final.parent
        created = dest.make_dir(self.directory)
        if created and dest.fsync:
            fsync_dir(self.directory.parent)
        self.existing = existing
        self._temps: list[tuple[Path, Path, BinaryIO]] = []  # (temp, final, file)
        self._bigfiles: list[tuple[Path, Path]] = []
        head_tmp = self.directory / _temp_name(shard_key, "0")
        self.out: BinaryIO = head_tmp.open("w+b")
        if existing is not None:
            with self.final.open("rb") as old:
                _copy_exactly(old, self.out, existing.size)
            self.base_size = existing.size
        else:
            self.base_size = 0
        self._head = (head_tmp, self.final, self.out)

    def open_part(self, n: int) -> BinaryIO:
        from des_format import part_key

        final = self.dest.path(part_key(self.key, n))
        tmp = self.directory / _temp_name(self.key, f"p{n}")
        fh: BinaryIO = tmp.open("w+b")
        self._temps.append((tmp, final, fh))
        return fh

    def add_bigfile(self, staged: Path, key: str) -> None:
        """Publish a staged big file at commit (content-addressed: kept if already there)."""
        final = self.dest.path(key)
        if final.exists() or any(f == final for _s, f in self._bigfiles):
            staged.unlink(missing_ok=True)
            return
        self.dest.make_dir(final.parent)
        self._bigfiles.append((staged, final))

    def _finish(self, fh: BinaryIO) -> int:
        fh.flush()
        if self.dest.fsync:
            os.fsync(fh.fileno())
        size = fh.seek(0, os.SEEK_END)
        fh.close()
        return size

    def commit(self) -> int:
        """Make the shard visible; return the bytes this run stored."""
        stored = 0
        for staged, final in self._bigfiles:
            if self.dest.fsync:
                with staged.open("rb") as big:
                    os.fsync(big.fileno())
            stored += staged.stat().st_size
            os.replace(staged, final)
        if self._bigfiles and self.dest.fsync:
            fsync_dir(self._bigfiles[0][1].parent)
        for tmp, final, fh in self._temps:
            stored += self._finish(fh)
            os.replace(tmp, final)
        head_tmp, final, fh = self._head
        stored += self._finish(fh) - self.base_size
        from des_format import local_shard_lock

        # The shard lock makes compare-and-rename atomic against other writers (des delete,
        # des repack, another packer), which take the same lock.
        with local_shard_lock(final):
            if self.existing is not None:
                from des_format import LocalFileSource

                with LocalFileSource(final) as now:
                    if now.etag != self.existing.etag:
                        head_tmp.unlink(missing_ok=True)
                        raise PackerError(
                            f"{final} changed while this run appended to it (another writer "
                            "of the same shard?); run again to append to the new version"
                        )
            os.replace(head_tmp, final)
        if self.dest.fsync:
            fsync_dir(self.directory)
        self._temps = []
        self._bigfiles = []
        return stored

    def abort(self) -> None:
        for tmp, _final, fh in [*self._temps, self._head]:
            with contextlib.suppress(OSError):  # flushes its buffer: fails again on a full disk
                fh.close()
            tmp.unlink(missing_ok=True)
        for staged, _final in self._bigfiles:
            staged.unlink(missing_ok=True)
        self._temps = []
        self._bigfiles = []


def _copy_exactly(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    left = n
    while left:
        chunk = src.read(min(left, 1 << 20))
        if not chunk:
            raise PackerError(f"existing shard shrank while being copied ({left} bytes missing)")
        dst.write(chunk)
        left -= len(chunk)
