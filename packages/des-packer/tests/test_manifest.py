from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from des_packer import ManifestEntry, ManifestError, parse_manifest_entry, read_manifest
from des_packer._manifest import join_relative
from hypothesis import given, settings
from hypothesis import strategies as st

GOOD = {
    "uid": "uid-123",
    "created_at": "2024-01-01T00:00:00Z",
    "size_bytes": 1024,
    "source_path": "/data/input/file-123.bin",
}


def test_json_list_as_in_the_product_readme(tmp_path: Path) -> None:
    second = {**GOOD, "uid": "uid-456", "created_at": "2024-01-02T00:00:00Z", "size_bytes": 2048}
    path = tmp_path / "m.json"
    path.write_text(json.dumps([GOOD, second], indent=2))
    entries = list(read_manifest(path))
    src = "/data/input/file-123.bin"
    assert entries == [
        ManifestEntry("uid-123", datetime(2024, 1, 1, tzinfo=UTC), 1024, src),
        ManifestEntry("uid-456", datetime(2024, 1, 2, tzinfo=UTC), 2048, src),
    ]


def test_json_lines_relative_paths_join_the_manifest_dir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.jsonl"
    rows = [
        {**GOOD, "source_path": "../input/a.txt", "content_type": "text/plain", "meta": {"k": 1}},
        {"uid": "u2", "created_at": "2024-01-01", "size_bytes": 0, "source": "s3://b/key.bin"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = read_manifest(path)
    assert a.source == str(tmp_path / "input" / "a.txt")
    assert a.content_type == "text/plain"
    assert a.meta == {"k": 1}
    assert b.source == "s3://b/key.bin"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"uid": None},
            "missing field uid; every entry needs uid, created_at, size_bytes and source_path",
        ),
        ({"created_at": None, "size_bytes": None}, "missing fields created_at, size_bytes"),
        ({"source_path": None}, "missing field source_path"),
        ({"created_at": "yesterday"}, "cannot parse created_at 'yesterday'"),
        ({"created_at": 17}, "created_at must be an ISO 8601 string"),
        ({"size_bytes": -5}, "size_bytes must not be negative, got -5"),
        ({"size_bytes": "12"}, "size_bytes must be a whole number of bytes, got '12'"),
        ({"size_bytes": True}, "size_bytes must be a whole number of bytes, got True"),
        ({"uid": ""}, "uid must be a non-empty string"),
        ({"meta": [1]}, "meta must be a JSON object, got [1]"),
        ({"content_type": 5}, "content_type must be a string, got 5"),
    ],
)
def test_bad_entries_name_the_entry_and_the_fix(change: dict[str, object], fragment: str) -> None:
    value = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ManifestError) as info:
        parse_manifest_entry(value, where="m.json entry #3")
    assert str(info.value).startswith("m.json entry #3")
    assert fragment in str(info.value)


def test_uid_is_named_in_the_message() -> None:
    with pytest.raises(ManifestError, match=r"^m.json entry #1 \(uid 'uid-123'\): size_bytes must"):
        parse_manifest_entry({**GOOD, "size_bytes": -1}, where="m.json entry #1")


def test_not_an_object() -> None:
    with pytest.raises(ManifestError, match="line 2: expected a JSON object, got list"):
        parse_manifest_entry([1], where="line 2")


def test_invalid_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{nope\n")
    with pytest.raises(ManifestError, match=r"^m.jsonl line 2: not valid JSON"):
        list(read_manifest(path))


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"cannot read manifest .*check the --input-json path"):
        list(read_manifest(tmp_path / "absent.json"))


def test_entry_accepts_string_timestamps_and_rejects_bad_sizes() -> None:
    e = ManifestEntry("u", "2024-03-04T05:06:07+02:00", 3, "/x")  # type: ignore[arg-type]
    assert e.created_at == datetime(2024, 3, 4, 3, 6, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="size_bytes must not be negative"):
        ManifestEntry("u", datetime(2024, 1, 1, tzinfo=UTC), -1, "/x")


@settings(max_examples=500, deadline=None)
@given(
    base=st.sampled_from(["/data/m", "/", "//", "rel/dir", "", ".", "..", "/a/../b/"]),
    parts=st.lists(
        st.sampled_from(["a", "bb", ".", "..", "", "c.txt", "..x", ".hidden"]), max_size=6
    ),
)
def test_relative_sources_join_as_normpath_does(base: str, parts: list[str]) -> None:
    source = "/".join(parts)
    assert join_relative(base, source) == os.path.normpath(os.path.join(base, source))
