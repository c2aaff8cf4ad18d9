"""From :class:`des_routing.DesSettings` to stores and a retriever.

``open_store(settings)`` gives the ObjectStore of the configured backend (local directory,
one S3 bucket, or zones); ``open_retriever(settings)`` puts des-format's one retrieval
pipeline (:class:`des_format.ShardRetriever`) on top of it with routing, the byte-bounded
index cache and the range-call metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from des_routing import DesSettings, ShardLocation, locate_shard
from prometheus_client import CollectorRegistry

from ._client import ClientSettings, make_client
from ._metrics import range_call_observer
from ._retry import RetryPolicy
from ._store import S3ObjectStore
from ._upload import DEFAULT_PART_SIZE, S3ShardStore
from ._zones import MultiZoneObjectStore, MultiZoneShardStore, zone_client_settings

if TYPE_CHECKING:
    from des_format import IndexCache, IndexEntry, ObjectStore, OpenedFile, ShardRetriever


def _s3_client_settings(settings: DesSettings, base: ClientSettings | None) -> ClientSettings:
    b = base or ClientSettings()
    return dataclasses.replace(
        b,
        region_name=settings.s3_region or b.region_name,
        endpoint_url=settings.s3_endpoint_url or b.endpoint_url,
    )


def _require_bucket(settings: DesSettings) -> str:
    if not settings.s3_bucket:
        from des_routing import SettingsError

        raise SettingsError("DES_S3_BUCKET is required when DES_BACKEND=s3: set it to the bucket")
    return settings.s3_bucket


def _require_zones(settings: DesSettings) -> Any:
    if settings.zones is None:
        from des_routing import SettingsError

        raise SettingsError(
            "DES_ZONES_CONFIG is required when DES_BACKEND=multi_s3: set it to the zones file"
        )
    return settings.zones


def open_store(
    settings: DesSettings,
    *,
    client_settings: ClientSettings | None = None,
    retry: RetryPolicy | None = None,
) -> ObjectStore:
    """The ObjectStore for ``settings.backend``: ``local`` (des-format's LocalObjectStore on
    DES_BASE_DIR), ``s3`` (DES_S3_BUCKET/REGION/ENDPOINT_URL/PREFIX) or ``multi_s3`` (one
    S3ObjectStore per zone of DES_ZONES_CONFIG).
    """
    if settings.backend == "local":
        from des_format import LocalObjectStore

        return LocalObjectStore(settings.base_dir)
    if settings.backend == "s3":
        client = make_client(_s3_client_settings(settings, client_settings))
        return S3ObjectStore(client, _require_bucket(settings), settings.s3_prefix, retry=retry)
    zones = _require_zones(settings)
    overrides = _overrides(client_settings)
    stores: dict[str, ObjectStore] = {
        z.name: S3ObjectStore(
            make_client(zone_client_settings(z, **overrides)), z.s3.bucket, z.s3.prefix, retry=retry
        )
        for z in zones.zones
    }
    return MultiZoneObjectStore(zones, stores)


def open_shard_store(
    settings: DesSettings,
    *,
    client_settings: ClientSettings | None = None,
    retry: RetryPolicy | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_concurrency: int = 4,
) -> S3ShardStore | MultiZoneShardStore:
    """The writer for ``s3`` or ``multi_s3`` settings (each key goes to its owning zone)."""
    kw: dict[str, Any] = {
        "retry": retry,
        "part_size": part_size,
        "max_concurrency": max_concurrency,
    }
    if settings.backend == "s3":
        client = make_client(_s3_client_settings(settings, client_settings))
        return S3ShardStore(client, _require_bucket(settings), settings.s3_prefix, **kw)
    if settings.backend == "multi_s3":
        zones = _require_zones(settings)
        overrides = _overrides(client_settings)
        return MultiZoneShardStore(
            zones,
            {
                z.name: S3ShardStore(
                    make_client(zone_client_settings(z, **overrides)),
                    z.s3.bucket,
                    z.s3.prefix,
                    **kw,
                )
                for z in zones.zones
            },
        )
    raise ValueError(
        f"DES_BACKEND={settings.backend} has no S3 shard store; use s3 or multi_s3 (local "
        "shards are written by des-packer directly)"
    )


def _overrides(cs: ClientSettings | None) -> dict[str, Any]:
    if cs is None:
        return {}
    return {
        "connect_timeout": cs.connect_timeout,
        "read_timeout": cs.read_timeout,
        "max_pool_connections": cs.max_pool_connections,
        "addressing_style": cs.addressing_style,
    }


class S3Retriever:
    """``(uid, created_at) -> bytes`` over any ObjectStore: routing + des_format's
    ShardRetriever. The name follows the product README; local and multi-zone stores work
    the same way.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        n_bits: int = 8,
        cache: IndexCache | None = None,
        tail_size: int = 65536,
        bigfiles_prefix: str = "_bigFiles",
        backend: str = "s3",
        registry: CollectorRegistry | None = None,
        observe_metrics: bool = True,
    ) -> None:
        from des_format import ShardRetriever

        self.store = store
        self.n_bits = n_bits
        self.backend = backend
        observer = range_call_observer(backend, registry) if observe_metrics else None
        self.retriever: ShardRetriever = ShardRetriever(
            store,
            cache=cache,
            tail_size=tail_size,
            bigfiles_prefix=bigfiles_prefix,
            observer=observer,
        )

    def locate(self, uid: str, created_at: str | datetime) -> ShardLocation:
        return locate_shard(uid, created_at, self.n_bits)

    def read(self, uid: str, created_at: str | datetime) -> bytes:
        """The file's bytes, checksum verified."""
        return self.retriever.read(self.locate(uid, created_at).object_key, uid)

    def stat(self, uid: str, created_at: str | datetime) -> IndexEntry:
        """The file's index entry (size, checksum, content type...), no payload read."""
        return self.retriever.stat(self.locate(uid, created_at).object_key, uid)

    def open(self, uid: str, created_at: str | datetime) -> OpenedFile:
        """A streamed reader of the file (big files are never held whole)."""
        return self.retriever.open(self.locate(uid, created_at).object_key, uid)

    def read_many(self, uids: list[str], created_at: str | datetime) -> Iterator[tuple[str, Any]]:
        """Several files created in the same hour and shard... grouped per shard key."""
        groups: dict[str, list[str]] = {}
        for uid in uids:
            groups.setdefault(self.locate(uid, created_at).object_key, []).append(uid)
        for key, group in groups.items():
            yield from self.retriever.read_many(key, group)


def open_retriever(
    settings: DesSettings,
    *,
    registry: CollectorRegistry | None = None,
    client_settings: ClientSettings | None = None,
    retry: RetryPolicy | None = None,
    cache: IndexCache | None = None,
) -> S3Retriever:
    """A retriever configured from ``settings`` (backend, routing bits, big-file prefix, tail
    size and a DES_INDEX_CACHE_BYTES index cache, 0 = none).
    """
    from des_format import IndexCache

    store = open_store(settings, client_settings=client_settings, retry=retry)
    if cache is None and settings.index_cache_bytes > 0:
        cache = IndexCache(settings.index_cache_bytes)
    n_bits = settings.zones.n_bits if settings.zones is not None else settings.n_bits
    return S3Retriever(
        store,
        n_bits=n_bits,
        cache=cache,
        tail_size=settings.tail_read_bytes,
        bigfiles_prefix=settings.bigfiles_prefix,
        backend=settings.backend,
        registry=registry,
    )
