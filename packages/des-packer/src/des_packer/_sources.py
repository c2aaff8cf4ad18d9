"""Reading source files: local paths and ``s3://bucket/key`` URIs.

Local files are read with plain ``open``; S3 URIs go through des-storage-s3's source reader
(retries with backoff), imported only when the first S3 source shows up, so a local-only install
needs nothing beyond des-packer.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from ._errors import EntryFailed, PackConfigError
from ._manifest import ManifestEntry

__all__ = ["SourceReader"]

_CHUNK = 1 << 20


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
        src = entry.source
        if "://" in src:
            raise EntryFailed(
                entry.uid,
                f"source {src} has an unsupported scheme; use a local path or s3://bucket/key",
            )
        try:
            fh = open(src, "rb", buffering=0)  # noqa: SIM115 - closed below, across yields
        except FileNotFoundError:
            raise EntryFailed(
                entry.uid, f"source {src} does not exist; fix source_path in the manifest"
            ) from None
        except IsADirectoryError:
            raise EntryFailed(entry.uid, f"source {src} is a directory, not a file") from None
        except OSError as exc:
            raise EntryFailed(
                entry.uid, f"cannot read source {src}: {exc.strerror}; check its permissions"
            ) from None
        with fh:
            try:
                while True:
                    chunk = fh.read(chunk_size)
                    if not chunk:
                        return
                    yield chunk
            except OSError as exc:
                raise EntryFailed(entry.uid, f"cannot read source {src}: {exc.strerror}") from None

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
        """One ``read`` of at most size_bytes + 1 (no chunk joining for small files)."""
        chunks = self._chunks_local(entry, entry.size_bytes + 1)
        data = next(chunks, b"")
        if len(data) <= entry.size_bytes:
            data += b"".join(chunks)  # a short read (pipes, network file systems)
        if len(data) != entry.size_bytes:
            actual = (
                str(len(data)) if len(data) < entry.size_bytes else f"more than {entry.size_bytes}"
            )
            raise EntryFailed(entry.uid, _size_message(entry, actual))
        return data

    def copy_to(self, entry: ManifestEntry, out: BinaryIO) -> tuple[str, int]:
        """Stream the source into ``out``; return its SHA-256 (hex) and CRC-32. Checks
        size_bytes."""
        want = entry.size_bytes
        digest = hashlib.sha256()
        crc = 0
        n = 0
        for chunk in self._chunks(entry):
            n += len(chunk)
            if n > want:
                raise EntryFailed(entry.uid, _size_message(entry, f"more than {want}"))
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
            out.write(chunk)
        if n != want:
            raise EntryFailed(entry.uid, _size_message(entry, str(n)))
        return digest.hexdigest(), crc
