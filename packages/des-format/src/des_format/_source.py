"""Ports through which the reader gets bytes: one object (:class:`ByteSource`) or many keyed
objects (:class:`ObjectStore`), and their standard-library implementations.

Every range here is half-open, ``[start, end)``. HTTP's inclusive ``bytes=a-b`` is converted in
exactly one place, at the HTTP edge.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from ._errors import ObjectNotFound, RangeNotSatisfiable, StoreError

DEFAULT_CHUNK_SIZE = 1 << 20

#: Whether this platform reads cached file data without ever waiting for the disk: Linux
#: >= 4.14, ``preadv2`` with ``RWF_NOWAIT`` (``os.preadv(..., os.RWF_NOWAIT)``).
NOWAIT_READS = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")

# Filesystems on local devices or in memory: a path lookup of a file held open there is
# answered from the kernel's caches. Network and FUSE filesystems (nfs, cifs, ceph, fuse.*)
# may go to the network for any lookup, so the non-blocking reads below are never tried there.
LOCAL_FILESYSTEMS = frozenset(
    ("ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "tmpfs", "overlay")
)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A half-open byte range ``[start, end)``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid byte range [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class TailRead:
    """The last bytes of an object, with what a suffix read learns about the object."""

    data: bytes
    object_size: int
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One name directly under a listed prefix: an object, or a "directory" (a prefix that
    more keys continue, S3's common prefix)."""

    name: str
    is_dir: bool


@runtime_checkable
class ByteSource(Protocol):
    """One object, read by ranges. The reader core needs nothing else."""

    def read_range(self, start: int, end: int) -> bytes:
        """Return exactly the bytes ``[start, end)``; raise ``RangeNotSatisfiable`` outside."""
        ...

    def read_tail(self, n: int) -> TailRead:
        """Return the last ``min(n, size)`` bytes, the object size and its ETag if known."""
        ...

    def close(self) -> None:
        """Release what the source holds open (a descriptor); a no-op for most sources."""
        ...


