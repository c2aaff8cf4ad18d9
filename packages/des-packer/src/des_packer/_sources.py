"""Reading source files: local paths and ``s3://bucket/key`` URIs.

Local files are read with ``os.open``/``os.read`` (a small file in one read, no file object); S3
URIs go through des-storage-s3's source reader (retries with backoff), imported only when the
first S3 source shows up, so a local-only install needs nothing beyond des-packer.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from ._errors import EntryFailed, PackConfigError
from ._manifest import ManifestEntry

__all__ = ["SourceReader", "check_local_source"]

_CHUNK = 1 << 20


def _open_local(entry: ManifestEntry) -> int:
    """A read-only descriptor of a local source; ``EntryFailed`` saying what is wrong."""
    src = entry.source
    if "://" in src:
        raise EntryFailed(
            entry.uid,
            f"source {src} has an unsupported scheme; use a local path or s3://bucket/key",
        )
    try:
        return os.open(src, os.O_RDONLY)
    except FileNotFoundError:
        raise EntryFailed(
            entry.uid, f"source {src} does not exist; fix source_path in the manifest"
        ) from None
    except IsADirectoryError:  # pragma: no cover - Linux opens directories read-only
        raise EntryFailed(entry.uid, f"source {src} is a directory, not a file") from None
    except OSError as exc:
        raise EntryFailed(
            entry.uid, f"cannot read source {src}: {exc.strerror}; check its permissions"
        ) from None


def _read_fd(entry: ManifestEntry, fd: int, n: int) -> bytes:
    try:
        return os.read(fd, n)
    except IsADirectoryError:
        raise EntryFailed(entry.uid, f"source {entry.source} is a directory, not a file") from None
    except OSError as exc:
        raise EntryFailed(entry.uid, f"cannot read source {entry.source}: {exc.strerror}") from None


def _size_message(entry: ManifestEntry, actual: str) -> str:
    return (
        f"source {entry.source} has {actual} bytes but size_bytes is {entry.size_bytes}; "
        "fix size_bytes in the manifest (or the file)"
    )


class SourceReader:
    """Reads the bytes of manifest entries; thread-safe."""

    def __init__(self, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        self._endpoint_url = endpoint_url
        self._region = region
        self._lock = threading.Lock()
        self._s3: Any = None

    def _s3_reader(self) -> Any:
        with self._lock:
            if self._s3 is None:
                try:
                    from des_storage_s3 import ClientSettings, S3SourceReader, make_client
                except ImportError:
                    raise PackConfigError(
                        "s3:// sources need the S3 extra: pip install 'des-packer[s3]'"
                    ) from None
                client = make_client(
                    ClientSettings(region_name=self._region, endpoint_url=self._endpoint_url)
                )
                self._s3 = S3SourceReader(client)
            return self._s3

    def _chunks(self, entry: ManifestEntry) -> Iterator[bytes]:
        """The source's bytes in chunks; raises ``EntryFailed`` for a missing/unreadable one."""
        src = entry.source
        if src.startswith("s3://"):
            yield from self._s3_chunks(entry)
            return
        yield from self._chunks_local(entry, _CHUNK)

    def _chunks_local(self, entry: ManifestEntry, chunk_size: int) -> Iterator[bytes]:
        fd = _open_local(entry)
        try:
            while True:
                chunk = _read_fd(entry, fd, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            os.close(fd)

    def _s3_chunks(self, entry: ManifestEntry) -> Iterator[bytes]:
        from des_format import DesFormatError

        reader = self._s3_reader()
        try:
            yield from reader.iter_read(entry.source)
        except DesFormatError as exc:
            raise EntryFailed(entry.uid, f"cannot read source {entry.source}: {exc}") from None

    def read(self, entry: ManifestEntry) -> bytes:
        """All bytes of the source; ``EntryFailed`` unless there are exactly size_bytes."""
        want = entry.size_bytes
        if "://" not in entry.source:
            return self._read_local(entry)
        buf = bytearray()
        for chunk in self._chunks(entry):
            buf += chunk
            if len(buf) > want:
                raise EntryFailed(entry.uid, _size_message(entry, f"more than {want}"))
        if len(buf) != want:
            raise EntryFailed(entry.uid, _size_message(entry, str(len(buf))))
        return bytes(buf)

    def _read_local(self, entry: ManifestEntry) -> bytes:
        """One ``read`` of size_bytes + 1 and one more to see the end of the file (no chunk
        joining for small files, no file object)."""
        want = entry.size_bytes
        try:
            fd = os.open(entry.source, os.O_RDONLY)
        except OSError:
            fd = _open_local(entry)  # once more, to say what is wrong
        try:
            try:
                data = os.read(fd, want + 1)
            except OSError:
                data = _read_fd(entry, fd, want + 1)  # once more, to say what is wrong
            if len(data) == want:  # the common case: one more read to see the end
                try:
                    extra = os.read(fd, 1)
                except OSError:
                    extra = _read_fd(entry, fd, 1)
                if not extra:
                    return data
                data += extra  # longer than size_bytes: reported below
            elif len(data) < want:  # a short read (pipes, network file systems) or the end
                parts = [data]
                got = len(data)
                while got <= want:
                    chunk = _read_fd(entry, fd, want + 1 - got)
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                if len(parts) > 1:
                    data = b"".join(parts)
        finally:
            os.close(fd)
        if len(data) != want:
            actual = str(len(data)) if len(data) < want else f"more than {want}"
            raise EntryFailed(entry.uid, _size_message(entry, actual))
        return data

    def copy_to(self, entry: ManifestEntry, out: BinaryIO) -> tuple[str, int]:
        """Stream the source into ``out``; return its SHA-256 (hex) and CRC-32. Checks
        size_bytes."""
        from des_format import crc32

        want = entry.size_bytes
        digest = hashlib.sha256()
        crc = 0
        n = 0
        for chunk in self._chunks(entry):
            n += len(chunk)
            if n > want:
                raise EntryFailed(entry.uid, _size_message(entry, f"more than {want}"))
            digest.update(chunk)
            crc = crc32(chunk, crc)
            out.write(chunk)
        if n != want:
            raise EntryFailed(entry.uid, _size_message(entry, str(n)))
        return digest.hexdigest(), crc


def check_local_source(entry: ManifestEntry) -> str | None:
    """Why a pack would fail to read ``entry``'s local source (missing, not a regular file,
    not its manifest size), or None; ``s3://`` sources are not checked (``des-pack
    --dry-run`` makes no request). One ``stat``, the messages a pack gives."""
    src = entry.source
    if "://" in src:
        if src.startswith("s3://"):
            return None
        return f"source {src} has an unsupported scheme; use a local path or s3://bucket/key"
    try:
        st = os.stat(src)
    except FileNotFoundError:
        return f"source {src} does not exist; fix source_path in the manifest"
    except NotADirectoryError:
        return f"source {src} does not exist (a part of its path is a file); fix source_path"
    except OSError as exc:
        return f"cannot read source {src}: {exc.strerror}; check its permissions"
    if stat.S_ISDIR(st.st_mode):
        return f"source {src} is a directory, not a file"
    if stat.S_ISREG(st.st_mode) and st.st_size != entry.size_bytes:
        return _size_message(entry, str(st.st_size))
    return None
