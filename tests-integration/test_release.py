"""tools/release.py on a temporary copy of the workspace (the real pyprojects are never touched)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBER_DIRS = [
    ROOT / member
    for member in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
        "members"
    ]
]


def load_release() -> ModuleType:
    spec = importlib.util.spec_from_file_location("des_release", ROOT / "tools" / "release.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("des_release", module)
    spec.loader.exec_module(module)
    return module


release = load_release()


def fingerprint() -> dict[str, str]:
    """Digests of the real workspace's release-relevant files."""
    paths = [ROOT / "pyproject.toml", ROOT / "uv.lock"]
    for member in MEMBER_DIRS:
        paths += [member / "pyproject.toml", member / "CHANGELOG.md"]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}


@pytest.fixture(scope="module")
def real_files() -> dict[str, str]:
    return fingerprint()


@pytest.fixture
def workspace(tmp_path: Path, real_files: dict[str, str]) -> Path:
    """A copy of the workspace definition and every member's sources (no tests, no caches)."""
    copy = tmp_path / "ws"
    copy.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    shutil.copy2(ROOT / "uv.lock", copy / "uv.lock")
    ignore = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", ".*cache", "dist")
    for member in MEMBER_DIRS:
        shutil.copytree(member, copy / member.relative_to(ROOT), ignore=ignore)
    yield copy
    assert fingerprint() == real_files, "a release test modified the real workspace"


def add_changelog_entry(workspace: Path, member: str, heading: str) -> None:
    changelog = next(workspace.glob(f"*/{member}/CHANGELOG.md"))
    text = changelog.read_text()
    first = text.index("\n## ")
    changelog.write_text(text[:first] + f"\n{heading}\n\n- Fixes.\n" + text[first:])


def set_requirement(workspace: Path, member: str, old: str, new: str) -> None:
    pyproject = next(workspace.glob(f"*/{member}/pyproject.toml"))
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new))


def project(workspace: Path, member: str) -> dict[str, object]:
    pyproject = next(workspace.glob(f"*/{member}/pyproject.toml"))
    data: dict[str, object] = tomllib.loads(pyproject.read_text())["project"]
    return data


def run_release(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "release.py"), "--root", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# --------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("current", "bump", "expected"),
    [
        ("0.1.0", "patch", "0.1.1"),
        ("0.1.0", "minor", "0.2.0"),
        ("0.1.0", "major", "1.0.0"),
        ("1.4.2", "patch", "1.4.3"),
        ("1.4.2", "minor", "1.5.0"),
        ("1.4.2", "major", "2.0.0"),
        ("2.0", "patch", "2.0.1"),
    ],
)
def test_plan_version(current: str, bump: str, expected: str) -> None:
    assert release.plan_version(current, bump) == expected


def test_plan_version_rejects_bad_input() -> None:
    with pytest.raises(release.ReleaseError, match="unknown bump 'huge'"):
        release.plan_version("0.1.0", "huge")
    with pytest.raises(release.ReleaseError, match=r"current version 'x\.y' is not a valid"):
        release.plan_version("x.y", "patch")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("# C\n\n## 0.2.0\n\n- x\n", "## 0.2.0"),
        ("# C\n\n## [0.2.0] - 2026-11-25\n", "## [0.2.0] - 2026-11-25"),
        ("# C\n\n## 0.2.0 (unreleased)\n", "## 0.2.0 (unreleased)"),
        ("# C\n\n## 0.2.01\n", None),
        ("# C\n\n## 10.2.0\n", None),
        ("# C\n\n### 0.2.0\n", None),
        ("# C\n\nSee 0.2.0 notes\n", None),
    ],
)
def test_changelog_entry(text: str, found: str | None) -> None:
    assert release.changelog_entry(text, "0.2.0") == found


