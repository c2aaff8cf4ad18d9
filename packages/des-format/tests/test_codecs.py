"""Codec registry, the store-raw rule, optional libraries."""

from __future__ import annotations

import sys
import threading

import des_format._codecs as codecs_mod
import pytest
from des_format import (
    Codec,
    CodecNotInstalled,
    CorruptShard,
    ShardWriter,
    UnknownCodec,
    codec_available,
    is_precompressed,
    parse_codec,
    prepare_payload,
)
from des_format._codecs import CODEC_NAMES, compress, decompress, iter_decompress

AVAILABLE_CODECS = [c.label for c in CODEC_NAMES.values() if codec_available(c)]
needs_zstd = pytest.mark.skipif(
    not codec_available(Codec.ZSTD), reason="zstandard is not installed"
)
needs_lz4 = pytest.mark.skipif(not codec_available(Codec.LZ4), reason="lz4 is not installed")

TEXT = b"the quick brown fox jumps over the lazy dog " * 50


def test_parse_codec() -> None:
    assert parse_codec("zstd") is Codec.ZSTD
    assert parse_codec(" LZ4 ") is Codec.LZ4
    assert parse_codec(0) is Codec.NONE
    assert parse_codec(Codec.ZSTD) is Codec.ZSTD
    with pytest.raises(
        UnknownCodec, match="unknown codec 'brotli'; choose one of: none, zstd, lz4"
    ):
        parse_codec("brotli")
    with pytest.raises(UnknownCodec, match="unknown codec id 9"):
        parse_codec(9)
    assert [c.label for c in Codec] == ["none", "zstd", "lz4", "zstd_dict", "zstd_block"]
    # the dictionary codec is chosen by giving a dictionary, never by name
    with pytest.raises(UnknownCodec, match="unknown codec 'zstd_dict'"):
        parse_codec("zstd_dict")
    # and so are solid blocks, by the writer's prepare_block
    with pytest.raises(UnknownCodec, match="unknown codec 'zstd_block'"):
        parse_codec("zstd_block")


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("photo.jpg", None, True),
        ("PHOTO.JPEG", None, True),
        ("dir/archive.tar.gz", None, True),
        ("movie.mov", None, True),
        ("report.pdf", None, True),
        ("notes.txt", None, False),
        ("no-extension", None, False),
        (None, "image/png", True),
        (None, "video/mp4; codecs=avc1", True),
        (None, "application/zip", True),
        (None, "image/svg+xml", False),
        (None, "text/plain", False),
        (None, None, False),
    ],
)
def test_is_precompressed(name: str | None, content_type: str | None, expected: bool) -> None:
    assert is_precompressed(name, content_type) is expected


def test_compressible_payload_is_compressed_and_round_trips(codec_name: str) -> None:
    codec = codec_name
    prepared = prepare_payload("u1", TEXT, codec=codec)
    assert prepared.codec is parse_codec(codec)
    if codec != "none":
        assert len(prepared.stored) < len(TEXT)
    assert decompress(prepared.codec, prepared.stored, len(TEXT)) == TEXT
    assert (
        b"".join(
            iter_decompress(
                prepared.codec, iter([prepared.stored[:7], prepared.stored[7:]]), len(TEXT)
            )
        )
        == TEXT
    )


@needs_zstd
def test_precompressed_name_is_stored_raw_whatever_the_uid() -> None:
    by_name = prepare_payload("u-1", TEXT, name="photo.jpg", codec="zstd")
    assert by_name.codec is Codec.NONE
    assert by_name.stored == TEXT
    by_type = prepare_payload("u-2", TEXT, content_type="image/webp", codec="zstd")
    assert by_type.codec is Codec.NONE
    # A uid that looks like a jpg does not decide anything: the file's own name does.
    by_uid = prepare_payload("cat.jpg", TEXT, codec="zstd")
    assert by_uid.codec is Codec.ZSTD
    via_meta = prepare_payload("u-3", TEXT, meta={"name": "x.zip"}, codec="zstd")
    assert via_meta.codec is Codec.NONE


@needs_zstd
def test_incompressible_payload_is_stored_raw() -> None:
    data = bytes(range(256))
    prepared = prepare_payload("u", data, codec="zstd")
    assert prepared.codec is Codec.NONE
    assert prepared.stored == data


@needs_zstd
def test_zstd_levels_change_output_not_content() -> None:
    data = TEXT + bytes(range(256)) * 8
    fast = prepare_payload("u", data, codec="zstd", level=1)
    best = prepare_payload("u", data, codec="zstd", level=19)
    assert len(best.stored) <= len(fast.stored)
    assert decompress(Codec.ZSTD, best.stored, len(data)) == data


@needs_zstd
def test_zstd_frames_record_content_size() -> None:
    import zstandard

    stored = compress(Codec.ZSTD, TEXT, 3)
    assert zstandard.frame_content_size(stored) == len(TEXT)


