"""The ``des-pack`` command and the entry point of ``des``.

``des-pack`` parses its options with the standard library's argparse. It used typer, whose
0.29 release coerces every option through a pydantic ``TypeAdapter``: importing typer and
pydantic and building the adapters cost about 0.23 s of CPU at each start, before the first
file was read (docs/bench/packer.md). ``des`` (many subcommands, run by operators, not in a
batch hot path) stays on typer, in ``_des_app.py``, loaded only when it is used.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from ._des_app import des_app

__all__ = ["des_app", "des_main", "pack_main", "pack_parser"]

EXIT_USAGE = 2

EXIT_CODES_HELP = (
    "Exit codes: 0 everything packed; 1 packing failed (a file is missing, unreadable or not "
    "its manifest size, or the output failed); 2 usage or configuration error (bad option, "
    "bad manifest entry, duplicate uid on a day); 3 some entries were skipped "
    "(--on-error skip; see the skipped report)."
)

_DESCRIPTION = (
    "Usage: des-pack --input-json FILE --output-dir DIR|s3://BUCKET/PREFIX [OPTIONS]\n\n"
    "Pack the files listed in a manifest into .des shards (a directory or S3).\n\n"
    "The manifest is a JSON list of objects or JSON Lines with uid, created_at, "
    "size_bytes and source_path (a local path, relative to the manifest's directory, or "
    "s3://bucket/key), optionally content_type and meta. Running the same command again "
    "after an interruption finishes the job: complete shards are skipped, files already "
    "in a shard are not added twice.\n\n" + EXIT_CODES_HELP
)

#: Options whose default comes from an environment variable when they are not given.
_ENV_DEFAULTS = {
    "n_bits": ("--n-bits", "DES_N_BITS", 8),
    "big_file_threshold": ("--big-file-threshold", "DES_BIG_FILE_THRESHOLD_BYTES", 10 << 20),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of the description on its own (argparse joins them), and never
    breaks a line inside ``--no-dict`` or a file name."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(
                p, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
            )
            for p in text.split("\n\n")
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line naming the option, exit code 2 (argparse's own prints the usage first)."""
        self.exit(EXIT_USAGE, f"des-pack: error: {message}; see des-pack --help\n")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


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


def _byte_size(text: str) -> int:
    """A number of bytes: ``131072``, ``128KiB``, ``1GiB`` (binary units) or ``100MB``
    (decimal units)."""
    raw = text.strip()
    digits = raw.rstrip("bBkKmMgGiI ")
    unit = _SIZE_UNITS.get(raw[len(digits) :].strip().lower())
    sign = -1 if digits.startswith("-") else 1  # a negative size: the option check names it
    digits = digits.removeprefix("-")
    if not digits.isdigit() or unit is None:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes such as 131072, 128KiB or 1GiB, got {text!r}"
        )
    return sign * int(digits) * unit


