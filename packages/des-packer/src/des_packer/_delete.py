"""What ``des delete``, ``des repack`` and ``des deletions`` do, as plain functions returning
exit codes (the typer layer lives in ``_des_app.py``). Settings come from ``DES_*`` like the
other ``des`` commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from des_format import DEFAULT_BIGFILE_GRACE_SECONDS

from ._inspect import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    load_settings,
    open_read_store,
    s3_extra,
    with_store_layout,
)
from ._repack import RepackOptions, repack

if TYPE_CHECKING:
    from des_format import DeleteResult, ShardEditor
    from des_routing import DesSettings

__all__ = ["open_editor", "run_delete", "run_deletions", "run_repack"]


def open_editor(settings: DesSettings) -> ShardEditor:
    """The shard editor of ``settings`` (local directory, or S3 with ``des-packer[s3]``)."""
    if settings.backend == "local":
        from des_format import LocalShardEditor

        return LocalShardEditor(settings.base_dir, bigfiles_prefix=settings.bigfiles_prefix)
    editor: ShardEditor = s3_extra(settings).open_editor(settings)
    return editor


def _targets(uid: str | None, created_at: str | None, batch: Path | None) -> list[tuple[str, str]]:
    if batch is not None:
        if uid is not None:
            raise UsageError("give UID --created-at T or --batch FILE, not both")
        try:
            lines = batch.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read --batch {batch}: {exc.strerror}") from None
        out: list[tuple[str, str]] = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                u, c = row["uid"], row["created_at"]
                if not isinstance(u, str) or not isinstance(c, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise UsageError(
                    f"--batch {batch} line {n}: expected a JSON object with string uid and"
                    " created_at"
                ) from None
            out.append((u, c))
        return out
    if uid is None or created_at is None:
        raise UsageError("give UID --created-at T (or --batch FILE)")
    return [(uid, created_at)]


def run_delete(
    uid: str | None,
    created_at: str | None,
    batch: Path | None,
    overrides: Mapping[str, str | None],
    *,
    bigfile_grace_seconds: float = DEFAULT_BIGFILE_GRACE_SECONDS,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Delete files: tombstone them, then erase at once what can be (bytes in continuation
    parts overwritten, big files no live file shares removed once older than
    ``bigfile_grace_seconds``). Exit 0 when every file is deleted (now or before), 1 when
    some file or shard does not exist or a shard could not be changed, 2 on usage errors."""
    from des_format import DesFormatError, ObjectNotFound, delete_entries
    from des_routing import RoutingError, locate_shard

    out = out or sys.stdout
    err = err or sys.stderr
    if bigfile_grace_seconds < 0:
        print("des: error: --bigfile-grace must be at least 0 (seconds)", file=err)
        return EXIT_USAGE
    try:
        settings = load_settings(overrides)
        # a writer: the store's layout record gives n_bits when not set, refuses a mismatch
        settings = with_store_layout(settings, open_read_store(settings), overrides)
        targets = _targets(uid, created_at, batch)
        by_key: dict[str, list[str]] = {}
        for u, c in targets:
            try:
                key = locate_shard(u, c, settings.n_bits).object_key
            except RoutingError as exc:
                raise UsageError(f"{u!r}: {exc}") from None
            by_key.setdefault(key, []).append(u)
        editor = open_editor(settings)
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    code = EXIT_OK
    for key, uids in by_key.items():
        try:
            res = delete_entries(
                editor,
                key,
                uids,
                bigfiles_prefix=settings.bigfiles_prefix,
                bigfile_grace_seconds=bigfile_grace_seconds,
            )
        except ObjectNotFound:
            for u in uids:
                print(f"des: error: {u}: not found (no shard {editor.describe(key)})", file=err)
            code = EXIT_FAILED
            continue
        except DesFormatError as exc:
            print(f"des: error: {editor.describe(key)}: {exc}", file=err)
            code = EXIT_FAILED
            continue
        for u in res.deleted:
            print(f"deleted {u} ({_erasure_note(res, u)})", file=out)
        for u in res.already:
            print(f"{u} was already deleted ({_erasure_note(res, u)})", file=out)
        for u in res.missing:
            print(f"des: error: {u}: not found in {editor.describe(key)}", file=err)
            code = EXIT_FAILED
    return code


def _failed(msg: str, as_json: bool, out: TextIO, err: TextIO) -> int:
    """A command stopped by a store error: one line on stderr, and with --json a JSON
    document ``{"error", "exit_code"}`` on stdout; exit 1."""
    print(f"des: error: {msg}", file=err)
    if as_json:
        print(json.dumps({"error": msg, "exit_code": EXIT_FAILED}, sort_keys=True), file=out)
    return EXIT_FAILED


