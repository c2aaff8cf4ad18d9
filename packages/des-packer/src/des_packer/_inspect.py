"""What the ``des`` operator command does (get, ls, verify), as plain functions returning exit
codes. Reads use the service's settings (``DES_*`` through ``des_routing.DesSettings``; flags
override them) and des-format's one retrieval pipeline, :class:`des_format.ShardRetriever`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO
from urllib.parse import quote

from ._errors import PackerError

if TYPE_CHECKING:
    from des_format import ObjectStore

__all__ = [
    "EXIT_DELETED",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "load_settings",
    "open_read_store",
    "run_get",
    "run_get_batch",
    "run_ls",
    "run_verify",
    "safe_file_name",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DELETED = 4  # des get: the file existed and was deleted (HTTP 410)


class UsageError(PackerError):
    """A bad flag or setting (exit 2)."""


def load_settings(overrides: Mapping[str, str | None], env: Mapping[str, str] | None = None) -> Any:
    """``DesSettings.from_env`` with flag values (``DES_*`` names) taking precedence."""
    from des_routing import DesSettings, RoutingError

    merged = dict(os.environ if env is None else env)
    for name, value in overrides.items():
        if value is not None:
            merged[name] = value
    try:
        return DesSettings.from_env(merged)
    except RoutingError as exc:
        raise UsageError(str(exc)) from None


def given_settings(
    overrides: Mapping[str, str | None], env: Mapping[str, str] | None = None
) -> set[str]:
    """The ``DES_*`` names given a non-empty value, by flag or environment."""
    merged = {k: v for k, v in (os.environ if env is None else env).items() if v.strip()}
    merged.update({k: v for k, v in overrides.items() if v})
    return {k for k in merged if k.startswith("DES_")}


def with_store_layout(
    settings: Any, store: ObjectStore, overrides: Mapping[str, str | None]
) -> Any:
    """``settings`` after the store's layout record (``_store_check.settings_from_store``); a
    mismatch or an unreadable record is a UsageError naming both values."""
    from des_format import DesFormatError

    from ._store_check import settings_from_store

    try:
        return settings_from_store(settings, store, given_settings(overrides))
    except DesFormatError as exc:
        raise UsageError(str(exc)) from None


def s3_extra(settings: Any) -> Any:
    """The ``des_storage_s3`` module, or a UsageError naming the extra that brings it."""
    try:
        import des_storage_s3
    except ImportError:
        raise UsageError(
            f"DES_BACKEND={settings.backend} needs the S3 extra: pip install 'des-packer[s3]'"
        ) from None
    return des_storage_s3


def open_read_store(settings: Any) -> ObjectStore:
    """The ObjectStore of ``settings``: local needs nothing more, S3 needs ``des-packer[s3]``."""
    if settings.backend == "local":
        from des_format import LocalObjectStore

        return LocalObjectStore(settings.base_dir)
    store: ObjectStore = s3_extra(settings).open_store(settings)
    return store


def safe_file_name(uid: str) -> str:
    """A file name for ``uid`` that cannot leave the output directory (percent-encoded)."""
    name = quote(uid, safe="-_.@+=,~")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    return name


def _key_for(uid: str, created_at: str, n_bits: int) -> str:
    from des_routing import RoutingError, locate_shard

    try:
        return str(locate_shard(uid, created_at, n_bits).object_key)
    except RoutingError as exc:
        raise UsageError(str(exc)) from None


def _explain(exc: BaseException, store: ObjectStore, key: str) -> str:
    from des_format import EntryDeleted, EntryNotFound, ObjectNotFound

    if isinstance(exc, ObjectNotFound):
        return (
            f"no shard {store.describe(key)}: check created_at, DES_N_BITS and the base "
            "directory / bucket the files were packed into"
        )
    if isinstance(exc, EntryNotFound | EntryDeleted):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _write_stream(chunks: Iterator[bytes], dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_get(
    uid: str,
    created_at: str,
    output: Path | None,
    overrides: Mapping[str, str | None],
    *,
    stdout: BinaryIO | None = None,
    err: TextIO | None = None,
) -> int:
    from des_format import DesFormatError, EntryDeleted, ObjectNotFound, ShardRetriever

    err = err or sys.stderr
    try:
        settings = load_settings(overrides)
        store = open_read_store(settings)
        if "DES_N_BITS" not in given_settings(overrides):
            # one more request, only when the routing bits are not given
            settings = with_store_layout(settings, store, overrides)
        key = _key_for(uid, created_at, settings.n_bits)
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    retriever = ShardRetriever(
        store, tail_size=settings.tail_read_bytes, bigfiles_prefix=settings.bigfiles_prefix
    )
    try:
        opened = retriever.open(key, uid)
        if output is None:
            out = stdout or sys.stdout.buffer
            for chunk in opened.iter_bytes():
                out.write(chunk)
            out.flush()
        else:
            _write_stream(opened.iter_bytes(), output)
    except EntryDeleted:
        print(f"des: error: {uid}: deleted (gone; it will not come back)", file=err)
        return EXIT_DELETED
    except DesFormatError as exc:
        if isinstance(exc, ObjectNotFound):  # a wrong DES_N_BITS? the store may say
            try:
                with_store_layout(settings, store, overrides)
            except UsageError as mismatch:
                print(f"des: error: no shard {store.describe(key)}: {mismatch}", file=err)
                return EXIT_USAGE
        print(f"des: error: {_explain(exc, store, key)}", file=err)
        return EXIT_FAILED
    except OSError as exc:
        print(f"des: error: cannot write {output}: {exc.strerror}", file=err)
        return EXIT_FAILED
    return EXIT_OK


def run_get_batch(
    batch: Path,
    out_dir: Path,
    overrides: Mapping[str, str | None],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    progress: bool | None = None,
) -> int:
    """Fetch every (uid, created_at) of a JSON Lines file into ``out_dir/<uid>``.

    ``progress`` (default: when ``err`` is a terminal): files done, failed and the rate on
    ``err``, at most a few times a second; the JSON report on ``out`` is unchanged."""
    from des_format import DesFormatError, IndexCache, ShardRetriever

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = load_settings(overrides)
        store = open_read_store(settings)
        settings = with_store_layout(settings, store, overrides)
        lines = batch.read_text(encoding="utf-8").splitlines()
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    except OSError as exc:
        print(f"des: error: cannot read --batch {batch}: {exc.strerror}", file=err)
        return EXIT_USAGE
    except UnicodeDecodeError as exc:
        print(
            f"des: error: --batch {batch} is not UTF-8 text (byte {exc.start}); write JSON "
            'Lines of {"uid": ..., "created_at": ...} in UTF-8',
            file=err,
        )
        return EXIT_USAGE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"des: error: cannot create --out {out_dir}: {exc.strerror}", file=err)
        return EXIT_USAGE
    cache = IndexCache(settings.index_cache_bytes) if settings.index_cache_bytes else None
    retriever = ShardRetriever(
        store,
        cache=cache,
        tail_size=settings.tail_read_bytes,
        bigfiles_prefix=settings.bigfiles_prefix,
    )
    ok = 0
    failed: list[dict[str, str]] = []
    meter = _BatchProgress(err, len(lines), progress)
    for lineno, line in enumerate(lines, start=1):
        meter.show(ok, len(failed))
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            uid, created_at = row["uid"], row["created_at"]
            if not isinstance(uid, str) or not isinstance(created_at, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            failed.append(
                {
                    "line": str(lineno),
                    "error": f"{batch.name} line {lineno}: expected a JSON object with "
                    "string fields uid and created_at",
                }
            )
            continue
        try:
            key = _key_for(uid, created_at, settings.n_bits)
            _write_stream(retriever.open(key, uid).iter_bytes(), out_dir / safe_file_name(uid))
            ok += 1
        except UsageError as exc:
            failed.append({"uid": uid, "error": str(exc)})
        except DesFormatError as exc:
            failed.append({"uid": uid, "error": _explain(exc, store, key)})
        except OSError as exc:
            failed.append({"uid": uid, "error": f"cannot write: {exc.strerror}"})
    meter.done(ok, len(failed))
    print(json.dumps({"ok": ok, "failed": len(failed), "failures": failed}, indent=2), file=out)
    for f in failed:
        who = f"uid {f['uid']!r}" if "uid" in f else f"line {f['line']}"
        print(f"des: error: {who}: {f['error']}", file=err)
    return EXIT_FAILED if failed else EXIT_OK


class _BatchProgress:
    """``des get --batch``'s progress on stderr: one line rewritten in place on a terminal
    (5 times a second), else a line a second when asked for (``--progress``)."""

    def __init__(self, stream: TextIO, total: int, wanted: bool | None) -> None:
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.stream = stream
        self.total = total
        self.on = tty if wanted is None else wanted
        self.tty = tty
        self.every = 0.2 if tty else 1.0
        self.started = time.monotonic()
        self.last = self.started
        self.count = 0

    def _line(self, ok: int, failed: int) -> str:
        secs = time.monotonic() - self.started
        rate = (ok + failed) / secs if secs > 0 else 0.0
        return (
            f"des get: {ok + failed}/{self.total} files, {failed} failed, "
            f"{rate:,.0f} files/s, {secs:.1f} s"
        )

    def show(self, ok: int, failed: int) -> None:
        if not self.on:
            return
        self.count += 1
        if self.count & 63:  # the clock is read once every 64 files
            return
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        end = "\r" if self.tty else "\n"
        print(self._line(ok, failed), end=end, file=self.stream, flush=True)

    def done(self, ok: int, failed: int) -> None:
        if self.on:
            print(self._line(ok, failed), file=self.stream, flush=True)


# ---- ls and verify ---------------------------------------------------------------------------


def _open_reader(target: str, overrides: Mapping[str, str | None]) -> tuple[Any, str]:
    """A ShardReader for a local shard path or a key in the configured store."""
    from des_format import ShardReader, StoreSource, bigfile_key, part_key

    path = Path(target)
    if path.is_file():
        settings = load_settings(overrides)
        return ShardReader.open_path(path, bigfiles_prefix=settings.bigfiles_prefix), str(path)
    settings = load_settings(overrides)
    store = open_read_store(settings)
    key = target

    def parts(n: int) -> Any:
        return StoreSource(store, part_key(key, n))

    def bigfiles(sha: str) -> Any:
        return StoreSource(store, bigfile_key(key, sha, settings.bigfiles_prefix))

    return ShardReader(StoreSource(store, key), parts, bigfiles), store.describe(key)


def run_ls(
    target: str,
    overrides: Mapping[str, str | None],
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    from des_format import DesFormatError, entry_to_json

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        reader, where = _open_reader(target, overrides)
        entries = sorted(reader.iter_entries(), key=lambda e: e.uid)
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    except DesFormatError as exc:
        print(f"des: error: {target}: {exc}", file=err)
        return EXIT_FAILED
    if as_json:
        for e in entries:
            print(json.dumps(entry_to_json(e), ensure_ascii=False), file=out)
        return EXIT_OK
    print(f"# {where}: {len(entries)} entries, format {reader.index.format_version}", file=out)
    print(
        "uid\tsize\tstored_size\tcodec\tchecksum\tpart\toffset\tblock_offset\tflags\tcontent_type",
        file=out,
    )
    for e in entries:
        d = entry_to_json(e)
        flags = ",".join(f for f in ("bigfile", "deleted") if d[f])
        print(
            f"{e.uid}\t{e.size}\t{e.stored_size}\t{d['codec']}\t{d['checksum'] or '-'}\t"
            f"{e.part}\t{e.offset}\t{d.get('block_offset', '-')}\t{flags or '-'}\t"
            f"{e.content_type or '-'}",
            file=out,
        )
    return EXIT_OK


def _local_shards(base: Path) -> Iterator[Path]:
    import re

    part = re.compile(r"\.p\d+\.des$")
    for path in sorted(base.rglob("*.des")):
        if path.name.startswith(".") or part.search(path.name) or not path.is_file():
            continue
        yield path


def _s3_keys(store: ObjectStore, prefix: str) -> Iterator[str]:
    """Head shard keys (``.des``, not ``.pN.des``) whose key starts with ``prefix``, found
    through the store's listing (one per directory walked)."""
    import re

    part = re.compile(r"\.p\d+\.des$")
    folder, _, start = prefix.rpartition("/")

    def walk(under: str, start: str) -> Iterator[str]:
        for entry in sorted(store.list_dir(under), key=lambda e: e.name):
            if not entry.name.startswith(start):
                continue
            key = f"{under}/{entry.name}" if under else entry.name
            if entry.is_dir:
                yield from walk(key, "")
            elif key.endswith(".des") and not part.search(key):
                yield key

    yield from walk(folder, start)


