"""``des-http``: run the service under granian, or hash a token for the tokens file.

``des-http [serve] [OPTIONS]`` serves (``serve`` may be left out); ``des-http hash-token``
prints a tokens-file line. Both are typer applications (``_cli_app``), imported only when the
command runs: a granian worker started by ``spawn`` imports this module again and must not
load typer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``des-http`` (``argv`` defaults to ``sys.argv[1:]``); exits with the
    command's exit code."""
    from ._cli_app import hash_token_app, serve_app

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "hash-token":
        hash_token_app(args=args[1:], prog_name="des-http hash-token")
    else:
        if args and args[0] == "serve":
            args = args[1:]
        serve_app(args=args, prog_name="des-http")
    raise SystemExit(0)  # pragma: no cover - a typer application always exits


if __name__ == "__main__":  # pragma: no cover
    main()
