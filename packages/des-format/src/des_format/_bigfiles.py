"""Where big files go: the :class:`BigFileSink` port (payloads above the big-file threshold,
stored once per sha256 beside the shards) and its local-directory implementation."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ._fsync import fsync_dir
from ._layout import DEFAULT_BIGFILES_PREFIX

_COPY_CHUNK = 1 << 20


@runtime_checkable
class BigFileSink(Protocol):
    """Where payloads above the big-file threshold go, named by their sha256 hex digest.

    Implementations store each hash once (skip when present) and never expose a partial
    object (write to a temporary name, then publish atomically).
    """

    def put_bytes(self, sha256: str, data: bytes) -> None: ...

    def put_file(self, sha256: str, path: str | os.PathLike[str]) -> None: ...


class LocalBigFileSink:
    """Big files under ``<shard_dir>/<prefix>/<sha256>``, written atomically (temp file, fsync,
    rename) and skipped when already present."""

    def __init__(
        self, shard_dir: str | os.PathLike[str], prefix: str = DEFAULT_BIGFILES_PREFIX
    ) -> None:
        self.directory = Path(shard_dir) / prefix.strip("/")
        self.written: list[str] = []

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
        return self.directory / sha256

    def _publish(self, sha256: str, write: Callable[[BinaryIO], None]) -> None:
        target = self.path_for(sha256)
        if target.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{sha256[:16]}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.directory)
        self.written.append(sha256)

    def put_bytes(self, sha256: str, data: bytes) -> None:
        def write(fh: BinaryIO) -> None:
            fh.write(data)

        self._publish(sha256, write)

    def put_file(self, sha256: str, path: str | os.PathLike[str]) -> None:
        def copy(fh: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(_COPY_CHUNK):
                    fh.write(chunk)

        self._publish(sha256, copy)
