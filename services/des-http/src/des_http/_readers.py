"""Which retrieval driver serves which backend: :func:`open_async_retriever`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._retrieval import AsyncRetriever, Observer, Retriever
from ._settings import HttpSettings
from ._threaded import STREAM_CHUNK_BYTES, ThreadedRetriever, sync_retriever

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from des_format import IndexCache, ObjectStore
    from des_routing import DesSettings


def open_async_retriever(
    settings: HttpSettings | DesSettings,
    *,
    observer: Observer | None = None,
    store: ObjectStore | None = None,
    cache: IndexCache | None = None,
    executor: Executor | None = None,
    retriever: Retriever | None = None,
) -> AsyncRetriever:
    """The retriever the service awaits for ``settings``, with an index cache of
    ``DES_INDEX_CACHE_BYTES`` (or ``cache``) and ``observer(kind, nbytes)`` told of every
    store request.

    ``s3`` / ``multi_s3``: des-format's asynchronous driver (``AsyncShardRetriever``) over
    obstore (``des_storage_s3.open_async_store``), every request awaited on the event loop,
    no thread per request. ``local``, or a ``store`` or sync ``retriever`` given (tests): the
    blocking driver (``ShardRetriever``), answered on the loop when the page cache holds the
    bytes, else on ``executor`` (``_threaded``)."""
    if not isinstance(settings, HttpSettings):
        settings = HttpSettings(des=settings)
    des = settings.des
    if cache is None and des.index_cache_bytes > 0:
        from des_format import IndexCache

        cache = IndexCache(des.index_cache_bytes)
    if retriever is None and store is None and des.backend in ("s3", "multi_s3"):
        from des_format import AsyncShardRetriever
        from des_storage_s3 import open_async_store

        return AsyncShardRetriever(
            open_async_store(des),
            cache=cache,
            tail_size=des.tail_read_bytes,
            bigfiles_prefix=des.bigfiles_prefix,
            observer=observer,
            chunk_size=STREAM_CHUNK_BYTES,
        )
    if retriever is None:
        retriever = sync_retriever(settings, observer=observer, store=store, cache=cache)
    return ThreadedRetriever(retriever, settings, executor=executor)