def _verify_one(reader: Any, deep: bool) -> tuple[int, str | None]:
    from des_format import DesFormatError

    try:
        return int(reader.verify(deep=deep)), None
    except DesFormatError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        reader.close()


def run_verify(
    target: str,
    overrides: Mapping[str, str | None],
    *,
    deep: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Verify one shard, a local directory of shards, or every shard under an S3 prefix.

    Fast (default): header, footer, index directory and bucket checksums. ``deep``: every
    payload read and checked too. Prints a JSON report; exit 1 when any shard fails.
    """
    from des_format import DesFormatError, ShardReader

    out = out or sys.stdout
    err = err or sys.stderr
    results: list[dict[str, Any]] = []
    try:
        path = Path(target)
        settings = load_settings(overrides)
        if settings.backend == "local" and not path.exists():
            path = Path(settings.base_dir) / target  # a key or date directory in the base dir
        if settings.backend == "local" and path.is_dir():
            for shard in _local_shards(path):
                try:
                    reader = ShardReader.open_path(shard, bigfiles_prefix=settings.bigfiles_prefix)
                except DesFormatError as exc:
                    results.append({"shard": str(shard), "ok": False, "error": str(exc)})
                    continue
                n, problem = _verify_one(reader, deep)
                results.append(
                    {"shard": str(shard), "ok": problem is None, "entries": n}
                    | ({"error": problem} if problem else {})
                )
        elif path.is_file() or target.endswith(".des"):
            try:
                reader, where = _open_reader(str(path) if path.is_file() else target, overrides)
            except DesFormatError as exc:
                results.append({"shard": target, "ok": False, "error": str(exc)})
            else:
                n, problem = _verify_one(reader, deep)
                results.append(
                    {"shard": where, "ok": problem is None, "entries": n}
                    | ({"error": problem} if problem else {})
                )
        elif settings.backend == "s3":  # a key prefix ("" = the whole bucket/prefix)
            store = open_read_store(settings)
            for key in _s3_keys(store, target.strip("/")):
                try:
                    reader, where = _open_reader(key, overrides)
                except DesFormatError as exc:
                    results.append({"shard": key, "ok": False, "error": str(exc)})
                    continue
                n, problem = _verify_one(reader, deep)
                results.append(
                    {"shard": where, "ok": problem is None, "entries": n}
                    | ({"error": problem} if problem else {})
                )
        else:
            raise UsageError(
                f"{target!r} is neither a shard file, a directory, nor (with DES_BACKEND=s3) "
                "a key prefix; give a .des path, a base directory or an S3 prefix (listing "
                "a prefix is not supported for multi_s3: verify shard keys one by one)"
            )
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    except DesFormatError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_FAILED
    bad = [r for r in results if not r["ok"]]
    report = {
        "mode": "deep" if deep else "fast",
        "shards": len(results),
        "ok": len(results) - len(bad),
        "failed": len(bad),
        "entries": sum(int(r.get("entries", 0)) for r in results),
        "results": results,
    }
    print(json.dumps(report, indent=2), file=out)
    for r in bad:
        print(f"des: verify failed: {r['shard']}: {r['error']}", file=err)
    if not results:
        print(f"des: error: no shards found under {target}", file=err)
        return EXIT_FAILED
    return EXIT_FAILED if bad else EXIT_OK
