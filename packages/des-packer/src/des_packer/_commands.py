"""What the ``des-pack`` command does, as a plain function returning the exit code (``cli.py``
only declares and parses the options)."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ._blocks import Block, plan_work
from ._console import ProgressDisplay, format_bytes, format_summary
from ._errors import (
    ManifestError,
    OutputFailed,
    PackAborted,
    PackConfigError,
    PackerError,
    describe_os_error,
)
from ._manifest import iter_entries
from ._options import CODECS, PackOptions
from ._pack import pack_plan
from ._plan import PackPlan, PlannedShard, parse_shard_range, plan_shards
from ._report import PackReport
from ._sources import check_local_source

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SKIPPED",
    "EXIT_USAGE",
    "PackArgs",
    "run_pack",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3


@dataclass(frozen=True, slots=True)
class PackArgs:
    input_json: Path
    output_dir: str | None
    max_shard_size: int = 1 << 30
    n_bits: int = 8
    codec: str = "zstd"
    level: int | None = 3
    workers: int | None = None
    processes: int | None = None  # None: one per CPU (the library's default is 1)
    shard_range: str | None = None
    dry_run: bool = False
    json: bool = False
    on_error: str = "fail"
    skipped_report: Path = Path("des-pack-skipped.jsonl")
    big_file_threshold: int = 10 * 1024 * 1024
    zones_config: str | None = None
    progress: bool | None = None
    fsync: bool = True
    dictionary: bool = False
    dict_max_file_size: int = 4 * 1024
    block_size: int = 0
    block_member_max: int = 64 * 1024


def _unexpected(exc: BaseException) -> str:
    return (
        f"unexpected {type(exc).__name__}: {exc}; shards finished before it are complete, run "
        "the same command again to finish (report this error to the DES maintainers)"
    )


def _err(msg: str, args: PackArgs, code: int, out: TextIO, err: TextIO) -> int:
    print(f"des-pack: error: {msg}", file=err)
    if args.json:
        print(json.dumps({"error": msg, "exit_code": code}), file=out)
    return code


def _options(args: PackArgs, progress: Any) -> PackOptions:
    if args.codec not in CODECS:
        raise PackConfigError(f"unknown codec {args.codec!r}; use one of: {', '.join(CODECS)}")
    if args.on_error not in ("fail", "skip"):
        raise PackConfigError(f"--on-error must be fail or skip, got {args.on_error!r}")
    shard_range = None
    if args.shard_range is not None:
        from des_routing import MAX_N_BITS, MIN_N_BITS

        if not MIN_N_BITS <= args.n_bits <= MAX_N_BITS:
            raise PackConfigError(
                f"--n-bits must be within {MIN_N_BITS}..{MAX_N_BITS}, got {args.n_bits}"
            )
        shard_range = parse_shard_range(args.shard_range, args.n_bits)
    env = os.environ
    opts = PackOptions(
        n_bits=args.n_bits,
        codec=args.codec,
        level=args.level,
        max_shard_size=args.max_shard_size,
        workers=args.workers,
        processes=args.processes,
        big_file_threshold=args.big_file_threshold,
        bigfiles_prefix=env.get("DES_BIGFILES_PREFIX") or "_bigFiles",
        on_error=args.on_error,
        shard_range=shard_range,
        zones_config=args.zones_config,
        s3_endpoint_url=env.get("DES_S3_ENDPOINT_URL") or None,
        s3_region=env.get("DES_S3_REGION") or None,
        progress=progress,
        fsync=args.fsync,
        dictionary=args.dictionary,
        dict_max_file_size=args.dict_max_file_size,
        block_size=args.block_size,
        block_member_max=args.block_member_max,
    )
    opts.validate()
    return opts


def _planned_blocks(shard: PlannedShard, opts: PackOptions) -> tuple[int, int]:
    """(solid blocks, files in them) that a first pack of ``shard`` plans with ``opts``: the
    packer's own grouping (``plan_work``), without reading any file. An upper bound: the
    pack stores a planned block's files one by one when, read, they turn out empty or
    already compressed, or the block would not come out smaller."""
    if opts.block_size <= 0:
        return 0, 0
    blocks = [
        item
        for item in plan_work(
            shard.entries,
            block_size=opts.block_size,
            member_max=opts.block_member_max,
            big_file_threshold=opts.big_file_threshold,
        )
        if isinstance(item, Block)
    ]
    return len(blocks), sum(len(b.entries) for b in blocks)


def _plan_json(plan: PackPlan, opts: PackOptions) -> dict[str, Any]:
    shards = []
    for s in plan.shards:
        blocks, block_files = _planned_blocks(s, opts)
        shards.append(
            {
                "key": s.key,
                "shard_index": s.shard_index,
                "files": s.files,
                "bytes": s.bytes,
                "parts_at_most": max(1, -(-s.bytes // opts.max_shard_size)),
                "blocks": blocks,
                "block_files": block_files,
            }
        )
    return {
        "dry_run": True,
        "shards": shards,
        "files": plan.files,
        "bytes": plan.bytes,
        "blocks": sum(s["blocks"] for s in shards),
        "block_files": sum(s["block_files"] for s in shards),
        "shard_count": len(plan.shards),
        "out_of_range": plan.out_of_range,
        "rejected": [{"uid": u, "reason": r} for u, r in plan.rejected],
    }


def _write_skipped(path: Path, failures: tuple[tuple[str, str], ...]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for uid, reason in failures:
            fh.write(json.dumps({"uid": uid, "reason": reason}) + "\n")


def run_pack(args: PackArgs, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run des-pack; return the exit code (0 ok, 1 failed, 2 usage/config, 3 some skipped)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not args.dry_run and not args.output_dir and not args.zones_config:
        return _err(
            "--output-dir is required (a directory or s3://bucket/prefix), "
            "or --zones-config for multi-zone S3",
            args,
            EXIT_USAGE,
            out,
            err,
        )
    display = ProgressDisplay(err, bar=args.progress)
    # Every entry read from the manifest lives until the pack ends: the collector, which
    # would walk them all again and again while they pile up (about 15 % of the time it
    # takes to read and plan a manifest of small files), waits until the plan is made.
    collecting = gc.isenabled()
    gc.disable()
    try:
        opts = _options(args, None if args.dry_run else display)
        rejected: list[tuple[str, str]] = []
        plan = plan_shards(
            iter_entries(args.input_json, rejected if args.on_error == "skip" else None),
            n_bits=opts.n_bits,
            shard_range=opts.shard_range,
            on_duplicate=opts.on_error,
        )
    except (ManifestError, PackConfigError) as exc:
        return _err(str(exc), args, EXIT_USAGE, out, err)
    finally:
        if collecting:
            gc.enable()
    if rejected:
        plan = PackPlan(plan.shards, plan.n_bits, plan.out_of_range, (*rejected, *plan.rejected))
    if not plan.shards and not plan.out_of_range and not plan.rejected:
        # A cron job with nothing to pack is not an error (exit 0), but say so.
        print(
            f"des-pack: warning: the manifest {args.input_json} lists no files; nothing to pack",
            file=err,
        )
    if args.dry_run:
        return _dry_run(args, plan, opts, out, err)
    return _pack(args, plan, opts, display, out, err)


def _without_bad_sources(plan: PackPlan) -> tuple[PackPlan, int]:
    """The plan without the entries whose local source a pack could not read (missing, a
    directory, not its manifest size), which join ``rejected``; and how many they were."""
    bad: list[tuple[str, str]] = []
    shards: list[PlannedShard] = []
    for shard in plan.shards:
        kept = []
        for entry in shard.entries:
            reason = check_local_source(entry)
            if reason is None:
                kept.append(entry)
            else:
                bad.append((entry.uid, f"uid {entry.uid!r}: {reason}"))
        if len(kept) == len(shard.entries):
            shards.append(shard)
        elif kept:
            shards.append(dataclasses.replace(shard, entries=tuple(kept)))
    if not bad:
        return plan, 0
    return PackPlan(tuple(shards), plan.n_bits, plan.out_of_range, (*plan.rejected, *bad)), len(bad)


def _dry_run(args: PackArgs, plan: PackPlan, opts: PackOptions, out: TextIO, err: TextIO) -> int:
    """Print the plan; exit 0 when a pack would pack every entry, 1 when one would stop it
    (a source it could not read, with ``--on-error fail``), 3 when some would be skipped."""
    plan, bad_sources = _without_bad_sources(plan)
    for _uid, reason in plan.rejected:
        print(f"des-pack: rejected: {reason}", file=err)
    doc = _plan_json(plan, opts)
    if args.json:
        print(json.dumps(doc, indent=2), file=out)
    else:
        with_blocks = opts.block_size > 0

        def blocks_text(d: dict[str, Any]) -> str:
            return f", at most {d['blocks']} solid blocks ({d['block_files']} files)"

        for s in doc["shards"]:
            print(
                f"{s['key']}  {s['files']:>8} files  {s['bytes']:>14} bytes"
                f"  ({format_bytes(s['bytes'])}, at most {s['parts_at_most']} object(s)"
                f"{blocks_text(s) if with_blocks else ''})",
                file=out,
            )
        print(
            f"plan: {len(plan.shards)} shards, {plan.files} files, {plan.bytes} bytes "
            f"({format_bytes(plan.bytes)}){blocks_text(doc) if with_blocks else ''}; "
            f"{plan.out_of_range} entries outside --shard-range; {len(plan.rejected)} "
            "rejected; nothing written",
            file=out,
        )
    if bad_sources and args.on_error != "skip":
        print(
            f"des-pack: error: {bad_sources} source file(s) cannot be packed (listed above); "
            "fix source_path or size_bytes in the manifest (or the files), or use "
            "--on-error skip to leave them out",
            file=err,
        )
        return EXIT_FAILED
    return EXIT_SKIPPED if plan.rejected else EXIT_OK


def _pack(  # noqa: PLR0917 - the run's parts, passed along
    args: PackArgs,
    plan: PackPlan,
    opts: PackOptions,
    display: ProgressDisplay,
    out: TextIO,
    err: TextIO,
) -> int:
    from des_format import DesFormatError
    from des_routing import RoutingError

    report: PackReport
    try:
        with display:
            report = pack_plan(plan, args.output_dir or "", opts)
    except PackAborted as exc:
        report = exc.report
        print(format_summary(report), file=err)
        if isinstance(exc, OutputFailed):
            msg = (
                f"{exc}; packing stopped (shards finished before it are complete and kept, "
                "no temporary file is left). Run the same command again once it is fixed: "
                "it resumes after the finished shards"
            )
        else:
            msg = (
                f"{exc}; packing stopped (shards finished before it are complete). "
                "Fix the entry or use --on-error skip, then run the same command again"
            )
        print(f"des-pack: error: {msg}", file=err)
        if args.json:
            doc = report.to_json()
            doc.update(error=msg, exit_code=EXIT_FAILED)
            print(json.dumps(doc, indent=2), file=out)
        return EXIT_FAILED
    except PackConfigError as exc:
        return _err(str(exc), args, EXIT_USAGE, out, err)
    except (PackerError, DesFormatError, RoutingError) as exc:
        return _err(f"{exc}", args, EXIT_FAILED, out, err)
    except OSError as exc:
        return _err(describe_os_error(exc, args.output_dir or ""), args, EXIT_FAILED, out, err)
    except Exception as exc:  # noqa: BLE001 - never a traceback: say what broke, exit 1
        return _err(_unexpected(exc), args, EXIT_FAILED, out, err)
    code = EXIT_OK
    if report.failures:
        code = EXIT_SKIPPED
        try:
            _write_skipped(args.skipped_report, report.failures)
        except OSError as exc:
            print(f"des-pack: error: cannot write {args.skipped_report}: {exc.strerror}", file=err)
        print(
            f"des-pack: {len(report.failures)} entries skipped; see {args.skipped_report}",
            file=err,
        )
    if args.json:
        doc = report.to_json()
        doc["exit_code"] = code
        if report.failures:
            doc["skipped_report"] = str(args.skipped_report)
        print(json.dumps(doc, indent=2), file=out)
    else:
        print(format_summary(report), file=out)
    return code
