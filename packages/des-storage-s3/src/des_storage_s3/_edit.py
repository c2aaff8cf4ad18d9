"""The S3 side of des-format's ``ShardEditor``: conditional appends and replacements (If-Match),
part uploads, in-place overwrites of deleted bytes in continuation parts, and removal of
objects together with every stored version of them.

Erasure on a bucket that keeps versions: overwriting or deleting an object leaves its
previous bytes as a noncurrent version (and a DELETE only adds a delete marker), so
``remove`` and ``purge_old_versions`` delete versions by id. Objects under S3 Object Lock
retention cannot be deleted before their retention ends: those deletions fail with
``S3AccessDenied`` and are reported, never hidden.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from des_format import (
    DEFAULT_BIGFILE_GRACE_SECONDS,
    DEFAULT_BIGFILES_PREFIX,
    ByteRange,
    EditorCapabilities,
    LocalShardEditor,
    ObjectNotFound,
    ObjectStore,
    ShardEditor,
)
from des_routing import DesSettings

from ._errors import S3PreconditionFailed, S3StoreError, ShardExists, translate_error
from ._plan import MAX_PART_SIZE, MIN_PART_SIZE, PartSpec, UploadPlan, plan_ranges
from ._retry import call_with_retry
from ._upload import S3ShardStore
from ._zones import MultiZoneShardStore

__all__ = ["S3ShardEditor", "open_editor"]

_CHUNK = 1 << 20


def plan_overwrite(size: int, start: int, end: int, part_size: int) -> tuple[ByteRange, UploadPlan]:
    """How to publish a new version of an object of ``size`` bytes whose bytes
    ``[start, end)`` are replaced (pure).

    Returns the *window*, the range of the new object that is sent from a local file (the
    replaced bytes, plus the old bytes around them that S3's 5 MiB minimum part size makes
    necessary, at most 5 MiB on each side), and the plan whose ``local`` ranges are offsets
    in that file and whose ``copy`` parts copy the rest of the old object server-side.

    - ``size <= part_size``: the window is the whole object, sent as one PUT;
    - otherwise: the old bytes before the window are copied (when at least 5 MiB, else
      they join the window), the window goes up in parts of ``part_size`` (a short last
      part joins the one before unless it ends the object), and the old bytes after it are
      copied as the last parts.
    """
    if not 0 <= start <= end <= size:
        raise ValueError(f"invalid range [{start}, {end}) of an object of {size} bytes")
    if size <= part_size:
        return ByteRange(0, size), UploadPlan(())
    a = start if start >= MIN_PART_SIZE else 0
    b = min(size, max(end, a + MIN_PART_SIZE))
    parts: list[PartSpec] = []
    copies = list(plan_ranges(a, MAX_PART_SIZE))
    if len(copies) >= 2 and copies[-1].length < MIN_PART_SIZE:
        mid = (copies[-2].start + copies[-1].end) // 2
        copies[-2:] = [ByteRange(copies[-2].start, mid), ByteRange(mid, copies[-1].end)]
    parts.extend(PartSpec(len(parts) + 1, copy=r) for r in copies)
    window = list(plan_ranges(b - a, part_size))
    if len(window) >= 2 and window[-1].length < MIN_PART_SIZE and b < size:
        window[-2:] = [ByteRange(window[-2].start, window[-1].end)]
    parts.extend(PartSpec(len(parts) + 1, local=r) for r in window)
    for r in plan_ranges(size - b, MAX_PART_SIZE):
        parts.append(PartSpec(len(parts) + 1, copy=ByteRange(b + r.start, b + r.end)))
    return ByteRange(a, b), UploadPlan(tuple(parts))


class S3ShardEditor:
    """A ``des_format.ShardEditor`` over an S3 (or multi-zone S3) bucket.

    ``store`` reads (an ``S3ObjectStore`` or ``MultiZoneObjectStore``); ``shard_store``
    writes (``S3ShardStore`` or ``MultiZoneShardStore``); keys are DES object keys (the
    bucket prefix is added by the stores).
    """

    #: A bucket may keep older versions (with versioning on); no temporary objects are left
    #: behind (an interrupted multipart upload is invisible); an overwrite publishes a new
    #: version of the object.
    capabilities = EditorCapabilities(versions=True, temp_files=False, in_place_writes=False)

    def __init__(
        self,
        store: ObjectStore,
        shard_store: S3ShardStore | MultiZoneShardStore,
        *,
        scratch: str | os.PathLike[str] | None = None,
        bigfiles_prefix: str = DEFAULT_BIGFILES_PREFIX,
        bigfile_grace_seconds: float = DEFAULT_BIGFILE_GRACE_SECONDS,
    ) -> None:
        self.store = store
        self.shard_store = shard_store
        self._scratch = Path(scratch) if scratch is not None else None
        self.bigfiles_prefix = bigfiles_prefix
        self.bigfile_grace_seconds = bigfile_grace_seconds

    def describe(self, key: str = "") -> str:
        return str(self.shard_store.describe(key))

    def scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="des-edit-"))
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def _for(self, key: str) -> S3ShardStore:
        if isinstance(self.shard_store, MultiZoneShardStore):
            return self.shard_store.shard_store_for(key)
        return self.shard_store

    def _all(self) -> list[S3ShardStore]:
        return list(self.shard_store.parts().values())

    def append(self, key: str, tail_path: str | os.PathLike[str], expected_etag: str) -> None:
        self.shard_store.append_shard(key, tail_path, expected_etag)

    def replace(self, key: str, path: str | os.PathLike[str], expected_etag: str) -> None:
        self.shard_store.replace_shard(path, key, expected_etag)

    def put(self, key: str, path: str | os.PathLike[str]) -> None:
        try:
            self.shard_store.put_shard(path, key)
        except ShardExists:
            info = self.shard_store.head(key)
            if info is None:
                self.shard_store.put_shard(path, key)
            else:
                self.shard_store.replace_shard(path, key, info.etag or "")

    def overwrite_range(
        self,
        key: str,
        start: int,
        end: int,
        fill: int | bytes,
        *,
        shard_key: str,
        shard_etag: str,
    ) -> bool:
        """Publish a new version of the part object ``key`` whose bytes ``[start, end)`` are
        ``fill`` (a byte value repeated, or exactly ``end - start`` bytes: a re-encoded solid
        block) and whose other bytes are the current ones, only if the part is still
        the version read here and the head of ``shard_key`` still had ``shard_etag`` after
        that read (so the part is the one the head's index references; no writer changes or
        removes a referenced part). Returns False, having changed nothing, when either
        changed.

        The bytes around the range are copied server-side (UploadPartCopy, pinned with
        CopySourceIfMatch); only the window :func:`plan_overwrite` names is downloaded and
        sent, from a sparse scratch file: at most 10 MiB of old bytes besides the range
        itself. The new version is published with If-Match on the part's ETag. Older
        versions of the part are the caller's to purge (``purge_old_versions``).
        """
        if isinstance(fill, (bytes, bytearray, memoryview)) and len(fill) != end - start:
            raise ValueError(f"{len(fill)} bytes given for the range [{start}, {end})")
        ss = self._for(key)
        s3_key = ss.s3_key(key)
        part = ss.head(key)
        if part is None:
            raise ObjectNotFound(f"no such object: {ss.describe(key)}", key=key)
        head = self._for(shard_key).head(shard_key)
        if head is None or _norm(head.etag) != _norm(shard_etag):
            return False
        part_etag = part.etag or ""
        window, plan = plan_overwrite(part.size, start, end, ss.part_size)
        fd, tmp = tempfile.mkstemp(prefix="des-overwrite-", dir=self.scratch_dir())
        try:
            with os.fdopen(fd, "w+b") as fh:
                if window.start < start:
                    fh.write(ss._download(s3_key, ByteRange(window.start, start), part_etag))
                fh.truncate(window.length)  # the range itself: a hole reads as zeros
                if not isinstance(fill, int):
                    fh.seek(start - window.start)
                    fh.write(fill)
                elif fill:
                    block = bytes([fill]) * min(end - start, _CHUNK)
                    fh.seek(start - window.start)
                    left = end - start
                    while left:
                        left -= fh.write(block[: min(left, len(block))])
                if end < window.end:
                    fh.seek(end - window.start)
                    fh.write(ss._download(s3_key, ByteRange(end, window.end), part_etag))
            ss._write(
                Path(tmp),
                key,
                plan,
                part.size,
                cond=(None, part_etag),
                source_etag=part_etag,
            )
        except S3PreconditionFailed:
            return False  # the part changed since its HEAD: start again from the index
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def _call(self, ss: S3ShardStore, fn: Callable[[], Any], s3_key: str, op: str) -> Any:
        def translate(exc: BaseException) -> S3StoreError:
            return translate_error(exc, bucket=ss.bucket, key=s3_key, operation=op)

        return call_with_retry(fn, ss.retry, translate=translate)

    def _versions(self, ss: S3ShardStore, s3_key: str) -> list[tuple[str, bool]]:
        """(version id, is latest) of every version and delete marker of exactly ``s3_key``
        (an unversioned bucket answers one version, id ``null``)."""

        def go() -> list[tuple[str, bool]]:
            out: list[tuple[str, bool]] = []
            pages = ss.client.get_paginator("list_object_versions").paginate(
                Bucket=ss.bucket, Prefix=s3_key
            )
            for page in pages:
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if item["Key"] == s3_key:
                        out.append((str(item.get("VersionId") or "null"), bool(item["IsLatest"])))
            return out

        result: list[tuple[str, bool]] = self._call(ss, go, s3_key, "LIST_VERSIONS")
        return result

    def _delete_version(self, ss: S3ShardStore, s3_key: str, version: str) -> None:
        def go() -> None:
            ss.client.delete_object(Bucket=ss.bucket, Key=s3_key, VersionId=version)

        self._call(ss, go, s3_key, "DELETE")

    def remove(self, key: str) -> int:
        """Delete ``key`` and every version of it; returns the versions deleted. With several
        zones every zone is cleared (a big file may sit in a zone other than its key's)."""
        count = 0
        for ss in self._all():
            s3_key = ss.s3_key(key)
            versions = self._versions(ss, s3_key)
            for version, _latest in versions:
                self._delete_version(ss, s3_key, version)
            count += len(versions)
        return count

    def purge_old_versions(self, key: str) -> int:
        """Delete the noncurrent versions (and delete markers) of ``key``; returns how many."""
        ss = self._for(key)
        s3_key = ss.s3_key(key)
        old = [v for v, latest in self._versions(ss, s3_key) if not latest]
        for version in old:
            self._delete_version(ss, s3_key, version)
        return len(old)

    def old_versions(self, key: str) -> int:
        """How many noncurrent versions of ``key`` the bucket still keeps."""
        ss = self._for(key)
        return sum(1 for _v, latest in self._versions(ss, ss.s3_key(key)) if not latest)

    def remove_stale_temps(self, key: str, older_than: float = 3600.0) -> int:
        """Nothing to remove: S3 writes leave no temporary objects (an interrupted multipart
        upload is invisible; a lifecycle rule reclaims its storage)."""
        return 0

    def modified(self, key: str) -> float:
        """When ``key`` was last written (POSIX seconds)."""
        ss = self._for(key)
        s3_key = ss.s3_key(key)

        def go() -> float:
            resp = ss.client.head_object(Bucket=ss.bucket, Key=s3_key)
            return float(resp["LastModified"].timestamp())

        result: float = self._call(ss, go, s3_key, "HEAD")
        return result

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """DES keys of the current objects under ``prefix`` (every zone for multi-zone)."""
        keys: set[str] = set()
        for ss in self._all():
            base = f"{ss.prefix}/" if ss.prefix else ""

            def go(ss: S3ShardStore = ss, base: str = base) -> list[str]:
                found: list[str] = []
                pages = ss.client.get_paginator("list_objects_v2").paginate(
                    Bucket=ss.bucket, Prefix=base + prefix
                )
                for page in pages:
                    found.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
                return found

            keys.update(self._call(ss, go, base + prefix, "LIST"))
        yield from sorted(keys)


def open_editor(settings: DesSettings) -> ShardEditor:
    """The ``des_format.ShardEditor`` for ``settings``: a ``LocalShardEditor`` for the local
    backend, an :class:`S3ShardEditor` for ``s3`` and ``multi_s3``."""
    if settings.backend == "local":
        return LocalShardEditor(settings.base_dir, bigfiles_prefix=settings.bigfiles_prefix)
    from ._open import open_shard_store, open_store

    return S3ShardEditor(
        open_store(settings),
        open_shard_store(settings),
        bigfiles_prefix=settings.bigfiles_prefix,
    )


def _norm(etag: str | None) -> str:
    return (etag or "").strip().strip('"')
