"""Hostile shards: truncated, bit-flipped and forged ones (an index with valid CRCs that points
outside the object, sizes near 2**64, codec frames that lie about their size). Every read ends
with the original bytes or a typed ``DesFormatError``; nothing else escapes, nothing allocates
what the index claims before the bytes prove it."""

from __future__ import annotations

import io
import random
import zlib
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from des_format import (
    BytesSource,
    ChecksumMismatch,
    Codec,
    CorruptShard,
    DesFormatError,
    IndexEntry,
    LocalObjectStore,
    ObjectNotFound,
    RangeNotSatisfiable,
    ShardReader,
    ShardRetriever,
    ShardWriter,
)
from des_format._index import serialize_bucket
from des_format._layout import DIR_ENTRY, serialize_footer, serialize_header

KEY = "20240101/00.des"


def forge_shard(payload: bytes, entries: list[IndexEntry]) -> bytes:
    """A version-1 shard whose one-bucket index holds ``entries`` exactly as given, with every
    CRC (bucket, directory, footer) valid: only the values are hostile."""
    head = serialize_header(0) + payload
    bucket = serialize_bucket(sorted(((e.uid.encode(), e) for e in entries), key=lambda t: t[0]))
    directory = DIR_ENTRY.pack(len(bucket), zlib.crc32(bucket))
    footer = serialize_footer(
        index_offset=len(head),
        entry_count=len(entries),
        bucket_count=1,
        directory_crc=zlib.crc32(directory),
    )
    return head + bucket + directory + footer


def read_both(tmp_path: Path, blob: bytes, uid: str) -> list[BaseException | bytes]:
    """Read ``uid`` through ShardReader (bytes) and ShardRetriever (local store)."""
    (tmp_path / KEY).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / KEY).write_bytes(blob)
    results: list[BaseException | bytes] = []
    for read in (
        lambda: ShardReader(BytesSource(blob)).read(uid),
        lambda: ShardRetriever(LocalObjectStore(tmp_path)).read(KEY, uid),
        lambda: b"".join(ShardRetriever(LocalObjectStore(tmp_path)).open(KEY, uid).iter_bytes()),
    ):
        try:
            results.append(read())
        except DesFormatError as exc:
            results.append(exc)
    return results


DATA = b"abc"
CRC = zlib.crc32(DATA)
ZSTD_UNSIZED = zstandard.ZstdCompressor(write_content_size=False).compress(DATA * 10)
ZSTD_SIZED = zstandard.ZstdCompressor(write_content_size=True).compress(DATA * 10)
LZ4_SIZED = lz4.frame.compress(DATA * 10, store_size=True)


@pytest.mark.parametrize(
    ("payload", "entry", "error"),
    [
        pytest.param(
            DATA,
            IndexEntry("a", 3, 3, offset=10**6, checksum=CRC),
            RangeNotSatisfiable,
            id="offset-past-end",
        ),
        pytest.param(
            DATA,
            IndexEntry("a", 3, 3, offset=2**63, checksum=CRC),
            RangeNotSatisfiable,
            id="offset-2**63",
        ),
        pytest.param(
            DATA,
            IndexEntry("a", 2**64 - 1, 2**64 - 1, offset=16, checksum=CRC),
            RangeNotSatisfiable,
            id="size-2**64-1",
        ),
        pytest.param(
            DATA,
            IndexEntry("a", 30, 30, offset=16, checksum=CRC),
            ChecksumMismatch,
            id="payload-overlaps-index",
        ),
        pytest.param(
            ZSTD_UNSIZED,
            IndexEntry("a", 2**62, len(ZSTD_UNSIZED), codec=Codec.ZSTD, offset=16, checksum=CRC),
            CorruptShard,
            id="zstd-unsized-frame-huge-index-size",
        ),
        pytest.param(
            ZSTD_UNSIZED,
            IndexEntry("a", 2**33, len(ZSTD_UNSIZED), codec=Codec.ZSTD, offset=16, checksum=CRC),
            CorruptShard,
            id="zstd-unsized-frame-8GiB-index-size",
        ),
        pytest.param(
            ZSTD_SIZED,
            IndexEntry("a", 3, len(ZSTD_SIZED), codec=Codec.ZSTD, offset=16, checksum=CRC),
            CorruptShard,
            id="zstd-frame-declares-more-than-index",
        ),
        pytest.param(
            LZ4_SIZED,
            IndexEntry("a", 3, len(LZ4_SIZED), codec=Codec.LZ4, offset=16, checksum=CRC),
            CorruptShard,
            id="lz4-frame-declares-more-than-index",
        ),
        pytest.param(
            DATA,
            IndexEntry("a", 3, 3, offset=16, part=7, checksum=CRC),
            ObjectNotFound,
            id="missing-continuation-part",
        ),
    ],
)
def test_forged_index_gives_a_typed_error(
    tmp_path: Path, payload: bytes, entry: IndexEntry, error: type[DesFormatError]
) -> None:
    blob = forge_shard(payload, [entry])
    results = read_both(tmp_path, blob, "a")
    # ShardReader without a part source says so; the retriever looks for the part object.
    expected = [DesFormatError if entry.part else error, error, error]
    assert [type(r) for r in results] == expected


