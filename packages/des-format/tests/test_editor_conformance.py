"""des-format's ShardEditor conformance suite, run against the local directory editor (the S3
editor runs it in des-storage-s3's tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from des_format import LocalShardEditor, ShardEditor
from des_format.testing import ShardEditorConformance


class TestLocalShardEditor(ShardEditorConformance):
    @pytest.fixture(autouse=True)
    def _dirs(self, tmp_path: Path) -> None:
        self.base = tmp_path / "store"
        self.scratch = tmp_path / "scratch"
        self.scratch.mkdir()

    def make_editor(self) -> ShardEditor:
        return LocalShardEditor(self.base)


def test_local_editor_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    """What ``capabilities.temp_files`` promises locally: a killed writer's temporary copy
    beside a shard goes away once old enough, never a fresh one."""
    editor = LocalShardEditor(tmp_path)
    shard = tmp_path / "20240101" / "A7.des"
    shard.parent.mkdir()
    shard.write_bytes(b"shard")
    old = shard.with_name(".des-edit.A7.des.0123456789ab")
    old.write_bytes(b"old copy")
    fresh = shard.with_name(".des-edit.A7.des.ba9876543210")
    fresh.write_bytes(b"fresh copy")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert editor.capabilities.temp_files
    assert editor.remove_stale_temps("20240101/A7.des", older_than=3600.0) == 1
    assert not old.exists()
    assert fresh.exists()
    assert shard.read_bytes() == b"shard"


def test_conformance_suite_catches_a_broken_editor(tmp_path: Path) -> None:
    class Broken(LocalShardEditor):
        def append(self, key: str, tail_path: str | os.PathLike[str], expected_etag: str) -> None:
            current = self.store.head(key).etag
            assert current is not None
            super().append(key, tail_path, current)  # ignores the caller's version

    class Suite(ShardEditorConformance):
        def make_editor(self) -> ShardEditor:
            return Broken(tmp_path / "store")

    suite = Suite()
    suite.scratch = tmp_path
    with pytest.raises(AssertionError, match="expected PreconditionFailed"):
        suite.test_append_is_conditional()
