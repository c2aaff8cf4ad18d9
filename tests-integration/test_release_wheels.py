"""Every distribution installs from its built wheel alone and its command runs.

The wheels are built once for the module (`uv build --all-packages --wheel`); then each
distribution gets its own fresh virtual environment (`python3 -m venv`, no workspace, no
sources on the path) and is installed by pip from its wheel file, with its DES siblings found
through `--find-links` to the built wheels and third-party dependencies from PyPI. The test
then imports it from that environment and runs its command's --help, as a user would after
`pip install des-packer`.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Import name and the commands each distribution installs (argv, run from the venv's bin/).
DISTRIBUTIONS: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "des-format": ("des_format", (("python", "-m", "des_format", "--help"),)),
    "des-routing": ("des_routing", ()),
    "des-storage-s3": ("des_storage_s3", ()),
    "des-packer": ("des_packer", (("des-pack", "--help"), ("des", "--help"))),
    "des-migrate": ("des_migrate", (("des-migrate", "--help"), ("des-stats", "--help"))),
    "des-http": ("des_http", (("des-http", "--help"),)),
    "des-fsspec": ("des_fsspec", ()),
}


@dataclass(frozen=True, slots=True)
class Wheelhouse:
    directory: Path
    pip_cache: Path

    def wheel(self, distribution: str) -> Path:
        stem = distribution.replace("-", "_")
        (found,) = self.directory.glob(f"{stem}-*-py3-none-any.whl")
        return found


def workspace_versions() -> dict[str, str]:
    import tomllib

    versions = {}
    for pyproject in [
        *ROOT.glob("packages/*/pyproject.toml"),
        *ROOT.glob("services/*/pyproject.toml"),
    ]:
        project = tomllib.loads(pyproject.read_text())["project"]
        versions[project["name"]] = project["version"]
    return versions


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wheelhouse]:
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        ["uv", "build", "--all-packages", "--wheel", "--out-dir", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    yield Wheelhouse(out, tmp_path_factory.mktemp("pip-cache"))
    shutil.rmtree(out, ignore_errors=True)


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def clean_env(venv: Path, cache: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTHON", "UV_", "DES_", "PIP_"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["PIP_CACHE_DIR"] = str(cache)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def base_python() -> str:
    """The interpreter the workspace's environment was made from (outside any venv)."""
    return str(getattr(sys, "_base_executable", sys.executable))


# ------------------------------------------------------------------------ wheel metadata


@pytest.mark.slow
def test_every_distribution_has_one_wheel_with_the_workspace_version(
    wheelhouse: Wheelhouse,
) -> None:
    versions = workspace_versions()
    assert sorted(versions) == sorted(DISTRIBUTIONS)
    for distribution, version in versions.items():
        metadata = wheel_metadata(wheelhouse.wheel(distribution))
        assert metadata["Name"] == distribution
        assert metadata["Version"] == version


@pytest.mark.slow
@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_wheel_requires_siblings_by_version_range_only(
    wheelhouse: Wheelhouse, distribution: str
) -> None:
    """No workspace paths or direct URLs leak into a built wheel's requirements."""
    metadata = wheel_metadata(wheelhouse.wheel(distribution))
    for requirement in metadata.get_all("Requires-Dist") or []:
        assert " @ " not in requirement, requirement
        assert "file:" not in requirement, requirement
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        if name.startswith("des-"):
            assert re.search(r">=\d+\.\d+", requirement), requirement
            assert re.search(r"<\d+\.\d+", requirement), requirement


# ------------------------------------------------------- one fresh environment each


@pytest.mark.slow
@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_distribution_installs_from_wheels_alone_and_its_commands_run(
    wheelhouse: Wheelhouse, distribution: str, tmp_path: Path
) -> None:
    import_name, commands = DISTRIBUTIONS[distribution]
    venv = tmp_path / "venv"
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = clean_env(venv, wheelhouse.pip_cache)
    install = subprocess.run(
        [
            str(python), "-m", "pip", "install", "--quiet",
            "--find-links", str(wheelhouse.directory),
            str(wheelhouse.wheel(distribution)),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.fail(
            f"pip could not reach PyPI for {distribution}'s dependencies:\n{install.stderr}"
        )
    assert install.returncode == 0, install.stderr

    # Every DES distribution in the environment came from the wheelhouse (workspace versions).
    probe = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() "
        "if d.metadata['Name'].startswith('des-')}))"
    )
    listed = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    installed = json.loads(listed.stdout)
    versions = workspace_versions()
    assert distribution in installed
    assert installed == {name: versions[name] for name in installed}

    # The package is imported from the environment, not from the workspace's sources.
    where = subprocess.run(
        [str(python), "-c", f"import {import_name}; print({import_name}.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)

    for argv in commands:
        executable = str(python) if argv[0] == "python" else str(venv / "bin" / argv[0])
        result = subprocess.run(
            [executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
        assert "usage" in result.stdout.lower(), result.stdout
