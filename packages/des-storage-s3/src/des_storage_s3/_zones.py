"""Multi-zone S3: each zone (bucket, region, endpoint, prefix, credentials) owns a range of
shard indexes; reads and writes of a key go to the zone that owns it.

Shard and continuation-part keys name their shard index (``YYYYMMDD/A7[.pN].des``). A big
file's key (``YYYYMMDD/_bigFiles/<sha256>``) names no shard: it is owned by the zone of the
shard index formed by the first ``n_bits`` bits of its SHA-256. That is a pure function of
the key, so readers never probe zones, and a big file shared by shards of two zones is still
stored once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from des_format import ListEntry, ObjectInfo, ObjectStore, ObjectStoreBase, TailRead
from des_routing import Zone, ZoneMap, parse_object_key

from ._http import DEFAULT_CHUNK_SIZE
from ._upload import S3ShardStore, UploadResult

S = TypeVar("S")


def zone_index_of_key(key: str, n_bits: int) -> int:
    """The shard index that decides the zone of any DES object key (see module docs)."""
    parsed = parse_object_key(key)
    if parsed.shard_index is not None:
        return parsed.shard_index
    digest = key.rsplit("/", 1)[-1]
    return int(digest[:8], 16) >> (32 - n_bits)


def zone_of_key(zones: ZoneMap, key: str) -> Zone:
    """The zone owning ``key`` (shard, part or big-file key)."""
    return zones.zone_for(zone_index_of_key(key, zones.n_bits))


class ZoneRouter(Generic[S]):
    """One store per zone (``stores[zone.name]``, every zone of ``zones`` given one) and the
    store that owns a key: what the blocking and the async multi-zone stores share."""

    def __init__(self, zones: ZoneMap, stores: Mapping[str, S]) -> None:
        missing = [z.name for z in zones.zones if z.name not in stores]
        if missing:
            raise ValueError(f"no store for zones {missing}")
        self.zones = zones
        self.stores = dict(stores)

    def store_for(self, key: str) -> S:
        return self.stores[zone_of_key(self.zones, key).name]


class MultiZoneObjectStore(ObjectStoreBase, ZoneRouter[ObjectStore]):
    """An ObjectStore that sends each key to its zone's store (``stores[zone.name]``).

    Its :meth:`parts` are the zones' stores, by zone name in the map's order; it lists what
    every zone lists (a day's directory once, though every zone has one).
    """

    @property
    def supports_listing(self) -> bool:
        return all(s.supports_listing for s in self.stores.values())

    @property
    def supports_nowait_reads(self) -> bool:
        return any(s.supports_nowait_reads for s in self.stores.values())

    def parts(self) -> Mapping[str, ObjectStore]:
        return {z.name: self.stores[z.name] for z in self.zones.zones}

    def list_dir(self, prefix: str = "", *, limit: int | None = None) -> Iterator[ListEntry]:
        seen: dict[ListEntry, None] = {}
        for store in self.parts().values():
            for entry in store.list_dir(prefix, limit=limit):
                seen[entry] = None
                if limit is not None and len(seen) >= limit:
                    return iter(list(seen))
        return iter(list(seen))

    def read_range_nowait(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes | None:
        return self.store_for(key).read_range_nowait(key, start, end, if_match=if_match)

    def close(self) -> None:
        for store in self.parts().values():
            store.close()

    def read_tail(self, key: str, n: int) -> TailRead:
        return self.store_for(key).read_tail(key, n)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        return self.store_for(key).read_range(key, start, end, if_match=if_match)

    def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        return self.store_for(key).iter_range(
            key, start, end, if_match=if_match, chunk_size=chunk_size
        )

    def head(self, key: str) -> ObjectInfo:
        return self.store_for(key).head(key)

    def describe(self, key: str = "") -> str:
        if key:
            zone = zone_of_key(self.zones, key)
            return f"{self.stores[zone.name].describe(key)} (zone {zone.name})"
        return "multi-zone S3: " + ", ".join(
            f"{z.name}[{z.start}..{z.end}]={self.stores[z.name].describe()}"
            for z in self.zones.zones
        )


class MultiZoneShardStore:
    """Writes each shard, part and big file into the zone that owns its key.

    Same methods as :class:`S3ShardStore`; :meth:`shard_store_for` gives the zone's store.
    """

    def __init__(self, zones: ZoneMap, stores: Mapping[str, S3ShardStore]) -> None:
        missing = [z.name for z in zones.zones if z.name not in stores]
        if missing:
            raise ValueError(f"no shard store for zones {missing}")
        self.zones = zones
        self.stores = dict(stores)

    def shard_store_for(self, key: str) -> S3ShardStore:
        return self.stores[zone_of_key(self.zones, key).name]

    def parts(self) -> Mapping[str, S3ShardStore]:
        """The zones' shard stores, by zone name in the map's order."""
        return {z.name: self.stores[z.name] for z in self.zones.zones}

    def put_shard(self, local_path: str | os.PathLike[str], key: str) -> UploadResult:
        return self.shard_store_for(key).put_shard(local_path, key)

    def replace_shard(
        self, local_path: str | os.PathLike[str], key: str, expected_etag: str
    ) -> UploadResult:
        return self.shard_store_for(key).replace_shard(local_path, key, expected_etag)

    def append_shard(
        self, key: str, tail_path: str | os.PathLike[str], expected_etag: str
    ) -> UploadResult:
        return self.shard_store_for(key).append_shard(key, tail_path, expected_etag)

    def put_bigfile(self, path: str | os.PathLike[str], key: str) -> bool:
        return self.shard_store_for(key).put_bigfile(path, key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.shard_store_for(key).head(key)

    def describe(self, key: str = "") -> str:
        if key:
            return self.shard_store_for(key).describe(key)
        return "multi-zone S3"


def zone_client_settings(zone: Zone, **overrides: Any) -> Any:
    """:class:`ClientSettings` for a zone's endpoint, region and credentials."""
    from ._client import ClientSettings

    creds = zone.s3.credentials
    return ClientSettings(
        region_name=zone.s3.region_name,
        endpoint_url=zone.s3.endpoint_url,
        access_key_id=creds.access_key_id if creds else None,
        secret_access_key=creds.secret_access_key if creds else None,
        session_token=creds.session_token if creds else None,
        profile_name=creds.profile_name if creds else None,
        **overrides,
    )
