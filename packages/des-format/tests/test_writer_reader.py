"""Writer and reader round trips: metadata, big files, rollover, appends, tombstones."""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from des_format import (
    BytesSource,
    ChecksumMismatch,
    Codec,
    CorruptShard,
    DesFormatError,
    DuplicateUid,
    EntryDeleted,
    EntryNotFound,
    IndexEntry,
    LocalBigFileSink,
    ShardReader,
    ShardWriter,
    hash_file,
    part_key,
    prepare_payload,
    read_index,
)

TEXT = b"lorem ipsum dolor sit amet " * 40


class WriteOnly(io.RawIOBase):
    """A stream that only accepts writes (no seek, no read) and records their sizes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        data = bytes(b)  # type: ignore[call-overload]
        self.chunks.append(data)
        return len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def test_round_trip_with_metadata(codec_name: str) -> None:
    out = io.BytesIO()
    w = ShardWriter(out, codec=codec_name)
    e1 = w.add("doc-1", TEXT, name="doc.txt", content_type="text/plain")
    e2 = w.add("doc-2", b"", meta={"owner": "ana", "tags": ["a", "b"]})
    e3 = w.add("ünï", TEXT[:100], meta={"content_type": "text/csv", "name": "x.csv"})
    summary = w.close()
    assert summary.entry_count == 3
    assert summary.added == 3
    assert summary.head_size == len(out.getvalue())
    reader = ShardReader(BytesSource(out.getvalue()))
    assert reader.read("doc-1") == TEXT
    assert reader.read("doc-2") == b""
    assert reader.read("ünï") == TEXT[:100]
    assert reader.lookup("doc-1") == e1
    assert reader.lookup("doc-2") == e2
    assert reader.lookup("ünï") == e3
    assert e1.meta == {"name": "doc.txt", "content_type": "text/plain"}
    assert e1.content_type == "text/plain"
    assert e1.name == "doc.txt"
    assert e1.checksum == zlib.crc32(TEXT)
    assert e1.etag == f'"des-{zlib.crc32(TEXT):08x}-{len(TEXT):x}"'
    assert e2.content_type is None
    assert reader.lookup("missing") is None
    assert reader.verify() == 3


def test_payloads_are_streamed_not_held() -> None:
    sink = WriteOnly()
    w = ShardWriter(sink, codec="none")  # type: ignore[arg-type]
    assert sink.data == w_header(sink)
    added = 0
    for i in range(3000):
        w.add(f"u{i}", bytes([i % 256]) * 1000)
        added += 1000
        # payloads reach the stream in writes of about 1 MiB: never more than that is held
        held = 16 + added - sum(len(c) for c in sink.chunks)
        assert 0 <= held < 1 << 20
    big = b"B" * (300 << 10)
    w.add("big", big)  # a large payload goes out at once, after the small ones before it
    assert len(sink.data) == 16 + added + len(big)
    w.close()
    reader = ShardReader(BytesSource(sink.data))
    assert reader.read("u3") == bytes([3]) * 1000
    assert reader.read("big") == big


def w_header(sink: WriteOnly) -> bytes:
    assert len(sink.chunks) == 1
    return sink.chunks[0]


def test_duplicate_uid_is_refused() -> None:
    w = ShardWriter(io.BytesIO(), codec="none")
    w.add("same", b"1")
    with pytest.raises(DuplicateUid, match="uid 'same' is already in this shard") as info:
        w.add("same", b"2")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DesFormatError)


@pytest.mark.parametrize("uid", ["", "\ud800", "x" * 5000])
def test_invalid_uids_are_refused(uid: str) -> None:
    w = ShardWriter(io.BytesIO(), codec="none")
    with pytest.raises(ValueError, match="uid"):
        w.add(uid, b"1")


def test_metadata_must_be_json() -> None:
    w = ShardWriter(io.BytesIO(), codec="none")
    with pytest.raises(ValueError, match="metadata must be a JSON object"):
        w.add("u", b"1", meta={"when": object()})


def test_identical_input_gives_identical_bytes(
    build_shard: Callable[..., bytes], codec_name: str
) -> None:
    files = {f"f{i}": TEXT[: i * 13] for i in range(50)}
    first = build_shard(files, codec=codec_name)
    assert build_shard(dict(files), codec=codec_name) == first
    assert build_shard(dict(reversed(files.items())), codec=codec_name) != first  # order counts


def test_shared_metadata_is_stored_once_per_bucket() -> None:
    out_shared = io.BytesIO()
    w = ShardWriter(out_shared, codec="none")
    for i in range(100):
        w.add(f"u{i:03d}", b"x", content_type="application/vnd.example.long-type+json")
    w.close()
    out_none = io.BytesIO()
    w = ShardWriter(out_none, codec="none")
    for i in range(100):
        w.add(f"u{i:03d}", b"x")
    w.close()
    overhead = len(out_shared.getvalue()) - len(out_none.getvalue())
    # one table entry (~50 bytes) plus one metadata-id byte per entry
    assert overhead == len(b'{"content_type":"application/vnd.example.long-type+json"}') + 1 + 100


def test_tombstone_in_same_writer() -> None:
    out = io.BytesIO()
    w = ShardWriter(out, codec="none")
    w.add("keep", b"k")
    w.add("gone", b"g")
    tomb = w.delete("gone")
    assert tomb.deleted
    assert "gone" not in w
    with pytest.raises(EntryNotFound, match="no entry for uid 'never'"):
        w.delete("never")
    summary = w.close()
    assert (summary.entry_count, summary.deleted) == (2, 1)
    reader = ShardReader(BytesSource(out.getvalue()))
    with pytest.raises(EntryDeleted, match="uid 'gone' was deleted"):
        reader.read("gone")
    entry = reader.lookup("gone")
    assert entry is not None
    assert entry.deleted
    assert entry.stored_size == 1  # payload fields kept for repack accounting
    assert reader.read_entry(entry) == b"g"


def test_append_writes_only_a_tail() -> None:
    base = io.BytesIO()
    w = ShardWriter(base, codec="none")
    w.add("a", b"first")
    w.add("b", b"second")
    w.close()
    old = base.getvalue()
    index = read_index(BytesSource(old))
    tail = io.BytesIO()
    w = ShardWriter(tail, codec="none", base_offset=len(old), existing=index)
    assert "a" in w
    with pytest.raises(DuplicateUid):
        w.add("a", b"again")
    late = w.add("late", b"third")
    w.delete("b")
    summary = w.close()
    assert late.offset == len(old)
    assert tail.getvalue().startswith(b"third")
    assert summary.entry_count == 3
    assert summary.head_size == len(old) + len(tail.getvalue())
    new = old + tail.getvalue()
    reader = ShardReader(BytesSource(new))
    assert reader.read("a") == b"first"
    assert reader.read("late") == b"third"
    with pytest.raises(EntryDeleted):
        reader.read("b")
    assert reader.verify() == 3
    # the old object still reads as before (its own footer is untouched)
    assert ShardReader(BytesSource(old)).read("b") == b"second"


def test_tombstoned_uid_can_be_added_again_by_an_append() -> None:
    base = io.BytesIO()
    w = ShardWriter(base, codec="none")
    w.add("a", b"v1")
    w.delete("a")
    w.close()
    old = base.getvalue()
    tail = io.BytesIO()
    w = ShardWriter(tail, codec="none", base_offset=len(old), existing=read_index(BytesSource(old)))
    w.add("a", b"v2")
    w.close()
    assert ShardReader(BytesSource(old + tail.getvalue())).read("a") == b"v2"


def test_append_argument_checks() -> None:
    base = io.BytesIO()
    ShardWriter(base).close()
    idx = read_index(BytesSource(base.getvalue()))
    with pytest.raises(ValueError, match="needs existing="):
        ShardWriter(io.BytesIO(), base_offset=10)
    with pytest.raises(ValueError, match="differs from the indexed object size"):
        ShardWriter(io.BytesIO(), base_offset=10, existing=idx)
    with pytest.raises(ValueError, match="only for appends"):
        ShardWriter(io.BytesIO(), existing=idx)


def test_append_to_legacy_is_refused(legacy_dir: Path) -> None:
    data = (legacy_dir / "v2-none.des").read_bytes()
    idx = read_index(BytesSource(data))
    with pytest.raises(ValueError, match="cannot append to a legacy DES2 shard"):
        ShardWriter(io.BytesIO(), base_offset=len(data), existing=idx)


def test_rollover_to_continuation_parts() -> None:
    parts: dict[int, io.BytesIO] = {}

    def open_part(n: int) -> io.BytesIO:
        parts[n] = io.BytesIO()
        return parts[n]

    head = io.BytesIO()
    w = ShardWriter(head, codec="none", max_size=16 + 2000, open_part=open_part)
    for i in range(7):
        w.add(f"f{i}", bytes([65 + i]) * 900)
    w.add("huge", b"h" * 5000)  # larger than max_size alone: gets its own part
    summary = w.close()
    assert summary.parts == (1, 2, 3, 4)
    assert sorted(parts) == [1, 2, 3, 4]
    for _n, buf in parts.items():
        assert buf.getvalue()[:4] == b"DESP"
    reader = ShardReader(
        BytesSource(head.getvalue()), part_source=lambda n: BytesSource(parts[n].getvalue())
    )
    placement = {e.uid: (e.part, e.offset) for e in reader.iter_entries()}
    assert placement == {
        "f0": (0, 16),
        "f1": (0, 916),
        "f2": (1, 16),
        "f3": (1, 916),
        "f4": (2, 16),
        "f5": (2, 916),
        "f6": (3, 16),
        "huge": (4, 16),
    }
    for i in range(7):
        assert reader.read(f"f{i}") == bytes([65 + i]) * 900
    assert reader.read("huge") == b"h" * 5000
    assert reader.verify() == 8
    assert part_key("x/20240101/0A.des", 3) == "x/20240101/0A.p3.des"


def test_max_size_needs_open_part() -> None:
    with pytest.raises(ValueError, match="needs open_part"):
        ShardWriter(io.BytesIO(), max_size=1000)


def test_big_files_go_beside_the_shard(tmp_path: Path) -> None:
    sink = LocalBigFileSink(tmp_path)
    big = bytes(range(256)) * 20  # 5120 bytes
    shard = tmp_path / "A7.des"
    with shard.open("wb") as fh:
        w = ShardWriter(
            fh, codec="zstd" if _has("zstd") else "none", big_file_threshold=4096, bigfile_sink=sink
        )
        w.add("small", b"tiny")
        entry = w.add("big", big, content_type="application/octet-stream")
        w.add("big-again", big)  # same bytes: stored once
        summary = w.close()
    sha = hashlib.sha256(big).hexdigest()
    assert entry.is_bigfile
    assert entry.bigfile_hash == sha
    assert entry.size == len(big)
    assert entry.checksum == zlib.crc32(big)
    assert entry.meta == {"content_type": "application/octet-stream"}
    assert summary.bigfiles == (sha,)
    assert sink.written == [sha]
    assert (tmp_path / "_bigFiles" / sha).read_bytes() == big
    assert sorted(p.name for p in (tmp_path / "_bigFiles").iterdir()) == [sha]
    with ShardReader.open_path(shard) as reader:
        assert reader.read("big") == big
        assert reader.read("big-again") == big
        assert reader.verify() == 3
    (tmp_path / "_bigFiles" / sha).write_bytes(big[:-1] + b"\x00")
    with ShardReader.open_path(shard) as reader, pytest.raises(ChecksumMismatch):
        reader.read("big")


def _has(codec: str) -> bool:
    from des_format import codec_available

    return codec_available(Codec[codec.upper()])


def test_add_path_streams_big_files(tmp_path: Path) -> None:
    src = tmp_path / "video.bin"
    src.write_bytes(b"v" * 10_000)
    small = tmp_path / "note.txt"
    small.write_bytes(TEXT)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(TEXT)
    out_dir = tmp_path / "out"
    sink = LocalBigFileSink(out_dir)
    out = io.BytesIO()
    w = ShardWriter(
        out, codec="zstd" if _has("zstd") else "none", big_file_threshold=5000, bigfile_sink=sink
    )
    big = w.add_path("v", src, content_type="video/x-raw")
    note = w.add_path("n", small)
    jpg = w.add_path("p", photo)
    w.close()
    digest = hash_file(src)
    assert digest.size == 10_000
    assert big.bigfile_hash == digest.sha256
    assert big.checksum == digest.checksum == zlib.crc32(b"v" * 10_000)
    assert (out_dir / "_bigFiles" / digest.sha256).read_bytes() == b"v" * 10_000
    assert note.meta == {}
    assert jpg.codec is Codec.NONE  # decided by the file's name
    if _has("zstd"):
        assert note.codec is Codec.ZSTD


def test_add_bigfile_by_hash_only() -> None:
    out = io.BytesIO()
    w = ShardWriter(out)
    data = b"external"
    sha = hashlib.sha256(data).hexdigest()
    entry = w.add_bigfile("ext", sha256=sha, size=len(data), meta={"k": 1})
    assert entry.checksum is None
    with pytest.raises(ValueError, match="64 lowercase hex"):
        w.add_bigfile("bad", sha256="ABC", size=1)
    w.close()
    reader = ShardReader(
        BytesSource(out.getvalue()), bigfile_source=lambda s: BytesSource(data if s == sha else b"")
    )
    got = reader.lookup("ext")
    assert got == entry
    assert got is not None
    assert got.etag == f'"des-{sha[:16]}-8"'
    assert reader.read("ext") == data
    reader_bad = ShardReader(
        BytesSource(out.getvalue()), bigfile_source=lambda s: BytesSource(b"externaL")
    )
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        reader_bad.read("ext")


def test_prepared_payloads_from_threads_match_add() -> None:
    from concurrent.futures import ThreadPoolExecutor

    files = {f"t{i}": TEXT[: 50 * i] for i in range(30)}
    codec = "zstd" if _has("zstd") else "none"
    direct = io.BytesIO()
    w = ShardWriter(direct, codec=codec)
    for uid, data in files.items():
        w.add(uid, data, content_type="text/plain")
    w.close()
    with ThreadPoolExecutor(4) as pool:
        prepared = list(
            pool.map(
                lambda kv: prepare_payload(kv[0], kv[1], content_type="text/plain", codec=codec),
                files.items(),
            )
        )
    via_pool = io.BytesIO()
    w = ShardWriter(via_pool, codec=codec)
    for p in prepared:
        w.add_prepared(p)
    w.close()
    assert via_pool.getvalue() == direct.getvalue()


def test_reader_errors_for_missing_sources() -> None:
    parts: dict[int, io.BytesIO] = {}

    def open_part(n: int) -> io.BytesIO:
        parts[n] = io.BytesIO()
        return parts[n]

    head = io.BytesIO()
    w = ShardWriter(head, codec="none", max_size=100, open_part=open_part)
    w.add("a", b"a" * 90)
    w.add("b", b"b" * 90)
    w.close()
    reader = ShardReader(BytesSource(head.getvalue()))
    assert reader.read("a") == b"a" * 90
    with pytest.raises(DesFormatError, match="continuation part 1; no part_source given"):
        reader.read("b")
    with pytest.raises(EntryNotFound):
        reader.read("c")


def test_payload_corruption_is_detected(codec_name: str) -> None:
    out = io.BytesIO()
    w = ShardWriter(out, codec=codec_name)
    entry = w.add("u", TEXT)
    w.close()
    data = bytearray(out.getvalue())
    data[entry.offset + entry.stored_size // 2] ^= 0x10
    reader = ShardReader(BytesSource(bytes(data)))
    with pytest.raises(CorruptShard):  # ChecksumMismatch, or a broken frame
        reader.read("u")
    with pytest.raises(CorruptShard, match="'u'"):
        reader.verify()


def test_index_entry_value_semantics() -> None:
    a = IndexEntry(uid="u", size=1, stored_size=1, checksum=5, meta={"x": 1})
    b = IndexEntry(uid="u", size=1, stored_size=1, checksum=5, meta={"x": 1})
    assert a == b
    with pytest.raises(AttributeError):
        a.size = 2  # type: ignore[misc]


def test_big_file_sink_is_atomic_and_idempotent(tmp_path: Path) -> None:
    sink = LocalBigFileSink(tmp_path, prefix="_big")
    sha = hashlib.sha256(b"payload").hexdigest()
    sink.put_bytes(sha, b"payload")
    sink.put_bytes(sha, b"ignored: already present")
    assert (tmp_path / "_big" / sha).read_bytes() == b"payload"
    assert sink.written == [sha]
    other = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(FileNotFoundError):
        sink.put_file(other, tmp_path / "does-not-exist")
    assert sorted(p.name for p in (tmp_path / "_big").iterdir()) == [sha]  # no temp left
    with pytest.raises(ValueError, match="not a lowercase sha256"):
        sink.put_bytes("ABC", b"")


def test_reading_without_the_codec_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not _has("zstd"):
        pytest.skip("zstandard is not installed (needed to write the shard)")
    import sys
    import threading

    import des_format._codecs as codecs_mod
    from des_format import CodecNotInstalled

    out = io.BytesIO()
    w = ShardWriter(out, codec="zstd")
    w.add("t", TEXT)
    w.close()
    monkeypatch.setattr(codecs_mod, "_modules", {})
    monkeypatch.setattr(codecs_mod, "_local", threading.local())
    monkeypatch.setitem(sys.modules, "zstandard", None)
    reader = ShardReader(BytesSource(out.getvalue()))
    entry = reader.lookup("t")
    assert entry is not None
    assert entry.codec is Codec.ZSTD  # the index still reads
    with pytest.raises(CodecNotInstalled, match=r'pip install "des-format\[zstd\]"'):
        reader.read("t")
