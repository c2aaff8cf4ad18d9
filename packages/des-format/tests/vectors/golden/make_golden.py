"""Recipes of the golden vectors: each builds one shard (and its parts / big files) in memory.

Run ``uv run python packages/des-format/tests/vectors/golden/make_golden.py`` to (re)write the
files and expected.json; the tests rebuild every recipe and compare byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

from des_format import BytesSource, Codec, PreparedBlock, ShardWriter, prepare_block, read_index

Files = dict[str, bytes]  # relative path -> bytes


def text(seed: str, n: int) -> bytes:
    """Deterministic compressible text of n bytes."""
    words = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:6] for i in range(40)]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += words[(i * 7) % 40].encode() + b" "
        i += 1
    return bytes(out[:n])


def noise(seed: str, n: int) -> bytes:
    """Deterministic incompressible bytes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


class _Sink:
    def __init__(self, files: Files, prefix: str) -> None:
        self.files = files
        self.prefix = prefix

    def put_bytes(self, sha256: str, data: bytes) -> None:
        self.files[f"{self.prefix}/{sha256}"] = data

    def put_file(self, sha256: str, path: object) -> None:
        raise NotImplementedError


def basic_none() -> Files:
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    w.add("doc-000001", text("doc", 300), content_type="application/json", name="doc.json")
    w.add("42", b"numeric uid\n")
    w.add("empty-file", b"")
    w.add("zażółć-ünïcode", "Zażółć gęślą jaźń\n".encode(), meta={"lang": "pl"})
    w.add("photo-7.jpg", noise("jpg", 64), content_type="image/jpeg")
    w.close()
    return {"basic-none.des": out.getvalue()}


def mixed_zstd() -> Files:
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd", level=3)
    w.add("a-text", text("a", 2000), content_type="text/plain")
    w.add("b-photo", text("b", 2000), name="holiday.JPG")  # raw: name says compressed
    w.add("c-noise", noise("c", 500))  # raw: zstd would not make it smaller
    w.add("d-level9", text("d", 1500), level=9, content_type="text/plain")
    w.add("e-lz4-override", text("e", 1500), codec="lz4")
    w.close()
    return {"mixed-zstd.des": out.getvalue()}


def lz4_only() -> Files:
    out = io.BytesIO()
    w = ShardWriter(out, codec="lz4")
    for i in range(5):
        w.add(f"log-{i}", text(f"log{i}", 800 + i * 100), meta={"n": i})
    w.close()
    return {"lz4.des": out.getvalue()}


def empty() -> Files:
    out = io.BytesIO()
    ShardWriter(out).close()
    return {"empty.des": out.getvalue()}


def many_buckets() -> Files:
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    for i in range(260):
        w.add(f"item-{i:05d}", f"payload {i}\n".encode(), content_type="text/plain")
    w.close()
    return {"many.des": out.getvalue()}


def bigfile() -> Files:
    files: Files = {}
    out = io.BytesIO()
    w = ShardWriter(
        out, codec="zstd", big_file_threshold=1024, bigfile_sink=_Sink(files, "_bigFiles")
    )
    w.add("small", text("small", 500))
    w.add("large", noise("large", 3000), content_type="application/octet-stream")
    w.add_bigfile(
        "by-hash",
        sha256=hashlib.sha256(noise("byhash", 2000)).hexdigest(),
        size=2000,
    )
    files["_bigFiles/" + hashlib.sha256(noise("byhash", 2000)).hexdigest()] = noise("byhash", 2000)
    w.close()
    files["bigfile.des"] = out.getvalue()
    return files


def rollover() -> Files:
    files: Files = {}
    parts: dict[int, io.BytesIO] = {}

    def open_part(n: int) -> io.BytesIO:
        parts[n] = io.BytesIO()
        return parts[n]

    out = io.BytesIO()
    w = ShardWriter(out, codec="none", max_size=600, open_part=open_part)
    for i in range(6):
        w.add(f"r{i}", noise(f"r{i}", 250))
    w.close()
    for n, buf in parts.items():
        files[f"rollover.p{n}.des"] = buf.getvalue()
    files["rollover.des"] = out.getvalue()
    return files


def appended() -> Files:
    base = io.BytesIO()
    w = ShardWriter(base, codec="none")
    w.add("first", b"first file\n")
    w.add("second", b"second file\n")
    w.add("third", b"third file\n")
    w.close()
    old = base.getvalue()
    tail = io.BytesIO()
    w = ShardWriter(tail, codec="none", base_offset=len(old), existing=read_index(BytesSource(old)))
    w.add("late", b"a late file\n", meta={"late": True})
    w.delete("second")
    w.close()
    return {"appended-base.des": old, "appended.des": old + tail.getvalue()}


