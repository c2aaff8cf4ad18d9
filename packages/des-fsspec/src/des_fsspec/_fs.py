"""The ``des://`` filesystem: a read-only fsspec view of a DES store.

Paths are ``YYYYMMDD/<uid>`` (the UTC day of the file's created_at, then its uid, which may
itself hold slashes): routing needs nothing more. ``ls("des://")`` lists the days present,
``ls("des://20240101")`` the live files of every shard of that day (read from the shards'
indexes), ``info`` gives size, checksum, content type and the shard, and ``open`` reads.

Reads go through des-format's retrieval pipeline with an index cache, so after the first
access to a shard (one tail read, two requests at most for a large index) a file costs its
payload reads only. A ranged read of a file stored without compression (codec ``none``, and
big files) asks the store for exactly the bytes requested; a compressed file is read and
checked whole once per open file, then served from memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from des_format import (
    Codec,
    EntryDeleted,
    EntryNotFound,
    IndexCache,
    ObjectNotFound,
    ObjectStore,
    ShardRetriever,
    bigfile_key,
    entry_payload_key,
)
from des_routing import DesSettings, RoutingError, locate_shard_key
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

__all__ = ["STORAGE_OPTIONS", "DesFile", "DesFileSystem"]

#: Storage options and the ``DES_*`` variable each one stands for. Options not given are
#: taken from the environment (``DesSettings.from_env``), as ``des`` and des-http do.
STORAGE_OPTIONS = {
    "backend": "DES_BACKEND",
    "base_dir": "DES_BASE_DIR",
    "n_bits": "DES_N_BITS",
    "s3_bucket": "DES_S3_BUCKET",
    "s3_prefix": "DES_S3_PREFIX",
    "s3_region": "DES_S3_REGION",
    "s3_endpoint_url": "DES_S3_ENDPOINT_URL",
    "zones_config": "DES_ZONES_CONFIG",
    "bigfiles_prefix": "DES_BIGFILES_PREFIX",
    "index_cache_bytes": "DES_INDEX_CACHE_BYTES",
    "tail_read_bytes": "DES_TAIL_READ_BYTES",
}

# Options fsspec itself handles (instance and listings caches).
_FSSPEC_OPTIONS = frozenset(
    ("skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths")
)
_DAY = re.compile(r"[0-9]{8}")
_HEAD = re.compile(r"[0-9A-F]{1,4}\.des")


def settings_from_options(
    options: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> DesSettings:
    """``DesSettings`` from storage options over the ``DES_*`` environment; ``ValueError``
    naming an unknown option or a bad value."""
    unknown = sorted(set(options) - set(STORAGE_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown des:// storage option(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(STORAGE_OPTIONS)}, store"
        )
    merged = dict(os.environ if env is None else env)
    for name, value in options.items():
        if value is not None:
            merged[STORAGE_OPTIONS[name]] = str(value)
    return DesSettings.from_env(merged)


def open_store(settings: DesSettings) -> ObjectStore:
    """The ObjectStore of ``settings`` (S3 backends need ``des-fsspec[s3]``)."""
    if settings.backend == "local":
        from des_format import LocalObjectStore

        return LocalObjectStore(settings.base_dir)
    try:
        import des_storage_s3
    except ImportError:
        raise ImportError(
            f"DES_BACKEND={settings.backend} needs the S3 extra: pip install 'des-fsspec[s3]'"
        ) from None
    return des_storage_s3.open_store(settings)


def _after_layout(
    settings: DesSettings, store: ObjectStore, options: Mapping[str, Any]
) -> DesSettings:
    """The settings after the store's layout record (read once, here): n_bits and the
    big-file prefix come from it unless given (option or ``DES_*``); a given value that
    differs raises ``des_format.LayoutMismatch`` (a ValueError) naming both."""
    import dataclasses

    from des_format import read_store_layout

    layout = read_store_layout(store)
    if layout is None:
        return settings

    def given(option: str) -> bool:
        return options.get(option) is not None or bool(
            os.environ.get(STORAGE_OPTIONS[option], "").strip()
        )

    layout.check(
        store.describe(),
        n_bits=settings.n_bits if given("n_bits") else None,
        bigfiles_prefix=settings.bigfiles_prefix if given("bigfiles_prefix") else None,
    )
    return dataclasses.replace(
        settings, n_bits=layout.n_bits, bigfiles_prefix=layout.bigfiles_prefix
    )


def _day_text(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z"


class DesFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec has no type hints
    """``des://YYYYMMDD/uid``: files of a DES store, read-only (see the module doc).

    Storage options: ``backend``, ``base_dir``, ``n_bits``, ``s3_bucket``, ``s3_prefix``,
    ``s3_region``, ``s3_endpoint_url``, ``zones_config``, ``bigfiles_prefix``,
    ``index_cache_bytes``, ``tail_read_bytes`` (each overrides its ``DES_*`` variable), or
    ``store``: an ObjectStore to read from (tests, embedding).
    """

    protocol = "des"
    root_marker = ""

    def __init__(self, store: ObjectStore | None = None, **options: Any) -> None:
        super().__init__(store=store, **options)
        des_options = {k: v for k, v in options.items() if k not in _FSSPEC_OPTIONS}
        self.settings = settings_from_options(des_options)
        if store is None:
            store = open_store(self.settings)
            self.settings = _after_layout(self.settings, store, des_options)
        self.store = store
        cache_bytes = self.settings.index_cache_bytes or (64 << 20)
        self.retriever = ShardRetriever(
            self.store,
            cache=IndexCache(cache_bytes),
            tail_size=self.settings.tail_read_bytes,
            bigfiles_prefix=self.settings.bigfiles_prefix,
        )

    @property
    def n_bits(self) -> int:
        return int(self.settings.n_bits)

    # ---- paths ----

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith("des://"):
            text = text[6:]
        elif text.startswith("des::"):
            text = text[5:]
        return text.strip("/")

    def _split(self, path: str) -> tuple[str, str | None]:
        """(day, uid or None) of a stripped path; FileNotFoundError for anything else."""
        path = self._strip_protocol(path)
        day, _, uid = path.partition("/")
        if not _DAY.fullmatch(day):
            raise FileNotFoundError(
                f"des://{path}: expected des://YYYYMMDD/<uid> (the UTC day of created_at, "
                "then the uid)"
            )
        return day, uid or None

    def _key(self, day: str, uid: str, path: str) -> str:
        try:
            return str(locate_shard_key(uid, _day_text(day), self.n_bits))
        except RoutingError as exc:
            raise FileNotFoundError(f"des://{path}: {exc}") from None

    # ---- listing ----

    def _days(self) -> list[str]:
        return sorted(set(_list_days(self.store)))

    def _file_info(self, day: str, key: str, entry: Any) -> dict[str, Any]:
        if entry.checksum is not None:
            checksum: str | None = f"crc32:{entry.checksum:08x}"
        elif entry.bigfile_hash:
            checksum = f"sha256:{entry.bigfile_hash}"
        else:
            checksum = None
        return {
            "name": f"{day}/{entry.uid}",
            "size": entry.size,
            "type": "file",
            "checksum": checksum,
            "content_type": entry.content_type,
            "created_at": _day_text(day),
            "etag": entry.etag,
            "shard": key,
        }

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        if not path:
            out: list[Any] = [{"name": d, "size": 0, "type": "directory"} for d in self._days()]
        else:
            day, uid = self._split(path)
            if uid is not None:
                out = [self.info(path)]
            else:
                out = []
                for key in sorted(set(_list_day(self.store, day))):
                    index = self.retriever.index(key)[1]
                    for entry in sorted(index.iter_entries(), key=lambda e: e.uid):
                        if not entry.deleted:
                            out.append(self._file_info(day, key, entry))
                out.sort(key=lambda o: o["name"])
        return out if detail else [o["name"] for o in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "size": 0, "type": "directory"}
        day, uid = self._split(path)
        if uid is None:
            if day not in _list_days_for(self.store, day):
                raise FileNotFoundError(f"des://{path}: no shard on {day}")
            return {"name": day, "size": 0, "type": "directory"}
        key = self._key(day, uid, path)
        try:
            entry = self.retriever.stat(key, uid)
        except (EntryNotFound, EntryDeleted, ObjectNotFound):
            raise FileNotFoundError(
                f"des://{path}: no such file (check the day, the uid and n_bits={self.n_bits})"
            ) from None
        return self._file_info(day, key, entry)

    # ---- reading ----

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> DesFile:
        if mode != "rb":
            raise NotImplementedError(
                f"des:// is read-only (mode {mode!r}); pack files with des-pack"
            )
        details = self.info(path)
        if details["type"] != "file":
            raise IsADirectoryError(f"des://{path} is a day, not a file")
        return DesFile(
            self,
            path,
            details,
            block_size=block_size,
            cache_type=kwargs.pop("cache_type", "none"),
            cache_options=cache_options,
        )

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kw: Any
    ) -> Any:
        if start is None and end is None:  # a whole file: one verified read
            details = self.info(path)
            uid = self._split(path)[1]
            assert uid is not None
            return self.retriever.read(details["shard"], uid)
        return super().cat_file(path, start=start, end=end, **kw)


class DesFile(AbstractBufferedFile):  # type: ignore[misc]  # fsspec has no type hints
    """One file of a DES store, read by ranges (see the module doc)."""

    def __init__(
        self,
        fs: DesFileSystem,
        path: str,
        details: dict[str, Any],
        *,
        block_size: Any = None,
        cache_type: str = "none",
        cache_options: Any = None,
    ) -> None:
        self.des_fs = fs
        self.key: str = details["shard"]
        self.uid: str = fs._split(path)[1] or ""
        etag = fs.retriever.index(self.key)[0]
        self.entry = fs.retriever.stat(self.key, self.uid)
        self.index_etag = etag
        self._whole: bytes | None = None
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=block_size or "default",
            cache_type=cache_type,
            cache_options=cache_options,
            size=self.entry.size,
            details=details,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        entry = self.entry
        end = min(end, entry.size)
        if start >= end:
            return b""
        retriever = self.des_fs.retriever
        if entry.is_bigfile:
            assert entry.bigfile_hash is not None
            okey = bigfile_key(self.key, entry.bigfile_hash, retriever.bigfiles_prefix)
            data: bytes = retriever.store.read_range(okey, start, end)
            return data
        if entry.codec is Codec.NONE:
            okey = entry_payload_key(self.key, entry)
            match = self.index_etag if entry.part == 0 else None
            base = entry.offset
            data = retriever.store.read_range(okey, base + start, base + end, if_match=match)
            return data
        if self._whole is None:
            self._whole = retriever.read(self.key, self.uid)
        return self._whole[start:end]


# ---- store listings (a local directory, an S3 prefix, each zone of a multi-zone store) ----


def _list_days(store: ObjectStore) -> Iterator[str]:
    for entry in store.list_dir(""):
        if entry.is_dir and _DAY.fullmatch(entry.name):
            yield entry.name


def _list_days_for(store: ObjectStore, day: str) -> set[str]:
    return {day} if any(True for _ in _list_day(store, day)) else set()


def _list_day(store: ObjectStore, day: str) -> Iterator[str]:
    for entry in store.list_dir(day):
        if not entry.is_dir and _HEAD.fullmatch(entry.name):
            yield f"{day}/{entry.name}"