def test_bounded_decompression_of_a_lying_lz4_frame(tmp_path: Path) -> None:
    """An lz4 frame without a stored size that expands to 200 MiB while the index says 100:
    refused after at most 101 bytes of output (before: the whole 200 MiB was expanded)."""
    bomb = lz4.frame.compress(b"\0" * (200 << 20), store_size=False)
    entry = IndexEntry("a", 100, len(bomb), codec=Codec.LZ4, offset=16, checksum=CRC)
    results = read_both(tmp_path, forge_shard(bomb, [entry]), "a")
    assert [type(r) for r in results] == [CorruptShard, CorruptShard, CorruptShard]
    assert str(results[0]) == "payload of 'a' expands to 101 bytes, index says 100"


def _good_shard(seed: int) -> tuple[bytes, dict[str, bytes]]:
    rnd = random.Random(seed)
    files = {f"u{i}": rnd.randbytes(rnd.randint(0, 400)) for i in range(rnd.randint(1, 30))}
    files.update({f"t{i}": b"text %d " % i * rnd.randint(1, 50) for i in range(5)})
    out = io.BytesIO()
    w = ShardWriter(out, codec=rnd.choice(["none", "zstd", "lz4"]))
    for uid, data in sorted(files.items()):
        w.add(uid, data, name=f"{uid}.txt")
    w.close()
    return out.getvalue(), files


def _read_all(blob: bytes, files: dict[str, bytes]) -> int:
    """Read every uid; assert each answer is the original bytes or a DesFormatError."""
    ok = 0
    try:
        reader = ShardReader(BytesSource(blob))
    except DesFormatError:
        return 0
    for uid, data in files.items():
        try:
            got = reader.read(uid)
        except DesFormatError:
            continue
        assert got == data, uid
        ok += 1
    return ok


def test_every_truncation_is_an_error_or_right_bytes() -> None:
    blob, files = _good_shard(1)
    for n in range(len(blob)):
        _read_all(blob[:n], files)
    assert _read_all(blob, files) == len(files)


def test_every_single_bit_flip_in_index_and_footer_is_caught() -> None:
    """Flip each bit of the index area, directory and footer: no wrong bytes, ever."""
    blob, files = _good_shard(2)
    index_offset = int.from_bytes(blob[-40:-32], "little")  # footer bytes 8..16
    assert 16 < index_offset < len(blob) - 48
    for pos in range(index_offset, len(blob)):
        for bit in range(8):
            mutated = bytearray(blob)
            mutated[pos] ^= 1 << bit
            _read_all(bytes(mutated), files)


def test_random_bit_flips_in_payloads_never_give_wrong_bytes() -> None:
    rnd = random.Random(3)
    for seed in range(20):
        blob, files = _good_shard(seed)
        for _ in range(50):
            mutated = bytearray(blob)
            for _ in range(rnd.randint(1, 3)):
                mutated[rnd.randrange(16, len(blob))] ^= 1 << rnd.randrange(8)
            _read_all(bytes(mutated), files)
