"""The write-side port: :class:`ShardEditor`, how deletes, repacks and appends change the
objects of published shards (a local directory in des-format, S3 in des-storage-s3), with
the capabilities each backend declares (:class:`EditorCapabilities`), and the helpers every
editor user shares.

Every change to a published shard is conditional on the version whose index was read (its
ETag): on S3 by If-Match, locally by comparing the file's identity under an exclusive lock
right before the rename. A writer that finds the shard changed gets
:class:`PreconditionFailed` and starts again from the new version, so two writers (a packer
appending late files, a delete, a repack) never lose each other's changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._errors import StoreError
from ._index import ShardIndex
from ._layout import DEFAULT_BIGFILES_PREFIX, DEFAULT_TAIL_SIZE, IndexEntry, part_key
from ._read_index import read_index
from ._source import ObjectStore, StoreSource

#: Prefix of the temporary files editors write beside a shard before renaming them over it.
EDIT_TEMP_PREFIX = ".des-edit."
#: A big-file object younger than this is kept by a delete and by a repack's sweep: a packer
#: publishes a big file shortly before the shard that references it.
DEFAULT_BIGFILE_GRACE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class EditorCapabilities:
    """What an editor's backend does, declared by the editor (never probed).

    ``versions``: objects may keep older versions after an overwrite or a delete (an S3
    bucket with versioning), so :meth:`ShardEditor.old_versions` counts them and
    :meth:`ShardEditor.purge_old_versions` deletes them; without it both return 0.
    ``temp_files``: a killed writer may leave temporary files beside a shard (a local
    directory), which :meth:`ShardEditor.remove_stale_temps` removes; without it that
    returns 0. ``in_place_writes``: :meth:`ShardEditor.overwrite_range` writes a fill byte
    in place (a local file) rather than publishing a new version of the object.
    """

    versions: bool
    temp_files: bool
    in_place_writes: bool


@runtime_checkable
class ShardEditor(Protocol):
    """Writes to the objects of a shard store (the reading side is ``store``).

    ``append`` and ``replace`` raise :class:`PreconditionFailed` when the object is no
    longer ``expected_etag``. ``put`` creates or overwrites an object no index references
    yet (a continuation part of a rebuilt shard). ``remove`` deletes an object with every
    stored version of it and returns how many object versions went away (0 when absent);
    ``purge_old_versions`` deletes only the versions that are not the current one, and
    ``old_versions`` counts them (both 0 unless ``capabilities.versions``).
    ``remove_stale_temps`` removes temporary files a killed writer left beside ``key``
    (0 unless ``capabilities.temp_files``).

    ``overwrite_range`` replaces the bytes ``[start, end)`` of the continuation part ``key``
    (same length, every other byte unchanged) with ``fill``: a byte value repeated, or
    exactly ``end - start`` given bytes (a re-encoded solid block). Only while the head of
    the shard ``shard_key`` still has ``shard_etag``; it returns False, having changed
    nothing, when the head has changed. ``modified`` is when an object was last written
    (POSIX seconds). ``bigfiles_prefix`` and ``bigfile_grace_seconds`` are what
    :func:`delete_entries` uses when its caller gives none.
    """

    bigfiles_prefix: str
    bigfile_grace_seconds: float

    @property
    def store(self) -> ObjectStore: ...

    @property
    def capabilities(self) -> EditorCapabilities: ...

    def describe(self, key: str = "") -> str: ...

    def append(self, key: str, tail_path: str | os.PathLike[str], expected_etag: str) -> None: ...

    def replace(self, key: str, path: str | os.PathLike[str], expected_etag: str) -> None: ...

    def put(self, key: str, path: str | os.PathLike[str]) -> None: ...

    def remove(self, key: str) -> int: ...

    def purge_old_versions(self, key: str) -> int: ...

    def old_versions(self, key: str) -> int: ...

    def remove_stale_temps(self, key: str, older_than: float = 3600.0) -> int: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]: ...

    def scratch_dir(self) -> Path: ...

    def overwrite_range(
        self,
        key: str,
        start: int,
        end: int,
        fill: int | bytes,
        *,
        shard_key: str,
        shard_etag: str,
    ) -> bool: ...

    def modified(self, key: str) -> float: ...


def read_shard_index(
    store: ObjectStore, key: str, *, tail_size: int = DEFAULT_TAIL_SIZE
) -> tuple[ShardIndex, str]:
    """The index of the shard at ``key`` and the ETag it was read at (``ObjectNotFound``
    when there is no shard)."""
    src = StoreSource(store, key)
    index = read_index(src, tail_size=tail_size)
    if src.etag is None:
        raise StoreError(f"{store.describe(key)} has no ETag; it cannot be changed safely")
    return index, src.etag


def is_head_key(key: str, bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX) -> bool:
    """Whether ``key`` names a shard head object (``.../HH.des``, not a ``.pN.des`` part,
    not a big file)."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".des") or f"/{bigfiles_prefix.strip('/')}/" in f"/{key}":
        return False
    head, dot, tail = name[:-4].rpartition(".")
    return not (dot and head and tail.startswith("p") and tail[1:].isdigit())


def entry_payload_key(key: str, entry: IndexEntry) -> str:
    """The object holding an inline entry's payload (the shard or its part)."""
    return key if entry.part == 0 else part_key(key, entry.part)
