"""Reading a shard back and comparing its files with their rows: the verify worker's code.

It runs in the migrator (threads, for small cycles or a store object given to the
orchestrator) and in the verify worker process, which loads this file on its own (no
``des_migrate`` package import, so none of SQLAlchemy, typer or prometheus-client) and
answers length-prefixed JSON frames on stdin/stdout; see ``_verifier``. Standard library and
des-format only (des-storage-s3 for an ``s3://`` output).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from des_format import ObjectStore

#: How a worker process builds the store: ["local", base_dir] or
#: ["s3", bucket, prefix, region_name, endpoint_url] with "" for unset values.
StoreSpec = tuple[str, ...]
#: One file to check: uid, the table's size, the table's checksum (or None), and whether the
#: CRC-32 of what was read back is wanted (files an earlier run packed are compared with
#: their source by the migrator).
Item = tuple[str, int, str | None, bool]
#: A file that needs the migrator's attention: uid, what is wrong with it (None: nothing) and
#: the CRC-32 of what was read back (None when nothing could be). Files that check out and
#: whose CRC-32 was not asked for are left out.
Answer = tuple[str, str | None, int | None]
#: (what makes the whole shard untrustworthy, or None; the answers)
ShardAnswer = tuple[str | None, list[Answer]]
#: A row to validate: uid, created_at (ISO 8601), file location, size_bytes (-1: NULL)
Row = tuple[str, str, str, int]
#: (the shard key of each row, None where it does not route; (row index, reason) of each
#: row refused, in row order)
Validated = tuple[list[str | None], list[tuple[int, str]]]


def brief(exc: BaseException) -> str:
    """``ClassName: first line of the message`` (what reports and the error column show)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def open_store(spec: StoreSpec) -> ObjectStore:
    """The store ``spec`` describes."""
    if spec[0] == "local":
        from des_format import LocalObjectStore

        return LocalObjectStore(spec[1])
    if spec[0] == "s3":
        from des_storage_s3 import ClientSettings, S3ObjectStore, make_client

        _kind, bucket, prefix, region, endpoint = spec
        client = make_client(
            ClientSettings(region_name=region or None, endpoint_url=endpoint or None)
        )
        return S3ObjectStore(client, bucket, prefix)
    raise ValueError(f"unknown store kind {spec[0]!r}")  # pragma: no cover - ours only


def close_store(store: ObjectStore) -> None:
    store.close()


def check_local_source(location: str, size_bytes: int) -> str | None:
    """What is wrong with a local source file: missing, not a regular file, another size."""
    try:
        st = os.stat(location)
    except FileNotFoundError:
        return f"source {location} does not exist"
    except OSError as exc:
        return f"cannot stat source {location}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"source {location} is not a regular file"
    if st.st_size != size_bytes:
        return f"source {location} has {st.st_size} bytes, the table says {size_bytes}"
    return None


def validate_rows(rows: list[Row], n_bits: int) -> Validated:
    """The validate step for rows whose sources are local files (see the orchestrator's
    ``_validate``, which gives the same keys and the same reasons in the same order)."""
    from des_routing import RoutingError, locate_shard

    keys: list[str | None] = []
    refused: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, (uid, created_at, location, size_bytes) in enumerate(rows):
        if uid in seen:
            keys.append(None)
            refused.append((i, duplicate_uid(uid)))
            continue
        try:
            key = locate_shard(uid, created_at, n_bits).object_key
        except RoutingError as exc:
            keys.append(None)
            refused.append((i, f"cannot route uid: {exc}"))
            continue
        seen.add(uid)
        keys.append(key)
        problem = source_problem(location, size_bytes)
        if problem is not None:
            refused.append((i, problem))
    return keys, refused


def duplicate_uid(uid: str) -> str:
    return (
        f"uid {uid!r} is on more than one row of the batch; rows are marked by uid, so uids "
        "must be unique in the table"
    )


def source_problem(location: str, size_bytes: int) -> str | None:
    """The checks of a row before its source is looked at, then the local file's."""
    if size_bytes < 0:
        return "size_bytes is NULL or negative"
    if not location:
        return "file location is empty"
    return check_local_source(location, size_bytes)


def compare(
    size: int, digest: str | None, table_size: int, table_checksum: str | None, algorithm: str
) -> str | None:
    """What is wrong with a packed copy of ``size`` bytes and ``digest`` against its row."""
    if size != table_size:
        return f"packed copy has {size} bytes, the table says {table_size}"
    if table_checksum is not None and digest != table_checksum:
        return f"packed copy has {algorithm} {digest}, the table says {table_checksum}"
    return None


def check_shard(
    store: ObjectStore, key: str, items: list[Item], algorithm: str | None
) -> ShardAnswer:
    """Read ``items`` back from the shard at ``key`` with des-format's ``verify_files`` (each
    file's length and CRC-32 against its index entry) and compare each with its row.

    ``algorithm``: the table's checksum algorithm, when any item has a checksum. A missing
    or unreadable shard, or an unavailable store, is the first item of the answer (the batch
    cannot be trusted); a file that is missing, damaged or differs from its row gets its
    reason in its answer.
    """
    from des_format import DesFormatError, verify_files

    try:
        checks = verify_files(store, key, [item[0] for item in items], digest=algorithm)
    except DesFormatError as exc:
        return brief(exc), []
    answers: list[Answer] = []
    for uid, table_size, table_checksum, want_crc in items:
        check = checks[uid]
        if check.error is not None or check.entry is None:
            error = brief(check.error) if check.error is not None else "no entry"
            answers.append((uid, f"reading back from {key}: {error}", None))
            continue
        problem = compare(
            check.entry.size, check.digest, table_size, table_checksum, algorithm or ""
        )
        if problem is not None or want_crc:
            answers.append((uid, problem, check.crc32))
    return None, answers


_FRAME = struct.Struct("<I")


def write_frame(out: IO[bytes], obj: object) -> None:
    blob = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    out.write(_FRAME.pack(len(blob)))
    out.write(blob)
    out.flush()


def read_frame(src: IO[bytes]) -> Any:
    """The next JSON value, or None at the end of the stream."""
    head = src.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (n,) = _FRAME.unpack(head)
    blob = src.read(n)
    if len(blob) < n:
        return None
    return json.loads(blob)


def main() -> None:
    """The worker process: one answer per request, in order, until stdin ends.

    Requests: ``[ident, "check", spec, key, algorithm, items]`` (answer: a
    :data:`ShardAnswer`) and ``[ident, "validate", rows, n_bits]`` (answer: :data:`Validated`);
    ``[ident, true, answer]``, or ``[ident, false, reason]`` when one raised something
    unexpected.
    """
    # Ctrl-C reaches the whole process group: the migrator decides (it rolls the batch back)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the answers
    requests = sys.stdin.buffer
    stores: dict[StoreSpec, ObjectStore] = {}
    try:
        while (request := read_frame(requests)) is not None:
            ident, kind, *args = request
            try:
                if kind == "validate":
                    write_frame(answers, [ident, True, validate_rows(*args)])
                    continue
                spec, key, algorithm, items = args
                spec = tuple(spec)
                store = stores.get(spec)
                if store is None:
                    store = stores[spec] = open_store(spec)
                write_frame(answers, [ident, True, check_shard(store, key, items, algorithm)])
            except Exception as exc:  # noqa: BLE001  (sent back: the batch fails with it)
                write_frame(answers, [ident, False, brief(exc)])
    finally:
        for store in stores.values():
            close_store(store)


if __name__ == "__main__":
    main()
