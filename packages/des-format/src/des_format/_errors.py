"""The one error hierarchy of des-format.

Split by who is at fault: the shard's bytes (``CorruptShard`` and its kin), the caller's
environment (``CodecNotInstalled``), the caller's question (``EntryNotFound``) or the storage
underneath (``StoreError`` and its kin, raised by every :class:`ObjectStore` implementation,
local or remote, so the retrieval pipeline can react the same way to each).
"""

from __future__ import annotations


class DesFormatError(Exception):
    """Base class of every error raised by des-format."""


class CorruptShard(DesFormatError, ValueError):
    """The bytes of a shard do not follow the format (bad magic, bad lengths, bad checksum)."""


class ChecksumMismatch(CorruptShard):
    """A payload, index or footer checksum does not match the bytes read."""


class UnsupportedFormatVersion(DesFormatError):
    """The shard declares a format version this reader does not know."""


class UnknownCodec(DesFormatError, ValueError):
    """A codec id (in a shard) or codec name (from a caller) that des-format does not know."""


class CodecNotInstalled(DesFormatError, RuntimeError):
    """A known codec whose library is not installed; the message names the extra to install."""

    def __init__(self, codec: str, extra: str) -> None:
        super().__init__(
            f'codec {codec!r} needs an optional library: pip install "des-format[{extra}]"'
        )
        self.codec = codec
        self.extra = extra


class DuplicateUid(DesFormatError, ValueError):
    """A writer was asked to add a uid that the shard already holds."""

    def __init__(self, uid: str) -> None:
        super().__init__(
            f"uid {uid!r} is already in this shard: a uid can be stored once per shard"
        )
        self.uid = uid


class EntryNotFound(DesFormatError, LookupError):
    """The shard exists but holds no entry for this uid."""

    def __init__(self, uid: str, where: str = "") -> None:
        super().__init__(f"no entry for uid {uid!r}" + (f" in {where}" if where else ""))
        self.uid = uid
        self.where = where


class EntryDeleted(DesFormatError, LookupError):
    """The shard holds a deletion marker (tombstone) for this uid: the file is gone."""

    def __init__(self, uid: str, where: str = "") -> None:
        super().__init__(f"uid {uid!r} was deleted" + (f" from {where}" if where else ""))
        self.uid = uid
        self.where = where


class StoreError(DesFormatError):
    """Base class of errors raised by object stores (local directory, S3, ...).

    ``code``: the backend's own name for the error when it gives one (S3's ``NoSuchBucket``,
    ``AccessDenied``...), else ``""``.
    """

    code: str = ""

    def __init__(self, message: str, *, key: str = "", location: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.location = location


class ObjectNotFound(StoreError, LookupError):
    """The object (shard, shard part or big file) does not exist in the store."""


class RangeNotSatisfiable(StoreError):
    """A byte range lies outside the object."""


class PreconditionFailed(StoreError):
    """The object changed since its ETag was learnt (it was rebuilt by an append or a repack)."""


class StorageUnavailable(StoreError):
    """The store could not be reached or kept failing after retries; try again later."""
