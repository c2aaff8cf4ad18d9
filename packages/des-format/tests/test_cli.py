"""``python -m des_format``: ls, cat, verify, info, as a user runs them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from des_format import LocalBigFileSink, ShardWriter


def run(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "des_format", *map(str, args)],
        check=False,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    path = tmp_path / "20240101" / "A7.des"
    path.parent.mkdir()
    with path.open("wb") as fh:
        w = ShardWriter(
            fh, codec="none", big_file_threshold=100, bigfile_sink=LocalBigFileSink(path.parent)
        )
        w.add("doc-1", b"hello world\n", content_type="text/plain")
        w.add("big", b"B" * 500)
        w.add("gone", b"bye")
        w.delete("gone")
        w.close()
    return path


def test_ls_prints_one_json_object_per_entry(shard: Path) -> None:
    proc = run("ls", shard)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    by_uid = {r["uid"]: r for r in rows}
    assert sorted(by_uid) == ["big", "doc-1", "gone"]
    assert by_uid["doc-1"] == {
        "uid": "doc-1",
        "size": 12,
        "stored_size": 12,
        "codec": "none",
        "checksum": f"{__import__('zlib').crc32(b'hello world' + bytes([10])):08x}",
        "bigfile": False,
        "bigfile_hash": None,
        "part": 0,
        "offset": 16,
        "deleted": False,
        "meta": {"content_type": "text/plain"},
    }
    assert by_uid["big"]["bigfile"] is True
    assert by_uid["big"]["bigfile_hash"] == hashlib.sha256(b"B" * 500).hexdigest()
    assert by_uid["gone"]["deleted"] is True


def test_cat_writes_original_bytes(shard: Path) -> None:
    assert run("cat", shard, "doc-1").stdout == b"hello world\n"
    assert run("cat", shard, "big").stdout == b"B" * 500


def test_cat_errors_are_one_line_without_traceback(shard: Path) -> None:
    proc = run("cat", shard, "nope")
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode() == (
        f"python -m des_format: error: {shard}: no entry for uid 'nope'\n"
    )
    proc = run("cat", shard, "gone")
    assert proc.returncode == 1
    assert proc.stderr.decode().endswith("uid 'gone' was deleted\n")


def test_verify_ok_and_first_bad_entry(shard: Path) -> None:
    proc = run("verify", shard)
    assert proc.returncode == 0
    assert proc.stdout.decode() == f"ok: {shard}: 3 entries, all checksums match\n"
    data = bytearray(shard.read_bytes())
    data[16 + 3] ^= 0x01  # inside doc-1's payload
    shard.write_bytes(bytes(data))
    proc = run("verify", shard)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"python -m des_format: error: {shard}: checksum mismatch for 'doc-1'\n"
    )
    assert "Traceback" not in proc.stderr.decode()
    assert run("verify", "--quick", shard).returncode == 0


def test_verify_reports_missing_big_file(shard: Path) -> None:
    sha = hashlib.sha256(b"B" * 500).hexdigest()
    (shard.parent / "_bigFiles" / sha).unlink()
    proc = run("verify", shard)
    assert proc.returncode == 1
    path = shard.parent / "_bigFiles" / sha
    assert proc.stderr.decode() == (
        f"python -m des_format: error: {shard}: entry 'big': big file is missing: {path}\n"
    )


def test_info_and_legacy(legacy_dir: Path) -> None:
    proc = run("info", legacy_dir / "v2-none.des")
    assert json.loads(proc.stdout) == {
        "path": str(legacy_dir / "v2-none.des"),
        "format": "DES2",
        "format_version": 2,
        "entries": 5,
        "object_size": 4862,
        "index_offset": 4516,
        "index_bytes": 346,
        "buckets": 1,
    }
    golden = legacy_dir.parent / "golden" / "dictionary.des"
    info = json.loads(run("info", golden).stdout)
    assert (info["dictionary_bytes"], info["entries"], info["object_size"]) == (2048, 5, 2988)
    cat = run("cat", legacy_dir / "bigfiles-case" / "v2-bigfile.des", "photo-7.jpg")
    assert hashlib.sha256(cat.stdout).hexdigest() == (
        "10fc3c51a152e90e5b90319b601d92ccf37290ef53c35ff92507687d8a911a08"
    )
    proc = run("verify", legacy_dir / "v1-mixed.des")
    assert proc.returncode == 0
    assert proc.stdout.decode() == (
        f"ok: {legacy_dir / 'v1-mixed.des'}: 5 entries,"
        " all readable (legacy DES2 stores no checksums)\n"
    )


def test_not_a_shard_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.des"
    junk.write_bytes(b"just some text, not a shard at all")
    proc = run("ls", junk)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"python -m des_format: error: {junk}: not a DES shard: no footer magic at the end"
        " of the object\n"
    )
    proc = run("verify", tmp_path / "missing.des")
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"python -m des_format: error: {tmp_path / 'missing.des'}: no such shard:"
        f" {tmp_path / 'missing.des'}\n"
    )


def test_help_explains_and_usage_errors_exit_2() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    for word in ("ls SHARD", "cat SHARD UID", "verify SHARD", "_bigFiles", "exit status"):
        assert word in text
    proc = run("cat")
    assert proc.returncode == 2
    assert b"usage:" in proc.stderr


def test_ls_in_process_matches(shard: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from des_format._cli import main

    assert main(["ls", str(shard)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_ls_shows_block_offset_for_solid_block_members_only(
    golden_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from des_format import Codec, codec_available
    from des_format._cli import main

    if not codec_available(Codec.ZSTD):
        pytest.skip("the zstd library is not installed")
    expected = json.loads((golden_dir / "expected.json").read_text("utf-8"))["blocks.des"]
    assert main(["ls", str(golden_dir / "blocks.des")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["uid"] for r in rows] == [e["uid"] for e in expected["entries"]]
    for row, want in zip(rows, expected["entries"], strict=True):
        if row["codec"] == "zstd_block":
            assert list(row)[8:10] == ["offset", "block_offset"]
            assert row["block_offset"] == want["block_offset"]
        else:
            assert "block_offset" not in row
    assert [r["block_offset"] for r in rows if r["uid"].startswith("note-")] == [0, 400, 950]