def pack_parser() -> argparse.ArgumentParser:
    """The option parser of ``des-pack``."""
    p = _Parser(
        prog="des-pack",
        usage=argparse.SUPPRESS,  # the description's first paragraph is the usage line
        description=_DESCRIPTION,
        formatter_class=_HelpFormatter,
        add_help=False,
        allow_abbrev=False,
    )
    add = p.add_argument
    add(
        "--input-json",
        type=Path,
        required=True,
        metavar="FILE",
        help="Manifest: JSON list or JSON Lines. Required.",
    )
    add("--output-dir", metavar="DIR", help="Directory or s3://bucket/prefix for the shards.")
    add(
        "--max-shard-size",
        type=_byte_size,
        default=1 << 30,
        metavar="BYTES",
        help="Largest shard object in bytes (131072, 128KiB, 1GiB, 100MB); more payload rolls "
        "over into part objects (default: 1073741824, 1GiB).",
    )
    add(
        "--n-bits",
        type=_whole_number,
        metavar="N",
        help="Routing bits, 4..16 (default: $DES_N_BITS, else 8).",
    )
    add("--codec", default="zstd", metavar="CODEC", help="none, zstd or lz4 (default: zstd).")
    add(
        "--level",
        type=_whole_number,
        default=3,
        metavar="N",
        help="Compression level (default: 3).",
    )
    add(
        "--workers",
        type=_whole_number,
        metavar="N",
        help="Threads reading and compressing (default: CPUs).",
    )
    add("--shard-range", metavar="A-B", help="Only pack shard indexes A-B (inclusive).")
    add(
        "--dry-run",
        action="store_true",
        help="Print the plan (shards, files, bytes, at most how many solid blocks); write nothing.",
    )
    add(
        "--json",
        action="store_true",
        dest="json_out",
        help="Print a machine-readable JSON summary.",
    )
    add(
        "--on-error",
        default="fail",
        metavar="fail|skip",
        help="fail: stop at the first bad entry; skip: leave it out (exit 3). Default: fail.",
    )
    add(
        "--skipped-report",
        type=Path,
        default=Path("des-pack-skipped.jsonl"),
        metavar="FILE",
        help="Where skipped entries are listed (JSON Lines; default: des-pack-skipped.jsonl).",
    )
    add(
        "--big-file-threshold",
        type=_whole_number,
        metavar="BYTES",
        help="Files larger than this many bytes go to _bigFiles/<sha256> "
        "(default: $DES_BIG_FILE_THRESHOLD_BYTES, else 10485760).",
    )
    add(
        "--zones-config",
        metavar="FILE",
        help="Zones file: each shard goes to its zone's bucket (S3).",
    )
    add(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Progress bar (default: on a terminal).",
    )
    add(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fsync shards before renaming them (default). --no-fsync is faster; killing "
        "the packer stays safe, a power loss may not.",
    )
    add(
        "--dict",
        action=argparse.BooleanOptionalAction,
        default=False,
        dest="dictionary",
        help="Train a zstd dictionary per shard on its small files and compress them with "
        "it (needs at least 64 of them; default: --no-dict).",
    )
    add(
        "--dict-max-file-size",
        type=_whole_number,
        default=4 * 1024,
        metavar="BYTES",
        help="With --dict: files of at most this many bytes use the dictionary (default: 4096).",
    )
    add(
        "--block-size",
        type=_byte_size,
        default=0,
        metavar="BYTES",
        help="Compress small files of one content type and extension together, in solid "
        "blocks of up to this many bytes (at most 4194304, 4MiB; try 128KiB): smaller "
        "output for text and other similar small files, but reading one file decompresses "
        "its whole block (still one request). Needs --codec zstd, not with --dict. "
        "Default: 0, one frame per file.",
    )
    add(
        "--block-member-max",
        type=_byte_size,
        default=64 * 1024,
        metavar="BYTES",
        help="With --block-size: only files of at most this many bytes go into blocks "
        "(default: 65536, 64KiB).",
    )
    add("--help", action="help", help="Show this message and exit.")
    return p


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = pack_parser()
    ns = parser.parse_args(argv)
    for dest, (flag, var, default) in _ENV_DEFAULTS.items():
        if getattr(ns, dest) is not None:
            continue
        text = os.environ.get(var)
        if not text:  # unset or empty: the built-in default
            setattr(ns, dest, default)
            continue
        try:
            setattr(ns, dest, int(text))
        except ValueError:
            parser.error(f"{var}={text!r} (the default of {flag}) is not a whole number")
    return ns


def pack_main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``des-pack`` (``argv`` defaults to ``sys.argv[1:]``); exits with the
    command's exit code."""
    ns = _parse(argv)
    from ._commands import PackArgs, run_pack

    code = run_pack(
        PackArgs(
            input_json=ns.input_json,
            output_dir=ns.output_dir,
            max_shard_size=ns.max_shard_size,
            n_bits=ns.n_bits,
            codec=ns.codec,
            level=ns.level,
            workers=ns.workers,
            shard_range=ns.shard_range,
            dry_run=ns.dry_run,
            json=ns.json_out,
            on_error=ns.on_error,
            skipped_report=ns.skipped_report,
            big_file_threshold=ns.big_file_threshold,
            zones_config=ns.zones_config,
            progress=ns.progress,
            fsync=ns.fsync,
            dictionary=ns.dictionary,
            dict_max_file_size=ns.dict_max_file_size,
            block_size=ns.block_size,
            block_member_max=ns.block_member_max,
        )
    )
    sys.exit(code)


def des_main() -> None:
    """Entry point of ``des``: an error no command expected is one line on stderr and exit
    code 1, never a traceback."""
    from des_format import DesFormatError

    from ._des_app import des_app

    try:
        des_app()
    except DesFormatError as exc:  # a store error no command caught: its message says where
        print(f"des: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - click's own exits are SystemExit, not caught
        print(
            f"des: error: unexpected {type(exc).__name__}: {exc} (report this error to the "
            "DES maintainers)",
            file=sys.stderr,
        )
        sys.exit(1)


def __getattr__(name: str) -> object:
    # ``des_packer.cli.des_app`` (the typer app, for tests and embedding) without importing
    # typer when only des-pack runs.
    if name == "des_app":
        from ._des_app import des_app

        return des_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