@runtime_checkable
class ObjectStore(Protocol):
    """Many objects addressed by '/'-separated keys (``20240101/A7.des``).

    ``if_match``: the read fails with ``PreconditionFailed`` when the object's current ETag
    differs, so a cached index never serves offsets of a rebuilt object.

    Besides reads, every store declares what else it can do, so that no caller has to guess
    from its type (:class:`ObjectStoreBase` gives the defaults of a store that can do none of
    it):

    - ``supports_listing`` / :meth:`list_dir`: the names directly under a prefix;
    - ``supports_nowait_reads`` / :meth:`read_range_nowait`: a read answered only if no I/O
      has to be waited for (page-cached local files);
    - :meth:`parts`: the stores it is made of (each zone of a multi-zone store), by name;
    - :meth:`close`: release descriptors and connections.
    """

    @property
    def supports_listing(self) -> bool:
        """Whether :meth:`list_dir` answers (else it raises ``StoreError``)."""
        ...

    @property
    def supports_nowait_reads(self) -> bool:
        """Whether :meth:`read_range_nowait` can ever answer (else it always gives None)."""
        ...

    def read_tail(self, key: str, n: int) -> TailRead: ...

    def read_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes: ...

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]: ...

    def head(self, key: str) -> ObjectInfo: ...

    def describe(self, key: str = "") -> str:
        """A human-readable location for messages: ``/data/des/20240101/A7.des``, ``s3://b/p/k``."""
        ...

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        """What is directly under ``prefix`` (``""``: the store's root; ``"20240101"``: one
        day), in no set order, each entry once: objects, and directories more keys continue.
        A prefix with nothing under it lists nothing. A multi-zone store lists every zone.
        ``limit``: stop after that many entries (``limit=1`` is the cheapest request that
        proves the store answers)."""
        ...

    def read_range_nowait(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes | None:
        """:meth:`read_range` if it needs no I/O to be waited for, else None (then call
        :meth:`read_range`). Never raises for a missing object or a bad range: None."""
        ...

    def parts(self) -> Mapping[str, ObjectStore]:
        """The stores this one is made of, by name: each zone's store (by zone name) for a
        multi-zone store; ``{"": self}`` for any other. Each part is itself a plain store."""
        ...

    def close(self) -> None:
        """Release descriptors and connections (the store may still be used afterwards:
        it reopens what it needs)."""
        ...


class ObjectStoreBase:
    """The optional capabilities of an :class:`ObjectStore`, as a store that has none of
    them: subclass it and override what a store can do (declaring ``supports_*`` True).

    It cannot list, never answers a read without waiting, is its own only part and has
    nothing to close.
    """

    @property
    def supports_listing(self) -> bool:
        return False

    @property
    def supports_nowait_reads(self) -> bool:
        return False

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        raise StoreError(
            f"{type(self).__name__} cannot list its keys (supports_listing is False); "
            "use a store that can (LocalObjectStore, S3ObjectStore, MultiZoneObjectStore)",
            key=prefix,
        )

    def read_range_nowait(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes | None:
        return None

    def parts(self) -> Mapping[str, ObjectStore]:
        return {"": cast("ObjectStore", self)}

    def close(self) -> None:
        return None


class StoreSource:
    """One object of an :class:`ObjectStore` as a :class:`ByteSource`: the one adapter from
    "store + key" to what the reader core reads. Range reads are pinned to the ETag the
    tail read saw (``if_match``), so the index and payload offsets come from one version.

    ``size`` and ``etag`` are what the tail read learnt (0 and None before it).
    ``on_read``, when given, is called after each request with ``"tail"`` or ``"range"``
    and the number of bytes it returned (the retriever counts requests this way).
    """

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        on_read: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.etag: str | None = None
        self.size = 0
        self._on_read = on_read

    def read_tail(self, n: int) -> TailRead:
        tail = self.store.read_tail(self.key, n)
        self.etag = tail.etag
        self.size = tail.object_size
        if self._on_read is not None:
            self._on_read("tail", len(tail.data))
        return tail

    def read_range(self, start: int, end: int) -> bytes:
        data = self.store.read_range(self.key, start, end, if_match=self.etag)
        if self._on_read is not None:
            self._on_read("range", len(data))
        return data

    def close(self) -> None:
        """Nothing to release: the store keeps its own connections."""


class BytesSource:
    """An object held in memory (tests, and shards just built)."""

    def __init__(self, data: bytes, etag: str | None = None) -> None:
        self._data = data
        self._etag = etag

    def read_range(self, start: int, end: int) -> bytes:
        if start < 0 or end < start or end > len(self._data):
            raise RangeNotSatisfiable(
                f"range [{start}, {end}) outside object of {len(self._data)} bytes"
            )
        return self._data[start:end]

    def read_tail(self, n: int) -> TailRead:
        size = len(self._data)
        return TailRead(self._data[max(0, size - n) :], size, self._etag)

    def close(self) -> None:
        """Nothing to release."""


def _etag_of(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


class LocalFileSource:
    """One local file, read with ``os.pread`` on a descriptor kept open (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ObjectNotFound(f"no such shard: {self.path}", key=str(self.path)) from None
        except OSError as exc:
            raise StoreError(
                f"cannot open {self.path}: {exc.strerror}", key=str(self.path)
            ) from exc
        st = os.fstat(self._fd)
        self.size = st.st_size
        self.etag = _etag_of(st)
        #: What the ETag is made of, (inode, size, mtime in ns): equal tuples, equal ETags.
        self.stat_key = (st.st_ino, st.st_size, st.st_mtime_ns)
        #: False once the kernel refused a non-blocking read of this file (EOPNOTSUPP).
        self.nowait_supported = NOWAIT_READS

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        # Stores drop replaced sources without closing them (another thread may still be
        # reading); the descriptor is closed when the last reference goes.
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __enter__(self) -> LocalFileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_range(self, start: int, end: int) -> bytes:
        if start < 0 or end < start or end > self.size:
            raise RangeNotSatisfiable(
                f"range [{start}, {end}) outside {self.path} ({self.size} bytes)",
                key=str(self.path),
            )
        try:
            data = os.pread(self._fd, end - start, start)
        except OSError as exc:
            raise StoreError(
                f"cannot read {self.path}: {exc.strerror or exc}", key=str(self.path)
            ) from exc
        if len(data) != end - start:
            raise RangeNotSatisfiable(f"{self.path} shrank while being read", key=str(self.path))
        return data

    def read_tail(self, n: int) -> TailRead:
        start = max(0, self.size - n)
        return TailRead(self.read_range(start, self.size), self.size, self.etag)

    def read_range_nowait(self, start: int, end: int) -> bytes | None:
        """The bytes ``[start, end)`` if the kernel holds them all in its page cache, else
        None, never waiting for the disk (``preadv2`` with ``RWF_NOWAIT``).

        None also for a range outside the file, a short read, a platform or filesystem
        without such reads, or any error: the caller then uses :meth:`read_range`, which
        waits for the disk and raises the proper error.
        """
        if not self.nowait_supported or start < 0 or end < start or end > self.size:
            return None
        n = end - start
        if n == 0:
            return b""
        buf = bytearray(n)
        try:
            got = os.preadv(self._fd, [buf], start, os.RWF_NOWAIT)
        except BlockingIOError:  # EAGAIN: some of the bytes are not in memory
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self.nowait_supported = False
            return None
        if got != n:  # part of the range cached, or the file shrank
            return None
        return bytes(buf)


class LocalObjectStore(ObjectStoreBase):
    """Objects as files under a base directory; keys can never escape it.

    Descriptors are cached per key and re-validated by ``stat`` so a file replaced by an
    atomic rename (append, repack) is reopened: the ETag is inode, size and mtime.
    """

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self.base_dir = Path(base_dir).resolve()
        self._base_str = str(self.base_dir)
        self._paths: dict[str, str] = {}
        self._lock = threading.Lock()
        self._open: dict[str, LocalFileSource] = {}
        #: Whether :meth:`read_range_nowait` may read at all: the platform has non-blocking
        #: reads and ``base_dir`` is on a local filesystem (see ``LOCAL_FILESYSTEMS``).
        self.nowait_reads = NOWAIT_READS and filesystem_type(self.base_dir) in LOCAL_FILESYSTEMS

    @property
    def supports_listing(self) -> bool:
        return True

    @property
    def supports_nowait_reads(self) -> bool:
        return self.nowait_reads

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        prefix = prefix.strip("/")
        folder = self._path_str(prefix) if prefix else self._base_str
        found: list[ListEntry] = []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if limit is not None and len(found) >= limit:
                        break
                    found.append(ListEntry(e.name, e.is_dir()))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StoreError(
                f"cannot list {folder}: {exc.strerror or exc}", key=prefix, location=folder
            ) from exc
        yield from found

    def path_for(self, key: str) -> Path:
        """The file behind ``key``; raises ``StoreError`` for keys that would leave base_dir."""
        return Path(self._path_str(key))

    def _path_str(self, key: str) -> str:
        path = self._paths.get(key)
        if path is not None:
            return path
        parts = key.split("/")
        if (
            not key
            or "\\" in key
            or "\x00" in key
            or key.startswith("/")
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise StoreError(f"invalid object key {key!r}", key=key)
        path = os.path.join(self._base_str, *parts)
        if len(self._paths) >= 4096:
            self._paths.clear()
        self._paths[key] = path
        return path

    def _source(self, key: str) -> LocalFileSource:
        path = self._path_str(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ObjectNotFound(f"no such object: {path}", key=key, location=str(path)) from None
        etag = _etag_of(st)
        with self._lock:
            src = self._open.get(key)
            if src is not None and src.etag == etag:
                return src
            fresh = LocalFileSource(path)
            # Replaced or evicted sources are dropped, not closed: a reader in another thread
            # may hold one; it closes itself when unreferenced.
            if len(self._open) >= 1024:
                self._open.clear()
            self._open[key] = fresh
            return fresh

    def close(self) -> None:
        with self._lock:
            for src in self._open.values():
                src.close()
            self._open.clear()

    def read_tail(self, key: str, n: int) -> TailRead:
        return self._source(key).read_tail(n)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        src = self._source(key)
        _check_match(src, key, if_match)
        return src.read_range(start, end)

    def read_range_nowait(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes | None:
        """:meth:`read_range` if it can be answered without waiting for any I/O, else None
        (then call :meth:`read_range`, which does the same with every check and error).

        Only a descriptor already open for ``key`` is read (opening a file may wait for the
        disk), through :meth:`LocalFileSource.read_range_nowait`. After the read the path is
        looked up again, as :meth:`read_range` does before its read, so a shard replaced by a
        rename is never answered from the old file: any difference from the descriptor's
        ETag, or from ``if_match``, gives None. The lookup of a file held open is answered
        from the kernel's caches on the local filesystems this is enabled for.
        """
        if not self.nowait_reads:
            return None
        src = self._open.get(key)  # no lock: a worker thread may hold it while opening
        if src is None or (if_match is not None and if_match != src.etag):
            return None
        data = src.read_range_nowait(start, end)
        if data is None:
            if not src.nowait_supported:
                self.nowait_reads = False
            return None
        path = self._paths.get(key)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != src.stat_key:  # the ETag, unformatted
            return None
        return data

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        src = self._source(key)
        _check_match(src, key, if_match)
        if start < 0 or end < start or end > src.size:
            raise RangeNotSatisfiable(f"range [{start}, {end}) outside {src.path}", key=key)
        pos = start
        while pos < end:
            nxt = min(end, pos + chunk_size)
            yield src.read_range(pos, nxt)
            pos = nxt

    def head(self, key: str) -> ObjectInfo:
        src = self._source(key)
        return ObjectInfo(src.size, src.etag)

    def describe(self, key: str = "") -> str:
        return str(self.base_dir / key) if key else str(self.base_dir)


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type (``ext4``, ``nfs4``, ...) of the filesystem holding ``path``, read from
    ``/proc/self/mountinfo``; None where that file does not exist or says nothing."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            mountinfo = fh.read()
    except OSError:
        return None
    return mount_type_of(mountinfo, os.path.realpath(path))


def mount_type_of(mountinfo: str, path: str) -> str | None:
    """The filesystem type of the absolute ``path`` in the text of a ``mountinfo`` file: that
    of the longest mount point holding it (the last one listed, when several share it)."""
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mount_point, fs_type = fields[4], fields[sep + 1]
        except (ValueError, IndexError):
            continue
        # Space, tab, newline and backslash are written as octal escapes (\040 ...).
        mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mount_point)
        inside = mount_point in ("/", path) or path.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), fs_type)
    return None if best is None else best[1]


def _check_match(src: LocalFileSource, key: str, if_match: str | None) -> None:
    if if_match is not None and if_match != src.etag:
        from ._errors import PreconditionFailed

        raise PreconditionFailed(f"{src.path} changed since it was indexed", key=key)
