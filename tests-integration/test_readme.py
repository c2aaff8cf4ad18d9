"""The README's "Using it" commands run as written after `bash tools/demo` (issue 20).

The ```bash blocks of that section run in order, in one bash session (exports carry over, as
in a terminal), in a fresh copy of what a clone has (example_data/, tools/demo.py) after the
demo ran there. Two substitutions, both outside the README's text: `uv run X` runs X from this
test's environment (a `uv` stand-in on PATH: the workspace is already installed, and nothing is
synced or downloaded), and port 8000 becomes a free port (other tests may hold 8000). A block
preceded by `<!-- readme-test: skip (why) -->` is not run (it runs until stopped or names the
reader's own file); everything else is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from des_testing import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UV_STANDIN = (
    '#!/bin/sh\n[ "$1" = run ] || { echo "uv $1: not in this test" >&2; exit 2; }\n'
    'shift\nexec "$@"\n'
)


def using_it_blocks(readme: str) -> tuple[list[str], list[str]]:
    """(blocks to run, blocks marked skip) of the README's "Using it" section."""
    section = readme.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    run: list[str] = []
    skipped: list[str] = []
    for m in re.finditer(r"(<!-- readme-test: skip[^>]*-->\n)?```bash\n(.*?)```", section, re.S):
        (skipped if m.group(1) else run).append(m.group(2))
    return run, skipped


def test_the_sections_blocks_are_found() -> None:
    run, skipped = using_it_blocks((ROOT / "README.md").read_text())
    assert len(run) == 5
    assert [b.split()[2] for b in skipped] == ["des-migrate"]  # the --continuous service
    assert all("--continuous" in b for b in skipped)


@pytest.mark.heavy  # the demo, des-pack, des-http and a repack: about 10-15 s
def test_readme_using_it_runs_as_written_after_the_demo(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "example_data", clone / "example_data")
    (clone / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "demo.py", clone / "tools" / "demo.py")
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "uv").write_text(UV_STANDIN)
    (shims / "uv").chmod(0o755)
    env = {
        "PATH": os.pathsep.join([str(shims), str(BIN), "/usr/bin", "/bin"]),
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
    }
    demo = subprocess.run(
        [sys.executable, str(clone / "tools" / "demo.py")],
        cwd=clone, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "50 read back byte-exact, 0 mismatched" in demo.stdout

    blocks, _ = using_it_blocks((ROOT / "README.md").read_text())
    port = free_port()
    script = "\n".join(b.replace("8000", str(port)) for b in blocks)
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
         + script],
        cwd=clone, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    sample = (clone / "example_data" / "input" / "file-000000.txt").read_bytes()
    # des get -o: the file, byte for byte; curl: the same bytes over HTTP
    assert (clone / "demo-output" / "ex-000000.txt").read_bytes() == sample
    assert sample.decode() in proc.stdout
    # des-stats and des-migrate --dry-run show the rows the demo left, with the demo's n_bits
    assert "eligible files:      5\n" in proc.stdout
    assert "n_bits:              4\n" in proc.stdout
    assert "dry run: success\n  eligible rows:   5\n" in proc.stdout
    # des link printed a signed path; the day's export packed back elsewhere, every file
    assert "/files/ex-000000?created_at=" in proc.stdout
    assert "&sig=" in proc.stdout
    assert len(list((clone / "demo-output" / "elsewhere").rglob("*.des"))) > 0
    # des delete, then des repack erased it: the file answers "deleted" now
    gone = subprocess.run(
        [str(BIN / "des"), "get", "ex-000000", "--created-at", "2024-01-01T22:11:00Z"],
        cwd=clone,
        env={**env, "DES_BACKEND": "local", "DES_BASE_DIR": "./des_output", "DES_N_BITS": "8"},
        capture_output=True,
        check=False,
    )
    assert gone.returncode == 4, gone.stderr
    listed = subprocess.run(
        [str(BIN / "des"), "--base-dir", "./des_output", "--n-bits", "8", "deletions", "--json"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert [json.loads(line) for line in listed.splitlines()] == [
        {"shard": "20240101/79.des", "state": "erased", "uid": "ex-000000"}
    ]


@pytest.mark.parametrize("name", ["uid-123", "file-123.bin", "my-migration-config"])
def test_no_placeholder_of_old_is_left(name: str) -> None:
    assert name not in (ROOT / "README.md").read_text()
