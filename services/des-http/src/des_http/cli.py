"""``des-http``: run the service under uvicorn, or hash a token for the tokens file."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence


def _default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _serve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="des-http",
        description="Serve DES shards over HTTP (granian, one worker process per core by "
        "default). Configuration comes from DES_* variables (see the des-http README: "
        "storage, limits, timeouts). Use 'des-http hash-token' to make a tokens-file line.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("DES_HTTP_HOST", "127.0.0.1"),
        help="address to listen on (default: $DES_HTTP_HOST, else 127.0.0.1; "
        "0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("DES_HTTP_PORT", "8000") or 8000),
        help="port to listen on (default: $DES_HTTP_PORT, else 8000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        help="worker processes (default: one per core this process may use); with more "
        "than one set "
        "PROMETHEUS_MULTIPROC_DIR (an empty directory) so /metrics adds up every worker's "
        "samples",
    )
    parser.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="overrides DES_LOG_LEVEL (INFO when unset)"
    )
    parser.add_argument(
        "--no-server-header",
        action="store_true",
        help="send 'server: des-http' instead of granian's 'server: granian' (as "
        "DES_HTTP_SERVER_HEADER=des-http does)",
    )
    args = parser.parse_args(list(argv))
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be within 0..65535")
    if getattr(args, "log_level", None):
        os.environ["DES_LOG_LEVEL"] = args.log_level
    if args.no_server_header:
        os.environ["DES_HTTP_SERVER_HEADER"] = "des-http"

    from ._app import warn_if_auth_is_off
    from ._main import WARNED_VARIABLE, app_from_env, load_settings_or_exit

    settings = load_settings_or_exit()  # fail before any worker starts
    warn_if_auth_is_off(settings)
    os.environ[WARNED_VARIABLE] = "1"
    app_from_env()  # the tokens file, zones and stores too: exit 2 here, not in a worker
    if args.workers > 1:
        from ._metrics import MULTIPROC_VARIABLE, multiprocess_dir

        if not multiprocess_dir():
            print(
                f"des-http: warning: {MULTIPROC_VARIABLE} is not set, so /metrics shows only "
                "the samples of the worker that answers the scrape",
                file=sys.stderr,
            )
    from ._server import serve

    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def _hash_token(argv: Sequence[str]) -> int:
    from ._auth import Scope, serialize_token_line

    parser = argparse.ArgumentParser(
        prog="des-http hash-token",
        description="Print the DES_AUTH_TOKENS_FILE line for a token read from standard input "
        "(or typed at a prompt). The token itself is never stored.",
    )
    parser.add_argument("--scope", choices=[s.value for s in Scope], default="read")
    parser.add_argument("--name", default="", help="a label for logs (e.g. the client)")
    args = parser.parse_args(list(argv))
    interactive = sys.stdin.isatty()
    token = getpass.getpass("token: ") if interactive else sys.stdin.readline().strip()
    if not token:
        print("des-http hash-token: no token given on standard input", file=sys.stderr)
        return 2
    print(serialize_token_line(token, Scope(args.scope), args.name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "hash-token":
        return _hash_token(args[1:])
    if args and args[0] == "serve":
        args = args[1:]
    return _serve(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
