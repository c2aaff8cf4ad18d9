"""The public API, pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import des_storage_s3
import pytest
from des_storage_s3 import metrics_for, range_call_observer
from prometheus_client import CollectorRegistry

PUBLIC = {
    "DEFAULT_PART_SIZE", "MAX_PART_SIZE", "MIN_PART_SIZE", "NO_RETRY", "ClientSettings",
    "ContentRange", "MultiZoneObjectStore", "MultiZoneShardStore", "PartSpec", "RetryPolicy",
    "S3AccessDenied", "S3Metrics", "S3ObjectNotFound", "S3ObjectStore", "S3PreconditionFailed",
    "S3ProtocolError", "S3RangeNotSatisfiable", "S3RequestError", "S3Retriever", "S3ShardEditor",
    "S3ShardStore",
    "S3SourceReader", "S3StoreError", "S3Unavailable", "S3Uri", "ShardChanged", "ShardExists",
    "UploadPlan", "UploadResult", "__version__", "call_with_retry", "is_retryable", "join_key",
    "make_client", "metrics_for", "multipart_etag", "open_retriever", "open_shard_store",
    "open_editor", "open_store",
    "parse_content_range", "parse_s3_uri", "plan_append", "plan_ranges", "plan_retry",
    "plan_retry_delay", "plan_upload", "range_call_observer", "serialize_range",
    "serialize_suffix_range", "translate_error", "zone_client_settings", "zone_index_of_key",
    "zone_of_key",
    # reads awaited on an event loop (obstore)
    "AsyncMultiZoneObjectStore", "AsyncS3ObjectStore", "make_obstore", "open_async_store",
}  # fmt: skip


def test_public_names() -> None:
    assert set(des_storage_s3.__all__) == PUBLIC
    assert all(hasattr(des_storage_s3, name) for name in PUBLIC)
    assert des_storage_s3.__version__ == importlib.metadata.version("des-storage-s3")


def test_metrics_are_created_once_per_registry() -> None:
    reg = CollectorRegistry()
    assert metrics_for(reg) is metrics_for(reg)
    observe = range_call_observer("multi_s3", reg)
    observe("tail", 65536)
    observe("payload", 10)
    observe("payload", 10)
    again = range_call_observer("multi_s3", reg)  # no duplicate-registration error
    again("bigfile", 1)

    def value(kind: str) -> float | None:
        return reg.get_sample_value(
            "des_s3_range_calls_total", {"backend": "multi_s3", "type": kind}
        )

    assert [value(k) for k in ("tail", "index", "payload", "bigfile")] == [1, 0, 2, 1]


def test_open_store_backends(tmp_path: Any) -> None:
    from des_format import LocalObjectStore
    from des_routing import DesSettings, SettingsError
    from des_storage_s3 import S3ObjectStore, open_shard_store, open_store

    local = open_store(DesSettings(backend="local", base_dir=tmp_path))
    assert isinstance(local, LocalObjectStore)
    s3 = open_store(
        DesSettings(backend="s3", s3_bucket="b", s3_prefix="des/", s3_region="eu-west-1")
    )
    assert isinstance(s3, S3ObjectStore)
    assert s3.describe("20240101/A7.des") == "s3://b/des/20240101/A7.des"
    with pytest.raises(SettingsError, match="DES_S3_BUCKET is required"):
        open_store(DesSettings(backend="s3"))
    with pytest.raises(SettingsError, match="DES_ZONES_CONFIG is required"):
        open_store(DesSettings(backend="multi_s3"))
    with pytest.raises(ValueError, match="no S3 shard store"):
        open_shard_store(DesSettings(backend="local"))
