"""Routing micro-benchmarks (run by hand): uv run python tools/bench/bench_routing.py

Measures, in one run so the ratios compare like with like:
1. locate_shard per call for typical uids (text and digit-only) and created_at as str/datetime;
2. the digit rule: int(uid) % 2**n_bits against the last-n_bits-digits shortcut it uses;
3. ZoneMap.zone_for (bisect) against a linear scan, for 16..4096 zones.
"""

from __future__ import annotations

import argparse
import itertools
import random
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from des_routing import Zone, ZoneMap, locate_shard, parse_zones


def per_call(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` seconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def make_zones(count: int) -> ZoneMap:
    width = 65536 // count
    return parse_zones(
        {
            "n_bits": 16,
            "zones": [
                {
                    "name": f"z{i}",
                    "range": {"start": i * width, "end": (i + 1) * width - 1},
                    "s3": {"bucket": f"b{i}"},
                }
                for i in range(count)
            ],
        }
    )


def linear_zone_for(zones: tuple[Zone, ...], index: int) -> Zone:
    return next(z for z in zones if z.start <= index <= z.end)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20000)
    n = parser.parse_args().number
    rng = random.Random(7)
    text_uids = itertools.cycle([f"file-{rng.getrandbits(64):016x}" for _ in range(1000)])
    digit_uids = itertools.cycle([str(rng.getrandbits(60)) for _ in range(1000)])
    dt = datetime(2024, 1, 1, 12, tzinfo=UTC)
    iso = "2024-01-01T12:00:00Z"

    rows = [
        ("text uid, datetime", per_call(lambda: locate_shard(next(text_uids), dt), n)),
        ("text uid, ISO string", per_call(lambda: locate_shard(next(text_uids), iso), n)),
        ("digit uid, datetime", per_call(lambda: locate_shard(next(digit_uids), dt), n)),
    ]
    print("| locate_shard | us/call |\n| --- | --- |")
    for name, sec in rows:
        print(f"| {name} | {sec * 1e6:.2f} |")

    print("\n| digit uid length | int(uid) % 2**16 (us) | last 16 digits (us) | ratio |")
    print("| --- | --- | --- | --- |")
    for length in (20, 256, 1024):
        uid = "".join(rng.choice("0123456789") for _ in range(length))
        full = per_call(lambda uid=uid: int(uid) % 65536, n)  # type: ignore[misc]
        tail = per_call(lambda uid=uid: int(uid[-16:]) & 65535, n)  # type: ignore[misc]
        print(f"| {length} | {full * 1e6:.3f} | {tail * 1e6:.3f} | {full / tail:.1f}x |")

    print("\n| zones (n_bits=16) | bisect zone_for (us) | linear scan (us) | ratio |")
    print("| --- | --- | --- | --- |")
    for count in (16, 256, 4096):
        zones = make_zones(count)
        probes = itertools.cycle([rng.randrange(65536) for _ in range(1000)])
        fast = per_call(lambda z=zones, p=probes: z.zone_for(next(p)), n // 4)  # type: ignore[misc]
        slow = per_call(
            lambda z=zones, p=probes: linear_zone_for(z.zones, next(p)),  # type: ignore[misc]
            max(n // count, 50),
        )
        print(f"| {count} | {fast * 1e6:.2f} | {slow * 1e6:.2f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    main()
