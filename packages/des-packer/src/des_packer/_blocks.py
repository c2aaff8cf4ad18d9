"""Solid blocks (``des-pack --block-size``): which files of a shard are compressed together.

Pure code, no I/O: :func:`plan_work` maps a shard's entries (in the order the packer adds
them, by uid) to an ordered list of work items, each a single file or a :class:`Block` of
files compressed as one zstd frame. The same entries and options always give the same items,
so reruns and ``--shard-range`` splits write byte-identical shards.

The rule: a file is eligible when its manifest size is above 0 and at most ``member_max``,
at most the big-file threshold, and it is not already compressed
(``des_format.is_precompressed`` on its file name and content type). Eligible files are
grouped by :func:`group_of` (content type and file name extension), one open block per
group; a file that would take its group's open block past ``block_size`` bytes
emits that block first (at that file's place in the order). Open blocks are emitted at the
end of the shard, in the order of their first members. A block of one file is emitted as a
single file. Other files are single items at their own place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from des_format import is_precompressed

from ._manifest import ManifestEntry

__all__ = ["Block", "WorkItem", "group_of", "is_block_eligible", "plan_work"]


@dataclass(frozen=True, slots=True)
class Block:
    """Files (two or more, in uid order) to compress together as one solid block."""

    entries: tuple[ManifestEntry, ...]

    @property
    def size_bytes(self) -> int:
        """The members' manifest bytes (the block's decompressed size when all are read)."""
        return sum(e.size_bytes for e in self.entries)


WorkItem = ManifestEntry | Block


def source_name(source: str) -> str | None:
    """The file name of a source path or ``s3://`` URI (``PurePosixPath(source).name``), or
    None when it has none."""
    base = source.rpartition("/")[2]
    if base and base != ".":
        return base
    return PurePosixPath(source).name or None


def group_of(entry: ManifestEntry) -> tuple[str, str]:
    """The block group of a file: ``(content type, extension)``, the manifest's content type
    lowercased without parameters such as ``; charset=utf-8`` (``""`` when not given) and
    the file name's lowercased extension without the dot (``""`` when it has none).

    Both count: files of one content type but different extensions (``.txt`` and ``.log``,
    both ``text/plain``) are usually written by different programs and compress better
    apart. On the benchmark data set (docs/bench/packer.md) this gives 924.0 MB at 128 KiB
    blocks, the content type alone 924.8 MB, no grouping 926.7 MB."""
    ctype = (entry.content_type or "").split(";", 1)[0].strip().lower()
    name = source_name(entry.source) or ""
    _, dot, ext = name.rpartition(".")
    return ctype, ext.lower() if dot else ""


def is_block_eligible(entry: ManifestEntry, *, member_max: int, big_file_threshold: int) -> bool:
    """Whether a file may go into a solid block (see the module's rule)."""
    size = entry.size_bytes
    if not 0 < size <= member_max or size > big_file_threshold:
        return False
    return not is_precompressed(source_name(entry.source), entry.content_type)


def plan_work(
    entries: Iterable[ManifestEntry],
    *,
    block_size: int,
    member_max: int,
    big_file_threshold: int,
) -> list[WorkItem]:
    """The work items of one shard, in order: every entry exactly once, either alone or in
    one :class:`Block` (``block_size`` 0: every entry alone, in the order given)."""
    if block_size <= 0:
        return list(entries)
    items: list[WorkItem | list[ManifestEntry]] = []
    # group -> its open block: (position of its first member, members, their bytes)
    open_blocks: dict[tuple[str, str], tuple[int, list[ManifestEntry], int]] = {}
    for position, entry in enumerate(entries):
        if not is_block_eligible(
            entry, member_max=member_max, big_file_threshold=big_file_threshold
        ):
            items.append(entry)
            continue
        group = group_of(entry)
        current = open_blocks.get(group)
        if current is not None and current[2] + entry.size_bytes > block_size:
            items.append(current[1])  # emitted here, before the file that would not fit
            current = None
        if current is None:
            current = (position, [], 0)
        current[1].append(entry)
        open_blocks[group] = (current[0], current[1], current[2] + entry.size_bytes)
    items.extend(members for _first, members, _size in sorted(open_blocks.values()))
    return [
        (Block(tuple(item)) if len(item) > 1 else item[0]) if isinstance(item, list) else item
        for item in items
    ]
