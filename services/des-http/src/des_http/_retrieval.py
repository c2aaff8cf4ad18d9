"""What the HTTP edge needs from the retrieval pipeline, and how it builds one.

Every backend (local, s3, multi_s3) runs des-format's one retrieval pipeline. The service
awaits it through :class:`AsyncRetriever` (:func:`open_async_retriever`): on S3 the pipeline's
asynchronous driver (``des_format.AsyncShardRetriever``) over obstore
(``des_storage_s3.open_async_store``), every request awaited on the event loop, no thread per
request; on a local directory the blocking driver (``des_format.ShardRetriever``), answered on
the loop when the page cache holds the bytes, else on a worker thread.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

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

if TYPE_CHECKING:
    from des_format import IndexCache
    from des_routing import DesSettings


class AsyncOpenedFile(Protocol):
    """A file found and its first bytes read (verified, for a file that fits one chunk)."""

    @property
    def entry(self) -> FileEntry: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Verified, decompressed chunks of bounded size each."""
        ...

    async def aclose(self) -> None: ...


class AsyncRetriever(Protocol):
    """The retrieval pipeline as the service awaits it. Errors are those of
    ``des_format.ShardRetriever`` (``EntryNotFound``, ``EntryDeleted``, store errors)."""

    async def stat(self, key: str, uid: str) -> FileEntry: ...
    async def open(self, key: str, uid: str) -> AsyncOpenedFile:
        """Returns only after the first payload read succeeded."""
        ...

    def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | BaseException]]: ...


def open_async_retriever(
    settings: DesSettings,
    *,
    observer: Observer | None = None,
    cache: IndexCache | None = None,
    executor: Executor | None = None,
) -> AsyncRetriever:
    """The :class:`AsyncRetriever` for ``settings.backend`` (``DesSettings``, or des-http's
    ``HttpSettings``), with an index cache of
    ``DES_INDEX_CACHE_BYTES`` (or ``cache``) and ``observer(kind, nbytes)`` told of every store
    request. ``s3`` / ``multi_s3``: ``des_format.AsyncShardRetriever`` over obstore, awaited
    on the loop. ``local``: ``des_format.ShardRetriever`` with its answers from the page cache
    taken on the loop and the rest run on ``executor`` (default: the loop's)."""
    from des_format import AsyncShardRetriever, IndexCache, ShardRetriever

    settings = getattr(settings, "des", settings)  # HttpSettings carries the DesSettings
    if cache is None and settings.index_cache_bytes > 0:
        cache = IndexCache(settings.index_cache_bytes)
    options: dict[str, Any] = {
        "cache": cache,
        "tail_size": settings.tail_read_bytes,
        "bigfiles_prefix": settings.bigfiles_prefix,
        "observer": observer,
    }
    if settings.backend in ("s3", "multi_s3"):
        from des_storage_s3 import open_async_store

        return AsyncShardRetriever(open_async_store(settings), **options)
    from des_format import LocalObjectStore

    sync = ShardRetriever(LocalObjectStore(settings.base_dir), **options)
    return ThreadedRetriever(sync, executor)


class _ThreadedOpenedFile:
    def __init__(
        self, entry: FileEntry, first: list[bytes], rest: Iterator[bytes] | None, run: Any
    ) -> None:
        self.entry = entry
        self._first = first
        self._rest = rest
        self._run = run

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, []
        for piece in first:
            yield piece
        rest = self._rest
        if rest is None:
            return
        done = object()
        while True:
            piece = await self._run(next, rest, done)
            if piece is done:
                return
            yield piece

    async def aclose(self) -> None:
        self._first = []
        rest, self._rest = self._rest, None
        close = getattr(rest, "close", None)
        if close is not None:
            await self._run(close)


class ThreadedRetriever:
    """:class:`AsyncRetriever` over a blocking ``des_format.ShardRetriever``: answers that
    need no I/O (``stat_nowait``, and ``read_nowait`` for small files whose bytes the page
    cache holds) are taken on the loop; everything else runs on ``executor``."""

    def __init__(self, retriever: Any, executor: Executor | None = None) -> None:
        self.retriever = retriever
        self.cache = getattr(retriever, "cache", None)
        self._executor = executor

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def stat(self, key: str, uid: str) -> FileEntry:
        entry = self.retriever.stat_nowait(key, uid)
        if entry is not None:
            return entry  # type: ignore[no-any-return]
        return await self._run(self.retriever.stat, key, uid)  # type: ignore[no-any-return]

    async def open(self, key: str, uid: str) -> AsyncOpenedFile:
        quick = self.retriever.read_nowait(key, uid)
        if quick is not None and quick[1] is not None:
            return _ThreadedOpenedFile(quick[0], [quick[1]] if quick[1] else [], None, self._run)
        return await self._run(self._open_first, key, uid)  # type: ignore[no-any-return]

    def _open_first(self, key: str, uid: str) -> _ThreadedOpenedFile:
        opened = self.retriever.open(key, uid)
        pieces = iter(opened.iter_bytes())
        first = next(pieces, None)
        return _ThreadedOpenedFile(
            opened.entry, [] if first is None else [first], pieces, self._run
        )

    async def read_many(
        self, key: str, uids: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes | BaseException]]:
        results = await self._run(lambda: list(self.retriever.read_many(key, list(uids))))
        for uid, value in results:
            yield uid, value


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
