"""The public API of des_routing, pinned: changing it must be a decision."""

from __future__ import annotations

import dataclasses

import des_routing

EXPECTED = {
    "DEFAULT_BASE_DIR",
    "DEFAULT_BIGFILES_PREFIX",
    "DEFAULT_BIG_FILE_THRESHOLD_BYTES",
    "DEFAULT_INDEX_CACHE_BYTES",
    "DEFAULT_N_BITS",
    "DEFAULT_TAIL_READ_BYTES",
    "MAX_N_BITS",
    "MAX_UID_BYTES",
    "MIN_N_BITS",
    "Backend",
    "DesSettings",
    "InvalidCreatedAt",
    "InvalidNBits",
    "InvalidShardKey",
    "InvalidUid",
    "ObjectKey",
    "RoutingError",
    "S3Credentials",
    "SettingsError",
    "ShardLocation",
    "Zone",
    "ZoneConfigError",
    "ZoneMap",
    "ZoneNotFound",
    "ZoneS3",
    "__version__",
    "date_dir_of",
    "expand_env",
    "format_created_at",
    "format_shard_hex",
    "load_zones",
    "locate_shard",
    "locate_shard_key",
    "parse_created_at",
    "parse_date_dir",
    "parse_object_key",
    "parse_zones",
    "shard_count",
    "shard_index_of_key",
    "shard_index_of_uid",
    "shard_key",
    "validate_n_bits",
    "validate_uid",
    # signed links (des_routing._links)
    "LINK_KEY_VARIABLE",
    "MIN_LINK_KEY_BYTES",
    "LinkCheck",
    "link_key_from_env",
    "sign_link",
    "signed_link_path",
    "verify_link",
}


def test_all_is_pinned_and_importable() -> None:
    assert set(des_routing.__all__) == EXPECTED
    assert len(des_routing.__all__) == len(EXPECTED)
    for name in des_routing.__all__:
        assert hasattr(des_routing, name), name


def test_error_hierarchy() -> None:
    base = des_routing.RoutingError
    assert issubclass(base, ValueError)
    for name in (
        "InvalidUid",
        "InvalidCreatedAt",
        "InvalidNBits",
        "InvalidShardKey",
        "ZoneConfigError",
        "ZoneNotFound",
        "SettingsError",
    ):
        assert issubclass(getattr(des_routing, name), base), name
    assert issubclass(des_routing.ZoneNotFound, LookupError)


def test_value_types_are_frozen_slotted_dataclasses() -> None:
    for cls in (
        des_routing.ShardLocation,
        des_routing.ObjectKey,
        des_routing.Zone,
        des_routing.ZoneS3,
        des_routing.S3Credentials,
        des_routing.ZoneMap,
        des_routing.DesSettings,
    ):
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[union-attr]
        assert "__slots__" in cls.__dict__, cls


def test_shard_location_fields() -> None:
    names = [f.name for f in dataclasses.fields(des_routing.ShardLocation)]
    assert names == ["uid", "created_at", "date_dir", "shard_index", "shard_hex", "object_key"]


def test_settings_fields() -> None:
    names = [f.name for f in dataclasses.fields(des_routing.DesSettings)]
    assert names == [
        "backend",
        "base_dir",
        "n_bits",
        "s3_bucket",
        "s3_region",
        "s3_endpoint_url",
        "s3_prefix",
        "zones_config",
        "zones",
        "big_file_threshold_bytes",
        "bigfiles_prefix",
        "index_cache_bytes",
        "tail_read_bytes",
    ]