def test_write_version_changes_only_the_project_version(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    original = '[project]\nname = "x"\nversion = "0.1.0"\n\n[tool.other]\nversion = "9.9.9"\n'
    pyproject.write_text(original)
    release.write_version(pyproject, "0.2.0")
    assert pyproject.read_text() == original.replace('version = "0.1.0"', 'version = "0.2.0"')


# ---------------------------------------------------------------------- checks on a copy


def test_read_workspace_sees_the_seven_distributions_and_des_testing(workspace: Path) -> None:
    members = release.read_workspace(workspace)
    assert sorted(m.name for m in members.values() if not m.private) == [
        "des-format",
        "des-fsspec",
        "des-http",
        "des-migrate",
        "des-packer",
        "des-routing",
        "des-storage-s3",
    ]
    assert [m.name for m in members.values() if m.private] == ["des-testing"]
    assert members["des-packer"].path == workspace / "packages" / "des-packer"
    assert members["des-testing"].path == workspace / "tools" / "testing"


def test_missing_changelog_entry_stops_the_release(workspace: Path) -> None:
    result = run_release(workspace, "des-routing", "--bump", "patch", "--dry-run")
    assert result.returncode == 1
    assert result.stdout == "des-routing: 0.1.0 -> 0.1.1 (tag des-routing-v0.1.1)\n"
    assert result.stderr.splitlines() == [
        "release: packages/des-routing/CHANGELOG.md has no entry for 0.1.1: add a '## 0.1.1' "
        "section that tells users what changed, then run the release again",
        "release: 1 problem(s), nothing written",
    ]


def test_unreleased_entry_stops_the_release(workspace: Path) -> None:
    add_changelog_entry(workspace, "des-routing", "## 0.1.1 (unreleased)")
    result = run_release(workspace, "des-routing", "--bump", "patch", "--dry-run")
    assert result.returncode == 1
    assert "the entry for 0.1.1 is still marked unreleased" in result.stderr


def test_sibling_ranges_that_exclude_the_new_version_are_each_reported(workspace: Path) -> None:
    add_changelog_entry(workspace, "des-format", "## 0.3.0 - 2026-12-08")
    result = run_release(workspace, "des-format", "--bump", "minor", "--dry-run")
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert problems[-1] == "release: 4 problem(s), nothing written"
    assert sorted(problems[:-1]) == [
        "release: des-fsspec requires 'des-format[zstd,lz4]>=0.2,<0.3', which does not admit "
        "0.3.0: widen the range in packages/des-fsspec/pyproject.toml (e.g. "
        "'des-format[lz4,zstd]>=0.2,<0.4') and release des-fsspec too",
        "release: des-http requires 'des-format[zstd,lz4]>=0.2,<0.3', which does not admit "
        "0.3.0: widen the range in services/des-http/pyproject.toml (e.g. "
        "'des-format[lz4,zstd]>=0.2,<0.4') and release des-http too",
        "release: des-packer requires 'des-format[zstd,lz4,fast]>=0.2,<0.3', which does not admit "
        "0.3.0: widen the range in packages/des-packer/pyproject.toml (e.g. "
        "'des-format[fast,lz4,zstd]>=0.2,<0.4') and release des-packer too",
        "release: des-storage-s3 requires 'des-format>=0.2,<0.3', which does not admit 0.3.0: "
        "widen the range in packages/des-storage-s3/pyproject.toml (e.g. "
        "'des-format>=0.2,<0.4') and release des-storage-s3 too",
    ]


def test_widened_sibling_ranges_let_the_release_through(workspace: Path) -> None:
    add_changelog_entry(workspace, "des-format", "## 0.3.0 - 2026-12-08")
    set_requirement(workspace, "des-storage-s3", '"des-format>=0.2,<0.3"', '"des-format>=0.2,<0.4"')
    for member, extras in (
        ("des-packer", "zstd,lz4,fast"),
        ("des-http", "zstd,lz4"),
        ("des-fsspec", "zstd,lz4"),
    ):
        set_requirement(
            workspace,
            member,
            f'"des-format[{extras}]>=0.2,<0.3"',
            f'"des-format[{extras}]>=0.2,<0.4"',
        )
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    current = project(workspace, "des-format")["version"]
    result = run_release(workspace, "des-format", "--bump", "minor", "--dry-run")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[:2] == [
        f"des-format: {current} -> 0.3.0 (tag des-format-v0.3.0)",
        "checks passed: changelog entry, sibling ranges",
    ]
    assert "dry run: would write version 0.3.0 to packages/des-format/pyproject.toml," in (
        result.stdout
    )
    after = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    assert after == before, "--dry-run writes nothing"


def test_a_range_in_an_extra_is_checked_too(workspace: Path) -> None:
    """des-packer's [s3] extra pins des-storage-s3: a minor bump of it must be caught."""
    add_changelog_entry(workspace, "des-storage-s3", "## 0.3.0")
    result = run_release(workspace, "des-storage-s3", "--bump", "minor", "--dry-run")
    assert result.returncode == 1
    assert "release: des-packer requires 'des-storage-s3>=0.2,<0.3'" in result.stderr
    assert "release: des-http requires 'des-storage-s3>=0.2,<0.3'" in result.stderr


def test_version_not_newer_is_refused(workspace: Path) -> None:
    result = run_release(workspace, "des-routing", "--version", "0.0.9", "--dry-run")
    assert result.returncode == 1
    assert "release: 0.0.9 is not newer than des-routing's current version 0.1.0" in (result.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["des-nothing", "--bump", "patch"],
            "release: no distribution named 'des-nothing' in the workspace (known: des-format, "
            "des-fsspec, des-http, des-migrate, des-packer, des-routing, des-storage-s3)\n",
        ),
        (
            ["des-testing", "--bump", "patch"],
            "release: des-testing is never released (its classifiers say 'Private :: Do Not "
            "Upload'); the distributions to release: des-format, des-fsspec, des-http, "
            "des-migrate, des-packer, des-routing, des-storage-s3\n",
        ),
        (["des-routing", "--version", "one"], "release: --version 'one' is not a valid version\n"),
    ],
)
def test_usage_errors_exit_2(workspace: Path, args: list[str], message: str) -> None:
    result = run_release(workspace, *args, "--dry-run")
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)


