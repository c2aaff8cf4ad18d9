"""The des-migrate and des-stats commands (the only module that imports typer).

Exit codes: 0 success (or nothing to migrate), 3 partial failure (some files were left
unarchived, see the report), 1 failure, 2 configuration error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from ._config import DatabaseConfig, read_config, redact_url
from ._config import parse_cutoff as _parse_cutoff
from ._cycle_report import CycleReport
from ._errors import ConfigError, MissingDatabase, SchemaMismatch, SourceDatabaseError
from ._metrics import MigrationMetrics
from ._orchestrator import MigrationOrchestrator
from ._source_db import SourceDatabase, require_existing_sqlite_file
from ._stats import DEFAULT_TARGET_SHARD_BYTES, compute_stats, format_stats

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3

log = logging.getLogger("des_migrate")

migrate_app = typer.Typer(add_completion=False, help="Move files from a database into DES.")
stats_app = typer.Typer(add_completion=False, help="What a migration would move and write.")


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@migrate_app.command()
def migrate(  # noqa: PLR0917  (typer options)
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Migration config file (JSON or YAML).")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and plan only: write and mark nothing.")
    ] = False,
    continuous: Annotated[
        bool, typer.Option("--continuous", help="Run a cycle every --interval seconds.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="Seconds between continuous cycles.")
    ] = 3600.0,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics on this port."),
    ] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            "--cutoff",
            help="Migrate rows created before this ISO-8601 instant "
            "(overrides migration.cutoff and archive_age_days).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each report as JSON.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Logging level.")] = "INFO",
    gc_freeze: Annotated[
        bool,
        typer.Option(
            "--gc-freeze",
            help="Leave the objects loaded before the run out of Python's garbage-collector "
            "passes (gc.freeze): less CPU on batches of tens of thousands of rows.",
        ),
    ] = False,
) -> None:
    """Migrate eligible rows: fetch, validate, pack, verify, mark archived, clean up."""
    _setup_logging(log_level)
    try:
        cfg = read_config(config)
    except ConfigError as exc:  # a file error names the file already
        message = str(exc) if exc.key == "--config" else f"{exc} (in {config})"
        raise _fail(message, EXIT_CONFIG) from None
    if cutoff is not None:
        try:
            when = _parse_cutoff(cutoff, "--cutoff")
        except ConfigError as exc:
            raise _fail(str(exc), EXIT_CONFIG) from None
        cfg = dataclasses.replace(cfg, migration=dataclasses.replace(cfg.migration, cutoff=when))
    try:
        require_existing_sqlite_file(cfg.database.url)
        db = SourceDatabase(cfg.database)
        log.info("source database %s, table %s", db.redacted_url, cfg.database.table_name)
        _ = db.table
    except (SchemaMismatch, MissingDatabase) as exc:
        raise _fail(f"{exc} (in {config})", EXIT_CONFIG) from None
    except SourceDatabaseError as exc:
        raise _fail(str(exc), EXIT_FAILURE) from None

    from prometheus_client import CollectorRegistry

    metrics = MigrationMetrics(CollectorRegistry())
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=metrics.registry)
        log.info("metrics on :%d/metrics", metrics_port)
    try:
        orch = MigrationOrchestrator(cfg, db=db, metrics=metrics)
    except ConfigError as exc:
        raise _fail(f"{exc} (in {config})", EXIT_CONFIG) from None

    def on_term(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch, then exiting", signum)
        orch.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def show(report: CycleReport) -> None:
        if as_json:
            typer.echo(json.dumps(report.to_json()))
        else:
            typer.echo(_summary(report))

    frozen = older_objects_frozen() if gc_freeze else contextlib.nullcontext()
    continuing = continuous and not dry_run
    try:
        with frozen:
            if continuing:
                report = orch.run_continuous(interval, on_cycle=show)
            else:
                report = orch.run_migration_cycle(dry_run=dry_run)
    except Exception as exc:  # noqa: BLE001 - a store or driver error: a message, no traceback
        msg = f"{exc} ({type(exc).__name__}); rows not marked archived stay for the next run"
        if as_json:
            typer.echo(json.dumps({"status": "failure", "error": msg, "exit_code": EXIT_FAILURE}))
        raise _fail(msg, EXIT_FAILURE) from None
    if continuing:
        raise typer.Exit(EXIT_FAILURE if report.status == "failure" else EXIT_OK)
    show(report)
    raise typer.Exit(report.exit_code)


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """``--gc-freeze``: the objects that exist before the run are left out of the garbage
    collector's passes during it (``gc.freeze``), and given back afterwards (``gc.unfreeze``).
    A process-wide effect, so only the command opts in; the library never does it.

    A batch keeps tens of thousands of row objects alive, so the collector runs full passes
    during a cycle; each walked the whole heap (SQLAlchemy, the packer and everything else
    loaded) while holding the GIL the packer's threads need. Nothing is collected less: what
    was frozen is collected by the next pass after the cycle. Left alone when the process
    already froze objects of its own (or has the collector off).
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _summary(r: CycleReport) -> str:
    head = "dry run" if r.dry_run else "migration"
    lines = [f"{head}: {r.status}"]
    if r.dry_run:
        lines.append(f"  eligible rows:   {r.fetched}")
        lines.append(f"  shards to write: {len(r.shards)}")
    else:
        lines.append(f"  batches:         {r.batches}")
        lines.append(f"  migrated:        {r.migrated} files, {r.bytes_migrated} bytes")
        lines.append(f"  already packed:  {r.already_packed}")
        lines.append(f"  sources deleted: {r.deleted_sources}")
    lines.append(f"  failed:          {len(r.failures)}")
    for f in r.failures[:20]:
        lines.append(f"    {f.uid}: {f.step}: {f.reason}")
    if len(r.failures) > 20:
        lines.append(f"    ... {len(r.failures) - 20} more (use --json or a report_file)")
    if r.error:
        lines.append(f"  error: {r.error}")
    return "\n".join(lines)


