"""Writing a shard's index after its payloads: the entries hashed into buckets (about 4 KiB
each), each bucket serialized with its metadata, the optional dictionary block, the bucket
directory and the footer (``FORMAT.md`` section 3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ._checksum import crc32
from ._codecs import Codec
from ._index import canonical_meta, serialize_bucket_with_meta
from ._layout import DIR_ENTRY, IndexEntry, bucket_of, plan_bucket_count, serialize_footer


@dataclass(frozen=True, slots=True)
class WrittenIndex:
    entry_count: int
    index_bytes: int  # index, dictionary block, directory and footer


def write_index(
    out: BinaryIO,
    entries: Iterable[IndexEntry],
    *,
    index_offset: int,
    meta_json: dict[int, bytes],
    dictionary: bytes | None,
) -> WrittenIndex:
    """Write the index of ``entries`` to ``out``, whose next byte is at ``index_offset`` of
    the head object. ``meta_json`` maps ``id(entry.meta)`` to its canonical JSON when the
    writer already has it (entries sharing one metadata object are serialized once)."""
    keyed: list[tuple[bytes, IndexEntry, bytes | None]] = []
    by_id: dict[int, bytes] = {}  # interned or read from an index: shared meta objects
    distinct_meta: dict[bytes, bytes] = {}
    estimate = 0
    blocks = False
    for e in entries:
        if e.codec is Codec.ZSTD_BLOCK:
            blocks = True
        ub = e.uid.encode("utf-8")
        estimate += len(ub) + 20
        blob: bytes | None = None
        if e.meta:
            estimate += 2
            blob = by_id.get(id(e.meta))
            if blob is None:
                blob = meta_json.get(id(e.meta)) or canonical_meta(e.meta)
                blob = distinct_meta.setdefault(blob, blob)
                by_id[id(e.meta)] = blob
        keyed.append((ub, e, blob))
    estimate += sum(len(m) + 2 for m in distinct_meta)
    n_buckets = plan_bucket_count(estimate)
    groups: list[list[tuple[bytes, IndexEntry, bytes | None]]] = [[] for _ in range(n_buckets)]
    for item in keyed:
        groups[bucket_of(item[0], n_buckets)].append(item)
    directory = bytearray()
    rel = 0
    written = 0
    for group in groups:
        encoded = serialize_bucket_with_meta(group)
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
        entry_count=len(keyed),
        bucket_count=n_buckets,
        directory_crc=crc32(directory),
        dictionary_size=len(dictionary) if dictionary is not None else 0,
        blocks=blocks,
    )
    out.write(footer)
    index_bytes = written + len(directory) + len(footer)
    return WrittenIndex(len(keyed), index_bytes)