@needs_zstd
def test_decompress_checks_size_and_frames() -> None:
    stored = compress(Codec.ZSTD, TEXT, 3)
    with pytest.raises(CorruptShard, match="index says 10"):
        decompress(Codec.ZSTD, stored, 10)
    with pytest.raises(CorruptShard, match="not a valid zstd frame"):
        decompress(Codec.ZSTD, b"garbage!", 10, uid="x")
    with pytest.raises(CorruptShard, match="ends in the middle of a zstd frame"):
        list(iter_decompress(Codec.ZSTD, iter([stored[:-3]]), len(TEXT), uid="x"))


@needs_lz4
def test_lz4_garbage_is_corrupt_shard() -> None:
    with pytest.raises(CorruptShard, match="not a valid lz4 frame"):
        decompress(Codec.LZ4, b"\x04\x22\x4d\x18garbage", 10, uid="x")
    stored = compress(Codec.LZ4, TEXT)
    with pytest.raises(CorruptShard, match="ends in the middle of a lz4 frame"):
        list(iter_decompress(Codec.LZ4, iter([stored[:-5]]), len(TEXT), uid="x"))


@needs_lz4
@pytest.mark.parametrize("store_size", [False, True])
def test_lz4_huge_indexed_size_is_corrupt_not_memory_error(store_size: bool) -> None:
    # A damaged index (legacy shards have no index checksum) may claim a petabyte: the
    # decoder must not try to allocate it.
    import lz4.frame

    frame = lz4.frame.compress(TEXT, store_size=store_size)
    match = "declares" if store_size else f"expands to {len(TEXT)} bytes, index says {1 << 50}"
    with pytest.raises(CorruptShard, match=match):
        decompress(Codec.LZ4, frame, 1 << 50, uid="x")
    # the bounded path still decodes a frame whose size is right
    big = bytes(range(256)) * (300 << 10)  # 75 MiB, above the one-shot limit
    assert decompress(Codec.LZ4, lz4.frame.compress(big, store_size=False), len(big)) == big


@pytest.mark.parametrize(
    ("codec", "module", "extra"),
    [(Codec.ZSTD, "zstandard", "zstd"), (Codec.LZ4, "lz4.frame", "lz4")],
)
def test_missing_library_raises_codec_not_installed(
    monkeypatch: pytest.MonkeyPatch, codec: Codec, module: str, extra: str
) -> None:
    monkeypatch.setattr(codecs_mod, "_modules", {})
    monkeypatch.setattr(codecs_mod, "_local", threading.local())
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(CodecNotInstalled) as info:
        compress(codec, TEXT)
    assert str(info.value) == (
        f"codec '{codec.label}' needs an optional library: pip install \"des-format[{extra}]\""
    )
    assert info.value.extra == extra
    with pytest.raises(CodecNotInstalled):
        decompress(codec, b"x", 1)
    assert codecs_mod.codec_available(codec) is False


def test_writer_with_codec_none_needs_no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(codecs_mod, "_modules", {})
    monkeypatch.setattr(codecs_mod, "_local", threading.local())
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    w.add("a", TEXT)
    w.close()
    with pytest.raises(CodecNotInstalled, match="des-format\\[zstd\\]"):
        ShardWriter(io.BytesIO(), codec="zstd").add("a", TEXT)


def test_thread_local_compressors_are_safe() -> None:
    from concurrent.futures import ThreadPoolExecutor

    payloads = [TEXT + str(i).encode() * 100 for i in range(64)]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda p: prepare_payload("u", p[1], codec=AVAILABLE_CODECS[-1]),
                enumerate(payloads),
            )
        )
    for data, prepared in zip(payloads, results, strict=True):
        assert decompress(prepared.codec, prepared.stored, len(data)) == data


@needs_zstd
def test_a_forged_frame_never_expands_past_its_entry() -> None:
    # 32 KB of zstd that expands to 1 GiB of zeros, with no size in its header, stored
    # for an entry of 2 MiB: stopped within one step past the entry's size, every piece
    # bounded (the old stream expanded the whole gigabyte in one call).
    import zstandard
    from des_format._codecs import STREAM_STEP

    cobj = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    zeros = bytes(16 << 20)
    bomb = b"".join([*(cobj.compress(zeros) for _ in range(64)), cobj.flush()])
    assert len(bomb) < 64 << 10
    sizes: list[int] = []

    def drain() -> None:
        for piece in iter_decompress(Codec.ZSTD, iter([bomb]), 2 << 20, uid="x"):
            sizes.append(len(piece))

    with pytest.raises(CorruptShard, match="expands past its size 2097152"):
        drain()
    assert all(n <= STREAM_STEP for n in sizes)  # may be none: refused within its first slice
    assert sum(sizes) <= 2 << 20


@needs_zstd
@needs_lz4
def test_streamed_pieces_are_bounded_whatever_the_ratio() -> None:
    from des_format._codecs import STREAM_STEP

    text = b"".join(b"line %d of a text that compresses well\n" % i for i in range(200_000))
    for codec in (Codec.ZSTD, Codec.LZ4):
        stored = compress(codec, text)
        assert len(stored) < len(text) // 8
        pieces = list(iter_decompress(codec, iter([stored]), len(text), uid="t"))
        assert b"".join(pieces) == text
        assert max(len(p) for p in pieces) <= STREAM_STEP
