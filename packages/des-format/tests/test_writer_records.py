"""The writer's cheap path for many small files: metadata JSON made once in
``prepare_payload``, entries kept as records until asked for, ``add_prepared_many``. Same
bytes, same entries, same errors as the one-file-at-a-time calls."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import pytest
from des_format import (
    BytesSource,
    Codec,
    DuplicateUid,
    PreparedBlock,
    PreparedPayload,
    ShardReader,
    ShardWriter,
    build_meta,
    prepare_block,
    prepare_payload,
)
from des_format._index import canonical_meta
from des_format._prepare import meta_with_json
from hypothesis import given, settings
from hypothesis import strategies as st

TEXT = b"lorem ipsum dolor sit amet " * 40
# codec none: these tests are about the index, and pass without the optional codecs (the
# test with a solid block needs zstd and says so)
NONE = "none"


def _old_build_meta(
    meta: dict[str, Any] | None, name: str | None, content_type: str | None
) -> tuple[dict[str, Any], bytes | None]:
    """What build_meta and the writer made before: the dict, then canonical_meta of it."""
    out = dict(meta) if meta else {}
    if name is not None:
        out["name"] = name
    if content_type is not None:
        out["content_type"] = content_type
    return out, (canonical_meta(out) if out else None)


_text = st.text(max_size=12)  # any code point: quotes, controls, non-ASCII, lone surrogates


@given(
    name=st.none() | _text,
    content_type=st.none() | _text,
    meta=st.none() | st.dictionaries(st.sampled_from(["name", "content_type", "x"]), _text),
)
@settings(max_examples=600, deadline=None)
def test_meta_with_json_is_build_meta_and_canonical_meta(
    name: str | None, content_type: str | None, meta: dict[str, Any] | None
) -> None:
    try:
        want: Any = _old_build_meta(meta, name, content_type)
    except ValueError:  # a lone surrogate: not UTF-8
        with pytest.raises(ValueError, match="metadata must be a JSON object of plain values"):
            meta_with_json(meta, name, content_type)
        with pytest.raises(ValueError, match="metadata must be a JSON object of plain values"):
            build_meta(meta, name, content_type)
        return
    assert meta_with_json(meta, name, content_type) == want
    assert build_meta(meta, name, content_type) == want[0]


def test_prepared_payload_carries_its_metadata_json() -> None:
    p = prepare_payload("a", TEXT, name="a.txt", content_type='text/"plain"', codec=NONE)
    assert p.meta == {"name": "a.txt", "content_type": 'text/"plain"'}
    assert p.meta_json == b'{"content_type":"text/\\"plain\\"","name":"a.txt"}'
    assert p.meta_json == canonical_meta(p.meta)
    # a copy with other metadata does not keep the old JSON
    q = replace(p, meta={"name": "b.txt"})
    assert q.meta_json is None
    assert q == replace(p, meta={"name": "b.txt"})


def _payloads() -> list[PreparedPayload | PreparedBlock]:
    items: list[PreparedPayload | PreparedBlock] = [
        prepare_payload(
            f"f{i:03d}",
            TEXT[: 100 + 37 * i],
            name=f"f{i}.txt",
            content_type="text/plain",
            codec=NONE,
        )
        for i in range(20)
    ]
    items.append(prepare_payload("img", bytes(range(256)) * 4, name="x.jpg", codec=NONE))
    items.append(prepare_payload("empty", b"", meta={"k": 1}, codec=NONE))
    items.append(prepare_payload("bare", TEXT, codec=NONE))
    return items


def _with_block() -> list[PreparedPayload | PreparedBlock]:
    pytest.importorskip("zstandard", reason="a solid block is a zstd frame")
    block_files = [
        (f"b{i}", TEXT[: 300 + i], {"name": f"b{i}.log", "content_type": "text/plain"})
        for i in range(5)
    ]
    return [*_payloads(), *prepare_block(block_files)]


def _shard(add: Any) -> bytes:
    out = io.BytesIO()
    w = ShardWriter(out, codec=NONE)
    add(w)
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("make", [_payloads, _with_block])
def test_add_prepared_many_writes_the_bytes_of_one_call_per_file(make: Any) -> None:
    items: list[PreparedPayload | PreparedBlock] = make()

    def one_by_one(w: ShardWriter) -> None:
        for item in items:
            if isinstance(item, PreparedBlock):
                w.add_block(item)
            else:
                w.add_prepared(item)

    counts: list[int] = []

    def many(w: ShardWriter) -> None:
        counts.append(w.add_prepared_many(items[:7]))
        counts.append(w.add_prepared_many(iter(items[7:])))

    expected = _shard(one_by_one)
    assert _shard(many) == expected
    files = sum(len(i.members) if isinstance(i, PreparedBlock) else 1 for i in items)
    assert counts == [7, files - 7]
    reader = ShardReader(BytesSource(expected))
    assert reader.read("f003") == TEXT[: 100 + 37 * 3]
    entry = reader.lookup("f003")
    assert entry is not None
    assert entry.meta == {"name": "f3.txt", "content_type": "text/plain"}
    if make is _with_block:
        assert reader.read("b2") == TEXT[:302]
        member = reader.lookup("b2")
        assert member is not None
        assert member.codec is Codec.ZSTD_BLOCK


def test_entries_returned_and_kept_are_those_read_back() -> None:
    out = io.BytesIO()
    w = ShardWriter(out, codec=NONE)
    p = prepare_payload("doc", TEXT, name="doc.json", content_type="application/json", codec=NONE)
    returned = w.add_prepared(p)
    w.add_prepared_many([prepare_payload("other", TEXT[:50], name="o.txt", codec=NONE)])
    assert "doc" in w
    assert "other" in w
    assert "nope" not in w
    deleted = w.delete("other")
    assert deleted.deleted
    assert deleted.uid == "other"
    assert "other" not in w
    w.close()
    reader = ShardReader(BytesSource(out.getvalue()))
    assert reader.lookup("doc") == returned
    other = reader.lookup("other")
    assert other is not None
    assert other.deleted


def test_a_copy_with_other_metadata_is_indexed_with_it() -> None:
    p = prepare_payload("doc", TEXT, name="doc.txt", content_type="text/plain", codec=NONE)
    out = io.BytesIO()
    w = ShardWriter(out, codec=NONE)
    w.add_prepared(replace(p, meta={"name": "renamed.txt"}))
    w.close()
    entry = ShardReader(BytesSource(out.getvalue())).lookup("doc")
    assert entry is not None
    assert entry.meta == {"name": "renamed.txt"}


def test_add_prepared_many_refuses_a_duplicate_like_add_prepared() -> None:
    w = ShardWriter(io.BytesIO(), codec=NONE)
    p = prepare_payload("same", TEXT, codec=NONE)
    with pytest.raises(DuplicateUid):
        w.add_prepared_many([p, p])
    assert w.entry_count == 1


def test_metadata_json_cannot_hold_is_refused_at_close() -> None:
    p = prepare_payload("doc", TEXT, codec=NONE)
    w = ShardWriter(io.BytesIO(), codec=NONE)
    w.add_prepared_many([replace(p, meta={"x": {1, 2}})])
    with pytest.raises(TypeError):
        w.close()
