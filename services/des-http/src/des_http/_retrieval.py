"""What the HTTP edge needs from the retrieval pipeline, and how it builds one.

Every backend (local, s3, multi_s3) goes through the same :class:`des_format.ShardRetriever`;
they differ only in the object store ``des_storage_s3.open_store`` returns for the settings.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Protocol

from des_routing import locate_shard_key, parse_created_at

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
    ``created_at`` is parsed first, so a request with two bad parameters names that one.
    """
    return locate_shard_key(uid, parse_created_at(created_at), n_bits)


def media_type_of(entry: FileEntry) -> str:
    """Content-Type from the stored metadata, else guessed from the stored name."""
    stored = entry.content_type
    # Printable ASCII only (U+0020..U+007E): what a header value may carry as it is.
    if stored and stored.isascii() and stored.isprintable():
        return stored
    meta = entry.meta or {}
    name = meta.get("name") or meta.get("filename")
    if isinstance(name, str) and name:
        return _media_type_of_suffix(suffix_of(name).lower())
    return DEFAULT_MEDIA_TYPE


def suffix_of(name: str) -> str:
    """``posixpath.splitext(name)[1]`` for a ``str``, in a few string operations: the last
    ``.`` after the last ``/`` and everything after it, unless the final component holds
    only dots before it (``.bashrc``, ``..``, ``a/.x``)."""
    dot = name.rfind(".")
    slash = name.rfind("/")
    if dot > slash and name[slash + 1 : dot].strip("."):
        return name[dot:]
    return ""


@lru_cache(maxsize=1024)
def _media_type_of_suffix(suffix: str) -> str:
    guessed, _ = mimetypes.guess_type("f" + suffix, strict=False)
    return guessed or DEFAULT_MEDIA_TYPE
