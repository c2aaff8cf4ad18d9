"""How the writer hands bytes to its outputs: small payloads in writes of about 1 MiB, large
ones as they are, everything in place before the index, parts included."""

from __future__ import annotations

import io

import des_format._writer as writer_mod
from des_format import BytesSource, ShardReader, ShardWriter
from hypothesis import given, settings
from hypothesis import strategies as st


class RecordingOut(io.RawIOBase):
    """An output that keeps every object written to it (as a sink that queues them would)."""

    def __init__(self) -> None:
        self.chunks: list[bytes | bytearray | memoryview] = []

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        assert isinstance(b, bytes | bytearray | memoryview)
        self.chunks.append(b)
        return len(b)

    def value(self) -> bytes:
        return b"".join(bytes(c) for c in self.chunks)


def test_small_payloads_are_written_in_about_1_mib_pieces() -> None:
    assert writer_mod._COALESCE == 1 << 20
    out = RecordingOut()
    w = ShardWriter(out, codec="none")
    for i in range(3000):
        w.add(f"u{i:05d}", bytes([i % 251]) * 1000)  # 3,000,000 payload bytes
    # header, then two pieces of 1049 payloads (the first count to reach 1 MiB); 902 pending
    assert [len(c) for c in out.chunks] == [16, 1_049_000, 1_049_000]
    before = len(out.chunks)
    summary = w.close()
    assert len(out.chunks[before]) == 902_000  # written before the index
    assert summary.head_size == len(out.value())
    reader = ShardReader(BytesSource(out.value()))
    assert reader.read("u02999") == bytes([2999 % 251]) * 1000


def test_large_payloads_go_out_as_they_are_after_what_is_pending() -> None:
    out = RecordingOut()
    w = ShardWriter(out, codec="none")
    small = b"s" * 100
    big = bytes(range(256)) * (writer_mod._DIRECT_WRITE // 256)  # 256 KiB: written as it is
    w.add("a", small)
    w.add("b", big)
    w.add("c", small)
    assert out.chunks[1:] == [small, big]  # the pending small one first, then the big one
    assert out.chunks[2] is big  # not copied
    w.close()
    reader = ShardReader(BytesSource(out.value()))
    assert [reader.read(u) for u in "abc"] == [small, big, small]


@given(
    st.lists(st.integers(min_value=0, max_value=300_000), min_size=1, max_size=40),
    st.integers(min_value=17, max_value=600_000),
)
@settings(max_examples=60, deadline=None)
def test_parts_and_head_hold_the_same_bytes_as_unbuffered_offsets_say(
    sizes: list[int], max_size: int
) -> None:
    """Continuation parts get the payloads pending for them before the next part opens."""
    outs: dict[int, io.BytesIO] = {0: io.BytesIO()}

    def open_part(n: int) -> io.BytesIO:
        outs[n] = io.BytesIO()
        return outs[n]

    w = ShardWriter(outs[0], codec="none", max_size=max_size, open_part=open_part)
    payloads = {f"f{i:03d}": bytes([i % 256]) * size for i, size in enumerate(sizes)}
    entries = {uid: w.add(uid, data) for uid, data in payloads.items()}
    w.close()
    for uid, entry in entries.items():
        raw = outs[entry.part].getvalue()
        assert raw[entry.offset : entry.offset + entry.stored_size] == payloads[uid]
    reader = ShardReader(
        BytesSource(outs[0].getvalue()), part_source=lambda n: BytesSource(outs[n].getvalue())
    )
    assert reader.verify() == len(payloads)
