"""What ``des export``, ``des ls --day`` and ``des find`` do, as plain functions returning exit
codes: operator commands that work across the shards of one or more days.

``des export`` writes a standard (POSIX pax) tar: one member per live file, named by its uid,
and ``manifest.jsonl`` last, one JSON object per file (uid, created_at, size_bytes,
content_type, checksum, meta) that ``des-pack --input-tar`` takes back. A shard keeps only
the day of a file's created_at (routing needs nothing more), so created_at is the day at
midnight UTC unless the file's metadata holds a ``created_at`` of that day.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._days import DayError, day_range, day_shard_keys
from ._inspect import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    load_settings,
    open_read_store,
    with_store_layout,
)

if TYPE_CHECKING:
    from des_format import ObjectStore, ShardRetriever

__all__ = ["MANIFEST_NAME", "run_export", "run_find", "run_ls_days"]

MANIFEST_NAME = "manifest.jsonl"


def _day_text(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def created_at_of(entry: Any, day: str) -> str:
    """The created_at an export gives a file of ``day``: the metadata's own when it holds one of
    that day, else the day at midnight UTC."""
    from des_routing import RoutingError, date_dir_of, format_created_at

    stored = entry.meta.get("created_at")
    if isinstance(stored, str):
        try:
            if date_dir_of(stored) == day:
                return format_created_at(stored)
        except (RoutingError, ValueError):
            pass
    return f"{_day_text(day)}T00:00:00Z"


def _checksum_text(entry: Any) -> str | None:
    if entry.checksum is not None:
        return f"crc32:{entry.checksum:08x}"
    if entry.bigfile_hash:
        return f"sha256:{entry.bigfile_hash}"
    return None


@dataclass
class _Reader:
    """The ``des`` read side: settings, store and one retriever with an index cache."""

    settings: Any
    store: ObjectStore
    retriever: ShardRetriever

    @classmethod
    def open(cls, overrides: Mapping[str, str | None]) -> _Reader:
        from des_format import IndexCache, ShardRetriever

        settings = load_settings(overrides)
        store = open_read_store(settings)
        settings = with_store_layout(settings, store, overrides)
        cache = IndexCache(max(settings.index_cache_bytes, 1 << 20))
        retriever = ShardRetriever(
            store,
            cache=cache,
            tail_size=settings.tail_read_bytes,
            bigfiles_prefix=settings.bigfiles_prefix,
        )
        return cls(settings, store, retriever)

    def entries(self, key: str) -> list[Any]:
        """The entries of the shard at ``key``, sorted by uid."""
        index = self.retriever.index(key)[1]
        return sorted(index.iter_entries(), key=lambda e: e.uid)


def _record(entry: Any, key: str, day: str) -> dict[str, Any]:
    meta = {k: v for k, v in entry.meta.items() if k != "content_type"}
    return {
        "uid": entry.uid,
        "created_at": created_at_of(entry, day),
        "size_bytes": entry.size,
        "content_type": entry.content_type,
        "checksum": _checksum_text(entry),
        "shard": key,
        "deleted": entry.deleted,
        "meta": meta,
    }


# ---- ls --day ----------------------------------------------------------------------------------


def run_ls_days(
    days: Sequence[str],
    overrides: Mapping[str, str | None],
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """List every file of the shards of ``days`` (deleted ones flagged)."""
    from des_format import DesFormatError

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        reader = _Reader.open(overrides)
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    if not as_json:
        print("uid\tcreated_at\tsize\tcontent_type\tchecksum\tshard\tflags", file=out)
    failed = 0
    files = 0
    shards = 0
    for day in days:
        for key in day_shard_keys(reader.store, day):
            try:
                entries = reader.entries(key)
            except DesFormatError as exc:
                print(f"des: error: {reader.store.describe(key)}: {exc}", file=err)
                failed += 1
                continue
            shards += 1
            for e in entries:
                files += 1
                rec = _record(e, key, day)
                if as_json:
                    print(json.dumps(rec, ensure_ascii=False), file=out)
                else:
                    print(
                        f"{rec['uid']}\t{rec['created_at']}\t{rec['size_bytes']}\t"
                        f"{rec['content_type'] or '-'}\t{rec['checksum'] or '-'}\t{key}\t"
                        f"{'deleted' if e.deleted else '-'}",
                        file=out,
                    )
    print(f"des: {files} files in {shards} shards over {len(days)} day(s)", file=err)
    return EXIT_FAILED if failed else EXIT_OK


# ---- find --------------------------------------------------------------------------------------


class _Progress:
    """Lines on stderr at most once a second (and the last one)."""

    def __init__(self, err: TextIO, total: int) -> None:
        self.err = err
        self.total = total
        self.last = 0.0

    def step(self, done: int, day: str) -> None:
        now = time.monotonic()
        if done == self.total or now - self.last >= 1.0:
            self.last = now
            print(f"des: find: searched {done}/{self.total} days (up to {day})", file=self.err)


def run_find(
    uid: str,
    start: str,
    end: str | None,
    overrides: Mapping[str, str | None],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Look for ``uid`` on each day of ``start..end`` (at most MAX_DAYS days). The uid names
    its shard on every day, so each day costs one index read (2 requests cold) and nothing
    when the day has no such shard. Prints one JSON object per day that holds it."""
    from des_format import DesFormatError, ObjectNotFound
    from des_routing import RoutingError, locate_shard_key

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        days = day_range(start, end)
        reader = _Reader.open(overrides)
        n_bits = reader.settings.n_bits
        keys = [locate_shard_key(uid, f"{_day_text(d)}T00:00:00Z", n_bits) for d in days]
    except (UsageError, DayError, RoutingError) as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    progress = _Progress(err, len(days))
    found = 0
    failed = 0
    for i, (day, key) in enumerate(zip(days, keys, strict=True), start=1):
        try:
            index = reader.retriever.index(key)[1]
            entry = index.lookup(uid)
        except ObjectNotFound:
            entry = None
        except DesFormatError as exc:
            print(f"des: error: {reader.store.describe(key)}: {exc}", file=err)
            failed += 1
            entry = None
        if entry is not None:
            found += 1
            print(json.dumps(_record(entry, key, day), ensure_ascii=False), file=out)
        progress.step(i, day)
    if not found:
        print(
            f"des: error: {uid!r} is in no shard from {days[0]} to {days[-1]} "
            f"(n_bits {n_bits}); widen --from/--to or check DES_N_BITS",
            file=err,
        )
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


