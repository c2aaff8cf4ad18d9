"""The format fuzzer's quick run: a few thousand hostile shards (bit flips, truncations,
splices, forged indexes behind valid CRCs) through the reader; only ``DesFormatError`` or the
bytes that were written may come out. The long run (1,000,000 inputs) is
``tools/reliability/fuzz_format.py``; its figures are in docs/RELIABILITY.md."""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _fuzzer() -> ModuleType:
    path = Path(__file__).parents[1] / "tools" / "reliability" / "fuzz_format.py"
    spec = importlib.util.spec_from_file_location("des_fuzz_format", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FUZZ = _fuzzer()
POOL = [FUZZ.make_seed(s) for s in range(16)]


def test_seeds_read_back_exactly() -> None:
    for seed in POOL:
        assert FUZZ.check(seed.blob, seed.files, False) == "served"


def test_random_mutations() -> None:
    stats = FUZZ.run_random(start=12345, count=4000, seeds=16)
    assert sum(stats.values()) == 4000
    # The mix exercises all three outcomes: rejected, parsed with nothing readable, served.
    assert set(stats) == {"rejected", "empty", "served"}, stats


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.integers(0, len(POOL) - 1), st.randoms(use_true_random=False))
def test_hypothesis_mutations(seed_no: int, rnd: random.Random) -> None:
    seed = POOL[seed_no]
    blob, forged = FUZZ.mutate(rnd, seed)
    assert FUZZ.check(blob, seed.files, forged) in ("rejected", "empty", "served")


def test_the_checker_catches_wrong_bytes() -> None:
    """The oracle is not vacuous: a shard whose bytes differ from what it claims is caught."""
    seed = POOL[0]
    uid = next(u for u, d in seed.files.items() if d)
    lying = dict(seed.files)
    lying[uid] = seed.files[uid] + b"!"
    with pytest.raises(AssertionError, match=re.escape(f"wrong bytes for {uid!r}")):
        FUZZ.check(seed.blob, lying, False)
