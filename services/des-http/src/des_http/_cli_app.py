"""The ``des-http`` command's two typer applications (typer, as ``des``, ``des-pack`` and
``des-migrate``): ``serve_app`` (``des-http [serve] [OPTIONS]``) and ``hash_token_app``
(``des-http hash-token``). Imported by ``cli.main`` only, so that a granian worker started by
``spawn`` (which imports the command's module again) never loads typer."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated

import typer

from ._auth import Scope, serialize_token_line

__all__ = ["hash_token_app", "serve_app"]

EXIT_USAGE = 2
MAX_PORT = 65535

SERVE_HELP = (
    "Serve DES shards over HTTP (granian, one worker process per core by default).\n\n"
    "Configuration comes from DES_* variables (see the des-http README: storage, limits, "
    "timeouts). Use 'des-http hash-token' to make a tokens-file line.\n\n"
    "Exit codes: 0 stopped; 2 usage or configuration error (the message names the option or "
    "variable)."
)

LINE_HELP = (
    "Print the DES_AUTH_TOKENS_FILE line for a token read from standard input (or typed at a "
    "prompt). The token itself is never stored.\n\n"
    "Exit codes: 0 printed; 2 no token given, or a usage error."
)

# -h too: the argparse command had it.
_SETTINGS = {"help_option_names": ["-h", "--help"]}

serve_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, context_settings=_SETTINGS
)
hash_token_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, context_settings=_SETTINGS
)


def _port_from_env() -> int:
    """``$DES_HTTP_PORT`` (the default of --port), else 8000; an empty value counts as unset.
    A bad value is a usage error naming the variable, not the option."""
    text = os.environ.get("DES_HTTP_PORT", "").strip()
    if not text:
        return 8000
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_PORT:
        typer.echo(
            f"des-http: error: DES_HTTP_PORT={text!r} (the default of --port) is not a port "
            f"number (0..{MAX_PORT}); fix or unset it, or give --port",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    return int(text)


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@serve_app.command(help=SERVE_HELP)
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="HOST",
            show_default="$DES_HTTP_HOST, else 127.0.0.1",
            help="Address to listen on (0.0.0.0 for every interface).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            metavar="PORT",
            min=0,
            max=MAX_PORT,
            show_default="$DES_HTTP_PORT, else 8000",
            help="Port to listen on.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            show_default="one per core this process may use",
            help="Worker processes. With more than one, set PROMETHEUS_MULTIPROC_DIR (an "
            "empty directory) so /metrics adds up every worker's samples.",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            show_default="$DES_LOG_LEVEL, else INFO",
            help="Log level (overrides DES_LOG_LEVEL).",
        ),
    ] = None,
    no_server_header: Annotated[
        bool,
        typer.Option(
            "--no-server-header",
            help="Send 'server: des-http' instead of granian's 'server: granian' (as "
            "DES_HTTP_SERVER_HEADER=des-http does).",
        ),
    ] = False,
) -> None:
    if host is None:
        host = os.environ.get("DES_HTTP_HOST", "").strip() or "127.0.0.1"
    if port is None:
        port = _port_from_env()
    if log_level:
        os.environ["DES_LOG_LEVEL"] = log_level
    if no_server_header:
        os.environ["DES_HTTP_SERVER_HEADER"] = "des-http"
    if workers is None:
        workers = default_workers()

    from ._app import warn_if_auth_is_off
    from ._main import WARNED_VARIABLE, app_from_env, load_settings_or_exit

    settings = load_settings_or_exit()  # fail before any worker starts
    warn_if_auth_is_off(settings)
    os.environ[WARNED_VARIABLE] = "1"
    app_from_env()  # the tokens file, zones and stores too: exit 2 here, not in a worker
    if workers > 1:
        from ._metrics import MULTIPROC_VARIABLE, multiprocess_dir

        if not multiprocess_dir():
            typer.echo(
                f"des-http: warning: {MULTIPROC_VARIABLE} is not set, so /metrics shows only "
                "the samples of the worker that answers the scrape",
                err=True,
            )
    from ._server import serve as run_server

    run_server(settings, host=host, port=port, workers=workers)


@hash_token_app.command(help=LINE_HELP)
def hash_token(
    scope: Annotated[
        Scope, typer.Option("--scope", help="What the token may do: read, or admin (DELETE).")
    ] = Scope.READ,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="A label for logs (e.g. the client).")
    ] = "",
) -> None:
    interactive = sys.stdin.isatty()
    token = getpass.getpass("token: ") if interactive else sys.stdin.readline().strip()
    if not token:
        typer.echo("des-http hash-token: no token given on standard input", err=True)
        raise typer.Exit(EXIT_USAGE)
    typer.echo(serialize_token_line(token, scope, name))
