"""The behaviour every :class:`~des_format.ShardEditor` must show, as test methods (no pytest
import): conditional appends and replacements, part uploads, in-place overwrites guarded by
the head's ETag, removal, listing, the declared capabilities, and a delete run through the
editor end to end. Published as :class:`des_format.testing.ShardEditorConformance`."""

from __future__ import annotations

import io
import time
from pathlib import Path

from ._delete import delete_entries
from ._editor import EditorCapabilities, ShardEditor
from ._errors import EntryDeleted, ObjectNotFound, PreconditionFailed
from ._layout import part_key
from ._reader import ShardReader
from ._source import StoreSource
from ._writer import ShardWriter

HEAD = "20240101/A7.des"
OTHER = "20240101/5C.des"


def _expect(exc_type: type[BaseException], fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except exc_type as exc:
        return exc
    raise AssertionError(f"expected {exc_type.__name__}")


class ShardEditorConformance:
    """Subclass it in a test module as ``TestXxx`` and implement :meth:`make_editor`, which
    returns an editor over an empty store (a fresh directory or bucket). ``self.scratch``
    is a directory for the files the tests upload (set it in a fixture)."""

    scratch: Path
    payload = bytes(range(256)) * 64  # 16 KiB

    def make_editor(self) -> ShardEditor:
        raise NotImplementedError

    # ---- helpers ----

    def _file(self, name: str, data: bytes) -> Path:
        path = self.scratch / name
        path.write_bytes(data)
        return path

    def _with(self, key: str, data: bytes) -> ShardEditor:
        editor = self.make_editor()
        editor.put(key, self._file("put", data))
        return editor

    @staticmethod
    def _read(editor: ShardEditor, key: str) -> bytes:
        size = editor.store.head(key).size
        return editor.store.read_range(key, 0, size)

    @staticmethod
    def _etag(editor: ShardEditor, key: str) -> str:
        etag = editor.store.head(key).etag
        assert etag is not None
        return etag

    # ---- the port ----

    def test_capabilities_are_declared(self) -> None:
        editor = self.make_editor()
        assert isinstance(editor.capabilities, EditorCapabilities)
        assert isinstance(editor.bigfiles_prefix, str)
        assert editor.bigfile_grace_seconds >= 0

    def test_put_then_read_back(self) -> None:
        editor = self._with(HEAD, self.payload)
        assert self._read(editor, HEAD) == self.payload
        editor.put(HEAD, self._file("again", b"replaced"))  # put overwrites
        assert self._read(editor, HEAD) == b"replaced"

    def test_append_is_conditional(self) -> None:
        editor = self._with(HEAD, self.payload)
        etag = self._etag(editor, HEAD)
        editor.append(HEAD, self._file("tail", b"+tail"), etag)
        assert self._read(editor, HEAD) == self.payload + b"+tail"
        assert self._etag(editor, HEAD) != etag
        _expect(PreconditionFailed, lambda: editor.append(HEAD, self._file("t2", b"x"), etag))
        assert self._read(editor, HEAD) == self.payload + b"+tail"

    def test_replace_is_conditional(self) -> None:
        editor = self._with(HEAD, self.payload)
        etag = self._etag(editor, HEAD)
        editor.replace(HEAD, self._file("new", b"new version"), etag)
        assert self._read(editor, HEAD) == b"new version"
        _expect(PreconditionFailed, lambda: editor.replace(HEAD, self._file("n2", b"x"), etag))
        assert self._read(editor, HEAD) == b"new version"

    def test_overwrite_range_with_a_fill_byte(self) -> None:
        editor = self._with(HEAD, b"head")
        part = part_key(HEAD, 1)
        editor.put(part, self._file("part", self.payload))
        etag = self._etag(editor, HEAD)
        assert editor.overwrite_range(part, 100, 300, 0, shard_key=HEAD, shard_etag=etag)
        got = self._read(editor, part)
        assert got == self.payload[:100] + bytes(200) + self.payload[300:]

    def test_overwrite_range_with_given_bytes(self) -> None:
        editor = self._with(HEAD, b"head")
        part = part_key(HEAD, 1)
        editor.put(part, self._file("part", self.payload))
        etag = self._etag(editor, HEAD)
        new = b"N" * 50
        assert editor.overwrite_range(part, 10, 60, new, shard_key=HEAD, shard_etag=etag)
        assert self._read(editor, part) == self.payload[:10] + new + self.payload[60:]
        _expect(
            ValueError,
            lambda: editor.overwrite_range(part, 10, 60, b"short", shard_key=HEAD, shard_etag=etag),
        )

    def test_overwrite_range_refuses_a_changed_head(self) -> None:
        editor = self._with(HEAD, b"head")
        part = part_key(HEAD, 1)
        editor.put(part, self._file("part", self.payload))
        stale = self._etag(editor, HEAD)
        editor.replace(HEAD, self._file("h2", b"head, rebuilt"), stale)
        assert not editor.overwrite_range(part, 0, 10, 0, shard_key=HEAD, shard_etag=stale)
        assert self._read(editor, part) == self.payload

    def test_remove(self) -> None:
        editor = self._with(HEAD, self.payload)
        assert editor.remove(HEAD) >= 1
        _expect(ObjectNotFound, lambda: editor.store.head(HEAD))
        assert editor.remove(HEAD) == 0

    def test_list_keys_sorted_under_a_prefix(self) -> None:
        editor = self._with(OTHER, b"o")
        editor.put(HEAD, self._file("h", b"h"))
        editor.put(part_key(HEAD, 1), self._file("p", b"p"))
        editor.put("20240102/00.des", self._file("d", b"d"))
        assert list(editor.list_keys("20240101/")) == [OTHER, HEAD, part_key(HEAD, 1)]
        assert list(editor.list_keys("20240101/A7")) == [HEAD, part_key(HEAD, 1)]
        assert list(editor.list_keys("20991231/")) == []

    def test_modified_is_when_the_object_was_written(self) -> None:
        editor = self._with(HEAD, self.payload)
        assert abs(editor.modified(HEAD) - time.time()) < 600  # loose: clocks of servers
        _expect(ObjectNotFound, lambda: editor.modified("20240101/FF.des"))

    def test_versions_and_temporary_files_follow_the_capabilities(self) -> None:
        editor = self._with(HEAD, self.payload)
        editor.replace(HEAD, self._file("v2", b"v2"), self._etag(editor, HEAD))
        caps = editor.capabilities
        if not caps.versions:
            assert editor.old_versions(HEAD) == 0
            assert editor.purge_old_versions(HEAD) == 0
        else:
            old = editor.old_versions(HEAD)
            assert editor.purge_old_versions(HEAD) == old
            assert editor.old_versions(HEAD) == 0
        assert self._read(editor, HEAD) == b"v2"
        if not caps.temp_files:
            assert editor.remove_stale_temps(HEAD, older_than=0.0) == 0
        else:
            assert editor.remove_stale_temps(HEAD, older_than=3600.0) == 0

    def test_scratch_dir_and_describe(self) -> None:
        editor = self.make_editor()
        assert editor.scratch_dir().is_dir()
        assert HEAD in editor.describe(HEAD)

    def test_delete_through_the_editor(self) -> None:
        """:func:`delete_entries` on a shard the editor holds: the file reads as deleted,
        the others byte-exact; a second delete finds it already deleted."""
        out = io.BytesIO()
        writer = ShardWriter(out, codec="none")
        files = {f"uid-{i}": f"file {i} ".encode() * (i + 1) for i in range(5)}
        for uid, data in files.items():
            writer.add(uid, data)
        writer.close()
        editor = self._with(HEAD, out.getvalue())
        result = delete_entries(editor, HEAD, ["uid-2", "uid-9"])
        assert (result.deleted, result.missing, result.attempts) == (("uid-2",), ("uid-9",), 1)
        reader = ShardReader(StoreSource(editor.store, HEAD))
        _expect(EntryDeleted, lambda: reader.read("uid-2"))
        for uid, data in files.items():
            if uid != "uid-2":
                assert reader.read(uid) == data
        again = delete_entries(editor, HEAD, ["uid-2"])
        assert (again.deleted, again.already) == ((), ("uid-2",))
