"""An independent reader written from FORMAT.md alone (struct, zlib, hashlib, json; nothing
from des_format), checked against the golden vectors: evidence the spec is complete."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).parent / "vectors" / "golden"


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def spec_lookup(shard: bytes, uid: str) -> dict[str, Any] | None:
    size = len(shard)
    footer = shard[-48:]
    assert footer[:4] == b"DESF"
    assert footer[44:] == b"DESF"
    assert struct.unpack_from("<I", footer, 40)[0] == zlib.crc32(footer[:40])
    major, _minor, index_offset, _count, n, dir_crc, features = struct.unpack_from(
        "<HHQQIII", footer, 4
    )
    assert major == 1
    assert features & ~0x3 == 0  # 0x1 dictionary (section 3.1), 0x2 solid blocks (3.2)
    directory = shard[size - 48 - 8 * n : size - 48]
    assert zlib.crc32(directory) == dir_crc
    dictionary = None
    if features & 0x1:
        dict_size = struct.unpack_from("<I", footer, 36)[0]
        assert 1 <= dict_size <= 16384
        block = shard[size - 48 - 8 * n - dict_size - 4 : size - 48 - 8 * n]
        dictionary = block[:dict_size]
        assert struct.unpack_from("<I", block, dict_size)[0] == zlib.crc32(dictionary)
    uid_b = uid.encode("utf-8")
    h = int.from_bytes(hashlib.blake2b(uid_b, digest_size=8, person=b"DES-idx1").digest(), "big")
    bits = n.bit_length() - 1
    b = h >> (64 - bits) if bits else 0
    end, crc = struct.unpack_from("<II", directory, 8 * b)
    start = struct.unpack_from("<I", directory, 8 * (b - 1))[0] if b else 0
    bucket = shard[index_offset + start : index_offset + end]
    assert zlib.crc32(bucket) == crc
    if not bucket:
        return None
    pos = 0
    n_meta, pos = varint(bucket, pos)
    metas = []
    for _ in range(n_meta):
        ln, pos = varint(bucket, pos)
        metas.append(json.loads(bucket[pos : pos + ln]))
        pos += ln
    count, pos = varint(bucket, pos)
    for _ in range(count):
        ln, pos = varint(bucket, pos)
        this = bucket[pos : pos + ln]
        pos += ln
        flags, pos = varint(bucket, pos)
        e: dict[str, Any] = {"codec": flags & 7, "part": 0, "offset": 0, "sha": None}
        e["dictionary"], e["block_offset"] = dictionary, 0
        assert e["codec"] != 3 or features & 0x1
        assert e["codec"] != 4 or features & 0x2
        if flags & 0x08:
            e["sha"] = bucket[pos : pos + 32].hex()
            pos += 32
            e["size"], pos = varint(bucket, pos)
            e["stored"] = e["size"]
        else:
            e["offset"], pos = varint(bucket, pos)
            e["size"], pos = varint(bucket, pos)
            e["stored"] = e["size"]
            if e["codec"]:
                e["stored"], pos = varint(bucket, pos)
            if e["codec"] == 4:
                e["block_offset"], pos = varint(bucket, pos)
            if flags & 0x20:
                e["part"], pos = varint(bucket, pos)
        e["crc"] = None
        if not flags & 0x80:
            e["crc"] = struct.unpack_from("<I", bucket, pos)[0]
            pos += 4
        e["meta"] = {}
        if flags & 0x40:
            mid, pos = varint(bucket, pos)
            e["meta"] = metas[mid]
        e["deleted"] = bool(flags & 0x10)
        if this == uid_b:
            return e
    return None


def spec_read(name: str, e: dict[str, Any]) -> bytes:
    data: bytes
    if e["sha"] is not None:
        data = (GOLDEN / "_bigFiles" / e["sha"]).read_bytes()
    else:
        obj = name if e["part"] == 0 else name[:-4] + f".p{e['part']}.des"
        raw = (GOLDEN / obj).read_bytes()
        if e["part"]:
            assert raw[:4] == b"DESP"
            assert struct.unpack_from("<I", raw, 8)[0] == e["part"]
        stored = raw[e["offset"] : e["offset"] + e["stored"]]
        if e["codec"] == 0:
            data = stored
        elif e["codec"] == 1:
            zstd = pytest.importorskip("zstandard")
            data = zstd.ZstdDecompressor().decompress(stored)
        elif e["codec"] == 3:  # section 3.1: the shard dictionary, type detected automatically
            zstd = pytest.importorskip("zstandard")
            zdict = zstd.ZstdCompressionDict(e["dictionary"], dict_type=zstd.DICT_TYPE_AUTO)
            data = zstd.ZstdDecompressor(dict_data=zdict).decompress(stored)
        elif e["codec"] == 4:  # section 3.2: one frame of the whole block; cut the member out
            zstd = pytest.importorskip("zstandard")
            declared = zstd.frame_content_size(stored)
            assert e["block_offset"] + e["size"] <= declared <= 4 << 20
            block = zstd.ZstdDecompressor().decompressobj().decompress(stored)  # stops at the end
            assert len(block) == declared  # of the frame: anything after it is ignored
            data = block[e["block_offset"] : e["block_offset"] + e["size"]]
        else:
            assert e["codec"] == 2, f"codec {e['codec']} is reserved"
            lz4f = pytest.importorskip("lz4.frame")
            data = lz4f.decompress(stored)
    assert len(data) == e["size"]
    if e["crc"] is not None:
        assert zlib.crc32(data) == e["crc"]
    return data


@pytest.mark.parametrize(
    "name",
    [
        "basic-none.des",
        "mixed-zstd.des",
        "lz4.des",
        "many.des",
        "bigfile.des",
        "rollover.des",
        "appended.des",
        "empty.des",
        "dictionary.des",
        "blocks.des",
    ],
)
def test_reader_from_the_spec_alone(name: str) -> None:
    expected = json.loads((GOLDEN / "expected.json").read_text(encoding="utf-8"))[name]
    shard = (GOLDEN / name).read_bytes()
    header = shard[:16]
    assert header[:4] == b"DESF"
    assert struct.unpack_from("<I", header, 12)[0] == zlib.crc32(header[:12])
    for want in expected["entries"]:
        e = spec_lookup(shard, want["uid"])
        assert e is not None
        assert e["block_offset"] == want.get("block_offset", 0)
        assert (e["size"], e["stored"], e["offset"], e["part"], e["deleted"], e["meta"]) == (
            want["size"],
            want["stored_size"],
            want["offset"],
            want["part"],
            want["deleted"],
            want["meta"],
        )
        assert hashlib.sha256(spec_read(name, e)).hexdigest() == want["sha256"]
    assert spec_lookup(shard, "no-such-uid") is None