@stats_app.command()
def stats(  # noqa: PLR0917  (typer options)
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="SQLAlchemy URL of the source database.")
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="Table of files.")] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            "--cutoff",
            help="Rows created before this ISO-8601 instant (default: "
            "now minus --archive-age-days).",
        ),
    ] = None,
    archive_age_days: Annotated[float, typer.Option("--archive-age-days", min=0.0)] = 7.0,
    n_bits: Annotated[
        int | None,
        typer.Option(
            "--n-bits",
            min=4,
            max=16,
            help="Routing bits of the shards to plan (default: packer.n_bits of --config, "
            "else $DES_N_BITS, else 8).",
        ),
    ] = None,
    target_shard_bytes: Annotated[
        int, typer.Option("--target-shard-bytes", min=1, help="Shard size to aim for.")
    ] = DEFAULT_TARGET_SHARD_BYTES,
    config: Annotated[
        Path | None, typer.Option("--config", help="Take the database section from this file.")
    ] = None,
    uid_column: Annotated[str | None, typer.Option("--uid-column")] = None,
    created_at_column: Annotated[str | None, typer.Option("--created-at-column")] = None,
    size_bytes_column: Annotated[str | None, typer.Option("--size-bytes-column")] = None,
    archived_column: Annotated[str | None, typer.Option("--archived-column")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Files and bytes eligible, per day and shard index, and a recommended n_bits."""
    from ._config import parse_config

    try:
        base = read_config(config) if config is not None else parse_config({})
        overrides: dict[str, Any] = {}
        for key, value in (
            ("url", db_url),
            ("table_name", table),
            ("uid_column", uid_column),
            ("created_at_column", created_at_column),
            ("size_bytes_column", size_bytes_column),
            ("archived_column", archived_column),
        ):
            if value is not None:
                overrides[key] = value
        if config is None and db_url is None:
            raise ConfigError("--db-url", "a SQLAlchemy database URL", missing=True)
        db_section = _database_dict(base.database) | overrides
        dbcfg = parse_config({"database": db_section}).database
        if n_bits is None:
            n_bits = base.packer.n_bits if config is not None else _env_n_bits()
        when = (
            _parse_cutoff(cutoff, "--cutoff")
            if cutoff is not None
            else datetime.now(UTC) - timedelta(days=archive_age_days)
        )
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    try:
        require_existing_sqlite_file(dbcfg.url)
        db = SourceDatabase(dbcfg)
        result = compute_stats(db, when, n_bits=n_bits, target_shard_bytes=target_shard_bytes)
    except (SchemaMismatch, MissingDatabase) as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    except SourceDatabaseError as exc:
        raise _fail(str(exc), EXIT_FAILURE) from None
    except Exception as exc:  # noqa: BLE001  (driver error: name the database, hide the password)
        raise _fail(
            f"cannot read {redact_url(dbcfg.url)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            EXIT_FAILURE,
        ) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(format_stats(result))


def _env_n_bits() -> int:
    """``$DES_N_BITS`` (the readers' setting), else 8; a bad value names the variable."""
    import os

    text = os.environ.get("DES_N_BITS", "").strip()
    if not text:
        return 8
    if not text.isdigit() or not 4 <= int(text) <= 16:
        raise ConfigError(
            "DES_N_BITS",
            "expected",
            message=f"DES_N_BITS={text!r} (the default of --n-bits) must be a whole number "
            "from 4 to 16; fix or unset it, or give --n-bits",
        )
    return int(text)


def _database_dict(d: DatabaseConfig) -> dict[str, Any]:
    return {
        "url": d.url,
        "table_name": d.table_name,
        "schema": d.schema,
        "uid_column": d.uid_column,
        "created_at_column": d.created_at_column,
        "file_location_column": d.file_location_column,
        "size_bytes_column": d.size_bytes_column,
        "archived_column": d.archived_column,
        "content_type_column": d.content_type_column,
        "checksum_column": d.checksum_column,
        "checksum_algorithm": d.checksum_algorithm,
        "error_column": d.error_column,
    }


def migrate_main() -> None:
    """Entry point of ``des-migrate``."""
    migrate_app()


def stats_main() -> None:
    """Entry point of ``des-stats``."""
    stats_app()


if __name__ == "__main__":  # pragma: no cover
    migrate_main()
