"""The worker side of packing: read, checksum and compress work items (any thread).

A work item (``_blocks.WorkItem``) is one file or one solid block. :class:`Preparer` turns it
into what the writer adds to a shard: a ``PreparedPayload``, a :class:`BlockResult` (the
solid block and the members prepared alone), a :class:`StagedBigFile` (a big file streamed
to a staging file, never held whole), or an ``EntryFailed`` for a bad entry. zstd and the
CRC-32 release the GIL, so a pool of threads runs them in parallel; the Python per file is
kept to the few calls each result needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from des_format import (
    PreparedBlock,
    PreparedPayload,
    build_meta,
    parse_codec,
    prepare_block,
    prepare_payload,
)

from ._blocks import Block, WorkItem, source_name
from ._dest import Destination
from ._errors import EntryFailed
from ._manifest import ManifestEntry
from ._options import PackOptions
from ._sources import SourceReader

__all__ = ["BlockResult", "Preparer", "StagedBigFile", "discard_staged"]

_BIGFILE_COST = 1 << 20  # in-flight budget charged for a big file (streamed in 1 MiB chunks)


@dataclass(frozen=True, slots=True)
class StagedBigFile:
    """A big file copied to a staging file, with its digests."""

    path: Path
    sha256: str
    checksum: int
    size: int


@dataclass(frozen=True, slots=True)
class BlockResult:
    """What a worker made of a block: the results of ``prepare_block`` (the solid block
    first, if any, then the members prepared alone) and the members that failed."""

    prepared: list[PreparedPayload | PreparedBlock]
    failed: list[tuple[ManifestEntry, EntryFailed]]


def discard_staged(results: Iterable[Any]) -> None:
    """Remove the staging files of big files that will not be published."""
    for res in results:
        if isinstance(res, StagedBigFile):
            res.path.unlink(missing_ok=True)


def _meta_of(entry: ManifestEntry) -> dict[str, Any]:
    """The metadata stored for ``entry`` (as ``build_meta`` makes it; checked when the
    manifest gives extra fields, built directly when only name and content type)."""
    name = source_name(entry.source)
    if entry.meta:
        return build_meta(dict(entry.meta), name, entry.content_type)
    meta: dict[str, Any] = {}
    if name is not None:
        meta["name"] = name
    if entry.content_type is not None:
        meta["content_type"] = entry.content_type
    return meta


class Preparer:
    """Prepares work items for one destination with one set of options; thread-safe."""

    def __init__(self, dest: Destination, options: PackOptions, sources: SourceReader) -> None:
        self.dest = dest
        self.opts = options
        self.sources = sources
        self._threshold = options.big_file_threshold
        self._codec = parse_codec(options.codec)

    def cost(self, item: WorkItem) -> int:
        """Bytes an item holds in memory between its read and its write."""
        if type(item) is Block:
            return max(item.size_bytes, 1)
        size = item.size_bytes
        if size > self._threshold:
            return _BIGFILE_COST
        return size or 1

    def prepare(self, shard_key: str, dictionary: bytes | None, item: WorkItem) -> Any:
        """One item's result (see the module); ``EntryFailed`` raised for a bad file."""
        if type(item) is Block:
            return self._prepare_block(item)
        assert isinstance(item, ManifestEntry)
        if item.size_bytes > self._threshold:
            staged = self.dest.stage_path(shard_key)
            try:
                with staged.open("wb") as out:
                    sha, crc = self.sources.copy_to(item, out)
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            return StagedBigFile(staged, sha, crc, item.size_bytes)
        data = self.sources.read(item)
        opts = self.opts
        try:
            return prepare_payload(
                item.uid,
                data,
                name=source_name(item.source),
                content_type=item.content_type,
                meta=dict(item.meta) if item.meta else None,
                codec=self._codec,
                level=opts.level,
                dictionary=dictionary,
                dict_max_file_size=opts.dict_max_file_size,
            )
        except (ValueError, TypeError) as exc:  # e.g. meta that is not plain JSON values
            raise EntryFailed(item.uid, f"cannot pack this entry: {exc}") from None

    def _prepare_block(self, block: Block) -> BlockResult:
        """Read the members of a block (each checked like a single file), then compress them
        together. A member that fails is left out (``on_error="skip"``: the block is made of
        the others) or ends the block (``"fail"``: the writer stops at it)."""
        skip = self.opts.on_error == "skip"
        read = self.sources.read
        members: list[ManifestEntry] = []
        files: list[tuple[str, bytes, dict[str, Any]]] = []
        failed: list[tuple[ManifestEntry, EntryFailed]] = []
        for entry in block.entries:
            try:
                files.append((entry.uid, read(entry), _meta_of(entry)))
            except EntryFailed as exc:
                failed.append((entry, exc))
            except (ValueError, TypeError) as exc:  # e.g. meta that is not plain JSON values
                failed.append((entry, EntryFailed(entry.uid, f"cannot pack this entry: {exc}")))
            else:
                members.append(entry)
                continue
            if not skip:
                return BlockResult([], failed)
        prepared: list[PreparedPayload | PreparedBlock] = []
        try:
            prepared = prepare_block(files, level=self.opts.level)
        except (ValueError, TypeError):  # e.g. a uid the format refuses: each file alone
            for entry, (uid, data, meta) in zip(members, files, strict=True):
                try:
                    prepared.append(
                        prepare_payload(uid, data, meta=meta, codec="zstd", level=self.opts.level)
                    )
                except (ValueError, TypeError) as exc:
                    failed.append((entry, EntryFailed(uid, f"cannot pack this entry: {exc}")))
                    if not skip:
                        return BlockResult([], failed)
        return BlockResult(prepared, failed)

    def prepare_batch(self, work: list[tuple[str, bytes | None, WorkItem]]) -> list[Any]:
        """:meth:`prepare` for consecutive items (``(shard key, dictionary, item)``): their
        results in order, an ``EntryFailed`` in place of an entry that failed."""
        out: list[Any] = []
        prepare = self.prepare
        try:
            for key, dictionary, item in work:
                try:
                    out.append(prepare(key, dictionary, item))
                except EntryFailed as exc:
                    out.append(exc)
        except BaseException:
            discard_staged(out)
            raise
        return out