def test_bump_and_version_are_exclusive(workspace: Path) -> None:
    result = run_release(workspace, "des-routing", "--bump", "patch", "--version", "0.1.1")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


@pytest.mark.slow
def test_release_writes_the_version_locks_and_builds_wheel_and_sdist(workspace: Path) -> None:
    add_changelog_entry(workspace, "des-routing", "## 0.1.1 - 2026-11-25")
    others = ("des-format", "des-storage-s3", "des-packer", "des-migrate", "des-http")
    before = {member: project(workspace, member)["version"] for member in others}
    out = workspace / "out"
    result = run_release(workspace, "des-routing", "--bump", "patch", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert project(workspace, "des-routing")["version"] == "0.1.1"
    lock = tomllib.loads((workspace / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    assert versions["des-routing"] == "0.1.1"
    assert versions["des-format"] == before["des-format"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "des_routing-0.1.1-py3-none-any.whl",
        "des_routing-0.1.1.tar.gz",
    ]
    with zipfile.ZipFile(out / "des_routing-0.1.1-py3-none-any.whl") as wheel:
        metadata = wheel.read("des_routing-0.1.1.dist-info/METADATA").decode()
    assert "\nVersion: 0.1.1\n" in metadata
    assert result.stdout.splitlines()[-1] == (
        "      git tag des-routing-v0.1.1 && git push origin des-routing-v0.1.1"
    )
    # Every other member is untouched (des-packer is at 0.1.1 since its start-up work).
    assert {member: project(workspace, member)["version"] for member in others} == before
