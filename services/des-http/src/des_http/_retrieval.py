"""What the HTTP edge needs from the retrieval pipeline, and how it builds one.

Every backend (local, s3, multi_s3) goes through the same :class:`des_format.ShardRetriever`;
they differ only in the object store ``des_storage_s3.open_store`` returns for the settings.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Protocol

from des_routing import locate_shard, parse_created_at

DEFAULT_MEDIA_TYPE = "application/octet-stream"


class FileEntry(Protocol):
    """The index entry attributes the service reads (``des_format.IndexEntry`` has them)."""

    @property
    def uid(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def etag(self) -> str: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...


class OpenedFile(Protocol):
    @property
    def entry(self) -> FileEntry: ...
    def iter_bytes(self) -> Iterator[bytes]: ...


class Retriever(Protocol):
    """The subset of ``des_format.ShardRetriever`` the service calls."""

    def stat(self, key: str, uid: str) -> FileEntry: ...
    def open(self, key: str, uid: str) -> OpenedFile: ...
    def read_many(self, key: str, uids: Iterable[str]) -> Iterator[tuple[str, Any]]: ...


class NowaitRetriever(Protocol):
    """What ``des_format.ShardRetriever`` adds for answers on the event loop: each returns
    None whenever the answer would need I/O (or anything unusual), never waiting for it."""

    def stat_nowait(self, key: str, uid: str) -> FileEntry | None: ...
    def read_nowait(
        self,
        key: str,
        uid: str,
        *,
        max_bytes: int = ...,
        only_if: Callable[[FileEntry], bool] | None = None,
    ) -> tuple[FileEntry, bytes | None] | None: ...


Observer = Callable[[str, int], None]


@lru_cache(maxsize=8192)
def plan_object_key(uid: str, created_at: str, n_bits: int) -> str:
    """The key of the shard that holds ``uid`` (raises the routing errors: 400s).

    Pure, so the last few thousand answers are kept (errors are not: they are raised anew).
    """
    return locate_shard(uid, parse_created_at(created_at), n_bits).object_key


def media_type_of(entry: FileEntry) -> str:
    """Content-Type from the stored metadata, else guessed from the stored name."""
    stored = entry.content_type
    if stored and all(32 <= ord(ch) < 127 for ch in stored):
        return stored
    meta = entry.meta or {}
    name = meta.get("name") or meta.get("filename")
    if isinstance(name, str) and name:
        return _media_type_of_suffix(posixpath.splitext(name)[1].lower())
    return DEFAULT_MEDIA_TYPE


@lru_cache(maxsize=1024)
def _media_type_of_suffix(suffix: str) -> str:
    guessed, _ = mimetypes.guess_type("f" + suffix, strict=False)
    return guessed or DEFAULT_MEDIA_TYPE
