"""What the HTTP edge needs from the retrieval pipeline, and how it builds one.

Every backend (local, s3, multi_s3) runs des-format's one retrieval pipeline. The service
awaits it through :class:`AsyncRetriever` (:func:`open_async_retriever`): on S3 the pipeline's
asynchronous driver (``des_format.AsyncShardRetriever``) over obstore
(``des_storage_s3.open_async_store``), every request awaited on the event loop, no thread per
request; on a local directory the blocking driver (``des_format.ShardRetriever``), answered on
the loop when the page cache holds the bytes, else on a worker thread.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from des_routing import locate_shard_key, parse_created_at

if TYPE_CHECKING:
    from des_format import IndexCache

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


class Retriever(NowaitRetriever, Protocol):
    """The subset of ``des_format.ShardRetriever`` the service calls: its reads, the answers
    without waiting (:class:`NowaitRetriever`) and its index cache (None: none)."""

    @property
    def cache(self) -> IndexCache | None: ...
    def stat(self, key: str, uid: str) -> FileEntry: ...
    def open(self, key: str, uid: str) -> OpenedFile: ...
    def read_many(self, key: str, uids: Iterable[str]) -> Iterator[tuple[str, Any]]: ...


Observer = Callable[[str, int], None]


class AsyncOpenedFile(Protocol):
    """A file whose first payload read succeeded; its bytes follow in verified chunks."""

    @property
    def entry(self) -> FileEntry: ...
    @property
    def whole(self) -> bytes | None:
        """All of the file's bytes when they are already in memory (the handler sends them
        without iterating), else None."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...  # verified, decompressed, bounded chunks
    async def aclose(self) -> None: ...


class AsyncRetriever(Protocol):
    """What the HTTP edge awaits: every backend answers through one of these. Errors are
    those of ``des_format.ShardRetriever`` (``EntryNotFound``, ``EntryDeleted``, store
    errors)."""

    @property
    def cache(self) -> IndexCache | None:
        """The index cache the retriever reads through (deletes drop entries from it), or
        None."""
        ...

    async def stat(self, key: str, uid: str) -> FileEntry: ...
    async def open(self, key: str, uid: str) -> AsyncOpenedFile: ...  # after the first read
    def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | BaseException]]: ...


# The common spellings of created_at (up to microseconds and an offset) are parsed once; a
# longer text (padding, say) is parsed every time, so no cache grows with what clients send.
_CACHED_CREATED_AT_CHARS = 32


@lru_cache(maxsize=4096)
def _parse_short_created_at(created_at: str) -> datetime:
    return parse_created_at(created_at)


@lru_cache(maxsize=8192)
def _shard_key_of(uid: str, created_at: datetime, n_bits: int) -> str:
    return locate_shard_key(uid, created_at, n_bits)


def plan_object_key(uid: str, created_at: str, n_bits: int) -> str:
    """The key of the shard that holds ``uid`` (raises the routing errors: 400s).

    ``created_at`` is parsed first, so a request with two bad parameters names that one. The
    keys of the last few thousand (uid, parsed time) pairs are kept: keyed on the parsed
    value, so padded spellings of one time share one entry (errors are not kept).
    """
    if len(created_at) <= _CACHED_CREATED_AT_CHARS:
        parsed = _parse_short_created_at(created_at)
    else:
        parsed = parse_created_at(created_at)
    return _shard_key_of(uid, parsed, n_bits)


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
