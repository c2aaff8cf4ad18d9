"""The ``des-pack`` command (typer, as ``des`` and ``des-migrate``): its options and their
parsing. What the command does is ``_commands.run_pack``, imported only once the options are
parsed (``--help`` and a usage error load no packing code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["EXIT_CODES_HELP", "byte_size", "pack_app"]

EXIT_USAGE = 2

EXIT_CODES_HELP = (
    "Exit codes: 0 everything packed (or nothing to pack: an empty manifest, with a warning); "
    "1 packing failed (a file is missing, unreadable or not its manifest size, or writing the "
    "output failed: the message names the path and the fix); 2 usage or configuration error "
    "(bad option, bad manifest entry, duplicate uid on a day); 3 some entries were skipped "
    "(--on-error skip; see the skipped report)."
)

_HELP = (
    "Pack the files listed in a manifest into .des shards (a directory or S3).\n\n"
    "The manifest is a JSON list of objects or JSON Lines with uid, created_at, size_bytes "
    "and source_path (a local path, relative to the manifest's directory, or s3://bucket/key), "
    "optionally content_type and meta. Running the same command again after an interruption "
    "finishes the job: complete shards are skipped, files already in a shard are not added "
    "twice.\n\n" + EXIT_CODES_HELP
)

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_SIZE_EXPECTED = "a number of bytes such as 131072, 128KiB or 1GiB"


def byte_size(text: str) -> int:
    """A number of bytes: ``131072``, ``128KiB``, ``1GiB`` (binary units) or ``100MB``
    (decimal units); ``ValueError`` naming what is expected."""
    raw = text.strip()
    digits = raw.rstrip("bBkKmMgGiI ")
    unit = _SIZE_UNITS.get(raw[len(digits) :].strip().lower())
    sign = -1 if digits.startswith("-") else 1  # a negative size: the option check names it
    digits = digits.removeprefix("-")
    if not digits.isdigit() or unit is None:
        raise ValueError(f"expected {_SIZE_EXPECTED}, got {text!r}")
    return sign * int(digits) * unit


def _size(text: str | int) -> int:
    if isinstance(text, int):  # a default, already in bytes
        return text
    try:
        return byte_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _env_default(var: str, flag: str, default: int, *, sizes: bool = False) -> int:
    """The value of ``var`` (the default of ``flag``), else ``default``; an empty value counts
    as unset. A bad value is a usage error naming the variable, not the flag."""
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = byte_size(text) if sizes else int(text)
    except ValueError:
        what = _SIZE_EXPECTED if sizes else "a whole number"
        _usage_error(f"{var}={text!r} (the default of {flag}) is not {what}; fix or unset it")
    if flag == "--n-bits":
        from des_routing import MAX_N_BITS, MIN_N_BITS

        if not MIN_N_BITS <= value <= MAX_N_BITS:
            _usage_error(
                f"{var}={text!r} (the default of {flag}) must be within {MIN_N_BITS}..{MAX_N_BITS}"
                f"; fix or unset it, or give {flag}"
            )
    return value


def _usage_error(message: str) -> None:
    typer.echo(f"des-pack: error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


pack_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["--help"]},
)

_SIZE_HELP = "(131072, 128KiB, 1GiB, 100MB)"


@pack_app.command(help=_HELP, no_args_is_help=False)
def des_pack(  # noqa: PLR0917 - typer maps options to parameters
    input_json: Annotated[
        Path | None,
        typer.Option(
            "--input-json",
            metavar="FILE",
            help="Manifest: JSON list or JSON Lines. Required unless --input-tar is given.",
        ),
    ] = None,
    input_tar: Annotated[
        Path | None,
        typer.Option(
            "--input-tar",
            metavar="FILE",
            help="Pack a tar (plain or compressed) or zip holding files named by uid and a "
            "manifest.jsonl (what des export writes) instead of --input-json; its members are "
            "copied to a temporary directory ($TMPDIR) first.",
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            metavar="DIR",
            help="Directory or s3://bucket/prefix for the shards (required unless "
            "--dry-run or --zones-config).",
        ),
    ] = None,
    max_shard_size: Annotated[
        int,
        typer.Option(
            "--max-shard-size",
            parser=_size,
            metavar="BYTES",
            show_default="1GiB",
            help=f"Largest shard object in bytes {_SIZE_HELP}; more payload rolls over into "
            "part objects.",
        ),
    ] = 1 << 30,
    n_bits: Annotated[
        int | None,
        typer.Option(
            "--n-bits",
            metavar="N",
            show_default="$DES_N_BITS, else 8",
            help="Routing bits, 4..16.",
        ),
    ] = None,
    codec: Annotated[
        str, typer.Option("--codec", metavar="CODEC", help="none, zstd or lz4.")
    ] = "zstd",
    level: Annotated[int, typer.Option("--level", metavar="N", help="Compression level.")] = 3,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            show_default="CPUs",
            help="Threads reading and compressing, shared by the processes.",
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            metavar="N",
            show_default="CPUs",
            help="Processes packing at once, each writing whole shards (local output on "
            "Linux; at most one per shard; 1: this process only). Same output either way.",
        ),
    ] = None,
    shard_range: Annotated[
        str | None,
        typer.Option(
            "--shard-range", metavar="A-B", help="Only pack shard indexes A-B (inclusive)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (shards, files, bytes, at most how many solid blocks) and "
            "check that each local source exists with its manifest size; write nothing.",
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable JSON summary.")
    ] = False,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error",
            metavar="fail|skip",
            help="fail: stop at the first bad entry; skip: leave it out (exit 3).",
        ),
    ] = "fail",
    skipped_report: Annotated[
        Path,
        typer.Option(
            "--skipped-report",
            metavar="FILE",
            help="Where skipped entries are listed (JSON Lines).",
        ),
    ] = Path("des-pack-skipped.jsonl"),
    big_file_threshold: Annotated[
        int | None,
        typer.Option(
            "--big-file-threshold",
            parser=_size,
            metavar="BYTES",
            show_default="$DES_BIG_FILE_THRESHOLD_BYTES, else 10MiB",
            help=f"Files larger than this {_SIZE_HELP} go to _bigFiles/<sha256>.",
        ),
    ] = None,
    zones_config: Annotated[
        str | None,
        typer.Option(
            "--zones-config",
            metavar="FILE",
            help="Zones file: each shard goes to its zone's bucket (S3).",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            show_default="on a terminal",
            help="Progress bar.",
        ),
    ] = None,
    fsync: Annotated[
        bool,
        typer.Option(
            "--fsync/--no-fsync",
            help="fsync shards before renaming them. --no-fsync is faster; killing the packer "
            "stays safe, a power loss may not.",
        ),
    ] = True,
    dictionary: Annotated[
        bool,
        typer.Option(
            "--dict/--no-dict",
            help="Train a zstd dictionary per shard on its small files and compress them with "
            "it (needs at least 64 of them).",
        ),
    ] = False,
    dict_max_file_size: Annotated[
        int,
        typer.Option(
            "--dict-max-file-size",
            parser=_size,
            metavar="BYTES",
            show_default="4KiB",
            help="With --dict: files of at most this many bytes use the dictionary.",
        ),
    ] = 4 * 1024,
    block_size: Annotated[
        int,
        typer.Option(
            "--block-size",
            parser=_size,
            metavar="BYTES",
            show_default="0, one frame per file",
            help="Compress small files of one content type and extension together, in solid "
            "blocks of up to this many bytes (at most 4MiB; try 128KiB): smaller output for "
            "text and other similar small files, but reading one file decompresses its whole "
            "block (still one request). Needs --codec zstd, not with --dict.",
        ),
    ] = 0,
    block_member_max: Annotated[
        int,
        typer.Option(
            "--block-member-max",
            parser=_size,
            metavar="BYTES",
            show_default="64KiB",
            help="With --block-size: only files of at most this many bytes go into blocks.",
        ),
    ] = 64 * 1024,
) -> None:
    if n_bits is None:
        n_bits = _env_default("DES_N_BITS", "--n-bits", 8)
    if big_file_threshold is None:
        big_file_threshold = _env_default(
            "DES_BIG_FILE_THRESHOLD_BYTES", "--big-file-threshold", 10 << 20, sizes=True
        )
    if (input_json is None) == (input_tar is None):
        _usage_error("give --input-json FILE or --input-tar FILE (one of them); see --help")
    import dataclasses

    from ._commands import PackArgs, run_pack

    args = PackArgs(
        input_json=input_json or Path(),
        output_dir=output_dir,
        max_shard_size=max_shard_size,
        n_bits=n_bits,
        codec=codec,
        level=level,
        workers=workers,
        processes=processes,
        shard_range=shard_range,
        dry_run=dry_run,
        json=json_out,
        on_error=on_error,
        skipped_report=skipped_report,
        big_file_threshold=big_file_threshold,
        zones_config=zones_config,
        progress=progress,
        fsync=fsync,
        dictionary=dictionary,
        dict_max_file_size=dict_max_file_size,
        block_size=block_size,
        block_member_max=block_member_max,
    )
    if input_tar is None:
        raise typer.Exit(run_pack(args))
    import tempfile

    from ._archive import unpack_archive
    from ._errors import ManifestError

    with tempfile.TemporaryDirectory(prefix="des-pack-tar-") as work:
        try:
            manifest = unpack_archive(input_tar, work)
        except ManifestError as exc:
            _usage_error(str(exc))
        except OSError as exc:
            typer.echo(f"des-pack: error: cannot unpack {input_tar}: {exc}", err=True)
            raise typer.Exit(1) from None
        code = run_pack(dataclasses.replace(args, input_json=manifest))
    raise typer.Exit(code)
