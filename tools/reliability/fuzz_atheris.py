"""Coverage-guided fuzzing of the DES format reader with atheris (libFuzzer).

Every input is read as a shard. The reader must either raise a ``DesFormatError`` or serve
bytes that match their entry: the size recorded in the index and, where the entry carries one,
its CRC-32 (``fuzz_format.check`` in forged mode). Any other exception, a crash, a hang (libFuzzer
``-timeout``) or an out-of-memory (``-rss_limit_mb``) is a finding, and libFuzzer writes the
input that caused it to ``crash-*``/``timeout-*``/``oom-*`` in the working directory.

atheris builds against libFuzzer and is kept out of the workspace lock; run it from its own
virtual environment, with des-format from the source tree:

    python3 -m venv /tmp/fz && /tmp/fz/bin/pip install atheris zstandard lz4
    PYTHONPATH=packages/des-format/src:tools/reliability \\
        /tmp/fz/bin/python tools/reliability/fuzz_atheris.py --make-corpus /tmp/fz-corpus
    PYTHONPATH=packages/des-format/src:tools/reliability \\
        /tmp/fz/bin/python tools/reliability/fuzz_atheris.py /tmp/fz-corpus \\
        -atheris_runs=1000000 -timeout=10 -rss_limit_mb=2048

The seed corpus holds the golden and legacy vectors of des-format's tests and 64 shards made
by ``fuzz_format.make_seed`` (every codec, metadata, tombstones).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import des_format  # noqa: F401  (instrumented so coverage guides the mutations)

from fuzz_format import check, make_seed

ROOT = Path(__file__).resolve().parents[2]


def make_corpus(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    vectors = ROOT / "packages" / "des-format" / "tests" / "vectors"
    for shard in sorted(vectors.rglob("*.des")):
        (out / f"vector-{count:03d}").write_bytes(shard.read_bytes())
        count += 1
    for seed in range(64):
        (out / f"seed-{seed:03d}").write_bytes(make_seed(seed).blob)
        count += 1
    return count


def test_one_input(data: bytes) -> None:
    check(data, {}, forged=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        print(f"{make_corpus(Path(sys.argv[2]))} seed shards written to {sys.argv[2]}")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
