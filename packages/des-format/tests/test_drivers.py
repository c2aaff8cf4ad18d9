"""One retrieval pipeline, two drivers: ShardRetriever (blocking) and AsyncShardRetriever
(awaited) give the same answers, the same errors and the same requests, read for read, on
any shard (inline, big files, continuation parts... here: small and large indexes, big
files, solid blocks, legacy DES2 shards) and when a cached index goes stale.

The stores are in-memory unit-test stores (des_format.testing.MemoryObjectStore), each behind
a counting wrapper; the async one awaits the same store.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    AsyncShardRetriever,
    Codec,
    DesFormatError,
    IndexCache,
    ObjectInfo,
    ShardRetriever,
    ShardWriter,
    TailRead,
    bigfile_key,
    codec_available,
)
from des_format.testing import CountingStore, MemoryObjectStore, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEY = "20240101/A7.des"


class AsyncView:
    """A blocking store awaited (what an AsyncObjectStore looks like to the driver)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def read_tail(self, key: str, n: int) -> TailRead:
        return self.inner.read_tail(key, n)  # type: ignore[no-any-return]

    async def read_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        return self.inner.read_range(key, start, end, if_match=if_match)  # type: ignore[no-any-return]

    async def iter_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        for chunk in self.inner.iter_range(
            key, start, end, if_match=if_match, chunk_size=chunk_size
        ):
            yield chunk

    async def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)  # type: ignore[no-any-return]

    def describe(self, key: str = "") -> str:
        return self.inner.describe(key)  # type: ignore[no-any-return]


class Sink:
    def __init__(self, store: MemoryObjectStore, key: str) -> None:
        self.store = store
        self.key = key

    def put_bytes(self, sha256: str, data: bytes) -> None:
        self.store.put(bigfile_key(self.key, sha256), data)

    def put_file(self, sha256: str, path: Any) -> None:
        self.store.put(bigfile_key(self.key, sha256), Path(path).read_bytes())


def shard_bytes(files: dict[str, bytes], stores: list[MemoryObjectStore], **kw: Any) -> bytes:
    out = io.BytesIO()
    w = ShardWriter(out, bigfile_sink=_Fanout(stores), big_file_threshold=4096, **kw)
    for uid, data in files.items():
        w.add(uid, data)
    w.close()
    return out.getvalue()


class _Fanout:
    def __init__(self, stores: list[MemoryObjectStore]) -> None:
        self.sinks = [Sink(s, KEY) for s in stores]

    def put_bytes(self, sha256: str, data: bytes) -> None:
        for s in self.sinks:
            s.put_bytes(sha256, data)

    def put_file(self, sha256: str, path: Any) -> None:
        for s in self.sinks:
            s.put_file(sha256, path)


def outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except DesFormatError as exc:
        return ("error", type(exc).__name__, str(exc))


async def aoutcome(coro: Any) -> Any:
    try:
        return ("ok", await coro)
    except DesFormatError as exc:
        return ("error", type(exc).__name__, str(exc))


def log(store: CountingStore) -> list[Request]:
    out = store.requests
    store.reset()
    return out


class Pair:
    """The same operations through both drivers, over two identical stores."""

    def __init__(self, tail_size: int, chunk_size: int) -> None:
        self.mem = [MemoryObjectStore(), MemoryObjectStore()]
        self.counted = [CountingStore(m) for m in self.mem]
        self.kinds: list[list[tuple[str, int]]] = [[], []]
        self.sync = ShardRetriever(
            self.counted[0],
            cache=IndexCache(1 << 24),
            tail_size=tail_size,
            chunk_size=chunk_size,
            observer=lambda k, n: self.kinds[0].append((k, n)),
        )
        self.aio = AsyncShardRetriever(
            AsyncView(self.counted[1]),
            cache=IndexCache(1 << 24),
            tail_size=tail_size,
            chunk_size=chunk_size,
            observer=lambda k, n: self.kinds[1].append((k, n)),
        )
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def put(self, key: str, data: bytes) -> None:
        for m in self.mem:
            m.put(key, data, etag=f'"v{len(data)}-{hash(data) & 0xFFFF}"')

    def same(self, op: str, uid: str, many: list[str] | None = None) -> Any:
        if op == "read":
            a = outcome(lambda: self.sync.read(KEY, uid))
            b = self.loop.run_until_complete(aoutcome(self.aio.read(KEY, uid)))
        elif op == "stat":
            a = outcome(lambda: self.sync.stat(KEY, uid))
            b = self.loop.run_until_complete(aoutcome(self.aio.stat(KEY, uid)))
        elif op == "open":
            a = outcome(lambda: b"".join(self.sync.open(KEY, uid).iter_bytes()))

            async def opened() -> bytes:
                f = await self.aio.open(KEY, uid)
                return b"".join([c async for c in f.aiter_bytes()])

            b = self.loop.run_until_complete(aoutcome(opened()))
        else:
            assert many is not None
            a = outcome(lambda: [(u, _val(v)) for u, v in self.sync.read_many(KEY, many)])

            async def collected() -> list[Any]:
                return [(u, _val(v)) async for u, v in self.aio.read_many(KEY, many)]

            b = self.loop.run_until_complete(aoutcome(collected()))
        assert a == b, (op, uid)
        ra, rb = log(self.counted[0]), log(self.counted[1])
        assert _wire(ra) == _wire(rb), (op, uid)
        assert self.kinds[0] == self.kinds[1]
        return a