# ---- export ------------------------------------------------------------------------------------


class _ChunkReader:
    """A file-like ``read(n)`` over an iterator of chunks, with the CRC-32 of what it gave
    (no copying of a chunk but the part each read returns)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self.crc = 0
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        from des_format import crc32

        parts: list[bytes] = []
        want = n
        while want != 0:
            if self._pos >= len(self._chunk):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._chunk, self._pos = nxt, 0
                continue
            end = len(self._chunk) if want < 0 else min(len(self._chunk), self._pos + want)
            piece = self._chunk[self._pos : end]
            self._pos = end
            parts.append(piece)
            if want > 0:
                want -= len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.crc = crc32(data, self.crc)
        self.count += len(data)
        return data


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info


def run_export(
    output: Path,
    overrides: Mapping[str, str | None],
    *,
    day: str | None = None,
    shard: str | None = None,
    uids: Sequence[str] = (),
    err: TextIO | None = None,
) -> int:
    """Write the live files of a day, a shard, or some uids of a day into the tar ``output``
    (written beside it, renamed into place when complete)."""
    from des_format import DesFormatError
    from des_routing import RoutingError, locate_shard_key, parse_created_at, parse_object_key

    err = err or sys.stderr
    try:
        if (day is None) == (shard is None):
            raise UsageError("give --day YYYYMMDD or --shard KEY (one of them)")
        if shard is not None:
            parsed = parse_object_key(shard.strip("/"))
            if parsed.kind != "shard":
                raise UsageError(
                    f"--shard {shard!r} is not a head shard key such as 20240101/A7.des"
                )
            the_day = parsed.date_dir
            keys = [parsed.key]
        else:
            assert day is not None
            the_day = day_range(day, None)[0]
        reader = _Reader.open(overrides)
        if shard is None:
            if uids:
                noon = f"{_day_text(the_day)}T00:00:00Z"
                keys = sorted({locate_shard_key(u, noon, reader.settings.n_bits) for u in uids})
            else:
                keys = day_shard_keys(reader.store, the_day)
        if output.suffix.lower() not in (".tar", ""):
            raise UsageError(f"--output {output} must be a .tar file (des export writes tar)")
    except (UsageError, DayError, RoutingError) as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    wanted = set(uids)
    plan: list[tuple[str, Any]] = []
    try:
        for key in keys:
            for e in reader.entries(key):
                if e.deleted or (wanted and e.uid not in wanted):
                    continue
                plan.append((key, e))
    except DesFormatError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_FAILED
    missing = sorted(wanted - {e.uid for _, e in plan})
    if missing:
        print(
            f"des: error: not on {the_day} (or deleted): {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else ""),
            file=err,
        )
        return EXIT_FAILED
    tmp = output.with_name(f".{output.name}.partial")
    rows: list[str] = []
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, e in plan:
                created = created_at_of(e, the_day)
                mtime = parse_created_at(created).timestamp()
                src = _ChunkReader(iter(reader.retriever.open(key, e.uid).iter_bytes()))
                tar.addfile(_member(e.uid, e.size, mtime), src)
                rec = _record(e, key, the_day)
                rec["checksum"] = f"crc32:{src.crc:08x}"
                del rec["shard"], rec["deleted"]
                rows.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
            data = "".join(r + "\n" for r in rows).encode("utf-8")
            tar.addfile(_member(MANIFEST_NAME, len(data), time.time()), _ChunkReader(iter([data])))
        os.replace(tmp, output)
    except DesFormatError as exc:
        tmp.unlink(missing_ok=True)
        print(f"des: error: {exc}; nothing written", file=err)
        return EXIT_FAILED
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        print(f"des: error: cannot write {output}: {exc.strerror or exc}", file=err)
        return EXIT_FAILED
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"des: exported {len(rows)} files from {len(keys)} shard(s) to {output}", file=err)
    return EXIT_OK
