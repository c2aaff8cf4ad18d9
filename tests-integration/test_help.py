"""--help of the commands says what each one does (issue 20): `des verify --help` lists its own
exit codes only (4 is `des get`'s), `des-http --help` shows the defaults of --host and --port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _help(*argv: str) -> str:
    proc = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "100", "PATH": str(BIN), "TERM": "dumb"},
    )
    assert proc.returncode == 0, proc.stderr
    return re.sub(r"[\s│]+", " ", proc.stdout)  # one line, without rich's box borders


def test_des_verify_help_lists_its_own_exit_codes() -> None:
    text = _help("des", "verify")
    assert (
        "Exit codes: 0 every shard checked is sound; 1 a shard is missing, unreadable or "
        "failed a check (see the report); 2 usage error." in text
    )
    assert "deleted" not in text
    assert "des get" not in text
    get = _help("des", "get")
    assert (
        "Exit codes: 0 ok; 1 not found or unreadable; 2 usage error; 4 the file was deleted." in get
    )


def test_des_http_help_shows_the_defaults_of_host_and_port() -> None:
    text = _help("des-http")
    assert (
        "--host HOST Address to listen on (0.0.0.0 for every interface). "
        "[default: ($DES_HTTP_HOST, else 127.0.0.1)]" in text
    )
    assert (
        "--port PORT [0<=x<=65535] Port to listen on. [default: ($DES_HTTP_PORT, else 8000)]"
        in text
    )
