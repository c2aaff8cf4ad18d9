"""The ``des-pack`` and ``des`` commands (the only module that imports typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._commands import PackArgs, run_pack

EXIT_CODES_HELP = (
    "Exit codes: 0 everything packed; 1 packing failed (a file is missing, unreadable or not "
    "its manifest size, or the output failed); 2 usage or configuration error (bad option, "
    "bad manifest entry, duplicate uid on a day); 3 some entries were skipped "
    "(--on-error skip; see the skipped report)."
)

pack_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@pack_app.command(
    help=(
        "Pack the files listed in a manifest into .des shards (a directory or S3).\n\n"
        "The manifest is a JSON list of objects or JSON Lines with uid, created_at, "
        "size_bytes and source_path (a local path, relative to the manifest's directory, or "
        "s3://bucket/key), optionally content_type and meta. Running the same command again "
        "after an interruption finishes the job: complete shards are skipped, files already "
        "in a shard are not added twice.\n\n" + EXIT_CODES_HELP
    )
)
def des_pack(  # noqa: PLR0917 - typer maps options to parameters
    input_json: Annotated[
        Path, typer.Option("--input-json", help="Manifest: JSON list or JSON Lines.")
    ],
    output_dir: Annotated[
        str | None,
        typer.Option("--output-dir", help="Directory or s3://bucket/prefix for the shards."),
    ] = None,
    max_shard_size: Annotated[
        int,
        typer.Option(
            "--max-shard-size",
            help="Largest shard object in bytes; more payload rolls over into part objects.",
        ),
    ] = 1 << 30,
    n_bits: Annotated[
        int, typer.Option("--n-bits", envvar="DES_N_BITS", help="Routing bits (4..16).")
    ] = 8,
    codec: Annotated[str, typer.Option("--codec", help="none, zstd or lz4.")] = "zstd",
    level: Annotated[int, typer.Option("--level", help="Compression level.")] = 3,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Threads reading and compressing (default: CPUs)."),
    ] = None,
    shard_range: Annotated[
        str | None,
        typer.Option("--shard-range", help="Only pack shard indexes A-B (inclusive)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable JSON summary.")
    ] = False,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error", help="fail: stop at the first bad entry; skip: leave it out (exit 3)."
        ),
    ] = "fail",
    skipped_report: Annotated[
        Path,
        typer.Option("--skipped-report", help="Where skipped entries are listed (JSON Lines)."),
    ] = Path("des-pack-skipped.jsonl"),
    big_file_threshold: Annotated[
        int,
        typer.Option(
            "--big-file-threshold",
            envvar="DES_BIG_FILE_THRESHOLD_BYTES",
            help="Files larger than this many bytes go to _bigFiles/<sha256>.",
        ),
    ] = 10 * 1024 * 1024,
    zones_config: Annotated[
        str | None,
        typer.Option(
            "--zones-config", help="Zones file: each shard goes to its zone's bucket (S3)."
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)."),
    ] = None,
) -> None:
    code = run_pack(
        PackArgs(
            input_json=input_json,
            output_dir=output_dir,
            max_shard_size=max_shard_size,
            n_bits=n_bits,
            codec=codec,
            level=level,
            workers=workers,
            shard_range=shard_range,
            dry_run=dry_run,
            json=json_out,
            on_error=on_error,
            skipped_report=skipped_report,
            big_file_threshold=big_file_threshold,
            zones_config=zones_config,
            progress=progress,
        )
    )
    raise typer.Exit(code)


def pack_main() -> None:
    """Entry point of ``des-pack``."""
    pack_app()