def _wire(requests: list[Request]) -> list[tuple[Any, ...]]:
    """What goes on the wire: a streamed read and a whole read of one range are one ranged
    GET each (the async driver reads a file that fits one chunk whole)."""
    return [
        ("read_range" if r.method == "iter_range" else r.method, r.key, r.start, r.end, r.if_match)
        for r in requests
    ]


def _val(v: Any) -> Any:
    return (type(v).__name__, str(v)) if isinstance(v, Exception) else v


file_data = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda w, n: (w * n)[:9000], st.binary(min_size=1, max_size=40), st.integers(1, 400)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.dictionaries(
        st.text("abcdefgh0123", min_size=1, max_size=6), file_data, min_size=1, max_size=60
    ),
    tail_size=st.sampled_from([64, 300, 65536]),
    chunk_size=st.sampled_from([100, 4096, 1 << 20]),
    codec=st.sampled_from(["none", "zstd"]),
    ops=st.lists(
        st.tuples(st.sampled_from(["read", "stat", "open", "many"]), st.integers(0, 80)),
        min_size=1,
        max_size=25,
    ),
    replace_at=st.integers(0, 30),
)
def test_drivers_agree(
    files: dict[str, bytes],
    tail_size: int,
    chunk_size: int,
    codec: str,
    ops: list[tuple[str, int]],
    replace_at: int,
) -> None:
    if codec == "zstd" and not codec_available(Codec.ZSTD):
        pytest.skip("zstd is not installed")
    pair = Pair(tail_size, chunk_size)
    try:
        uids = sorted(files)
        pair.put(KEY, shard_bytes(files, pair.mem, codec=codec))
        names = [*uids, "missing-uid"]
        for i, (op, n) in enumerate(ops):
            if i == replace_at:
                # another writer replaced the shard: some files gone, others changed
                changed = {u: files[u][::-1] + b"!" for u in uids[::2]}
                pair.put(KEY, shard_bytes(changed, pair.mem, codec=codec))
            uid = names[n % len(names)]
            pair.same(op, uid, many=[names[(n + k) % len(names)] for k in range(4)])
    finally:
        pair.close()


def test_drivers_agree_on_legacy_shards(legacy_dir: Path) -> None:
    for name in ("v1-mixed.des", "v2-none.des", "v2-zstd.des", "bigfiles-case/v2-bigfile.des"):
        data = (legacy_dir / name).read_bytes()
        pair = Pair(tail_size=64, chunk_size=512)
        try:
            pair.put(KEY, data)
            big = legacy_dir / "bigfiles-case" / "_bigFiles"
            if name.startswith("bigfiles") and big.is_dir():
                for f in big.iterdir():
                    pair.put(f"20240101/_bigFiles/{f.name}", f.read_bytes())
            uids = [e.uid for e in pair.sync.index(KEY)[1].iter_entries()]
            log(pair.counted[0])
            pair.loop.run_until_complete(pair.aio.index(KEY))
            log(pair.counted[1])
            pair.kinds = [[], []]
            for uid in uids:
                entry = pair.sync.index(KEY)[1].lookup(uid)
                if (
                    entry is not None
                    and entry.codec is not Codec.NONE
                    and not codec_available(entry.codec)
                ):
                    continue
                for op in ("read", "open", "stat"):
                    result = pair.same(op, uid)
                    assert result[0] == "ok", (name, uid, result)
        finally:
            pair.close()


