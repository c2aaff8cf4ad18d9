"""Helpers for des-packer's tests: small deterministic data sets, manifests, a counting store."""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from des_format import ObjectStoreBase


@dataclass(frozen=True)
class DataSet:
    root: Path
    manifest: Path
    rows: list[dict[str, Any]]

    def content(self, uid: str) -> bytes:
        row = next(r for r in self.rows if r["uid"] == uid)
        return (self.manifest.parent / row["source_path"]).read_bytes()


def make_dataset(
    root: Path,
    n: int = 60,
    *,
    seed: int = 7,
    days: int = 2,
    big: int = 0,
    big_size: int = 5000,
    jsonl: bool = False,
    prefix: str = "f",
    name: str = "manifest",
) -> DataSet:
    """``n`` files of mixed kinds (text, random binary, empty, .gz) plus ``big`` larger ones,
    and a manifest with paths relative to its own directory."""
    rnd = random.Random(seed)
    src = root / "input"
    src.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i in range(n + big):
        kind = i % 4
        if i >= n:
            data = rnd.randbytes(big_size)
            fname = f"{prefix}{i}.bin"
        elif kind == 0:
            data = (f"line {i} " * rnd.randint(1, 400)).encode()
            fname = f"{prefix}{i}.txt"
        elif kind == 1:
            data = rnd.randbytes(rnd.randint(1, 2000))
            fname = f"{prefix}{i}.bin"
        elif kind == 2:
            data = rnd.randbytes(rnd.randint(10, 300))
            fname = f"{prefix}{i}.gz"
        else:
            data = b"" if i % 8 == 3 else b"x" * rnd.randint(1, 50)
            fname = f"{prefix}{i}.dat"
        (src / fname).write_bytes(data)
        row: dict[str, Any] = {
            "uid": f"{prefix}uid-{i:05d}",
            "created_at": f"2024-03-{1 + i % days:02d}T{i % 24:02d}:00:00Z",
            "size_bytes": len(data),
            "source_path": f"input/{fname}",
        }
        if kind == 0:
            row["content_type"] = "text/plain"
        rows.append(row)
    manifest = root / (f"{name}.jsonl" if jsonl else f"{name}.json")
    write_manifest(manifest, rows, jsonl=jsonl)
    return DataSet(root, manifest, rows)


def write_manifest(path: Path, rows: list[Any], *, jsonl: bool = False) -> Path:
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows, indent=1))
    return path


def run_des_pack(*args: str) -> tuple[int, str, str]:
    """``des-pack ARGS`` in this process: (exit code, stdout, stderr)."""
    from des_packer.cli import pack_main

    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exit_,
    ):
        pack_main(list(args))
    code = exit_.value.code
    assert isinstance(code, int), code
    return code, out.getvalue(), err.getvalue()


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every shard, part and big file under ``root`` (relative path -> bytes): every file but
    the store's layout record, which test_store_layout.py checks on its own."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "_des_layout.json"
    }


class CountingStore(ObjectStoreBase):
    """Wraps an ObjectStore and records every request (method, key)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def read_tail(self, key: str, n: int) -> Any:
        self.calls.append(("read_tail", key))
        return self.inner.read_tail(key, n)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> Any:
        self.calls.append(("read_range", key))
        return self.inner.read_range(key, start, end, if_match=if_match)

    def iter_range(self, key: str, start: int, end: int, **kw: Any) -> Iterator[bytes]:
        self.calls.append(("iter_range", key))
        return self.inner.iter_range(key, start, end, **kw)

    def head(self, key: str) -> Any:
        self.calls.append(("head", key))
        return self.inner.head(key)

    def describe(self, key: str = "") -> str:
        return str(self.inner.describe(key))
