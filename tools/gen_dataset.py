#!/usr/bin/env python3
"""Generate a deterministic data set of small files and its des-pack manifest.

Profile ``bench`` (default, about 20,000 files): 60% compressible text of 1-64 KiB, 30%
already-compressed binaries of 4-256 KiB (random bytes named .jpg/.png/.gz/.zip), 10% files
under 1 KiB. Profile ``example``: about 50 small files of the same kinds (the README demo's
``example_data``). The same --seed always gives the same bytes.

The small-file sets of issue 18 (docs/bench/packer.md, "Small files"), sizes drawn
log-uniformly so that every size decade is as common as the next:

- ``small`` (set a, default 100,000 files): 200 B-16 KiB, median ~1.8 KB; 80% text (JSON,
  log lines, CSV, prose, a quarter each) and 20% incompressible (random bytes named
  .jpg/.png/.gz/.zip).
- ``mixed`` (set b, default 20,000 files): 1 KiB-100 KiB, median ~10 KB; 65% text of the same
  four kinds, 35% incompressible.

    python tools/gen_dataset.py --out /tmp/ds --count 20000 --seed 1
    python tools/gen_dataset.py --profile small --out /tmp/des-bench/small
    python tools/gen_dataset.py --profile mixed --out /tmp/des-bench/mixed
    python tools/gen_dataset.py --profile example --out example_data --manifest-name to-pack.json

Files go to OUT/input/, the manifest to OUT/manifests/<name> with source paths relative to the
manifest's directory (``../input/...``), so the whole tree can be moved or mounted anywhere.
``--tiny N`` instead writes a JSON Lines manifest of N entries whose sources are a handful of
tiny files (for memory measurements of huge manifests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import string
from pathlib import Path

BINARY_EXTS = (".jpg", ".png", ".gz", ".zip")
TEXT_KINDS = (".txt", ".json", ".log", ".csv")


def _vocabulary(rnd: random.Random, n: int = 5000) -> tuple[list[str], list[float]]:
    words = []
    for _ in range(n):
        length = min(12, max(1, int(rnd.expovariate(1 / 5)) + 1))
        words.append("".join(rnd.choices(string.ascii_lowercase, k=length)))
    # Zipf-like weights: a few words are very common, as in real text.
    cum = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(n)))
    return words, cum


def _text(rnd: random.Random, vocab: tuple[list[str], list[float]], size: int, kind: str) -> bytes:
    words, cum = vocab
    out: list[str] = []
    total = 0
    line_no = 0
    while total < size:
        line_no += 1
        ws = rnd.choices(words, cum_weights=cum, k=rnd.randint(4, 14))
        if kind == ".json":
            line = json.dumps({"id": line_no, "user": ws[0], "msg": " ".join(ws[1:])})
        elif kind == ".log":
            line = f"2024-01-01T00:{line_no % 60:02d}:{rnd.randint(0, 59):02d}Z INFO {' '.join(ws)}"
        elif kind == ".csv":
            line = ",".join([str(line_no), *ws[:5], str(rnd.randint(0, 99999))])
        else:
            line = " ".join(ws).capitalize() + "."
        out.append(line)
        total += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:size]


_CTYPES = {
    ".json": "application/json",
    ".csv": "text/csv",
    ".log": "text/plain",
    ".txt": "text/plain",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}
# profile -> (default count, smallest size, largest size, share of incompressible files)
LOG_UNIFORM = {"small": (100_000, 200, 16 * 1024, 0.20), "mixed": (20_000, 1024, 100 * 1024, 0.35)}


def _log_uniform(rnd: random.Random, lo: int, hi: int) -> int:
    return min(hi, int(math.exp(rnd.uniform(math.log(lo), math.log(hi + 1)))))


def _file_of(
    rnd: random.Random, vocab: tuple[list[str], list[float]], i: int, profile: str
) -> tuple[bytes, str]:
    """The bytes and extension of file ``i`` of a log-uniform profile."""
    _count, lo, hi, binary = LOG_UNIFORM[profile]
    size = _log_uniform(rnd, lo, hi)
    if rnd.random() < binary:
        return rnd.randbytes(size), BINARY_EXTS[i % len(BINARY_EXTS)]
    kind = TEXT_KINDS[i % len(TEXT_KINDS)]
    return _text(rnd, vocab, size, kind), kind


def generate(
    out: Path, *, count: int, seed: int, profile: str, manifest_name: str, days: int, jsonl: bool
) -> Path:
    rnd = random.Random(seed)
    vocab = _vocabulary(rnd)
    input_dir = out / "input"
    manifest_dir = out / "manifests"
    input_dir.mkdir(parents=True, exist_ok=True)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    if profile == "example":
        text_size, bin_size = (200, 6 * 1024), (512, 4 * 1024)
    else:
        text_size, bin_size = (1024, 64 * 1024), (4 * 1024, 256 * 1024)
    rows = []
    for i in range(count):
        pick = rnd.random()
        if profile in LOG_UNIFORM:
            data, kind = _file_of(rnd, vocab, i, profile)
            ctype = _CTYPES[kind]
        elif pick < 0.6:
            kind = TEXT_KINDS[i % len(TEXT_KINDS)]
            data = _text(rnd, vocab, rnd.randint(*text_size), kind)
            ctype = {"json": "application/json", "csv": "text/csv"}.get(kind[1:], "text/plain")
        elif pick < 0.9:
            kind = BINARY_EXTS[i % len(BINARY_EXTS)]
            data = rnd.randbytes(rnd.randint(*bin_size))
            ctype = {
                ".jpg": "image/jpeg",
                ".png": "image/png",
                ".gz": "application/gzip",
                ".zip": "application/zip",
            }[kind]
        else:
            kind = ".txt"
            data = _text(rnd, vocab, rnd.randint(1, 1023), kind)
            ctype = "text/plain"
        name = f"file-{i:06d}{kind}"
        sub = input_dir / f"{i // 1000:03d}" if count > 1000 else input_dir
        sub.mkdir(exist_ok=True)
        (sub / name).write_bytes(data)
        day = 1 + i % days
        hour, minute = rnd.randint(0, 23), rnd.randint(0, 59)
        rows.append(
            {
                "uid": f"{'ex' if profile == 'example' else profile}-{i:06d}",
                "created_at": f"2024-01-{day:02d}T{hour:02d}:{minute:02d}:00Z",
                "size_bytes": len(data),
                "source_path": str(Path("..") / (sub / name).relative_to(out)),
                "content_type": ctype,
            }
        )
    manifest = manifest_dir / manifest_name
    if jsonl:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        manifest.write_text(json.dumps(rows, indent=2) + "\n")
    return manifest


def tiny_manifest(out: Path, n: int, seed: int) -> Path:
    """N entries (JSON Lines) pointing at 16 tiny files: for memory tests of huge manifests."""
    rnd = random.Random(seed)
    (out / "input").mkdir(parents=True, exist_ok=True)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    sizes = []
    for k in range(16):
        data = rnd.randbytes(rnd.randint(1, 200))
        (out / "input" / f"tiny-{k}.bin").write_bytes(data)
        sizes.append(len(data))
    manifest = out / "manifests" / f"tiny-{n}.jsonl"
    with manifest.open("w") as fh:
        for i in range(n):
            k = i % 16
            fh.write(
                json.dumps(
                    {
                        "uid": f"tiny-{i:08d}",
                        "created_at": f"2024-02-{1 + i % 28:02d}T00:00:00Z",
                        "size_bytes": sizes[k],
                        "source_path": f"../input/tiny-{k}.bin",
                    }
                )
                + "\n"
            )
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--count",
        type=int,
        default=None,
        help="files (bench: 20000, example: 50, small: 100000, mixed: 20000)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", choices=("bench", "example", *LOG_UNIFORM), default="bench")
    ap.add_argument("--days", type=int, default=2, help="spread created_at over this many days")
    ap.add_argument("--manifest-name", default=None)
    ap.add_argument("--jsonl", action="store_true", help="write JSON Lines instead of a list")
    ap.add_argument("--tiny", type=int, default=None, help="only write a tiny-file manifest")
    args = ap.parse_args()
    if args.tiny is not None:
        print(tiny_manifest(args.out, args.tiny, args.seed))
        return
    defaults = {"example": 50, "bench": 20000} | {k: v[0] for k, v in LOG_UNIFORM.items()}
    count = args.count if args.count is not None else defaults[args.profile]
    name = args.manifest_name or ("to-pack.json" if not args.jsonl else "to-pack.jsonl")
    print(
        generate(
            args.out,
            count=count,
            seed=args.seed,
            profile=args.profile,
            manifest_name=name,
            days=args.days,
            jsonl=args.jsonl,
        )
    )


if __name__ == "__main__":
    main()
