"""Release one DES distribution: bump its version, check, build.

Each distribution in the workspace is versioned on its own (a tag per distribution, e.g.
``des-format-v0.2.0``). A release of one of them:

1. computes the new version (``--bump major|minor|patch`` or ``--version X.Y.Z``);
2. checks that the distribution's CHANGELOG.md already has an entry for that version
   (``## 0.2.0`` or ``## [0.2.0]``; write it first: it is for users);
3. checks that every sibling that depends on it (dependencies and extras) has a version range
   that admits the new version, so the built wheels install together from an index;
4. writes the version into the distribution's pyproject.toml, refreshes uv.lock (``uv lock``)
   and builds its wheel and sdist (``uv build --package NAME``), then prints the tag to create.

``--dry-run`` does steps 1-3 and prints what would happen; nothing is written. Exit codes: 0 ok,
1 a check failed (each problem is printed with its fix), 2 usage error.

    uv run python tools/release.py des-format --bump minor --dry-run
    uv run python tools/release.py des-format --bump minor
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
BUMPS = ("major", "minor", "patch")
PRIVATE = "Private :: Do Not Upload"


class ReleaseError(Exception):
    """A usage error: an unknown distribution, a malformed version."""


@dataclass(frozen=True, slots=True)
class Member:
    """One workspace member as its pyproject.toml describes it."""

    name: str
    version: str
    path: Path  # the member's directory
    requirements: tuple[str, ...]  # dependencies and every extra's, as written
    private: bool = False  # "Private :: Do Not Upload" (des-testing): never released


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    member: Member
    new_version: str
    problems: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{self.member.name}-v{self.new_version}"

    @property
    def ok(self) -> bool:
        return not self.problems


# ----------------------------------------------------------------------------- reading


def read_workspace(root: Path) -> dict[str, Member]:
    """Every member of the uv workspace at ``root``, by canonical name."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["uv"]["workspace"]["members"]
    members: dict[str, Member] = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            project = tomllib.loads((path / "pyproject.toml").read_text())["project"]
            requirements = list(project.get("dependencies", []))
            for extra in project.get("optional-dependencies", {}).values():
                requirements.extend(extra)
            member = Member(
                name=project["name"],
                version=project["version"],
                path=path,
                requirements=tuple(requirements),
                private=PRIVATE in project.get("classifiers", []),
            )
            members[canonicalize_name(member.name)] = member
    return members


# ---------------------------------------------------------------------------- planning


def plan_version(current: str, bump: str) -> str:
    """The next version: ``major`` 1.4.2 -> 2.0.0, ``minor`` -> 1.5.0, ``patch`` -> 1.4.3."""
    try:
        release = Version(current).release
    except InvalidVersion:
        raise ReleaseError(f"current version {current!r} is not a valid version") from None
    major, minor, patch = (*release, 0, 0)[:3]
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    if bump == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise ReleaseError(f"unknown bump {bump!r}: use one of {', '.join(BUMPS)}")


def changelog_entry(text: str, version: str) -> str | None:
    """The ``## 0.2.0`` (or ``## [0.2.0] - date``) heading line of a Markdown changelog."""
    pattern = rf"^##[ \t]+\[?v?{re.escape(version)}\]?([ \t].*)?$"
    found = re.search(pattern, text, flags=re.MULTILINE)
    return None if found is None else found.group(0)


def check_changelog(member: Member, version: str, root: Path) -> list[str]:
    changelog = member.path / "CHANGELOG.md"
    where = changelog.relative_to(root)
    if not changelog.is_file():
        return [f"{where} is missing: create it with a '## {version}' section"]
    heading = changelog_entry(changelog.read_text(), version)
    if heading is None:
        return [
            f"{where} has no entry for {version}: add a '## {version}' section that tells "
            "users what changed, then run the release again"
        ]
    if "unreleased" in heading.lower():
        return [
            f"{where}: the entry for {version} is still marked unreleased "
            f"({heading.strip()!r}): put the release date there"
        ]
    return []


def check_siblings(members: dict[str, Member], name: str, version: str, root: Path) -> list[str]:
    """A problem for every sibling whose requirement on ``name`` excludes ``version``."""
    problems = []
    target = canonicalize_name(name)
    new = Version(version)
    for member in members.values():
        if canonicalize_name(member.name) == target:
            continue
        for raw in member.requirements:
            requirement = Requirement(raw)
            if canonicalize_name(requirement.name) != target:
                continue
            if requirement.specifier.contains(new, prereleases=True):
                continue
            where = (member.path / "pyproject.toml").relative_to(root)
            problems.append(
                f"{member.name} requires {raw!r}, which does not admit {version}: widen the "
                f"range in {where} (e.g. {widened(requirement, new)!r}) and release "
                f"{member.name} too"
            )
    return problems


