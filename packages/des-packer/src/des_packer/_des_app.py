"""The ``des`` command (typer): inspect, retrieve and delete. Loaded only when ``des`` runs
(``cli.des_main``) or a caller asks for ``des_packer.cli.des_app``; ``des-pack`` does not use
typer (see ``cli.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DES_EXIT_HELP = (
    "Exit codes: 0 ok; 1 not found, unreadable or failed verification; 2 usage error; "
    "4 (des get) the file was deleted."
)
#: ``des get``'s exit codes (4 is its own) and ``des verify``'s.
GET_EXIT_HELP = (
    "Exit codes: 0 ok; 1 not found or unreadable; 2 usage error; 4 the file was deleted."
)
VERIFY_EXIT_HELP = (
    "Exit codes: 0 every shard checked is sound; 1 a shard is missing, unreadable or failed "
    "a check (see the report); 2 usage error."
)

des_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help=(
        "Inspect and retrieve DES shards with the service's settings (DES_BACKEND, "
        "DES_BASE_DIR, DES_S3_*, DES_ZONES_CONFIG, DES_N_BITS); the options below override "
        "them. " + DES_EXIT_HELP
    ),
)


@des_app.callback()
def des_settings(  # noqa: PLR0917 - typer maps options to parameters
    ctx: typer.Context,
    backend: Annotated[
        str | None, typer.Option("--backend", help="local, s3 or multi_s3 (DES_BACKEND).")
    ] = None,
    base_dir: Annotated[
        str | None, typer.Option("--base-dir", help="Shard directory (DES_BASE_DIR).")
    ] = None,
    n_bits: Annotated[
        int | None, typer.Option("--n-bits", min=4, max=16, help="DES_N_BITS (4..16).")
    ] = None,
    s3_bucket: Annotated[str | None, typer.Option("--s3-bucket", help="DES_S3_BUCKET.")] = None,
    s3_prefix: Annotated[str | None, typer.Option("--s3-prefix", help="DES_S3_PREFIX.")] = None,
    s3_region: Annotated[str | None, typer.Option("--s3-region", help="DES_S3_REGION.")] = None,
    s3_endpoint_url: Annotated[
        str | None, typer.Option("--s3-endpoint-url", help="DES_S3_ENDPOINT_URL.")
    ] = None,
    zones_config: Annotated[
        str | None, typer.Option("--zones-config", help="DES_ZONES_CONFIG.")
    ] = None,
) -> None:
    ctx.obj = {
        "DES_BACKEND": backend,
        "DES_BASE_DIR": base_dir,
        "DES_N_BITS": None if n_bits is None else str(n_bits),
        "DES_S3_BUCKET": s3_bucket,
        "DES_S3_PREFIX": s3_prefix,
        "DES_S3_REGION": s3_region,
        "DES_S3_ENDPOINT_URL": s3_endpoint_url,
        "DES_ZONES_CONFIG": zones_config,
    }


@des_app.command(
    help=(
        "Retrieve one file (des get UID --created-at T [-o FILE]; stdout without -o) or many "
        "(des get --batch FILE --out DIR; FILE is JSON Lines of uid and created_at, each file "
        "is written to DIR/<uid>, a JSON report goes to stdout). " + GET_EXIT_HELP
    )
)
def get(  # noqa: PLR0917 - typer maps options to parameters
    ctx: typer.Context,
    uid: Annotated[str | None, typer.Argument(help="The file's uid.")] = None,
    created_at: Annotated[
        str | None, typer.Option("--created-at", help="The file's created_at (ISO 8601).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", help="JSON Lines of {uid, created_at}.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory for --batch files.")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="With --batch: files done, failed and files/s on stderr (default: when "
            "stderr is a terminal); the JSON report on stdout is the same either way.",
        ),
    ] = None,
) -> None:
    from ._inspect import EXIT_USAGE, run_get, run_get_batch

    if batch is not None:
        if uid is not None or out_dir is None:
            typer.echo("des: error: --batch FILE needs --out DIR and no UID argument", err=True)
            raise typer.Exit(EXIT_USAGE)
        raise typer.Exit(run_get_batch(batch, out_dir, ctx.obj, progress=progress))
    if uid is None or created_at is None:
        typer.echo("des: error: give UID --created-at T (or --batch FILE --out DIR)", err=True)
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(run_get(uid, created_at, output, ctx.obj))


@des_app.command(
    help=(
        "List files: the entries of one shard (a local .des path or a key such as "
        "20240101/A7.des), or every file of every shard of a day (--day YYYYMMDD) or of a "
        "range of days (--from DAY --to DAY, at most 3660 days). With --json, one JSON "
        "object per file (JSON Lines). " + DES_EXIT_HELP
    )
)
def ls(  # noqa: PLR0917 - typer maps options to parameters
    ctx: typer.Context,
    shard: Annotated[str | None, typer.Argument(help="Local shard path or object key.")] = None,
    day: Annotated[str | None, typer.Option("--day", help="Every shard of this day.")] = None,
    day_from: Annotated[str | None, typer.Option("--from", help="First day of a range.")] = None,
    day_to: Annotated[str | None, typer.Option("--to", help="Last day of a range.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per entry.")] = False,
) -> None:
    from ._inspect import EXIT_USAGE, run_ls

    if shard is not None:
        if day or day_from or day_to:
            typer.echo("des: error: give a SHARD or --day/--from/--to, not both", err=True)
            raise typer.Exit(EXIT_USAGE)
        raise typer.Exit(run_ls(shard, ctx.obj, as_json=json_out))
    from ._days import DayError, day_range
    from ._export import run_ls_days

    try:
        if day is not None and (day_from or day_to):
            raise DayError("give --day, or --from and --to, not both")
        if day is not None:
            days = day_range(day, None)
        elif day_from is not None:
            days = day_range(day_from, day_to)
        else:
            raise DayError("give a SHARD, --day YYYYMMDD, or --from DAY [--to DAY]")
    except DayError as exc:
        typer.echo(f"des: error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(run_ls_days(days, ctx.obj, as_json=json_out))


@des_app.command(
    help=(
        "Find a file whose created_at is lost: look for UID in its shard on each day from "
        "--from to --to (at most 3660 days; one index read per day, progress on stderr). "
        "Prints one JSON object per day that holds it. Exit codes: 0 found; 1 not found or "
        "a shard unreadable; 2 usage error."
    )
)
def find(
    ctx: typer.Context,
    uid: Annotated[str, typer.Argument(help="The file's uid.")],
    day_from: Annotated[str, typer.Option("--from", help="First day (YYYYMMDD).")],
    day_to: Annotated[str | None, typer.Option("--to", help="Last day (default: --from).")] = None,
) -> None:
    from ._export import run_find

    raise typer.Exit(run_find(uid, day_from, day_to, ctx.obj))


@des_app.command(
    help=(
        "Export files into a standard tar: every live file of a day (--day YYYYMMDD), of one "
        "shard (--shard 20240101/A7.des), or the UIDs given of a day. Members are named by "
        "uid; manifest.jsonl (uid, created_at, size_bytes, content_type, checksum, meta) "
        "comes last. des-pack --input-tar FILE packs it back. created_at is the day at "
        "midnight UTC unless the file's metadata holds its own. " + DES_EXIT_HELP
    )
)
def export(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="The tar file to write.")],
    uids: Annotated[list[str] | None, typer.Argument(help="Only these uids (with --day).")] = None,
    day: Annotated[str | None, typer.Option("--day", help="Every file of this day.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="Every file of this shard.")] = None,
) -> None:
    from ._export import run_export

    if uids and shard is not None:
        typer.echo("des: error: UIDs go with --day, not --shard", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_export(output, ctx.obj, day=day, shard=shard, uids=uids or ()))


@des_app.command(
    help=(
        "Verify a shard, a base directory, or (DES_BACKEND=s3) every shard under a key "
        "prefix: header, footer and index checksums; --deep reads and checks every payload. "
        "Prints a JSON report. " + VERIFY_EXIT_HELP
    )
)
def verify(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Shard path, directory, key or prefix.")],
    deep: Annotated[bool, typer.Option("--deep", help="Check every payload too.")] = False,
) -> None:
    from ._inspect import run_verify

    raise typer.Exit(run_verify(target, ctx.obj, deep=deep))


@des_app.command(
    help=(
        "Delete files: from now on they read as gone (des get exit 4, HTTP 410) on every "
        "backend and every replica. Bytes in continuation parts are overwritten at once and "
        "big files no live file shares are removed (once older than --bigfile-grace); bytes "
        "in the shard's head object stay until des repack erases them. Deleting again "
        "finishes what an interrupted delete left. "
        "des delete UID --created-at T, or --batch FILE (JSON Lines of uid and created_at). "
        "Exit codes: 0 deleted (or already deleted); 1 a file or shard does not exist, or a "
        "shard could not be changed; 2 usage error."
    )
)
def delete(
    ctx: typer.Context,
    uid: Annotated[str | None, typer.Argument(help="The file's uid.")] = None,
    created_at: Annotated[
        str | None, typer.Option("--created-at", help="The file's created_at (ISO 8601).")
    ] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", help="JSON Lines of {uid, created_at}.")
    ] = None,
    bigfile_grace: Annotated[
        float,
        typer.Option(
            "--bigfile-grace",
            help="Seconds a big file must have existed before a delete removes it.",
        ),
    ] = 3600.0,
) -> None:
    from ._delete import run_delete

    raise typer.Exit(
        run_delete(uid, created_at, batch, ctx.obj, bigfile_grace_seconds=bigfile_grace)
    )


@des_app.command(
    help=(
        "Erase deleted files: rebuild the shards whose deleted bytes reach --threshold "
        "(a share, 0..1) without them, copy on write (built, verified, then published in "
        "place of the old shard only if no one changed it meanwhile), then remove the "
        "objects left behind (old parts, older S3 versions, big files no shard references). "
        "--max-shards bounds a round; run again to continue. "
        "Exit codes: 0 ok; 1 some shard failed; 2 usage error."
    )
)
def repack(  # noqa: PLR0917 - typer maps options to parameters
    ctx: typer.Context,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Only shards under this key prefix (20240101/).")
    ] = "",
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Repack when deleted bytes are at least this share."),
    ] = 0.0,
    max_shards: Annotated[
        int | None, typer.Option("--max-shards", help="Shards repacked in this round.")
    ] = None,
    max_shard_size: Annotated[
        int,
        typer.Option("--max-shard-size", help="Largest rebuilt object; more rolls over."),
    ] = 1 << 30,
    bigfile_grace: Annotated[
        float,
        typer.Option(
            "--bigfile-grace",
            help="Seconds an unreferenced big file must have existed before it is removed.",
        ),
    ] = 3600.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be repacked; change nothing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    from ._delete import run_repack
    from ._repack import RepackOptions

    options = RepackOptions(
        threshold=threshold,
        max_shards=max_shards,
        prefix=prefix,
        dry_run=dry_run,
        max_part_size=max_shard_size,
        bigfile_grace_seconds=bigfile_grace,
    )
    raise typer.Exit(run_repack(options, ctx.obj, as_json=json_out))


@des_app.command(
    help=(
        "List deleted files and whether their bytes are only hidden, being erased (objects "
        "that may hold them remain; run des repack) or erased. Holds no file content. "
        "Erased holds at the S3 API: servers that reclaim space later (SeaweedFS until "
        "volume.vacuum, MinIO, Ceph RGW until its garbage collection) keep the bytes on "
        "their disks until then (docs/DELETION.md, section 6). "
        "Exit codes: 0 ok; 1 some shard unreadable; 2 usage error."
    )
)
def deletions(
    ctx: typer.Context,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Only shards under this key prefix (20240101/).")
    ] = "",
    state: Annotated[
        str | None, typer.Option("--state", help="Only hidden, erasing or erased.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines output.")] = False,
) -> None:
    from ._delete import run_deletions

    raise typer.Exit(run_deletions(prefix, ctx.obj, state=state, as_json=json_out))


@des_app.command(
    help=(
        "Print a signed, expiring link to one file: the des-http URL path "
        "/files/UID?created_at=...&expires=...&sig=... (prefix it with the service's address). "
        "Whoever holds it may read that file, without a token, for --expires seconds. The key "
        "is DES_LINK_KEY (at least 32 bytes), the same as the service's. "
        "Exit codes: 0 ok; 2 usage error (no or short key, bad uid or created_at)."
    )
)
def link(
    uid: Annotated[str, typer.Argument(help="The file's uid.")],
    created_at: Annotated[
        str, typer.Option("--created-at", help="The file's created_at (ISO 8601).")
    ],
    expires: Annotated[
        int, typer.Option("--expires", help="Seconds from now the link stays valid.", min=1)
    ],
) -> None:
    import os
    import time

    from des_routing import RoutingError, link_key_from_env, signed_link_path

    try:
        key = link_key_from_env(os.environ)
        if key is None:
            raise RoutingError(
                "DES_LINK_KEY is not set: export the service's link key (at least 32 bytes)"
            )
        path = signed_link_path(key, uid, created_at, int(time.time()) + expires)
    except RoutingError as exc:
        typer.echo(f"des: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(path)