def test_solid_blocks_and_big_files_stream_the_same(tmp_path: Path) -> None:
    if not codec_available(Codec.ZSTD):
        pytest.skip("zstd is not installed")
    from des_format import PreparedBlock, prepare_block

    pair = Pair(tail_size=65536, chunk_size=1000)
    try:
        out = io.BytesIO()
        w = ShardWriter(out, bigfile_sink=_Fanout(pair.mem), big_file_threshold=4096)
        members = {f"m{i}": (b"shared words %d " % i) * 20 for i in range(8)}
        for item in prepare_block([(u, d, {}) for u, d in members.items()]):
            if isinstance(item, PreparedBlock):
                w.add_block(item)
            else:
                w.add_prepared(item)
        w.add("big", bytes(range(256)) * 64)  # 16 KiB: a big file, streamed in chunks
        w.add("small", b"inline")
        w.close()
        pair.put(KEY, out.getvalue())
        for uid in [*members, "big", "small"]:
            for op in ("open", "read"):
                assert pair.same(op, uid)[0] == "ok"
        got = pair.same("many", "m0", many=[*members, "big"])
        assert got[1] == [(u, d) for u, d in members.items()] + [("big", bytes(range(256)) * 64)]
    finally:
        pair.close()


@pytest.mark.parametrize("declare", [True, False])
def test_stream_decoder_never_expands_past_the_entry_size(declare: bool) -> None:
    """A forged zstd frame (64 MiB of zeros in ~2 KiB, the entry saying 100 bytes) is refused
    whether or not it declares its size, with at most a few MiB ever held: the pipeline's
    streamed reads (both drivers) decompress through this decoder."""
    import tracemalloc

    from des_format import CorruptShard, StreamDecoder

    if not codec_available(Codec.ZSTD):
        pytest.skip("zstd is not installed")
    import zstandard

    bomb = zstandard.ZstdCompressor(write_content_size=declare).compress(bytes(64 << 20))
    assert len(bomb) < 16 * 1024
    tracemalloc.start()
    try:
        decoder = StreamDecoder(Codec.ZSTD, 100, uid="bomb")

        def run() -> None:
            for i in range(0, len(bomb), 4096):
                decoder.feed(bomb[i : i + 4096])
            decoder.finish()

        with pytest.raises(CorruptShard, match="bomb"):
            run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_stream_decoder_bounds_lz4_too() -> None:
    from des_format import CorruptShard, StreamDecoder

    if not codec_available(Codec.LZ4):
        pytest.skip("lz4 is not installed")
    import lz4.frame

    bomb = lz4.frame.compress(bytes(32 << 20), store_size=False)
    decoder = StreamDecoder(Codec.LZ4, 100, uid="bomb")
    with pytest.raises(CorruptShard, match="expands past its size 100"):
        decoder.feed(bomb)
    good = b"0123456789" * 1000
    decoder = StreamDecoder(Codec.LZ4, len(good))
    frame = lz4.frame.compress(good)
    assert b"".join(decoder.feed(frame[i : i + 7]) for i in range(0, len(frame), 7)) == good
    decoder.finish()


def test_a_file_of_one_chunk_is_whole_at_open_and_a_longer_one_streams() -> None:
    mem = MemoryObjectStore()
    out = io.BytesIO()
    w = ShardWriter(out, codec=Codec.NONE)  # stored as they are: no optional codec needed
    small, empty, large = b"inline bytes" * 10, b"", bytes(range(256)) * 20
    w.add("small", small)
    w.add("empty", empty)
    w.add("large", large)
    w.close()
    mem.put(KEY, out.getvalue())
    retriever = AsyncShardRetriever(AsyncView(mem), chunk_size=1024)  # type: ignore[arg-type]

    async def main() -> None:
        for uid, data in (("small", small), ("empty", empty)):
            opened = await retriever.open(KEY, uid)
            assert opened.whole == data
            assert await opened.read() == data  # iterating gives the same bytes
        opened = await retriever.open(KEY, "large")  # 5,120 bytes: more than one chunk
        assert opened.whole is None
        assert await opened.read() == large

    asyncio.run(main())
