"""The ``des-http`` command (typer): ``serve`` may be left out, options and their
environment defaults, usage errors (exit 2, one message, no traceback), and typer loaded only
when the command runs, never by importing the command's module (a granian worker started by
``spawn`` imports it again)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from des_http.cli import main
from des_testing import free_port, stop_process


def _run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr with rich's box borders
    and line breaks folded to single spaces)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, " ".join(err.replace("│", " ").split())


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "0"], {}, "Invalid value for '--workers': 0 is not in the range x>=1."),
        (
            ["serve", "--port", "70000"],
            {},
            "Invalid value for '--port': 70000 is not in the range 0<=x<=65535.",
        ),
        (
            ["serve"],
            {"DES_HTTP_PORT": "http"},
            "des-http: error: DES_HTTP_PORT='http' (the default of --port) is not a port "
            "number (0..65535); fix or unset it, or give --port",
        ),
        (
            [],
            {"DES_HTTP_PORT": "²"},
            "des-http: error: DES_HTTP_PORT='²' (the default of --port) is not a port "
            "number (0..65535); fix or unset it, or give --port",
        ),
        (
            [],
            {"DES_HTTP_PORT": "65536"},
            "des-http: error: DES_HTTP_PORT='65536' (the default of --port) is not a port "
            "number (0..65535); fix or unset it, or give --port",
        ),
        (["--threads", "2"], {}, "No such option: --threads"),
        (
            ["hash-token", "--scope", "owner"],
            {},
            "Invalid value for '--scope': 'owner' is not one of 'read', 'admin'.",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_message(
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = _run_main(argv, capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert message in err
    assert "Traceback" not in err


def test_an_empty_port_variable_counts_as_unset_and_the_option_wins(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``DES_HTTP_PORT`` is read only when --port is absent; an empty one is no value. The
    run stops at the settings check (a missing DES_BASE_DIR), after the options passed."""
    monkeypatch.setenv("DES_BACKEND", "local")
    monkeypatch.setenv("DES_BASE_DIR", str(tmp_path / "absent"))
    for argv, port in ((["--port", "8001"], "http"), ([], "")):
        monkeypatch.setenv("DES_HTTP_PORT", port)
        code, out, err = _run_main(argv, capsys, monkeypatch)
        assert (code, out) == (2, "")
        assert err.startswith("des-http: invalid configuration: DES_BASE_DIR="), err


def test_help_of_both_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _run_main(["--help"], capsys, monkeypatch)
    assert code == 0
    assert "Usage: des-http [OPTIONS]" in out
    assert "'des-http hash-token'" in out
    assert _run_main(["serve", "--help"], capsys, monkeypatch)[1] == out
    assert _run_main(["-h"], capsys, monkeypatch)[1] == out
    code, out, _ = _run_main(["hash-token", "--help"], capsys, monkeypatch)
    assert code == 0
    assert "Usage: des-http hash-token [OPTIONS]" in out
    assert "<read|admin>" in out


def test_importing_the_command_module_does_not_load_typer() -> None:
    code = (
        "import sys, des_http.cli; print(sorted(m for m in ('typer', 'click') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout == "[]\n"


@pytest.mark.heavy
def test_serve_with_environment_defaults_and_every_option(tmp_path: Path) -> None:
    """``des-http serve`` listens where DES_HTTP_HOST and DES_HTTP_PORT say, sends
    ``server: des-http`` under --no-server-header, and --log-level WARNING leaves out the
    access log (INFO)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DES_")}
    env.update(
        DES_BACKEND="local",
        DES_BASE_DIR=str(tmp_path),
        DES_HTTP_HOST="127.0.0.1",
        DES_HTTP_PORT=str(port),
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "des-http",
                "serve",
                "--workers",
                "1",
                "--log-level",
                "WARNING",
                "--no-server-header",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/health")
                answer = conn.getresponse()
                body = answer.read()
                conn.close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert (answer.status, body) == (200, b'{"status":"ok"}')
        assert answer.getheader("server") == "des-http"
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "authentication is off" in text  # the start-up warning: stderr is in the log
    assert '"event":"access"' not in text
