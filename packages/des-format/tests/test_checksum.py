"""The one CRC-32 of the format: isal's when installed, zlib's otherwise, always the same
values, so shards are byte-identical either way."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from des_format import Codec, ShardReader, ShardWriter, codec_available, crc32, crc32_backend
from des_format._checksum import load_fast_crc32
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    import isal  # noqa: F401

    HAVE_ISAL = True
except ImportError:
    HAVE_ISAL = False

needs_isal = pytest.mark.skipif(not HAVE_ISAL, reason="isal (des-format[fast]) is not installed")
FAST = load_fast_crc32()


def test_check_value_and_empty_input() -> None:
    assert crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC check value
    assert crc32(b"") == 0
    assert crc32(b"", 0xDEADBEEF) == 0xDEADBEEF


@given(st.binary(max_size=70_000), st.integers(min_value=0, max_value=2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_crc32_is_zlibs(data: bytes, start: int) -> None:
    assert crc32(data, start) == zlib.crc32(data, start)
    assert crc32(memoryview(data), start) == zlib.crc32(data, start)
    assert crc32(bytearray(data)) == zlib.crc32(data)


@given(st.lists(st.binary(max_size=5000), max_size=8))
@settings(max_examples=200, deadline=None)
def test_crc32_continues_across_chunks(chunks: list[bytes]) -> None:
    value = 0
    for chunk in chunks:
        value = crc32(chunk, value)
    assert value == zlib.crc32(b"".join(chunks))


@needs_isal
def test_isal_is_used_when_installed() -> None:
    assert FAST is not None
    assert crc32_backend() == ("zlib" if os.environ.get("DES_CRC32") == "zlib" else "isal")


@needs_isal
@given(st.binary(max_size=200_000), st.integers(min_value=0, max_value=2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_isal_and_zlib_give_the_same_crc(data: bytes, start: int) -> None:
    assert FAST is not None
    assert FAST(data, start) == zlib.crc32(data, start)


def _write_shard_with(backend_env: str, out: Path) -> str:
    code = (
        "import sys, des_format as d\n"
        "from des_format import ShardWriter\n"
        "with open(sys.argv[1], 'wb') as fh:\n"
        "    w = ShardWriter(fh, codec='none')\n"
        "    for i in range(300):\n"
        "        w.add(f'u{i}', bytes(range(256)) * (i % 40) + str(i).encode(), name=f'f{i}.bin')\n"
        "    w.close()\n"
        "print(d.crc32_backend())\n"
    )
    env = {**os.environ, "DES_CRC32": backend_env}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return proc.stdout.strip()


@needs_isal
def test_shards_are_byte_identical_whichever_crc32_wrote_them(tmp_path: Path) -> None:
    assert _write_shard_with("zlib", tmp_path / "zlib.des") == "zlib"
    assert _write_shard_with("", tmp_path / "isal.des") == "isal"
    raw = (tmp_path / "zlib.des").read_bytes()
    assert raw == (tmp_path / "isal.des").read_bytes()
    with ShardReader.open_path(tmp_path / "isal.des") as reader:
        assert reader.verify() == 300


def test_writer_checksums_are_zlib_crc32(tmp_path: Path) -> None:
    path = tmp_path / "a.des"
    payloads = {f"u{i}": os.urandom(i * 997) for i in range(20)}
    with path.open("wb") as fh:
        writer = ShardWriter(fh, codec="zstd" if codec_available(Codec.ZSTD) else "none")
        for uid, data in payloads.items():
            writer.add(uid, data)
        writer.close()
    with ShardReader.open_path(path) as reader:
        for entry in reader.iter_entries():
            assert entry.checksum == zlib.crc32(payloads[entry.uid])
