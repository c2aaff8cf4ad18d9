from __future__ import annotations

import json
from pathlib import Path

import pytest
from des_format import ShardReader
from des_packer import PackOptions, pack, read_manifest
from des_packer._inspect import safe_file_name
from des_packer.cli import des_app
from des_packer_testkit import DataSet
from des_routing import locate_shard
from typer.testing import CliRunner


@pytest.fixture
def packed(dataset: DataSet, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    pack(read_manifest(dataset.manifest), str(out), PackOptions(n_bits=4))
    return out


def des(out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(
        des_app, ["--base-dir", str(out), "--n-bits", "4", *args], env=env or {}
    )
    return result.exit_code, result.stdout_bytes, result.stderr


def test_get_to_file_and_stdout(dataset: DataSet, packed: Path, tmp_path: Path) -> None:
    row = dataset.rows[4]
    code, _, err = des(
        packed, "get", row["uid"], "--created-at", row["created_at"], "-o", str(tmp_path / "x")
    )
    assert code == 0, err
    assert (tmp_path / "x").read_bytes() == dataset.content(row["uid"])
    code, out, _ = des(packed, "get", row["uid"], "--created-at", row["created_at"])
    assert code == 0
    assert out == dataset.content(row["uid"])


def test_get_errors(dataset: DataSet, packed: Path) -> None:
    row = dataset.rows[0]
    code, _, err = des(packed, "get", "missing-uid", "--created-at", row["created_at"])
    assert code == 1
    key = locate_shard("missing-uid", row["created_at"], 4).object_key
    assert err.startswith(f"des: error: no entry for uid 'missing-uid' in {packed.resolve() / key}")
    code, _, err = des(packed, "get", row["uid"], "--created-at", "2030-01-01T00:00:00Z")
    assert code == 1
    assert "des: error: no shard " in err
    assert "check created_at, DES_N_BITS and the base directory" in err
    code, _, err = des(packed, "get", row["uid"], "--created-at", "soon")
    assert code == 2
    assert "invalid created_at 'soon'" in err
    code, _, err = des(packed, "get", row["uid"])
    assert code == 2
    assert "give UID --created-at T (or --batch FILE --out DIR)" in err


def test_s3_backend_without_bucket_is_a_usage_error(packed: Path) -> None:
    code, _, err = des(packed, "get", "u", "--created-at", "2024-01-01", env={"DES_BACKEND": "s3"})
    assert code == 2
    assert "DES_S3_BUCKET" in err


def test_ls_lists_every_entry(dataset: DataSet, packed: Path) -> None:
    row = dataset.rows[0]
    key = locate_shard(row["uid"], row["created_at"], 4).object_key
    code, out, _ = des(packed, "ls", key, "--json")
    assert code == 0
    entries = [json.loads(line) for line in out.decode().splitlines()]
    with ShardReader.open_path(packed / key) as reader:
        assert [e["uid"] for e in entries] == sorted(e.uid for e in reader.iter_entries())
    first = next(e for e in entries if e["uid"] == row["uid"])
    fields = ["uid", "size", "stored_size", "codec", "checksum", "bigfile", "bigfile_hash"]
    fields += ["part", "offset"]
    if first["codec"] == "zstd_block":  # a solid-block member: where it starts in its block
        fields.append("block_offset")
    assert list(first) == [*fields, "deleted", "meta"]  # those of `python -m des_format ls`
    from des_format._cli import entry_to_json

    with ShardReader.open_path(packed / key) as reader:
        found = reader.lookup(row["uid"])
        assert found is not None
        assert first == json.loads(json.dumps(entry_to_json(found)))
    assert first["size"] == row["size_bytes"]
    code, out, _ = des(packed, "ls", str(packed / key))
    assert code == 0
    text = out.decode().splitlines()
    assert text[0] == f"# {packed / key}: {len(entries)} entries, format 1"
    assert text[1].split("\t")[:4] == ["uid", "size", "stored_size", "codec"]
    assert len(text) == 2 + len(entries)  # one row per entry
    assert all(len(line.split("\t")) == 10 for line in text[1:])


def test_ls_shows_block_offsets(tmp_path: Path) -> None:
    """Members of a solid block: ``block_offset`` in the JSON record (only for them) and in
    the table (``-`` for other entries); the table's flags column names tombstones."""
    from des_format import PreparedBlock, ShardWriter, prepare_block

    path = tmp_path / "blocks.des"
    texts = [(f"m{i}", f"line {i} of a shared vocabulary\n".encode() * 40, {}) for i in range(3)]
    with path.open("wb") as fh:
        w = ShardWriter(fh, codec="zstd")
        block = prepare_block(texts)[0]
        assert isinstance(block, PreparedBlock)
        w.add_block(block)
        w.add("plain", b"not in a block")
        w.delete("m1")
        w.close()
    code, out, err = des(tmp_path, "ls", str(path), "--json")
    assert code == 0, err
    rows = {r["uid"]: r for r in map(json.loads, out.decode().splitlines())}
    assert {u: r.get("block_offset") for u, r in rows.items()} == {
        "m0": 0,
        "m1": len(texts[0][1]),
        "m2": 2 * len(texts[0][1]),
        "plain": None,
    }
    assert "block_offset" not in rows["plain"]
    code, out, err = des(tmp_path, "ls", str(path))
    assert code == 0, err
    table = [line.split("\t") for line in out.decode().splitlines()[1:]]
    head = table[0]
    got = {r[0]: (r[head.index("block_offset")], r[head.index("flags")]) for r in table[1:]}
    n = len(texts[0][1])
    assert got == {
        "m0": ("0", "-"),
        "m1": (str(n), "deleted"),
        "m2": (str(2 * n), "-"),
        "plain": ("-", "-"),
    }


def test_verify_fast_and_deep_and_corruption(dataset: DataSet, packed: Path) -> None:
    code, out, _ = des(packed, "verify", str(packed))
    report = json.loads(out)
    assert code == 0
    assert report["mode"] == "fast"
    assert report["failed"] == 0
    assert report["entries"] == 60
    # Flip one payload byte of a compressible text file: only --deep reads payloads.
    row = dataset.rows[0]
    key = locate_shard(row["uid"], row["created_at"], 4).object_key
    with ShardReader.open_path(packed / key) as reader:
        entry = reader.lookup(row["uid"])
    assert entry is not None
    shard = packed / key
    raw = bytearray(shard.read_bytes())
    raw[entry.offset + entry.stored_size // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert des(packed, "verify", str(packed))[0] == 0
    code, out, err = des(packed, "verify", str(packed), "--deep")
    report = json.loads(out)
    assert code == 1
    assert report["failed"] == 1
    bad = next(r for r in report["results"] if not r["ok"])
    assert bad["shard"] == str(shard)
    assert f"des: verify failed: {shard}: " in err
    # A flipped byte in the footer fails the fast check too.
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    code, out, _ = des(packed, "verify", key)
    assert code == 1
    assert json.loads(out)["failed"] == 1


def test_verify_nothing_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = des(tmp_path, "verify", str(tmp_path / "empty"))
    assert code == 1
    assert json.loads(out)["shards"] == 0
    assert "no shards found" in err


@pytest.mark.parametrize(
    ("uid", "name"),
    [("abc-1.txt", "abc-1.txt"), ("a/b", "a%2Fb"), ("..", "%2E%2E"), ("é", "%C3%A9")],
)
def test_safe_file_names(uid: str, name: str) -> None:
    assert safe_file_name(uid) == name


def test_s3_without_the_extra_names_it(packed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "des_storage_s3", None)  # import fails as if absent
    env = {"DES_BACKEND": "s3", "DES_S3_BUCKET": "b"}
    code, _, err = des(packed, "get", "u", "--created-at", "2024-01-01", env=env)
    assert code == 2
    assert err == "des: error: DES_BACKEND=s3 needs the S3 extra: pip install 'des-packer[s3]'\n"
    from des_packer import PackConfigError, PackOptions, pack

    with pytest.raises(PackConfigError, match=r"pip install 'des-packer\[s3\]'"):
        pack([], "s3://bucket/prefix", PackOptions())


def _batch_file(dataset: DataSet, tmp_path: Path) -> Path:
    batch = tmp_path / "batch.jsonl"
    rows = [{"uid": r["uid"], "created_at": r["created_at"]} for r in dataset.rows]
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return batch


def test_get_batch_progress_on_request(dataset: DataSet, packed: Path, tmp_path: Path) -> None:
    """--progress: lines on stderr ending with the totals; stdout stays the JSON report."""
    batch = _batch_file(dataset, tmp_path)
    n = len(dataset.rows)
    code, out, err = des(packed, "get", "--batch", str(batch), "--out", str(tmp_path / "a"),
                         "--progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"ok": n, "failed": 0, "failures": []}
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"des get: {n}/{n} files, 0 failed, ")
    assert last.endswith(" s")


def test_get_batch_is_silent_when_stderr_is_not_a_terminal(
    dataset: DataSet, packed: Path, tmp_path: Path
) -> None:
    batch = _batch_file(dataset, tmp_path)
    code, out, err = des(packed, "get", "--batch", str(batch), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert err == ""
    assert json.loads(out)["ok"] == len(dataset.rows)
