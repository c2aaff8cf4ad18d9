from __future__ import annotations

import io
import subprocess
import sys

import des_format
import des_packer
from des_packer import DEFAULT_BIG_FILE_THRESHOLD, PackOptions, PackReport, ProgressEvent
from des_packer._console import ProgressDisplay, format_summary


def test_public_names_are_pinned() -> None:
    assert sorted(des_packer.__all__) == sorted(
        [
            "CODECS", "DEFAULT_BIG_FILE_THRESHOLD", "EntryFailed", "ManifestEntry",
            "ManifestError", "ManifestRecord", "OutputFailed", "PackAborted", "PackConfigError",
            "PackOptions",
            "PackPlan", "PackReport", "PackerError", "PlannedShard", "ProgressEvent",
            "ShardResult", "__version__", "iter_manifest_records", "open_destination", "pack",
            "pack_plan", "parse_manifest_entry", "parse_shard_range", "plan_shards",
            "read_manifest",
            # deletion (docs/DELETION.md)
            "DeletionRecord", "RepackOptions", "RepackReport", "ShardDeletionStats",
            "ShardRepack", "iter_deletions", "plan_repack", "repack", "repack_shard",
        ]
    )  # fmt: skip


def test_defaults_follow_des_format() -> None:
    assert DEFAULT_BIG_FILE_THRESHOLD == des_format.DEFAULT_BIG_FILE_THRESHOLD
    opts = PackOptions()
    assert (opts.n_bits, opts.codec, opts.level, opts.max_shard_size, opts.on_error) == (
        8, "zstd", 3, 1 << 30, "fail",
    )  # fmt: skip
    assert opts.bigfiles_prefix == des_format.DEFAULT_BIGFILES_PREFIX


def test_library_import_does_not_load_typer_or_boto3() -> None:
    code = (
        "import sys, des_packer; "
        "print(sorted(m for m in ('typer', 'rich', 'boto3', 'des_storage_s3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_summary_text() -> None:
    report = PackReport(
        files=3, bytes_in=3000, bytes_out=1000, shards_written=2, elapsed_seconds=2.0
    )
    assert format_summary(report).splitlines() == [
        "files packed:    3",
        "bytes in:        3000 (2.9 KiB)",
        "bytes out:       1000 (1000 B)",
        "ratio:           3.00x",
        "shards written:  2",
        "shards appended: 0",
        "shards skipped:  0 (already complete)",
        "already present: 0",
        "failed:          0",
        "time:            2.00 s (1.5 KiB/s)",
    ]


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    buf = io.StringIO()
    with ProgressDisplay(buf, bar=True) as display:
        display(ProgressEvent(5, 5 * 1024, 10, 10 * 1024))
    assert "5/10 files" in buf.getvalue()
    assert "ETA" in buf.getvalue()
    lines = io.StringIO()
    with ProgressDisplay(lines, bar=False) as display:
        display(ProgressEvent(1, 100, 2, 200))  # a file: no line
        display(ProgressEvent(2, 200, 2, 200, "20240101/0A.des", "written"))
    assert lines.getvalue().startswith(
        "des-pack: written 20240101/0A.des [2/2 files, 200 B/200 B, "
    )
