"""Every distribution has one version: its pyproject's, read at run time from the installed
metadata (``__version__``), so the two cannot drift apart."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = [
    ("des_format", "packages/des-format"),
    ("des_routing", "packages/des-routing"),
    ("des_storage_s3", "packages/des-storage-s3"),
    ("des_packer", "packages/des-packer"),
    ("des_migrate", "packages/des-migrate"),
    ("des_http", "services/des-http"),
    ("des_fsspec", "packages/des-fsspec"),
    ("des_testing", "tools/testing"),
]


def _pyproject(project: str) -> dict[str, str]:
    meta = tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]
    return {"name": meta["name"], "version": meta["version"]}


@pytest.mark.parametrize(("module", "project"), PACKAGES)
def test_version_is_the_pyprojects(module: str, project: str) -> None:
    declared = _pyproject(project)
    package = importlib.import_module(module)
    assert package.__version__ == declared["version"]
    assert package.__version__ == md.version(declared["name"])
    assert "__version__" in package.__all__


@pytest.mark.parametrize("module", ["des_format", "des_routing", "des_packer"])
def test_importing_does_not_read_metadata(module: str) -> None:
    """The version is read on first use: importing a light package (or des-pack's CLI) does
    not load ``importlib.metadata``."""
    code = f"import sys, {module}; print('importlib.metadata' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert out.strip() == "False"
