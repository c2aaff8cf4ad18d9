"""The package stays light (stdlib only) and its public API is pinned."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import des_format
import pytest

PUBLIC_API = [
    # the retrieval pipeline without I/O and its asynchronous driver
    "AsyncObjectStore",
    "AsyncOpenedFile",
    "AsyncShardRetriever",
    "Head",
    "Located",
    "PayloadVerifier",
    "ReadRange",
    "ReadTail",
    "RetrievalPipeline",
    "StreamDecoder",
    "read_index_steps",
    "run_steps",
    "run_steps_async",
    "DeleteResult",
    "LocalShardEditor",
    "ShardEditor",
    "StoreSource",
    "delete_entries",
    "entry_payload_key",
    "fill_byte",
    "local_shard_lock",
    "payload_overwritten",
    "read_shard_index",
    "DEFAULT_BIGFILES_PREFIX",
    "DEFAULT_BIG_FILE_THRESHOLD",
    "DEFAULT_BIGFILE_GRACE_SECONDS",
    "EditorCapabilities",
    "DEFAULT_TAIL_SIZE",
    "DEFAULT_DICT_MAX_FILE_SIZE",
    "FEATURE_DICTIONARY",
    "FEATURE_BLOCKS",
    "DEFAULT_BLOCK_MEMBER_MAX",
    "DEFAULT_BLOCK_SIZE",
    "MAX_BLOCK_SIZE",
    "PreparedBlock",
    "prepare_block",
    "decode_payload",
    "build_meta",
    "entry_to_json",
    "MAX_DICTIONARY_SIZE",
    "MIN_DICT_SAMPLES",
    "train_dictionary",
    "FORMAT_VERSION",
    "BigFileSink",
    "ByteRange",
    "ByteSource",
    "BytesSource",
    "CacheStats",
    "ChecksumMismatch",
    "CoalescedRange",
    "Codec",
    "CodecNotInstalled",
    "CorruptShard",
    "DesFormatError",
    "DuplicateUid",
    "EntryDeleted",
    "EntryNotFound",
    "FileDigest",
    "Footer",
    "Header",
    "IndexCache",
    "IndexEntry",
    "LocalBigFileSink",
    "LocalFileSource",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "OpenedFile",
    "PreconditionFailed",
    "PreparedPayload",
    "RangeNotSatisfiable",
    "ShardIndex",
    "ShardReader",
    "ShardRetriever",
    "ShardWriter",
    "StorageUnavailable",
    "StoreError",
    "TailRead",
    "UnknownCodec",
    "UnsupportedFormatVersion",
    "WriteSummary",
    "__version__",
    "bigfile_key",
    "codec_available",
    "crc32",
    "crc32_backend",
    "hash_file",
    "is_head_key",
    "is_precompressed",
    "parse_codec",
    "parse_footer",
    "parse_header",
    "part_key",
    "plan_coalesced_ranges",
    "prepare_payload",
    "read_index",
    "DEFAULT_VERIFY_WINDOW",
    "FileCheck",
    "verify_files",
    # the store's layout record (issue 21)
    "LAYOUT_KEY",
    "LayoutMismatch",
    "StoreLayout",
    "ensure_local_layout",
    "read_store_layout",
    "agreed_layout",
    "zones_digest",
    # the store port's declared capabilities (issue 19)
    "ListEntry",
    "ObjectStoreBase",
]


def test_public_api_is_pinned() -> None:
    assert sorted(des_format.__all__) == sorted(PUBLIC_API)
    for name in des_format.__all__:
        assert hasattr(des_format, name), name


def test_import_loads_only_the_standard_library() -> None:
    code = (
        "import sys, json; before = set(sys.modules); import des_format; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "des_format" in loaded
    outside = [
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "des_format"
    ]
    assert outside == []
    assert "zstandard" not in loaded
    assert "lz4" not in loaded


def test_constants() -> None:
    assert des_format.DEFAULT_TAIL_SIZE == 65536
    assert des_format.DEFAULT_BIG_FILE_THRESHOLD == 10 * 1024 * 1024
    assert des_format.DEFAULT_BIGFILES_PREFIX == "_bigFiles"
    assert des_format.FORMAT_VERSION == 1


def test_error_hierarchy() -> None:
    e = des_format
    assert issubclass(e.ChecksumMismatch, e.CorruptShard)
    for cls in (
        e.CorruptShard,
        e.UnsupportedFormatVersion,
        e.UnknownCodec,
        e.CodecNotInstalled,
        e.EntryNotFound,
        e.EntryDeleted,
        e.DuplicateUid,
        e.StoreError,
    ):
        assert issubclass(cls, e.DesFormatError)
    for cls in (
        e.ObjectNotFound,
        e.RangeNotSatisfiable,
        e.PreconditionFailed,
        e.StorageUnavailable,
    ):
        assert issubclass(cls, e.StoreError)
    assert issubclass(e.EntryNotFound, LookupError)
    assert issubclass(e.ObjectNotFound, LookupError)
    assert issubclass(e.DuplicateUid, ValueError)


@pytest.mark.heavy  # runs the package's suite again: left out of tools/test --quick
def test_suite_passes_without_optional_codecs() -> None:
    """The package's own tests, run with zstandard and lz4 made unimportable, pass: codec
    tests skip (naming the missing library), everything else runs."""
    tests_dir = Path(__file__).parent
    code = (
        "import sys\n"
        "for m in ('zstandard', 'lz4', 'lz4.frame'):\n"
        "    sys.modules[m] = None\n"
        "import pytest\n"
        f"sys.exit(pytest.main([{str(tests_dir)!r}, '-q', '-m', 'not slow', '-p',"
        " 'no:cacheprovider', '-k', 'not without_optional_codecs']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tests_dir.parents[2],
    )
    tail = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in tail
    assert " skipped" in tail
    assert "failed" not in tail
    assert "zstandard is not installed" in proc.stdout or "zstd library is not installed" in (
        proc.stdout
    )


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    if not des_format.codec_available(des_format.Codec.ZSTD):
        pytest.skip("the README examples use zstd; zstandard is not installed")
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    runnable = blocks[:4]  # write, append, read one shard, retriever
    assert len(runnable) == 4
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in runnable:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["size"] == 3 << 20
    for command in (["verify", "des/20240101/A7.des"], ["ls", "des/20240101/A7.des"]):
        proc = subprocess.run(
            [sys.executable, "-m", "des_format", *command],
            check=False,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
