"""``/ready``: does the storage of every zone answer? (names zones, never paths or secrets)"""

from __future__ import annotations

from pathlib import Path

from des_format import ObjectNotFound, ObjectStore, StorageUnavailable, StoreError
from des_routing import DesSettings, shard_key

from ._problems import NotReady

PROBE_DATE_DIR = "19700101"


def plan_probe_keys(des: DesSettings) -> list[str]:
    """One key per place the service reads from: each zone of a multi_s3 map, else one.

    The keys name shards of 1970-01-01, which DES never writes, so a healthy backend answers
    "not found" (used for stores that cannot list).
    """
    if des.backend == "multi_s3" and des.zones is not None:
        return [shard_key(PROBE_DATE_DIR, zone.start, des.zones.n_bits) for zone in des.zones.zones]
    return [shard_key(PROBE_DATE_DIR, 0, des.n_bits)]


def plan_zone_stores(des: DesSettings, store: ObjectStore) -> list[tuple[str, ObjectStore, str]]:
    """(what to call the place, its store, a probe key) for each place reads go to."""
    keys = plan_probe_keys(des)
    parts = store.parts()
    zones = des.zones.zones if des.backend == "multi_s3" and des.zones is not None else ()
    if zones and all(zone.name in parts for zone in zones):  # else: a store given as one
        return [
            (f"zone {zone.name!r}", parts[zone.name], key)
            for zone, key in zip(zones, keys, strict=True)
        ]
    what = "the S3 bucket (DES_S3_BUCKET)" if des.backend == "s3" else "the shard directory"
    return [(what, store, keys[0])]


def probe_store(des: DesSettings, store: ObjectStore | None) -> None:
    """Raise :class:`NotReady` naming every zone whose storage does not answer.

    local: ``DES_BASE_DIR`` is a directory. Then, in each zone, a store that can list
    (``supports_listing``: local, S3) lists at most one name at its root: for S3 one
    ``ListObjectsV2`` of at most one key under the zone's prefix (the bucket exists, the
    endpoint answers, the credentials are accepted; it needs ``s3:ListBucket``, as a HEAD of
    a missing key needs it to answer 404 rather than 403). Other stores: a HEAD of a key DES
    never writes answers "not found".
    """
    if str(des.backend) == "local" and not Path(des.base_dir).is_dir():
        raise NotReady("the shard directory (DES_BASE_DIR) does not exist or is not a directory")
    if store is None:
        return
    failures = []
    for what, zone_store, key in plan_zone_stores(des, store):
        problem = _probe_one(zone_store, key, remote=str(des.backend) != "local")
        if problem is not None:
            failures.append(f"{what}: {problem}")
    if failures:
        raise NotReady("storage does not answer for " + "; ".join(failures))


def _probe_one(store: ObjectStore, key: str, *, remote: bool) -> str | None:
    try:
        if store.supports_listing:
            list(store.list_dir("", limit=1))
        else:
            store.head(key)
    except ObjectNotFound as exc:
        return _describe_failure(exc, remote) if exc.code == "NoSuchBucket" else None
    except Exception as exc:  # noqa: BLE001 - every failure is a reason not to be ready
        return _describe_failure(exc, remote)
    return None


def _describe_failure(exc: BaseException, remote: bool) -> str:
    """What went wrong, from the store's error code alone (no bucket, key or message text);
    ``remote``: the store is reached over the network (S3)."""
    code = exc.code if isinstance(exc, StoreError) else ""
    if code == "NoSuchBucket":
        return "the bucket does not exist (NoSuchBucket)"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return f"the credentials were refused ({code})"
    if code:
        return f"S3 answered {code}"
    if remote and isinstance(exc, StorageUnavailable):
        return f"the endpoint cannot be reached ({type(exc).__name__})"
    return f"the store did not answer ({type(exc).__name__})"
