"""Which objects ``/ready`` asks the backend about (pure)."""

from __future__ import annotations

from des_routing import DesSettings, shard_key

PROBE_DATE_DIR = "19700101"


def plan_probe_keys(des: DesSettings) -> list[str]:
    """One key per place the service reads from: each zone of a multi_s3 map, else one.

    The keys name shards of 1970-01-01, which DES never writes, so a healthy backend answers
    "not found"; any other failure (unreachable endpoint, missing bucket, denied) means the
    service is not ready.
    """
    if des.backend == "multi_s3" and des.zones is not None:
        return [shard_key(PROBE_DATE_DIR, zone.start, des.zones.n_bits) for zone in des.zones.zones]
    return [shard_key(PROBE_DATE_DIR, 0, des.n_bits)]
