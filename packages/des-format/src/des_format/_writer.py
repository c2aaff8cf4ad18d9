"""The streaming shard writer: payloads into the head object (and continuation parts),
appends after an existing shard, tombstones, copies of stored payloads for a repack; its
``close`` hands the entries to :func:`~des_format._index_writer.write_index`. Files are
prepared beforehand by :mod:`des_format._prepare`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from ._bigfiles import BigFileSink
from ._checksum import crc32
from ._codecs import (
    DEFAULT_DICT_MAX_FILE_SIZE,
    MAX_BLOCK_SIZE,
    MAX_DICTIONARY_SIZE,
    Codec,
    parse_codec,
)
from ._errors import DuplicateUid, EntryNotFound
from ._index import Record, ShardIndex, as_entry, canonical_meta, is_live
from ._index_writer import WriteSummary, write_index
from ._layout import (
    DEFAULT_BIG_FILE_THRESHOLD,
    HEADER_SIZE,
    IndexEntry,
    serialize_header,
)
from ._prepare import (
    PreparedBlock,
    PreparedPayload,
    build_meta,
    check_uid,
    hash_file,
    prepare_payload,
)
from ._prepare import block_frame_size as _block_frame_size

# Payloads are written to the output in pieces of about _COALESCE bytes (one write call, and
# one kernel write, per ~1 MiB instead of one per file); those of _DIRECT_WRITE bytes or more
# are written as they are.
_COALESCE = 1 << 20
_DIRECT_WRITE = 256 << 10


class ShardWriter:
    """Streams payloads into a shard object, then writes its index and footer on ``close``.

    Payload bytes go to ``out`` as they are added, small ones gathered into writes of about
    1 MiB (only the index entries and at most about 1 MiB of payloads stay in memory). With
    ``max_size`` and ``open_part``, payloads that would grow the current object past
    ``max_size`` go to continuation parts 1, 2, ... (``open_part(n)`` returns their stream);
    the index in ``out`` covers every entry. For an append, pass the existing object's size as
    ``base_offset`` and its index as ``existing``: ``out`` then receives only the tail to add
    after the old bytes. ``close`` does not close any stream.

    ``dictionary`` (at most ``MAX_DICTIONARY_SIZE`` bytes, e.g. from
    :func:`train_dictionary`) is stored in the shard; with the codec zstd, files of at most
    ``dict_max_file_size`` bytes are compressed with it. An append keeps the existing
    shard's dictionary.
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        codec: str | Codec = "zstd",
        level: int | None = None,
        big_file_threshold: int = DEFAULT_BIG_FILE_THRESHOLD,
        bigfile_sink: BigFileSink | None = None,
        max_size: int | None = None,
        open_part: Callable[[int], BinaryIO] | None = None,
        base_offset: int = 0,
        existing: ShardIndex | None = None,
        first_part: int = 1,
        dictionary: bytes | None = None,
        dict_max_file_size: int = DEFAULT_DICT_MAX_FILE_SIZE,
    ) -> None:
        self._codec = parse_codec(codec)
        if self._codec is Codec.ZSTD_BLOCK:
            raise ValueError(
                "solid blocks are made by prepare_block and added with add_block, not chosen"
                " as a writer's codec"
            )
        if dictionary is not None:
            dictionary = bytes(dictionary)
            if not 0 < len(dictionary) <= MAX_DICTIONARY_SIZE:
                raise ValueError(
                    f"a shard dictionary must be 1..{MAX_DICTIONARY_SIZE} bytes,"
                    f" got {len(dictionary)}"
                )
        if existing is not None and existing.dictionary is not None:
            if dictionary is not None and dictionary != existing.dictionary:
                raise ValueError("the shard already has a dictionary; an append keeps it")
            dictionary = existing.dictionary
        self._dictionary = dictionary
        self._dict_crc = crc32(dictionary) if dictionary is not None else None
        self._dict_max = dict_max_file_size
        self._level = level
        self._threshold = big_file_threshold
        self._sink = bigfile_sink
        if max_size is not None and max_size <= HEADER_SIZE:
            raise ValueError(f"max_size must exceed {HEADER_SIZE} bytes")
        if max_size is not None and open_part is None:
            raise ValueError("max_size needs open_part to open continuation parts")
        self._max_size = max_size
        self._open_part = open_part
        self._head = out
        # uid -> entry: an IndexEntry, or for new inline files a Record (cheaper to build)
        self._entries: dict[str, IndexEntry | Record] = {}
        # canonical JSON -> (shared meta, that JSON): one dict per distinct metadata object
        self._metas: dict[bytes, tuple[dict[str, Any], bytes]] = {}
        self._empty_meta: dict[str, Any] = {}
        self._added = 0
        self._deleted = 0
        self._data_bytes = 0
        self._parts: list[int] = []
        self._bigfiles: list[str] = []
        self._closed = False
        if first_part < 1:
            raise ValueError(f"first_part must be >= 1, got {first_part}")
        next_part = first_part
        if base_offset:
            if existing is None:
                raise ValueError("an append (base_offset > 0) needs existing=<the shard's index>")
            if existing.is_legacy:
                raise ValueError(
                    "cannot append to a legacy DES2 shard; repack it into the current format"
                )
            if existing.object_size != base_offset:
                raise ValueError(
                    f"base_offset {base_offset} differs from the indexed object size"
                    f" {existing.object_size}"
                )
            for entry in existing.iter_entries():
                self._entries[entry.uid] = entry
                next_part = max(next_part, entry.part + 1)
            self._pos = base_offset
        else:
            if existing is not None:
                raise ValueError("existing= is only for appends (base_offset > 0)")
            out.write(serialize_header(0))
            self._pos = HEADER_SIZE
        self._base = base_offset
        self._next_part = next_part
        self._cur_out = out
        self._pending: list[bytes] = []  # small payloads not yet written to _cur_out
        self._pending_bytes = 0
        self._cur_part = 0
        self._cur_pos = self._pos

    # ---- state ----

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and is_live(self._entries.get(uid))

    @property
    def entry_count(self) -> int:
        return len(self._entries)

    @property
    def dictionary(self) -> bytes | None:
        """The shard dictionary this writer stores (an append's is the existing one)."""
        return self._dictionary

    @property
    def position(self) -> int:
        """Size the head object has reached so far (before the index is written)."""
        return self._pos

    # ---- adding ----

    def _intern_meta(
        self, meta: dict[str, Any], blob: bytes | None = None
    ) -> tuple[dict[str, Any], bytes | None]:
        """One shared dict per distinct metadata object (entries treat meta as read-only), so
        a million files with the same content type hold one dict, not a million; with its
        canonical JSON (``blob`` when the caller has it; None for metadata JSON cannot hold,
        which ``close`` reports)."""
        if not meta:
            return self._empty_meta, None
        if blob is None:
            try:
                blob = canonical_meta(meta)
            except (TypeError, ValueError):  # close() reports it
                return meta, None
        shared = self._metas.get(blob)
        if shared is not None:
            return shared
        if len(self._metas) < 65536:
            self._metas[blob] = (meta, blob)
        return meta, blob

    def _check_new(self, uid: str) -> bytes:
        """The uid's UTF-8 bytes, once checked that it may be added."""
        if self._closed:
            raise ValueError("this ShardWriter is closed")
        raw = check_uid(uid)
        if is_live(self._entries.get(uid)):
            raise DuplicateUid(uid)
        return raw

    def _write_payload(self, stored: bytes) -> tuple[int, int]:
        n = len(stored)
        if (
            n
            and self._max_size is not None
            and self._open_part is not None
            and self._cur_pos + n > self._max_size
            and self._cur_pos > HEADER_SIZE
        ):
            part = self._next_part
            self._next_part += 1
            self._flush()
            self._cur_out = self._open_part(part)
            self._cur_out.write(serialize_header(part))
            self._cur_part = part
            self._cur_pos = HEADER_SIZE
            self._parts.append(part)
        offset = self._cur_pos
        if n:
            if n >= _DIRECT_WRITE:
                if self._pending:
                    self._flush()
                self._cur_out.write(stored)
            else:
                self._pending.append(stored)
                self._pending_bytes += n
                if self._pending_bytes >= _COALESCE:
                    self._flush()
        self._cur_pos += n
        if self._cur_part == 0:
            self._pos = self._cur_pos
        self._data_bytes += n
        return self._cur_part, offset

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            self._cur_out.write(pending[0] if len(pending) == 1 else b"".join(pending))
            self._pending = []
            self._pending_bytes = 0

    def add(
        self,
        uid: str,
        data: bytes,
        *,
        name: str | None = None,
        content_type: str | None = None,
        meta: dict[str, Any] | None = None,
        codec: str | Codec | None = None,
        level: int | None = None,
    ) -> IndexEntry:
        """Add one file; returns its index entry. ``DuplicateUid`` if the uid is present."""
        ub = self._check_new(uid)
        prepared = prepare_payload(
            uid,
            data,
            name=name,
            content_type=content_type,
            meta=meta,
            codec=self._codec if codec is None else codec,
            level=self._level if level is None else level,
            big_file_threshold=self._threshold if self._sink is not None else None,
            dictionary=self._dictionary,
            dict_max_file_size=self._dict_max,
            _checked=True,
        )
        return as_entry(self._add_prepared(prepared, ub))

    def add_prepared(self, prepared: PreparedPayload) -> IndexEntry:
        """Add a payload made by :func:`prepare_payload` (possibly in another thread)."""
        ub = self._check_new(prepared.uid)
        return as_entry(self._add_prepared(prepared, ub))

    def add_prepared_many(self, items: Iterable[PreparedPayload | PreparedBlock]) -> int:
        """Add payloads made by :func:`prepare_payload` and blocks made by
        :func:`prepare_block`, in order, as :meth:`add_prepared` and :meth:`add_block`
        would; returns the number of files added. No entry is returned, which makes it the
        cheaper call for many small files."""
        files = 0
        check = self._check_new
        add = self._add_prepared
        for item in items:
            if type(item) is PreparedBlock:
                files += len(self._add_block(item))
            else:
                assert isinstance(item, PreparedPayload)
                add(item, check(item.uid))
                files += 1
        return files

    def _add_prepared(self, prepared: PreparedPayload, ub: bytes) -> IndexEntry | Record:
        codec = prepared.codec
        if codec is Codec.ZSTD_BLOCK:
            raise ValueError(f"{prepared.uid!r} is a block member: add its block with add_block")
        if prepared.sha256 is not None or (
            self._sink is not None and prepared.size > self._threshold
        ):
            return self._add_prepared_bigfile(prepared)
        if codec is Codec.ZSTD_DICT and (
            self._dict_crc is None or prepared.dictionary_crc != self._dict_crc
        ):
            raise ValueError(
                f"{prepared.uid!r} was compressed with another dictionary than this shard's"
            )
        stored = prepared.stored
        part, offset = self._write_payload(stored)
        meta, blob = self._intern_meta(prepared.meta, prepared.meta_json)
        uid = prepared.uid
        record = (
            uid,
            prepared.size,
            len(stored),
            codec,
            prepared.checksum,
            offset,
            part,
            False,
            None,
            False,
            meta,
            0,
            ub,
            blob,
        )
        self._entries[uid] = record
        self._added += 1
        return record

    def _add_prepared_bigfile(self, prepared: PreparedPayload) -> IndexEntry:
        if self._sink is None:
            raise ValueError(
                f"{prepared.uid!r} was prepared as a big file but this writer has no bigfile_sink"
            )
        data = prepared.stored
        if prepared.codec is not Codec.NONE:
            from ._codecs import decompress

            data = decompress(
                prepared.codec, prepared.stored, prepared.size, dictionary=self._dictionary
            )
        sha = prepared.sha256 or hashlib.sha256(data).hexdigest()
        self._sink.put_bytes(sha, data)
        return self.add_bigfile(
            prepared.uid,
            sha256=sha,
            size=prepared.size,
            meta=prepared.meta,
            checksum=prepared.checksum,
        )

    def add_block(self, block: PreparedBlock) -> list[IndexEntry]:
        """Add a solid block made by :func:`prepare_block` (possibly in another thread): its
        frame is written once and every member gets an entry pointing at it. Nothing is
        added when a member's uid is already present (``DuplicateUid``)."""
        return [as_entry(r) for r in self._add_block(block)]

    def _add_block(self, block: PreparedBlock) -> list[Record]:
        members = block.members
        seen: set[str] = set()
        uid_bytes: list[bytes] = []
        pos = 0
        for m in members:
            uid_bytes.append(self._check_new(m.uid))
            if m.uid in seen:
                raise DuplicateUid(m.uid)
            seen.add(m.uid)
            if m.codec is not Codec.ZSTD_BLOCK or m.block_offset != pos or m.stored:
                raise ValueError(f"{m.uid!r} is not a member of this block as prepare_block makes")
            pos += m.size
        if pos > MAX_BLOCK_SIZE or not block.stored or not members:
            raise ValueError(
                f"not a solid block: {len(members)} members of {pos} bytes in"
                f" {len(block.stored)} stored"
            )
        declared = _block_frame_size(block.stored)
        if declared != pos:  # readers would refuse members past the end, or the size
            raise ValueError(
                f"not a solid block: its frame declares {declared} bytes, its members hold {pos}"
            )
        part, offset = self._write_payload(block.stored)
        stored_size = len(block.stored)
        records: list[Record] = []
        for m, ub in zip(members, uid_bytes, strict=True):
            meta, blob = self._intern_meta(m.meta, m.meta_json)
            record = (
                m.uid,
                m.size,
                stored_size,
                Codec.ZSTD_BLOCK,
                m.checksum,
                offset,
                part,
                False,
                None,
                False,
                meta,
                m.block_offset,
                ub,
                blob,
            )
            self._entries[m.uid] = record
            records.append(record)
        self._added += len(records)
        return records

    def add_bigfile(
        self,
        uid: str,
        *,
        sha256: str,
        size: int,
        meta: dict[str, Any] | None = None,
        checksum: int | None = None,
        name: str | None = None,
        content_type: str | None = None,
    ) -> IndexEntry:
        """Record a file already stored as a big file under its sha256 (nothing is written
        to the shard but its index entry)."""
        self._check_new(uid)
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        if size < 0:
            raise ValueError("size must be >= 0")
        entry = IndexEntry(
            uid=uid,
            size=size,
            stored_size=size,
            checksum=checksum,
            is_bigfile=True,
            bigfile_hash=sha256,
            meta=self._intern_meta(build_meta(meta, name, content_type))[0],
        )
        self._entries[uid] = entry
        self._added += 1
        if sha256 not in self._bigfiles:
            self._bigfiles.append(sha256)
        return entry

    def add_path(
        self,
        uid: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        content_type: str | None = None,
        meta: dict[str, Any] | None = None,
        codec: str | Codec | None = None,
        level: int | None = None,
    ) -> IndexEntry:
        """Add a file from disk. A big file (with a sink) is hashed and copied in chunks,
        never held in memory; smaller files are read and added like :meth:`add`."""
        self._check_new(uid)
        size = os.stat(path).st_size
        if self._sink is not None and size > self._threshold:
            digest = hash_file(path)
            self._sink.put_file(digest.sha256, path)
            return self.add_bigfile(
                uid,
                sha256=digest.sha256,
                size=digest.size,
                meta=meta,
                checksum=digest.checksum,
                name=name,
                content_type=content_type,
            )
        data = Path(path).read_bytes()
        decide_name = name if name is not None else Path(path).name
        prepared = prepare_payload(
            uid,
            data,
            name=decide_name,
            content_type=content_type,
            meta=meta,
            codec=self._codec if codec is None else codec,
            level=self._level if level is None else level,
            dictionary=self._dictionary,
            dict_max_file_size=self._dict_max,
        )
        if name is None:
            prepared = replace(prepared, meta=build_meta(meta, None, content_type))  # no JSON
        return self.add_prepared(prepared)

    def delete(self, uid: str) -> IndexEntry:
        """Mark ``uid`` deleted (a tombstone; its payload bytes stay until a repack)."""
        if self._closed:
            raise ValueError("this ShardWriter is closed")
        entry = self._entries.get(uid)
        if entry is None:
            raise EntryNotFound(uid, "this shard")
        entry = as_entry(entry)
        if not entry.deleted:
            entry = replace(entry, deleted=True)
            self._entries[uid] = entry
            self._deleted += 1
        return entry

    def add_erased(self, uid: str) -> IndexEntry:
        """Record ``uid`` as an erased tombstone: deleted, with no payload, size, checksum or
        metadata (a repack writes these so reads keep answering "deleted", not "unknown")."""
        if self._closed:
            raise ValueError("this ShardWriter is closed")
        check_uid(uid)
        old = self._entries.get(uid)
        if is_live(old):
            raise DuplicateUid(uid)
        entry = IndexEntry(uid=uid, size=0, stored_size=0, deleted=True)
        self._entries[uid] = entry
        if old is None:
            self._deleted += 1
        return entry

    def copy_stored(self, entry: IndexEntry, stored: bytes) -> IndexEntry:
        """Add a live inline entry of another shard with its stored bytes as they are (no
        recompression): codec, sizes, checksum and metadata are kept, offset and part are
        this writer's. Used by repacks."""
        self._check_new(entry.uid)
        if entry.is_bigfile or entry.deleted:
            raise ValueError(f"copy_stored takes live inline entries, not {entry.uid!r}")
        if len(stored) != entry.stored_size:
            raise ValueError(
                f"{entry.uid!r}: got {len(stored)} stored bytes, the entry says {entry.stored_size}"
            )
        if entry.codec is Codec.ZSTD_DICT and self._dictionary is None:
            raise ValueError(
                f"{entry.uid!r} is compressed with its shard's dictionary; give this writer"
                " the same dictionary (ShardWriter(dictionary=index.dictionary))"
            )
        if entry.codec is Codec.ZSTD_BLOCK:
            raise ValueError(f"{entry.uid!r} is in a solid block: copy it with copy_block")
        part, offset = self._write_payload(stored)
        new = replace(entry, offset=offset, part=part)
        self._entries[entry.uid] = new
        self._added += 1
        return new

    def copy_block(self, entries: Sequence[IndexEntry], stored: bytes) -> list[IndexEntry]:
        """Add live members of one solid block of another shard with the block's stored
        bytes as they are: the block is written once, and each entry keeps its codec, sizes,
        checksum, metadata and block offset, with this writer's offset and part. The block
        goes on holding the bytes of members not given (a repack that drops deleted files
        re-encodes their block instead)."""
        if not entries:
            return []
        first = entries[0]
        for e in entries:
            self._check_new(e.uid)
            if e.codec is not Codec.ZSTD_BLOCK or e.deleted or e.is_bigfile:
                raise ValueError(f"copy_block takes live solid-block members, not {e.uid!r}")
            if (e.part, e.offset, e.stored_size) != (first.part, first.offset, first.stored_size):
                raise ValueError(f"{e.uid!r} is not in the same block as {first.uid!r}")
        if len(stored) != first.stored_size:
            raise ValueError(
                f"block of {first.uid!r}: got {len(stored)} stored bytes, the entry says"
                f" {first.stored_size}"
            )
        part, offset = self._write_payload(stored)
        out = []
        for e in entries:
            new = replace(e, offset=offset, part=part)
            self._entries[e.uid] = new
            out.append(new)
        self._added += len(out)
        return out

    # ---- finishing ----

    def close(self) -> WriteSummary:
        """Write the index, directory and footer to the head object; returns a summary."""
        if self._closed:
            raise ValueError("this ShardWriter is already closed")
        self._closed = True
        self._flush()
        written = write_index(
            self._head,
            self._entries.values(),
            index_offset=self._pos,
            dictionary=self._dictionary,
        )
        index_bytes = written.index_bytes
        head_size = self._pos + index_bytes
        return WriteSummary(
            entry_count=written.entry_count,
            added=self._added,
            deleted=self._deleted,
            data_bytes=self._data_bytes,
            index_bytes=index_bytes,
            head_size=head_size,
            parts=tuple(self._parts),
            bigfiles=tuple(self._bigfiles),
        )
