"""The errors des-routing raises. All of them are ``ValueError``: the caller gave a bad value."""

from __future__ import annotations

__all__ = [
    "InvalidCreatedAt",
    "InvalidNBits",
    "InvalidShardKey",
    "InvalidUid",
    "RoutingError",
    "SettingsError",
    "ZoneConfigError",
    "ZoneNotFound",
]


class RoutingError(ValueError):
    """Base class of every des-routing error."""


class InvalidUid(RoutingError):
    """The uid is empty, too long, not text, or contains control characters."""


class InvalidCreatedAt(RoutingError):
    """created_at is not a datetime or an ISO 8601 timestamp."""


class InvalidNBits(RoutingError):
    """n_bits is not an integer within 4..16."""


class InvalidShardKey(RoutingError):
    """An object key is not a DES shard key of the form ``YYYYMMDD/HEX.des``."""


class ZoneConfigError(RoutingError):
    """A zones config (file or object) is malformed or inconsistent."""


class ZoneNotFound(RoutingError, LookupError):
    """No zone of a zone map serves the requested shard index."""


class SettingsError(RoutingError):
    """A ``DES_*`` environment variable has a bad or missing value."""
