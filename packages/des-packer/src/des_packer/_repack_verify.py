"""Verifying a rebuilt shard before it is published: every live entry of the old index is
there with the same content (checksums read back), every deleted uid is a tombstone, every
big file it references exists."""

from __future__ import annotations

from pathlib import Path

from des_format import (
    Codec,
    DesFormatError,
    IndexEntry,
    LocalFileSource,
    ObjectStore,
    ShardReader,
    bigfile_key,
)

__all__ = ["verify_rebuilt"]


def verify_rebuilt(  # noqa: PLR0917 - internal step with its full context
    store: ObjectStore,
    key: str,
    head: Path,
    parts: dict[int, Path],
    old: list[IndexEntry],
    bigfiles_prefix: str,
    recoded: dict[str, Codec] | None = None,
) -> None:
    """The rebuilt shard holds every live entry of ``old`` with the same content (checksums
    verified), every deleted uid as a tombstone, and every big file it references exists.
    ``recoded``: the codec written for members of rewritten solid blocks (the others keep
    theirs)."""
    recoded = recoded or {}
    src = LocalFileSource(head)
    reader = ShardReader(src, part_source=lambda n: LocalFileSource(parts[n]))
    try:
        reader.verify(deep=False)
        new = reader.index
        if new.entry_count != len(old):
            raise DesFormatError(
                f"rebuilt {key} has {new.entry_count} entries, the old one {len(old)}"
            )
        for e in old:
            n = new.lookup(e.uid)
            if n is None or n.deleted != e.deleted:
                raise DesFormatError(f"rebuilt {key} lost or changed {e.uid!r}")
            if e.deleted:
                continue
            if e.is_bigfile:
                assert e.bigfile_hash is not None
                info = store.head(bigfile_key(key, e.bigfile_hash, bigfiles_prefix))
                if info.size != e.size:
                    raise DesFormatError(f"big file of {e.uid!r} is {info.size} bytes")
                continue
            codec = recoded.get(e.uid, e.codec)
            if (n.checksum, n.size, n.codec, n.meta) != (e.checksum, e.size, codec, e.meta):
                raise DesFormatError(f"rebuilt {key} changed the entry of {e.uid!r}")
            reader.read_entry(n)  # decompresses and checks the CRC-32
    finally:
        reader.close()
