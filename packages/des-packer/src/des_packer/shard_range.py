"""Which shard indexes one pod of the DES packer's Indexed Job packs.

A Kubernetes Indexed Job with N completions starts pods with JOB_COMPLETION_INDEX = 0..N-1. Pod
i packs the inclusive shard-index range

    start = i * S // N        end = (i + 1) * S // N - 1        where S = 2 ** n_bits

The N ranges are contiguous, disjoint and cover 0..S-1 exactly once, and their sizes differ by at
most one, so N packers share one manifest (one day) without talking to each other and never
write the same shard object. N must not exceed S (a pod with nothing to pack is a mistake).

As a command, ``python -m des_packer.shard_range`` (what k8s/des-packer-indexed-job.yaml runs
in the packer image), it reads JOB_COMPLETION_INDEX, DES_PACKERS (N, equal to the Job's
completions) and DES_N_BITS (default 8) and prints "start-end", the value of des-pack's
--shard-range. Standard library only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

MIN_N_BITS = 1
MAX_N_BITS = 16


def plan_shard_range(index: int, count: int, n_bits: int) -> tuple[int, int]:
    """The inclusive (start, end) shard-index range of pod ``index`` out of ``count`` pods."""
    if not MIN_N_BITS <= n_bits <= MAX_N_BITS:
        raise ValueError(f"n_bits must be between {MIN_N_BITS} and {MAX_N_BITS}, got {n_bits}")
    shards = 1 << n_bits
    if not 1 <= count <= shards:
        raise ValueError(
            f"the number of packers must be between 1 and 2**n_bits = {shards}, got {count}"
        )
    if not 0 <= index < count:
        raise ValueError(f"the completion index must be between 0 and {count - 1}, got {index}")
    return index * shards // count, (index + 1) * shards // count - 1


def _int_from_env(env: Mapping[str, str], name: str, default: str | None = None) -> int:
    raw = env.get(name, default)
    if raw is None:
        raise ValueError(f"{name} is not set")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        start, end = plan_shard_range(
            _int_from_env(env, "JOB_COMPLETION_INDEX"),
            _int_from_env(env, "DES_PACKERS"),
            _int_from_env(env, "DES_N_BITS", "8"),
        )
    except ValueError as exc:
        print(f"shard_range: {exc}", file=sys.stderr)
        return 2
    print(f"{start}-{end}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