def _erasure_note(res: DeleteResult, uid: str) -> str:
    why = res.why_kept(uid)
    return "its bytes are erased" if why is None else f"hidden: {why}"


def run_repack(
    options: RepackOptions,
    overrides: Mapping[str, str | None],
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """One repack round; exit 0 ok, 1 when some shard failed, 2 on usage errors."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not 0.0 <= options.threshold <= 1.0:
        print("des: error: --threshold must be between 0 and 1 (a share of bytes)", file=err)
        return EXIT_USAGE
    if options.max_shards is not None and options.max_shards < 1:
        print("des: error: --max-shards must be at least 1", file=err)
        return EXIT_USAGE
    try:
        settings = load_settings(overrides)
        settings = with_store_layout(settings, open_read_store(settings), overrides)
        editor = open_editor(settings)
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    from dataclasses import replace

    from des_format import DesFormatError

    options = replace(options, bigfiles_prefix=settings.bigfiles_prefix)
    try:
        report = repack(editor, options)
    except DesFormatError as exc:  # the store failed outside any one shard (a listing)
        return _failed(f"{exc}; nothing was lost, run des repack again", as_json, out, err)
    if as_json:
        print(json.dumps(report.to_json(), sort_keys=True), file=out)
    else:
        verb = "would repack" if report.dry_run else "repacked"
        for s in report.chosen:
            print(
                f"{verb} {s.key}: {s.hidden} deleted file(s), {s.hidden_bytes} bytes,"
                f" {s.deleted_share:.1%} of the shard",
                file=out,
            )
        if not report.dry_run:
            erased = sum(len(r.erased) for r in report.repacked)
            print(
                f"{len(report.repacked)} shard(s) repacked, {erased} file(s) erased,"
                f" {report.cleaned_objects} leftover object(s) and"
                f" {len(report.bigfiles_removed)} big file(s) removed",
                file=out,
            )
        if report.remaining:
            print(f"{report.remaining} more shard(s) over the threshold: run again", file=out)
    for key, msg in report.failures:
        print(f"des: error: {key}: {msg}", file=err)
    return EXIT_FAILED if report.failures else EXIT_OK


#: What "erased" means on S3 (printed by des deletions for S3 backends).
ERASED_ON_S3 = (
    "note: erased means no object or object version holds the bytes, as the S3 API shows; a "
    "server that reclaims space later (SeaweedFS until volume.vacuum, MinIO, Ceph RGW until "
    "its garbage collection) keeps them on its disks until then: see docs/DELETION.md, "
    "section 6, to finish the erasure there"
)


def run_deletions(
    prefix: str,
    overrides: Mapping[str, str | None],
    *,
    state: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """List tombstones with their state; exit 0 ok, 1 when some shard is unreadable."""
    from ._deletions import iter_deletions

    out = out or sys.stdout
    err = err or sys.stderr
    if state is not None and state not in ("hidden", "erasing", "erased"):
        print("des: error: --state must be hidden, erasing or erased", file=err)
        return EXIT_USAGE
    try:
        settings = load_settings(overrides)
        editor = open_editor(settings)
    except UsageError as exc:
        print(f"des: error: {exc}", file=err)
        return EXIT_USAGE
    from des_format import DesFormatError

    errors: list[tuple[str, str]] = []
    counts = {"hidden": 0, "erasing": 0, "erased": 0}
    try:
        for rec in iter_deletions(
            editor, prefix, bigfiles_prefix=settings.bigfiles_prefix, errors=errors
        ):
            counts[rec.state] += 1
            if state is not None and rec.state != state:
                continue
            if as_json:
                print(json.dumps(rec.to_json(), sort_keys=True), file=out)
            else:
                print(f"{rec.state}\t{rec.shard}\t{rec.uid}", file=out)
    except DesFormatError as exc:  # the store failed outside any one shard (a listing)
        return _failed(str(exc), as_json, out, err)
    if not as_json:
        print(
            f"{counts['hidden']} hidden, {counts['erasing']} erasing, {counts['erased']} erased",
            file=err,
        )
        if counts["erased"] and settings.backend != "local":
            print(ERASED_ON_S3, file=err)
    for key, msg in errors:
        print(f"des: error: {key}: {msg}", file=err)
    return EXIT_FAILED if errors else EXIT_OK