def widened(requirement: Requirement, version: Version) -> str:
    """A suggested range admitting ``version``: same lower bound, next-minor upper bound."""
    lower = [s.version for s in requirement.specifier if s.operator in (">=", ">", "==", "~=")]
    floor = lower[0] if lower else f"{version.major}.{version.minor}"
    upper = f"0.{version.minor + 1}" if version.major == 0 else f"{version.major + 1}"
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}>={floor},<{upper}"


def plan_release(
    root: Path, name: str, *, bump: str | None = None, version: str | None = None
) -> ReleasePlan:
    members = read_workspace(root)
    member = members.get(canonicalize_name(name))
    if member is None or member.private:
        known = ", ".join(sorted(m.name for m in members.values() if not m.private))
        if member is not None:
            raise ReleaseError(
                f"{member.name} is never released (its classifiers say {PRIVATE!r}); "
                f"the distributions to release: {known}"
            )
        raise ReleaseError(f"no distribution named {name!r} in the workspace (known: {known})")
    if (bump is None) == (version is None):
        raise ReleaseError("give exactly one of --bump and --version")
    if version is None:
        assert bump is not None
        new_version = plan_version(member.version, bump)
    else:
        try:
            new_version = str(Version(version))
        except InvalidVersion:
            raise ReleaseError(f"--version {version!r} is not a valid version") from None
    problems: list[str] = []
    if Version(new_version) <= Version(member.version):
        problems.append(
            f"{new_version} is not newer than {member.name}'s current version {member.version}"
        )
    problems += check_changelog(member, new_version, root)
    problems += check_siblings(members, member.name, new_version, root)
    return ReleasePlan(member, new_version, tuple(problems))


# ----------------------------------------------------------------------------- writing


_PROJECT_VERSION = re.compile(r'^(version\s*=\s*)"[^"]*"', flags=re.MULTILINE)


def write_version(pyproject: Path, version: str) -> None:
    """Replace the ``[project]`` table's version, leaving every other byte as it was."""
    text = pyproject.read_text()
    start = text.index("[project]")
    end = text.find("\n[", start + 1)
    end = len(text) if end == -1 else end
    section, count = _PROJECT_VERSION.subn(rf'\g<1>"{version}"', text[start:end], count=1)
    if count != 1:
        raise ReleaseError(f"{pyproject} has no version in its [project] table")
    pyproject.write_text(text[:start] + section + text[end:])


def run(command: list[str], root: Path) -> None:
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=root, check=True)


def release(plan: ReleasePlan, root: Path, out_dir: Path, *, lock: bool = True) -> list[Path]:
    """Write the version, refresh uv.lock, build; the wheel and sdist paths."""
    write_version(plan.member.path / "pyproject.toml", plan.new_version)
    if lock:
        run(["uv", "lock", "--quiet"], root)
    run(["uv", "build", "--package", plan.member.name, "--out-dir", str(out_dir), "--quiet"], root)
    stem = f"{canonicalize_name(plan.member.name).replace('-', '_')}-{plan.new_version}"
    built = [out_dir / f"{stem}-py3-none-any.whl", out_dir / f"{stem}.tar.gz"]
    missing = [p.name for p in built if not p.is_file()]
    if missing:
        raise RuntimeError(f"uv build did not produce {', '.join(missing)} in {out_dir}")
    return built


# --------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/release.py",
        description="Bump, check and build one DES distribution.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 usage error.",
    )
    parser.add_argument("name", help="distribution name, e.g. des-format")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--bump", choices=BUMPS, help="which part of the version to bump")
    choice.add_argument("--version", help="the exact new version")
    parser.add_argument("--dry-run", action="store_true", help="check and show, write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="workspace root")
    parser.add_argument("--out-dir", type=Path, help="where to build (default dist/NAME)")
    parser.add_argument("--no-lock", action="store_true", help="do not run `uv lock`")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        plan = plan_release(root, args.name, bump=args.bump, version=args.version)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 2
    member = plan.member
    print(f"{member.name}: {member.version} -> {plan.new_version} (tag {plan.tag})")
    if not plan.ok:
        for problem in plan.problems:
            print(f"release: {problem}", file=sys.stderr)
        print(f"release: {len(plan.problems)} problem(s), nothing written", file=sys.stderr)
        return 1
    print("checks passed: changelog entry, sibling ranges")
    out_dir: Path = args.out_dir or root / "dist" / member.name
    if args.dry_run:
        where = member.path.relative_to(root)
        print(f"dry run: would write version {plan.new_version} to {where}/pyproject.toml,")
        print(f"         run `uv lock`, and `uv build --package {member.name}` into {out_dir}")
        return 0
    try:
        built = release(plan, root, out_dir, lock=not args.no_lock)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    for path in built:
        print(f"built {path}")
    print("next: commit pyproject.toml, uv.lock and the changelog, then")
    print(f"      git tag {plan.tag} && git push origin {plan.tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
