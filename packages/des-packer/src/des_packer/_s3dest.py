"""S3 and multi-zone S3 destinations, built on des-storage-s3 (the ``des-packer[s3]`` extra).

A shard is built in a local staging directory, then published: big files and continuation
parts first, the head object last, each by a multipart upload that makes the object appear
only when it completes (create-only, so two packers never overwrite each other's shard). An
append rebuilds the object server-side (existing bytes + the new tail) only if its ETag is
still the one whose index was read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ._dest import Destination, ExistingShard
from ._errors import PackConfigError, PackerError
from ._options import PackOptions

if TYPE_CHECKING:
    from des_format import ObjectStore
    from des_storage_s3 import MultiZoneShardStore, S3ShardStore

__all__ = ["S3Destination", "open_s3_destination", "parse_s3_output"]


def parse_s3_output(output: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    rest = output[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise PackConfigError(
            f"--output-dir {output!r} names no bucket; use s3://bucket or s3://bucket/prefix"
        )
    return bucket, prefix.strip("/")


def s3_settings_for(output: str, options: PackOptions) -> tuple[Any, str]:
    """(DesSettings, a description) of an S3 or zones output."""
    from des_routing import DesSettings, RoutingError, load_zones

    try:
        if options.zones_config:
            zones = load_zones(options.zones_config, n_bits=options.n_bits)
            settings = DesSettings(
                backend="multi_s3",
                n_bits=options.n_bits,
                zones_config=Path(options.zones_config),
                zones=zones,
            )
            return settings, f"zones of {options.zones_config}"
        bucket, prefix = parse_s3_output(output)
        settings = DesSettings(
            backend="s3",
            n_bits=options.n_bits,
            s3_bucket=bucket,
            s3_prefix=prefix,
            s3_region=options.s3_region,
            s3_endpoint_url=options.s3_endpoint_url,
        )
    except RoutingError as exc:
        raise PackConfigError(f"--zones-config {options.zones_config}: {exc}") from None
    return settings, output


def open_s3_destination(output: str, options: PackOptions) -> Destination:
    try:
        from des_storage_s3 import open_shard_store, open_store
    except ImportError:
        raise PackConfigError(
            "S3 output needs the S3 extra: pip install 'des-packer[s3]'"
        ) from None
    settings, where = s3_settings_for(output, options)
    return S3Destination(open_store(settings), open_shard_store(settings), where)


_STAGING_PREFIX = "des-pack-"


def _remove_stale_staging() -> None:
    """Remove staging directories of packers that were killed (their pid no longer runs)."""
    root = Path(tempfile.gettempdir())
    for d in root.glob(f"{_STAGING_PREFIX}*-*"):
        pid_text = d.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or not d.is_dir():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


class S3Destination:
    def __init__(
        self,
        store: ObjectStore,
        shard_store: S3ShardStore | MultiZoneShardStore,
        where: str,
    ) -> None:
        self.store = store
        self.shard_store = shard_store
        self.where = where
        _remove_stale_staging()
        self.staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-"))

    def describe(self, key: str = "") -> str:
        return str(self.store.describe(key))

    def cleanup(self, shard_key: str) -> int:
        # Interrupted multipart uploads are invisible; an S3 lifecycle rule
        # (AbortIncompleteMultipartUpload) reclaims their storage.
        return 0

    def existing(self, shard_key: str) -> ExistingShard | None:
        from des_format import ObjectNotFound, StoreSource, read_index

        src = StoreSource(self.store, shard_key)
        try:
            index = read_index(src)
        except ObjectNotFound:
            return None
        return ExistingShard(index, src.size, src.etag)

    def stage_path(self, shard_key: str) -> Path:
        fd, name = tempfile.mkstemp(prefix="big.", dir=self.staging)
        os.close(fd)
        return Path(name)

    def begin(self, shard_key: str, existing: ExistingShard | None) -> S3Transaction:
        return S3Transaction(self, shard_key, existing)

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class S3Transaction:
    def __init__(self, dest: S3Destination, key: str, existing: ExistingShard | None) -> None:
        self.dest = dest
        self.key = key
        self.existing = existing
        self.dir = Path(tempfile.mkdtemp(prefix="shard.", dir=dest.staging))
        self.head_path = self.dir / "head"
        self.out: BinaryIO = self.head_path.open("w+b")
        self._parts: list[tuple[int, Path, BinaryIO]] = []
        self._bigfiles: list[tuple[Path, str]] = []

    def open_part(self, n: int) -> BinaryIO:
        path = self.dir / f"part{n}"
        fh: BinaryIO = path.open("w+b")
        self._parts.append((n, path, fh))
        return fh

    def add_bigfile(self, staged: Path, key: str) -> None:
        if any(k == key for _p, k in self._bigfiles):
            staged.unlink(missing_ok=True)
            return
        self._bigfiles.append((staged, key))

    def commit(self) -> int:
        from des_format import part_key
        from des_storage_s3 import ShardChanged, ShardExists

        store = self.dest.shard_store
        stored = 0
        for staged, key in self._bigfiles:
            size = staged.stat().st_size
            if store.put_bigfile(staged, key):
                stored += size
        for n, path, fh in self._parts:
            fh.close()
            pkey = part_key(self.key, n)
            try:
                res = store.put_shard(path, pkey)
            except ShardExists:
                # Left by an interrupted run: no head references it yet, so replace it.
                info = store.head(pkey)
                res = (
                    store.replace_shard(path, pkey, info.etag)
                    if info is not None and info.etag is not None
                    else store.put_shard(path, pkey)
                )
            stored += res.size
        self.out.close()
        tail = self.head_path.stat().st_size
        try:
            if self.existing is None:
                store.put_shard(self.head_path, self.key)
            else:
                store.append_shard(self.key, self.head_path, self.existing.etag or "")
        except (ShardExists, ShardChanged):
            raise PackerError(
                f"{self.dest.describe(self.key)} was written by someone else while this run "
                "packed it (another packer owns the same shard?); run again to add to it"
            ) from None
        stored += tail
        shutil.rmtree(self.dir, ignore_errors=True)
        return stored

    def abort(self) -> None:
        self.out.close()
        for _n, _p, fh in self._parts:
            fh.close()
        for staged, _k in self._bigfiles:
            staged.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
