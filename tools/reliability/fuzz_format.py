"""Fuzz the DES format reader: hostile bytes in, only typed errors or right bytes out.

Each input is derived from a valid shard (written with ShardWriter: several codecs, metadata,
tombstones, big files by hash) by one of: bit flips, byte overwrites, truncation, splicing
random bytes in, duplicating or cutting ranges, or a forged index (random entry values behind
valid CRCs). The reader must then either raise a ``DesFormatError`` or return, for every uid it
finds, the bytes that were written under that uid (forged entries: bytes that match the
entry's CRC-32). Anything else (another exception, wrong bytes, a hang) is a finding.

    uv run python tools/reliability/fuzz_format.py --inputs 1000000 --jobs 2
    uv run python tools/reliability/fuzz_format.py --engine hypothesis --inputs 20000

The quick suite (tests-integration/test_fuzz_format.py) runs a few thousand of the same inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from des_format import (
    BytesSource,
    Codec,
    DesFormatError,
    IndexEntry,
    ShardReader,
    ShardWriter,
)
from des_format._index import serialize_bucket
from des_format._layout import DIR_ENTRY, serialize_footer, serialize_header


@dataclass(frozen=True)
class Seed:
    blob: bytes
    files: dict[str, bytes]


def make_seed(seed: int) -> Seed:
    """A small valid shard with a mix of what the format can hold."""
    rnd = random.Random(seed)
    files: dict[str, bytes] = {}
    out = io.BytesIO()
    w = ShardWriter(out, codec=rnd.choice(["none", "zstd", "lz4"]))
    for i in range(rnd.randint(1, 24)):
        uid = rnd.choice([f"u{i}", f"caf\u00e9-{i}", f"{i:06d}", f"x/{i}"])
        kind = rnd.randrange(4)
        if kind == 0:
            data = rnd.randbytes(rnd.randint(0, 300))
        elif kind == 1:
            data = (b"text %d " % i) * rnd.randint(1, 80)
        elif kind == 2:
            data = b""
        else:
            data = rnd.randbytes(40) * rnd.randint(1, 20)
        meta = {"k": i, "s": "v" * rnd.randint(0, 5)} if rnd.random() < 0.4 else None
        w.add(
            uid,
            data,
            name=f"{uid}.bin",
            content_type=rnd.choice([None, "text/plain"]),
            meta=meta,
            codec=rnd.choice([None, "none", "zstd", "lz4"]),
        )
        files[uid] = data
    if len(files) > 2 and rnd.random() < 0.3:
        victim = sorted(files)[0]
        w.delete(victim)
    w.close()
    return Seed(out.getvalue(), files)


def forge(rnd: random.Random, seed: Seed) -> bytes:
    """Keep the payload area, replace the index with random entries behind valid CRCs."""
    index_offset = int.from_bytes(seed.blob[-40:-32], "little")
    head = seed.blob[:index_offset]
    if rnd.random() < 0.3:
        head = serialize_header(0) + rnd.randbytes(rnd.randint(0, 200))
    entries = []
    big = [0, 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
    for i in range(rnd.randint(1, 6)):
        size = rnd.choice([rnd.randint(0, 400), rnd.choice(big)])
        stored = rnd.choice([size, rnd.randint(0, 400), rnd.choice(big)])
        codec = rnd.choice(list(Codec))
        if codec is Codec.NONE:
            stored = size
        bigfile = rnd.random() < 0.1
        entries.append(
            IndexEntry(
                uid=f"f{i}",
                size=size,
                stored_size=size if bigfile else stored,
                codec=Codec.NONE if bigfile else codec,
                checksum=rnd.choice([None, rnd.getrandbits(32), zlib.crc32(b"")]),
                offset=rnd.choice([16, rnd.randint(0, len(head) + 10), rnd.choice(big)]),
                part=0 if bigfile else rnd.choice([0, 0, 0, 1, 2**31]),
                is_bigfile=bigfile,
                bigfile_hash=rnd.randbytes(32).hex() if bigfile else None,
                deleted=rnd.random() < 0.1,
                meta={"content_type": "text/plain"} if rnd.random() < 0.3 else {},
            )
        )
    try:
        bucket = serialize_bucket(
            sorted(((e.uid.encode(), e) for e in entries), key=lambda t: t[0])
        )
    except (ValueError, OverflowError):
        return seed.blob
    directory = DIR_ENTRY.pack(len(bucket), zlib.crc32(bucket))
    footer = serialize_footer(
        index_offset=len(head),
        entry_count=rnd.choice([len(entries), rnd.randint(0, 2**32)]),
        bucket_count=1,
        directory_crc=zlib.crc32(directory),
    )
    return head + bucket + directory + footer


def mutate(rnd: random.Random, seed: Seed) -> tuple[bytes, bool]:
    """A hostile variant of ``seed``; the flag says whether it is a forged index."""
    data = bytearray(seed.blob)
    op = rnd.randrange(8)
    if op == 0:
        for _ in range(rnd.randint(1, 8)):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
    elif op == 1:
        # flips near the end: footer, directory, index
        for _ in range(rnd.randint(1, 4)):
            i = len(data) - 1 - min(rnd.randrange(200), len(data) - 1)
            data[i] = rnd.randrange(256)
    elif op == 2:
        data = data[: rnd.randrange(len(data) + 1)]
    elif op == 3:
        i = rnd.randrange(len(data) + 1)
        data[i:i] = rnd.randbytes(rnd.randint(1, 64))
    elif op == 4:
        i = rnd.randrange(len(data))
        j = min(len(data), i + rnd.randint(1, 64))
        del data[i:j]
    elif op == 5:
        return forge(rnd, seed), True
    elif op == 6:
        data = bytearray(rnd.randbytes(rnd.randint(0, 200)) + bytes(data[-48:]))
    else:
        i = rnd.randrange(len(data))
        data[i : i + 8] = rnd.choice(
            [b"\xff" * 8, b"\x00" * 8, (2**63).to_bytes(8, "little"), rnd.randbytes(8)]
        )
    return bytes(data), False


def check(blob: bytes, files: dict[str, bytes], forged: bool) -> str:
    """Read everything from ``blob``; returns the outcome, raises AssertionError on a finding."""
    try:
        reader = ShardReader(BytesSource(blob))
        entries = list(reader.iter_entries())
    except DesFormatError:
        return "rejected"
    served = 0
    for e in entries:
        try:
            got = reader.read_entry(e)
        except DesFormatError:
            continue
        served += 1
        if forged:
            assert e.checksum is None or zlib.crc32(got) == e.checksum, e
            assert len(got) == e.size, e
        else:
            assert e.uid in files, f"uid {e.uid!r} was never written"
            assert got == files[e.uid], f"wrong bytes for {e.uid!r}"
    with contextlib.suppress(DesFormatError):
        reader.verify(deep=True)
    return "served" if served else "empty"


def run_random(start: int, count: int, seeds: int = 64) -> dict[str, int]:
    pool = [make_seed(s) for s in range(seeds)]
    rnd = random.Random(start)
    stats: dict[str, int] = {}
    for n in range(count):
        seed = pool[rnd.randrange(len(pool))]
        blob, forged = mutate(rnd, seed)
        try:
            outcome = check(blob, seed.files, forged)
        except Exception as exc:  # a finding: report it with what reproduces it
            raise AssertionError(
                f"input {start}+{n}: {type(exc).__name__}: {exc}; blob={blob.hex()}"
            ) from exc
        stats[outcome] = stats.get(outcome, 0) + 1
    return stats


def run_hypothesis(count: int) -> dict[str, int]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pool = [make_seed(s) for s in range(64)]
    stats: dict[str, int] = {}

    @settings(
        max_examples=count, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(st.integers(0, 63), st.randoms(use_true_random=False))
    def one(seed_no: int, rnd: random.Random) -> None:
        seed = pool[seed_no]
        blob, forged = mutate(rnd, seed)  # type: ignore[arg-type]
        outcome = check(blob, seed.files, forged)
        stats[outcome] = stats.get(outcome, 0) + 1

    one()
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--engine", choices=["random", "hypothesis"], default="random")
    p.add_argument("--start", type=int, default=0, help="first random stream (reproduce)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.engine == "hypothesis":
        stats = run_hypothesis(args.inputs)
    else:
        per = -(-args.inputs // args.jobs)
        with ProcessPoolExecutor(args.jobs) as ex:
            futures = [
                ex.submit(run_random, args.start + j * 1_000_003, min(per, args.inputs - j * per))
                for j in range(args.jobs)
            ]
            stats = {}
            for f in futures:
                for k, v in f.result().items():
                    stats[k] = stats.get(k, 0) + v
    dt = time.perf_counter() - t0
    total = sum(stats.values())
    print(
        f"fuzz_format: {total} inputs ({args.engine}), no finding, {dt:.0f} s "
        f"({total / dt:.0f}/s); outcomes: {dict(sorted(stats.items()))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
