"""Every distribution builds a wheel that installs and imports without the workspace.

One module-scoped build of the seven wheels and one fresh ``python -m venv`` environment:

1. des-format's wheel installed alone pulls in nothing (the venv then holds des-format, pip
   and, on Python 3.11, setuptools; nothing else).
2. All seven wheels installed together (dependencies from PyPI, siblings from the built wheels
   via ``--find-links``) import, and come from the venv, not from the workspace sources.

Needs the network to PyPI for step 2: without it the test fails and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = [
    ("des-format", "des_format"),
    ("des-routing", "des_routing"),
    ("des-storage-s3", "des_storage_s3"),
    ("des-packer", "des_packer"),
    ("des-migrate", "des_migrate"),
    ("des-http", "des_http"),
    ("des-fsspec", "des_fsspec"),
]
CONSOLE_SCRIPTS = ["des-pack", "des", "des-migrate", "des-stats", "des-http"]
INDEX_URL = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/"


def _run(cmd: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure, fail the test with its output (not a bare CalledProcessError)."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    args = [str(c) for c in cmd]
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, check=False, cwd=cwd, timeout=800
    )
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(args)}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass(frozen=True, slots=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def pip_install(self, *args: str | Path) -> None:
        _run([self.python, "-m", "pip", "install", "--no-cache-dir", "--no-input", *args])

    def installed(self) -> set[str]:
        code = (
            "import importlib.metadata as md, json\n"
            "print(json.dumps(sorted({d.metadata['Name'].lower() for d in md.distributions()})))"
        )
        return set(json.loads(_run([self.python, "-c", code]).stdout))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for dist, _ in DISTRIBUTIONS:
        _run(["uv", "build", "--package", dist, "--wheel", "--out-dir", out], cwd=ROOT)
    built: dict[str, Path] = {}
    for dist, module in DISTRIBUTIONS:
        found = sorted(out.glob(f"{module}-*.whl"))
        assert len(found) == 1, f"expected one wheel for {dist} in {out}, got {found}"
        built[dist] = found[0]
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", root])
    return Venv(root)


def _index_problem() -> str | None:
    """Why the package index cannot be used, or None when it answers."""
    try:
        with urllib.request.urlopen(INDEX_URL + "pip/", timeout=15) as resp:
            resp.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)
    return None


def test_wheels_hold_the_package_and_its_py_typed(wheels: dict[str, Path]) -> None:
    for dist, module in DISTRIBUTIONS:
        with zipfile.ZipFile(wheels[dist]) as zf:
            names = zf.namelist()
        assert f"{module}/__init__.py" in names, dist
        assert f"{module}/py.typed" in names, dist
        stray = [n for n in names if not n.startswith((f"{module}/", f"{module}-"))]
        assert stray == [], f"{dist}'s wheel ships files outside its package: {stray}"


@pytest.mark.timeout(900)
def test_wheels_install_without_the_workspace(wheels: dict[str, Path], venv: Venv) -> None:
    baseline = venv.installed()
    assert baseline <= {"pip", "setuptools"}, baseline

    # 1. des-format alone installs nothing but itself
    venv.pip_install(wheels["des-format"])
    assert venv.installed() - baseline == {"des-format"}
    _run([venv.python, "-c", "import des_format"])

    # 2. everything, siblings from the built wheels, third-party dependencies from PyPI
    problem = _index_problem()
    if problem is not None:
        pytest.fail(
            f"the package index is not reachable ({INDEX_URL}: {problem}); installing the wheels' "
            "third-party dependencies needs it. Run this test where PyPI answers, or deselect "
            "it with -m 'not slow'."
        )
    venv.pip_install("--find-links", wheels["des-format"].parent, *wheels.values())
    installed = venv.installed()
    assert {dist for dist, _ in DISTRIBUTIONS} <= installed

    code = (
        "import importlib, importlib.metadata as md, json, sys\n"
        f"mods = {[m for _, m in DISTRIBUTIONS]!r}\n"
        "print(json.dumps({m: [importlib.import_module(m).__file__, "
        "md.version(m.replace('_', '-'))] for m in mods}))\n"
    )
    found = json.loads(_run([venv.python, "-c", code], cwd=venv.root).stdout)
    for dist, module in DISTRIBUTIONS:
        path, version = found[module]
        assert Path(path).is_relative_to(venv.root), f"{module} imported from {path}"
        assert wheels[dist].name.startswith(f"{module}-{version}-"), (dist, version)

    for script in CONSOLE_SCRIPTS:
        _run([venv.root / "bin" / script, "--help"])
    # des-fsspec registers des:// through fsspec's entry point, without an import
    probe = "import fsspec; print(fsspec.get_filesystem_class('des').__module__)"
    assert _run([venv.python, "-c", probe], cwd=venv.root).stdout.strip() == "des_fsspec._fs"
