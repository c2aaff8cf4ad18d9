"""des-format's conformance suites over HTTP (moto): the ObjectStore suite against
S3ObjectStore (with and without a prefix) and the multi-zone store, the ShardEditor suite
against S3ShardEditor (plain bucket, versioned bucket, two zones)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from des_format import ObjectStore, ShardEditor
from des_format.testing import ObjectStoreConformance, ShardEditorConformance
from des_routing import ZoneMap, parse_zones
from des_storage_s3 import (
    MultiZoneObjectStore,
    MultiZoneShardStore,
    RetryPolicy,
    S3ObjectStore,
    S3ShardEditor,
    S3ShardStore,
    zone_of_key,
)


class TestS3ObjectStore(ObjectStoreConformance):
    @pytest.fixture(autouse=True)
    def _s3(self, client: Any, direct: Any, bucket: str) -> None:
        self.client = client
        self.direct = direct
        self.bucket = bucket

    def make_store(self) -> tuple[ObjectStore, Any]:
        def put(key: str, data: bytes) -> None:
            self.direct.put_object(Bucket=self.bucket, Key=f"conf/{key}", Body=data)

        return S3ObjectStore(self.client, self.bucket, "conf"), put


class TestS3ObjectStoreNoPrefix(TestS3ObjectStore):
    def make_store(self) -> tuple[ObjectStore, Any]:
        def put(key: str, data: bytes) -> None:
            self.direct.put_object(Bucket=self.bucket, Key=key, Body=data)

        return S3ObjectStore(self.client, self.bucket), put


def _zone_map() -> ZoneMap:
    """Two zones splitting the shard indexes at 0x80 (the buckets are the stores' business:
    this map only routes keys)."""
    s3 = {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}
    return parse_zones(
        {
            "n_bits": 8,
            "zones": [
                {"name": "low", "range": {"start": 0, "end": 127}, "s3": {"bucket": "l", **s3}},
                {"name": "high", "range": {"start": 128, "end": 255}, "s3": {"bucket": "h", **s3}},
            ],
        }
    )


def _new_bucket(direct: Any) -> str:
    name = f"des-{uuid.uuid4().hex[:16]}"
    direct.create_bucket(Bucket=name)
    return name


class TestMultiZoneObjectStore(ObjectStoreConformance):
    """The multi-zone store through the same suite: two zones on two buckets; the suite's
    keys fall in both (checked below)."""

    @pytest.fixture(autouse=True)
    def _s3(self, client: Any, direct: Any) -> None:
        self.client = client
        self.direct = direct
        self.buckets = {"low": _new_bucket(direct), "high": _new_bucket(direct)}

    def make_store(self) -> tuple[ObjectStore, Any]:
        zones = _zone_map()
        stores: dict[str, ObjectStore] = {
            name: S3ObjectStore(self.client, bucket, f"des-{name}")
            for name, bucket in self.buckets.items()
        }

        def put(key: str, data: bytes) -> None:
            zone = zone_of_key(zones, key).name
            self.direct.put_object(Bucket=self.buckets[zone], Key=f"des-{zone}/{key}", Body=data)

        return MultiZoneObjectStore(zones, stores), put

    def test_suite_keys_cover_both_zones(self) -> None:
        zones = _zone_map()
        keys = ["20240101/A7.des", "20240101/B7.des", "20240101/5A.des", "20240101/E0.des"]
        assert {zone_of_key(zones, k).name for k in keys} == {"low", "high"}


class TestS3ShardEditor(ShardEditorConformance):
    """The S3 editor over a bucket without versioning."""

    versioned = False

    @pytest.fixture(autouse=True)
    def _s3(self, client: Any, direct: Any, fast_retry: RetryPolicy, tmp_path: Path) -> None:
        self.client = client
        self.bucket = _new_bucket(direct)
        if self.versioned:
            direct.put_bucket_versioning(
                Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        self.retry = fast_retry
        self.scratch = tmp_path / "files"
        self.scratch.mkdir()
        self.work = tmp_path / "editor"

    def make_editor(self) -> ShardEditor:
        return S3ShardEditor(
            S3ObjectStore(self.client, self.bucket, "conf"),
            S3ShardStore(self.client, self.bucket, "conf", retry=self.retry),
            scratch=self.work,
        )


@pytest.mark.heavy  # the plain-bucket editor runs in the quick run, this one in CI
class TestS3ShardEditorVersioned(TestS3ShardEditor):
    """The S3 editor over a bucket that keeps versions: ``old_versions`` and
    ``purge_old_versions`` count and delete them."""

    versioned = True


@pytest.mark.heavy  # the multi-zone store runs in the quick run, this editor in CI
class TestMultiZoneShardEditor(ShardEditorConformance):
    """The S3 editor over two zones: every write goes to the zone owning its key."""

    @pytest.fixture(autouse=True)
    def _s3(self, client: Any, direct: Any, fast_retry: RetryPolicy, tmp_path: Path) -> None:
        self.client = client
        self.buckets = {"low": _new_bucket(direct), "high": _new_bucket(direct)}
        self.retry = fast_retry
        self.scratch = tmp_path / "files"
        self.scratch.mkdir()
        self.work = tmp_path / "editor"

    def make_editor(self) -> ShardEditor:
        zones = _zone_map()
        return S3ShardEditor(
            MultiZoneObjectStore(
                zones,
                {n: S3ObjectStore(self.client, b, f"des-{n}") for n, b in self.buckets.items()},
            ),
            MultiZoneShardStore(
                zones,
                {
                    n: S3ShardStore(self.client, b, f"des-{n}", retry=self.retry)
                    for n, b in self.buckets.items()
                },
            ),
            scratch=self.work,
        )
