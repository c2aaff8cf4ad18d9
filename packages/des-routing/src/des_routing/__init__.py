"""DES routing: ``(uid, created_at, n_bits)`` -> shard location, zone maps and settings.

Standard library only (the ``yaml`` extra adds YAML zones files).
"""

from des_routing._errors import (
    InvalidCreatedAt,
    InvalidNBits,
    InvalidShardKey,
    InvalidUid,
    RoutingError,
    SettingsError,
    ZoneConfigError,
    ZoneNotFound,
)
from des_routing._links import (
    LINK_KEY_VARIABLE,
    MIN_LINK_KEY_BYTES,
    LinkCheck,
    link_key_from_env,
    sign_link,
    signed_link_path,
    verify_link,
)
from des_routing._routing import (
    MAX_N_BITS,
    MAX_UID_BYTES,
    MIN_N_BITS,
    ObjectKey,
    ShardLocation,
    date_dir_of,
    format_created_at,
    format_shard_hex,
    locate_shard,
    locate_shard_key,
    parse_created_at,
    parse_date_dir,
    parse_object_key,
    shard_count,
    shard_index_of_key,
    shard_index_of_uid,
    shard_key,
    validate_n_bits,
    validate_uid,
)
from des_routing._settings import (
    DEFAULT_BASE_DIR,
    DEFAULT_BIG_FILE_THRESHOLD_BYTES,
    DEFAULT_BIGFILES_PREFIX,
    DEFAULT_INDEX_CACHE_BYTES,
    DEFAULT_N_BITS,
    DEFAULT_TAIL_READ_BYTES,
    Backend,
    DesSettings,
)
from des_routing._zones import (
    S3Credentials,
    Zone,
    ZoneMap,
    ZoneS3,
    expand_env,
    load_zones,
    parse_zones,
)

#: The installed distribution's version (read from its metadata on first use, so that
#: importing the package does not load ``importlib.metadata``).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value = version("des-routing")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BASE_DIR",
    "DEFAULT_BIGFILES_PREFIX",
    "DEFAULT_BIG_FILE_THRESHOLD_BYTES",
    "DEFAULT_INDEX_CACHE_BYTES",
    "DEFAULT_N_BITS",
    "DEFAULT_TAIL_READ_BYTES",
    "LINK_KEY_VARIABLE",
    "MAX_N_BITS",
    "MAX_UID_BYTES",
    "MIN_LINK_KEY_BYTES",
    "MIN_N_BITS",
    "Backend",
    "DesSettings",
    "InvalidCreatedAt",
    "InvalidNBits",
    "InvalidShardKey",
    "InvalidUid",
    "LinkCheck",
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
    "link_key_from_env",
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
    "sign_link",
    "signed_link_path",
    "validate_n_bits",
    "validate_uid",
    "verify_link",
]
