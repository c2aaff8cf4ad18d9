"""Property tests: round trips of arbitrary file sets for every codec; arbitrary, truncated
and bit-flipped shards raise only des-format errors and never return wrong bytes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from des_format import (
    BytesSource,
    DesFormatError,
    ShardReader,
    ShardWriter,
    codec_available,
    read_index,
)
from des_format._codecs import CODEC_NAMES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CODECS = [c.label for c in CODEC_NAMES.values() if codec_available(c)]
LEGACY = Path(__file__).parent / "vectors" / "legacy"

uids = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=24)
payloads = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(1, 200)),
)
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.text(max_size=10)
)
metas = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=3))
file_sets = st.dictionaries(uids, st.tuples(payloads, metas), max_size=25)
quick = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def build(files: dict[str, tuple[bytes, dict[str, Any] | None]], codec: str) -> bytes:
    out = io.BytesIO()
    w = ShardWriter(out, codec=codec)
    for uid, (data, meta) in files.items():
        w.add(uid, data, meta=meta)
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("codec", CODECS)
@quick
@given(files=file_sets)
def test_round_trip_any_file_set(codec: str, files: dict[str, tuple[bytes, Any]]) -> None:
    shard = build(files, codec)
    assert build(files, codec) == shard  # R5
    reader = ShardReader(BytesSource(shard))
    assert reader.index.entry_count == len(files)
    for uid, (data, meta) in files.items():
        assert reader.read(uid) == data
        entry = reader.lookup(uid)
        assert entry is not None
        assert entry.meta == (meta or {})
    assert sorted(e.uid for e in reader.iter_entries()) == sorted(files)
    assert reader.verify() == len(files)


def assert_only_format_errors(shard: bytes, files: dict[str, bytes] | None) -> None:
    """Reading ``shard`` either fails with a DesFormatError or returns the right bytes."""
    try:
        reader = ShardReader(BytesSource(shard))
    except DesFormatError:
        return
    if files is not None:
        for uid, data in files.items():
            try:
                got = reader.read(uid)
            except DesFormatError:
                continue
            assert got == data, f"wrong bytes for {uid!r}"
    try:
        entries = list(reader.iter_entries())
    except DesFormatError:
        return
    for entry in entries:
        try:
            got = reader.read_entry(entry)
        except DesFormatError:
            continue
        if files is not None and entry.uid in files:
            assert got == files[entry.uid]
    with contextlib.suppress(DesFormatError):
        reader.verify()


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_raise_only_format_errors(data: bytes) -> None:
    assert_only_format_errors(data, None)


@given(st.binary(max_size=200), st.sampled_from([b"DESF", b"DESI"]))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_with_footer_magic(data: bytes, magic: bytes) -> None:
    if magic == b"DESF":
        blob = data + b"DESF" + data[:40].ljust(40, b"\x00") + b"DESF"
    else:
        blob = b"DES2\x02\x00\x00\x00" + data + b"DESI" + len(data).to_bytes(8, "little")
    assert_only_format_errors(blob, None)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=80, deadline=None)
@given(files=file_sets, where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_bit_flips_never_give_wrong_bytes(
    codec: str, files: dict[str, tuple[bytes, Any]], where: float, bit: int
) -> None:
    shard = bytearray(build(files, codec))
    pos = int(where * len(shard))
    shard[pos] ^= 1 << bit
    assert_only_format_errors(bytes(shard), {u: d for u, (d, _m) in files.items()})


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=60, deadline=None)
@given(files=file_sets, cut=st.floats(0, 1, exclude_max=True))
def test_truncated_shards_raise_only_format_errors(
    codec: str, files: dict[str, tuple[bytes, Any]], cut: float
) -> None:
    shard = build(files, codec)
    assert_only_format_errors(
        shard[: int(cut * len(shard))], {u: d for u, (d, _m) in files.items()}
    )


@settings(max_examples=60, deadline=None)
@given(files=file_sets, more=file_sets, where=st.floats(0, 1, exclude_max=True))
def test_appended_shards_with_flips(
    files: dict[str, tuple[bytes, Any]], more: dict[str, tuple[bytes, Any]], where: float
) -> None:
    base = build(files, "none")
    tail = io.BytesIO()
    w = ShardWriter(
        tail, codec="none", base_offset=len(base), existing=read_index(BytesSource(base))
    )
    expected = {u: d for u, (d, _m) in files.items()}
    for uid, (data, meta) in more.items():
        if uid in files:
            continue
        w.add(uid, data, meta=meta)
        expected[uid] = data
    w.close()
    full = base + tail.getvalue()
    reader = ShardReader(BytesSource(full))
    for uid, data in expected.items():
        assert reader.read(uid) == data
    flipped = bytearray(full)
    flipped[int(where * len(full))] ^= 0x04
    assert_only_format_errors(bytes(flipped), expected)


@pytest.mark.parametrize("name", ["v1-mixed.des", "v2-none.des", "v2-zstd.des", "v2-lz4.des"])
@settings(max_examples=60, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7), cut=st.booleans())
def test_damaged_legacy_shards_raise_only_format_errors(
    name: str, where: float, bit: int, cut: bool
) -> None:
    # DES2 has no checksums, so only the error types are guaranteed for it.
    data = bytearray((LEGACY / name).read_bytes())
    pos = int(where * len(data))
    if cut:
        data = data[:pos]
    else:
        data[pos] ^= 1 << bit
    assert_only_format_errors(bytes(data), None)
