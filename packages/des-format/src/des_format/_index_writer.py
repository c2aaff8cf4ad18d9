"""Writing a shard's index after its payloads: the entries hashed into buckets (about 4 KiB
each), each bucket serialized with its metadata, the optional dictionary block, the bucket
directory and the footer (``FORMAT.md`` section 3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from ._checksum import crc32
from ._codecs import Codec
from ._index import REC_META_JSON, Record, canonical_meta, entry_record, serialize_records
from ._layout import _UID_HASHER, DIR_ENTRY, IndexEntry, plan_bucket_count, serialize_footer


@dataclass(frozen=True, slots=True)
class WriteSummary:
    """What :meth:`~des_format.ShardWriter.close` wrote."""

    entry_count: int
    added: int
    deleted: int
    data_bytes: int
    index_bytes: int
    head_size: int
    parts: tuple[int, ...] = ()
    bigfiles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WrittenIndex:
    entry_count: int
    index_bytes: int  # index, dictionary block, directory and footer


def write_index(
    out: BinaryIO,
    entries: Iterable[IndexEntry | Record],
    *,
    index_offset: int,
    dictionary: bytes | None,
) -> WrittenIndex:
    """Write the index of ``entries`` (``IndexEntry`` values, or :data:`Record` tuples as the
    writer keeps new entries) to ``out``, whose next byte is at ``index_offset`` of the head
    object. Entries sharing one metadata object are serialized once."""
    records: list[Record] = []
    by_id: dict[int, bytes | None] = {}  # shared meta objects (e.g. read from an index)
    distinct_meta: set[bytes] = set()
    estimate = 0
    with_meta = 0
    blocks = False
    block = Codec.ZSTD_BLOCK
    for e in entries:
        if type(e) is tuple:
            rec: Record = e
            if rec[REC_META_JSON] is None and rec[10]:
                canonical_meta(rec[10])  # metadata JSON cannot hold: raise why
        else:
            assert isinstance(e, IndexEntry)
            blob: bytes | None = None
            if e.meta:
                key = id(e.meta)
                if key in by_id:
                    blob = by_id[key]
                else:
                    blob = by_id[key] = canonical_meta(e.meta)
            rec = entry_record(e, None, blob)
        if rec[3] is block:
            blocks = True
        estimate += len(rec[12]) + 20
        blob = rec[REC_META_JSON]
        if blob is not None:
            with_meta += 1
            distinct_meta.add(blob)
        records.append(rec)
    estimate += 2 * with_meta + sum(len(m) + 2 for m in distinct_meta)
    n_buckets = plan_bucket_count(estimate)
    groups: list[list[Record]] = [[] for _ in range(n_buckets)]
    shift = 64 - (n_buckets.bit_length() - 1)
    if shift == 64:
        groups[0] = records
    else:
        copy = _UID_HASHER.copy
        from_bytes = int.from_bytes
        for rec in records:
            h: Any = copy()
            h.update(rec[12])
            groups[from_bytes(h.digest(), "big") >> shift].append(rec)
    directory = bytearray()
    rel = 0
    written = 0
    for group in groups:
        encoded = serialize_records(group)
        if encoded:
            out.write(encoded)
        rel += len(encoded)
        if rel >= 1 << 32:
            raise ValueError("index larger than 4 GiB: split the shard (lower max_size)")
        directory += DIR_ENTRY.pack(rel, crc32(encoded))
        written += len(encoded)
    if dictionary is not None:
        # the dictionary block, right before the directory (FORMAT.md section 3.1)
        out.write(dictionary)
        out.write(crc32(dictionary).to_bytes(4, "little"))
        written += len(dictionary) + 4
    out.write(directory)
    footer = serialize_footer(
        index_offset=index_offset,
        entry_count=len(records),
        bucket_count=n_buckets,
        directory_crc=crc32(directory),
        dictionary_size=len(dictionary) if dictionary is not None else 0,
        blocks=blocks,
    )
    out.write(footer)
    index_bytes = written + len(directory) + len(footer)
    return WrittenIndex(len(records), index_bytes)
