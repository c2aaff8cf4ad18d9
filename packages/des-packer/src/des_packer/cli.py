"""The entry points of ``des-pack`` and ``des``, both typer applications.

``des-pack``'s options are declared in ``_pack_app.py`` and ``des``'s commands in
``_des_app.py``; each module is imported only when its command runs, and the packing code only
once the options are parsed (``--help`` and a usage error load none of it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from ._des_app import des_app
    from ._pack_app import pack_app

__all__ = ["des_app", "des_main", "pack_app", "pack_main"]


def pack_main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``des-pack`` (``argv`` defaults to ``sys.argv[1:]``); exits with the
    command's exit code."""
    from ._pack_app import pack_app

    pack_app(args=list(sys.argv[1:] if argv is None else argv), prog_name="des-pack")
    raise SystemExit(0)  # pragma: no cover - the typer application always exits


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
    # ``des_packer.cli.des_app``/``pack_app`` (the typer apps, for tests and embedding)
    # without importing either module until it is asked for.
    if name == "des_app":
        from ._des_app import des_app

        return des_app
    if name == "pack_app":
        from ._pack_app import pack_app

        return pack_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
