"""tools/env.sh on a machine where the uv package is installed for the interpreter but its
scripts directory is not on PATH (issue 20: it failed with `uv: command not found`, exit 127).

Hermetic: a fake HOME, a PATH holding only python3 and the system's tools, a stand-in ``uv``
package on PYTHONPATH whose binary records how it was called; nothing is installed (pip is kept
offline, so an install attempt fails at once instead of reaching the network)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_UV = """#!/bin/sh
echo "uv $*" >> "$UV_CALLS"
"""


def _machine(tmp_path: Path, *, with_find_uv_bin: bool) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    pkg = tmp_path / "site" / "uv"
    pkg.mkdir(parents=True)
    scripts = tmp_path / "site-scripts"  # where pip put the uv binary: not on PATH
    scripts.mkdir()
    uv_bin = scripts / "uv"
    uv_bin.write_text(FAKE_UV)
    uv_bin.chmod(0o755)
    init = ""
    if with_find_uv_bin:
        init = f"def find_uv_bin():\n    return {str(uv_bin)!r}\n"
    (pkg / "__init__.py").write_text(init)
    (pkg / "__main__.py").write_text(
        f"import os, sys\nos.execv({str(uv_bin)!r}, [{str(uv_bin)!r}, *sys.argv[1:]])\n"
    )
    system_path = [d for d in ("/usr/bin", "/bin") if Path(d).is_dir()]
    for d in system_path:
        assert not (Path(d) / "uv").exists(), f"{d}/uv exists: this test needs a PATH without uv"
    return {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(bin_dir), *system_path]),
        "PYTHONPATH": str(tmp_path / "site"),
        "PIP_NO_INDEX": "1",  # an install attempt fails at once, offline
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_CALLS": str(tmp_path / "uv-calls"),
    }


@pytest.mark.parametrize("with_find_uv_bin", [True, False], ids=["find_uv_bin", "python3-m-uv"])
def test_env_sh_finds_the_uv_package_off_path(tmp_path: Path, with_find_uv_bin: bool) -> None:
    env = _machine(tmp_path, with_find_uv_bin=with_find_uv_bin)
    script = f"source {ROOT / 'tools' / 'env.sh'} && uv run --frozen --no-sync python -V"
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run(
        [bash, "-c", script], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "installing it with pip" not in proc.stderr
    calls = Path(env["UV_CALLS"]).read_text().splitlines()
    probe = [] if with_find_uv_bin else ["uv --version"]  # `python3 -m uv` tried first
    assert calls == [
        *probe,
        "uv sync --frozen --all-packages --all-extras --quiet --python python3",
        "uv run --frozen --no-sync python -V",
    ]