def dictionary() -> Files:
    """A shard with a zstd dictionary (footer feature 0x1). The dictionary is raw content
    (not trained), so the vector does not depend on zstd's trainer."""
    dict_bytes = text("rec", 2048)
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd", dictionary=dict_bytes, dict_max_file_size=4096)
    w.add("rec-0001", text("rec", 300), content_type="text/plain")
    w.add("rec-0002", text("rec", 900)[200:], content_type="text/plain")
    w.add("rec-big", text("rec", 6000))  # over 4096 bytes: plain zstd
    w.add("photo.jpg", noise("photo", 500), name="photo.jpg")  # precompressed: raw
    w.add("empty", b"")
    w.close()
    return {"dictionary.des": out.getvalue()}


def blocks() -> Files:
    """Solid blocks (footer feature 0x2): two blocks of text members with different content
    types (members at non-zero block offsets), a file stored alone with codec 1, a raw
    ``.jpg`` and an empty file."""
    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd")
    notes = [
        (f"note-{i}", text("note", 400 + 150 * i), {"content_type": "text/plain"}) for i in range(3)
    ]
    records = [
        (f"rec-{i}.json", text("json", 300 + 100 * i), {"content_type": "application/json"})
        for i in range(2)
    ]
    for group in (notes, records):
        for item in prepare_block(group):
            assert isinstance(item, PreparedBlock)  # every member is compressible text
            w.add_block(item)
    w.add("alone", text("alone", 3000), content_type="text/plain")  # codec 1
    w.add("photo.jpg", noise("photo", 400), name="photo.jpg")  # precompressed: raw
    w.add("empty", b"")
    w.close()
    return {"blocks.des": out.getvalue()}


RECIPES: dict[str, Callable[[], Files]] = {
    "basic-none": basic_none,
    "mixed-zstd": mixed_zstd,
    "lz4": lz4_only,
    "empty": empty,
    "many": many_buckets,
    "bigfile": bigfile,
    "rollover": rollover,
    "appended": appended,
    "dictionary": dictionary,
    "blocks": blocks,
}
NEEDS = {
    "mixed-zstd": ("zstd", "lz4"),
    "lz4": ("lz4",),
    "bigfile": ("zstd",),
    "dictionary": ("zstd",),
    "blocks": ("zstd",),
}
# shards (head objects) described in expected.json
SHARDS = [
    "basic-none.des",
    "mixed-zstd.des",
    "lz4.des",
    "empty.des",
    "many.des",
    "bigfile.des",
    "rollover.des",
    "appended.des",
    "dictionary.des",
    "blocks.des",
]


def describe(files: Files, shard: str) -> dict[str, object]:
    from des_format import ShardReader

    def part(n: int) -> BytesSource:
        return BytesSource(files[shard[:-4] + f".p{n}.des"])

    def big(sha: str) -> BytesSource:
        return BytesSource(files[f"_bigFiles/{sha}"])

    reader = ShardReader(BytesSource(files[shard]), part, big)
    entries = []
    for e in reader.iter_entries():
        data = reader.read_entry(e)
        entries.append(
            {
                "uid": e.uid,
                "size": e.size,
                "stored_size": e.stored_size,
                "codec": e.codec.label,
                "crc32": None if e.checksum is None else f"{e.checksum:08x}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "offset": e.offset,
                "part": e.part,
                "bigfile": e.is_bigfile,
                "deleted": e.deleted,
                "meta": e.meta,
            }
        )
        if e.codec is Codec.ZSTD_BLOCK:  # only block members carry a block offset
            entries[-1]["block_offset"] = e.block_offset
    info: dict[str, object] = {
        "object_size": len(files[shard]),
        "sha256": hashlib.sha256(files[shard]).hexdigest(),
        "bucket_count": reader.index.bucket_count,
        "index_offset": reader.index.index_offset,
    }
    if reader.index.features:
        info["features"] = reader.index.features
    if reader.index.dictionary is not None:
        info["dictionary_size"] = len(reader.index.dictionary)
        info["dictionary_sha256"] = hashlib.sha256(reader.index.dictionary).hexdigest()
    info["entries"] = entries
    return info


def serialize_expected(expected: dict[str, dict[str, object]]) -> str:
    """JSON with one line per entry (compact, diff-friendly)."""

    def dump(obj: object) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))

    lines = ["{"]
    for i, (shard, info) in enumerate(expected.items()):
        lines.append(f"  {dump(shard)}: {{")
        for key, value in info.items():
            if key != "entries":
                lines.append(f"    {dump(key)}: {dump(value)},")
        entries = info["entries"]
        assert isinstance(entries, list)
        lines.append('    "entries": [')
        lines += [f"      {dump(e)}," for e in entries]
        if entries:
            lines[-1] = lines[-1].rstrip(",")
        lines.append("    ]")
        lines.append("  }" + ("," if i < len(expected) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    here = Path(__file__).parent
    everything: Files = {}
    for build in RECIPES.values():
        everything.update(build())
    for rel, data in everything.items():
        path = here / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    expected = {shard: describe(everything, shard) for shard in SHARDS}
    (here / "expected.json").write_text(serialize_expected(expected), encoding="utf-8")
    print(f"wrote {len(everything)} files to {here}", file=sys.stderr)


if __name__ == "__main__":
    main()
