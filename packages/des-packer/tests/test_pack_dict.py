"""des-pack --dict: a zstd dictionary per shard for its small files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    Codec,
    IndexCache,
    LocalObjectStore,
    LocalShardEditor,
    ShardReader,
    ShardRetriever,
    read_shard_index,
)
from des_format.testing import CountingStore
from des_packer import PackOptions, pack, read_manifest
from des_packer.cli import des_app
from des_packer_testkit import run_des_pack, tree_bytes, write_manifest
from des_routing import locate_shard
from typer.testing import CliRunner

N_BITS = 4
WORDS = ["".join(random.Random(i).choices("abcdefghijklmno", k=2 + i % 8)) for i in range(300)]


def _record(rnd: random.Random, i: int) -> bytes:
    lines = [
        json.dumps(
            {
                "id": i * 100 + k,
                "user": rnd.choice(WORDS),
                "event": rnd.choice(["login", "view", "search", "purchase"]),
                "text": " ".join(rnd.choices(WORDS, k=rnd.randint(4, 12))),
            }
        )
        for k in range(rnd.randint(2, 12))
    ]
    return ("\n".join(lines) + "\n").encode()


def make_records(root: Path, n: int, *, start: int = 0, name: str = "m") -> list[dict[str, Any]]:
    """``n`` small JSON-lines files (one day), every 25th one large (> 4 KiB), every 30th a .gz
    of random bytes; returns the manifest rows (manifest written to root/<name>.json)."""
    rnd = random.Random(start)
    src = root / "input"
    src.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + n):
        if i % 30 == 29:
            data, fname = rnd.randbytes(300), f"r{i}.gz"
        elif i % 25 == 24:
            data, fname = b"".join(_record(rnd, i * 7 + k) for k in range(12)), f"r{i}.jsonl"
        else:
            data, fname = _record(rnd, i), f"r{i}.jsonl"
        (src / fname).write_bytes(data)
        rows.append(
            {
                "uid": f"rec-{i:05d}",
                "created_at": f"2024-05-01T{i % 24:02d}:00:00Z",
                "size_bytes": len(data),
                "source_path": f"input/{fname}",
                "content_type": "application/json",
            }
        )
    write_manifest(root / f"{name}.json", rows)
    return rows


def read_all(out: Path, rows: list[dict[str, Any]], root: Path) -> None:
    r = ShardRetriever(LocalObjectStore(out))
    for row in rows:
        key = locate_shard(row["uid"], row["created_at"], N_BITS).object_key
        assert r.read(key, row["uid"]) == (root / row["source_path"]).read_bytes(), row["uid"]


def shard_counts(rows: list[dict[str, Any]], limit: int = 4096) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        key = locate_shard(row["uid"], row["created_at"], N_BITS).object_key
        small = 0 < row["size_bytes"] <= limit
        counts[key] = counts.get(key, 0) + small
    return counts


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("records")
    return root, make_records(root, 1500)


def test_dict_packs_smaller_reads_back_and_is_deterministic(
    records: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, rows = records
    manifest = list(read_manifest(root / "m.json"))
    plain = pack(
        manifest, str(tmp_path / "plain"), PackOptions(n_bits=N_BITS, fsync=False, workers=2)
    )
    with_dict = pack(
        manifest,
        str(tmp_path / "dict"),
        PackOptions(n_bits=N_BITS, fsync=False, workers=2, dictionary=True),
    )
    assert with_dict.files == plain.files == 1500
    assert with_dict.bytes_out < plain.bytes_out
    read_all(tmp_path / "dict", rows, root)
    # every shard with >= 64 small files has a dictionary, used by exactly its small files
    counts = shard_counts(rows)
    sizes = {r["uid"]: r["size_bytes"] for r in rows}
    with_dictionary = 0
    for key, small in counts.items():
        with ShardReader.open_path(tmp_path / "dict" / key) as reader:
            if small < 64:
                assert reader.index.dictionary is None, key
                continue
            with_dictionary += 1
            assert reader.index.dictionary is not None, key
            assert len(reader.index.dictionary) <= 16384
            for e in reader.iter_entries():
                name = next(r["source_path"] for r in rows if r["uid"] == e.uid)
                if name.endswith(".gz"):
                    assert e.codec is Codec.NONE
                elif sizes[e.uid] <= 4096:
                    assert e.codec is Codec.ZSTD_DICT, e.uid
                else:
                    assert e.codec is Codec.ZSTD, e.uid
    assert with_dictionary >= 8  # the data set is made so most shards train one
    # the dictionary is sized to leave the index in the tail read: cold reads take as many
    # requests as without it (2 here), warm reads 1
    for row in rows[::50]:
        key = locate_shard(row["uid"], row["created_at"], N_BITS).object_key
        for tree in ("plain", "dict"):
            store = CountingStore(LocalObjectStore(tmp_path / tree))
            r = ShardRetriever(store, cache=IndexCache(1 << 20))
            r.read(key, row["uid"])
            assert [q.method for q in store.requests] == ["read_tail", "read_range"], (tree, key)
            store.reset()
            r.read(key, row["uid"])
            assert [q.method for q in store.requests] == ["read_range"]
    # the same input gives the same bytes, whatever the number of workers (R5)
    again = pack(
        manifest,
        str(tmp_path / "again"),
        PackOptions(n_bits=N_BITS, fsync=False, workers=1, dictionary=True),
    )
    assert again.bytes_out == with_dict.bytes_out
    assert tree_bytes(tmp_path / "again") == tree_bytes(tmp_path / "dict")
    # without --dict the output is what it always was: no dictionary anywhere
    for p in (tmp_path / "plain").rglob("*.des"):
        with ShardReader.open_path(p) as reader:
            assert reader.index.dictionary is None


def test_append_keeps_the_dictionary(tmp_path: Path) -> None:
    root = tmp_path / "src"
    first = make_records(root, 1200, name="first")
    second = make_records(root, 300, start=5000, name="second")
    out = tmp_path / "out"
    opts = PackOptions(n_bits=N_BITS, fsync=False, workers=2, dictionary=True)
    pack(read_manifest(root / "first.json"), str(out), opts)
    before = {}
    for p in out.rglob("*.des"):
        with ShardReader.open_path(p) as reader:
            before[p] = reader.index.dictionary
    assert sum(d is not None for d in before.values()) >= 8
    report = pack(read_manifest(root / "second.json"), str(out), opts)
    assert report.shards_appended >= 1
    appended_keys = {locate_shard(r["uid"], r["created_at"], N_BITS).object_key for r in second}
    for p, old in before.items():
        with ShardReader.open_path(p) as reader:
            assert reader.index.dictionary == old  # kept, byte for byte
            key = str(p.relative_to(out))
            if old is None or key not in appended_keys:
                continue
            for r in second:
                e = reader.lookup(r["uid"])
                small = 0 < r["size_bytes"] <= 4096 and not r["source_path"].endswith(".gz")
                if e is not None and small:
                    assert e.codec is Codec.ZSTD_DICT, r["uid"]
    read_all(out, first + second, root)


def test_repack_keeps_the_dictionary(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = make_records(root, 1200)
    out = tmp_path / "out"
    pack(
        read_manifest(root / "m.json"),
        str(out),
        PackOptions(n_bits=N_BITS, fsync=False, dictionary=True),
    )
    counts = shard_counts(rows)
    key = max(counts, key=lambda k: counts[k])
    victims = [r for r in rows if locate_shard(r["uid"], r["created_at"], N_BITS).object_key == key]
    store = LocalObjectStore(out)
    old_dict = read_shard_index(store, key)[0].dictionary
    assert old_dict is not None
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"uid": r["uid"], "created_at": r["created_at"]}) + "\n" for r in victims[:5]
        )
    )
    runner = CliRunner()
    base = ["--base-dir", str(out), "--n-bits", str(N_BITS)]
    res = runner.invoke(des_app, [*base, "delete", "--batch", str(batch)], env={})
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(des_app, [*base, "repack", "--json"], env={})
    assert res.exit_code == 0, res.stderr
    assert sum(r["erased"] for r in json.loads(res.stdout)["repacked"]) == 5
    new_index = read_shard_index(LocalShardEditor(out).store, key)[0]
    assert new_index.dictionary == old_dict
    read_all(out, victims[5:], root)


def test_dict_cli_options(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_records(root, 200)
    m = str(root / "m.json")
    code, _, err = run_des_pack(
        "--input-json", m, "--output-dir", str(tmp_path / "o"), "--dict", "--codec", "lz4"
    )
    assert code == 2
    assert "des-pack: error: --dict needs --codec zstd, got --codec lz4" in err
    code, _, err = run_des_pack(
        "--input-json", m, "--output-dir", str(tmp_path / "o"), "--dict-max-file-size", "0"
    )
    assert code == 2
    assert "des-pack: error: --dict-max-file-size must be 1..1048576 bytes, got 0" in err
    code, _, err = run_des_pack(
        "--input-json",
        m,
        "--output-dir",
        str(tmp_path / "o"),
        "--n-bits",
        "4",
        "--dict",
        "--dict-max-file-size",
        "1000000",
    )
    assert code == 0, err
    # 200 files on 16 shards: fewer than 64 samples per shard, so no dictionary anywhere
    for p in (tmp_path / "o").rglob("*.des"):
        with ShardReader.open_path(p) as reader:
            assert reader.index.dictionary is None


def test_dictionary_size_leaves_the_index_in_the_tail_read() -> None:
    """The dictionary is cut to the room the index leaves in the 64 KiB tail read, so a
    shard whose index fits there keeps 2-request cold reads (down to 1 KiB; below that, and
    for indexes that do not fit anyway, the size is 1/32 of the samples, at most 16 KiB)."""
    from datetime import UTC, datetime

    from des_packer._manifest import ManifestEntry
    from des_packer._shards import ShardState as _ShardState
    from des_packer._shards import _dict_size, _estimate_index

    DAY = datetime(2024, 5, 1, tzinfo=UTC)

    def state(n: int) -> _ShardState:
        todo = [
            ManifestEntry(f"u{i:09d}", DAY, 900, f"in/file-{i:06d}.txt", "text/plain")
            for i in range(n)
        ]
        return _ShardState(None, None, todo, [])  # type: ignore[arg-type]

    # one entry: uid 10 + 20, meta {"content_type":"text/plain","name":"file-000000.txt"} 54 + 4
    assert _estimate_index(state(1)) == 10 + 20 + 54 + 4 + 8 + 48
    assert _dict_size(state(100), 2 << 20) == 16384
    assert _dict_size(state(100), 64_000) == 2000
    assert _dict_size(state(100), 1000) == 1024
    mid = state(600)
    est = _estimate_index(mid)
    assert 48 * 1024 < est < 63 * 1024
    assert _dict_size(mid, 2 << 20) == 65536 - est - 4
    full = state(735)  # the index fits, but leaves under 1 KiB: full size (3-request reads)
    assert 65536 - 1024 - 4 < _estimate_index(full) <= 65536
    assert _dict_size(full, 2 << 20) == 16384
    assert _dict_size(state(2000), 2 << 20) == 16384  # the index is outside the tail anyway


@pytest.mark.heavy  # an S3 pack and append: left out of tools/test --quick
def test_dict_on_s3_with_an_append(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through the moto S3 server over HTTP: a shard packed with --dict, then late files
    appended (server-side copy + tail) keep the dictionary and read back byte-exact."""
    from des_routing import DesSettings
    from des_storage_s3 import open_store

    s3_server.reset()
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.client().create_bucket(Bucket="packed")
    root = tmp_path / "src"
    first = make_records(root, 1100, name="first")
    second = make_records(root, 200, start=7000, name="second")
    opts = PackOptions(
        n_bits=N_BITS,
        dictionary=True,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
    )
    pack(read_manifest(root / "first.json"), "s3://packed/p", opts)
    settings = DesSettings.from_env(
        {
            **s3_server.env(),
            "DES_BACKEND": "s3",
            "DES_S3_BUCKET": "packed",
            "DES_S3_PREFIX": "p",
            "DES_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "DES_S3_REGION": "us-east-1",
            "DES_N_BITS": str(N_BITS),
        }
    )
    store = open_store(settings)
    keys = sorted({locate_shard(r["uid"], r["created_at"], N_BITS).object_key for r in first})
    before = {k: read_shard_index(store, k)[0].dictionary for k in keys}
    assert sum(d is not None for d in before.values()) >= 8
    report = pack(read_manifest(root / "second.json"), "s3://packed/p", opts)
    assert report.shards_appended >= 1
    retriever = ShardRetriever(store, cache=IndexCache(16 << 20))
    for row in first[::25] + second:
        key = locate_shard(row["uid"], row["created_at"], N_BITS).object_key
        assert retriever.read(key, row["uid"]) == (root / row["source_path"]).read_bytes()
    for k, d in before.items():
        assert read_shard_index(store, k)[0].dictionary == d
