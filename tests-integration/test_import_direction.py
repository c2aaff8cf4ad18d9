"""Dependency direction and lightness of the core, checked on the sources themselves.

- ``des_format`` and ``des_routing`` load nothing outside the standard library when imported
  in a fresh interpreter.
- No package imports a DES package listed after it (des_format, des_routing, des_storage_s3,
  des_packer, des_migrate, des_http, des_fsspec), and no pyproject requires one. Lazy imports inside
  functions count: they are still imports (des_packer's lazy import of des_storage_s3 for its
  ``s3`` extra is fine because des_storage_s3 is listed before it).
- Every module a src file imports at run time (DES sibling or third party) comes from a
  distribution the importing distribution requires (directly, through one of its extras, or
  through their own requirements), so uv's shared workspace environment cannot hide a missing
  requirement.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# (import name, distribution, project directory), in dependency order.
PACKAGES: list[tuple[str, str, Path]] = [
    ("des_format", "des-format", ROOT / "packages/des-format"),
    ("des_routing", "des-routing", ROOT / "packages/des-routing"),
    ("des_storage_s3", "des-storage-s3", ROOT / "packages/des-storage-s3"),
    ("des_packer", "des-packer", ROOT / "packages/des-packer"),
    ("des_migrate", "des-migrate", ROOT / "packages/des-migrate"),
    ("des_http", "des-http", ROOT / "services/des-http"),
    ("des_fsspec", "des-fsspec", ROOT / "packages/des-fsspec"),
]
ORDER = {name: pos for pos, (name, _, _) in enumerate(PACKAGES)}
DIST_OF = {name: dist for name, dist, _ in PACKAGES}


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # top-level name
    path: Path
    lineno: int
    type_checking: bool  # only under `if TYPE_CHECKING:` (not a run-time import)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.lineno}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name.split(".")[0], path, node.lineno, type_checking))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(node.module.split(".")[0], path, node.lineno, type_checking))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, True)
            for stmt in node.orelse:
                visit(stmt, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


def _src_files(project: Path, name: str) -> list[Path]:
    return sorted((project / "src" / name).rglob("*.py"))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_requirements(project: Path) -> list[Requirement]:
    """A project's dependencies plus every extra's (an extra is a declared possibility)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    reqs = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return [Requirement(r) for r in reqs]


def _declared(project: Path) -> set[str]:
    return {_normalize(r.name) for r in _project_requirements(project)}


def _closure(reqs: list[Requirement]) -> set[str]:
    """Distributions the requirements pull in (with their requested extras), transitively, from
    the installed metadata."""
    seen: set[tuple[str, str]] = set()
    todo = [(_normalize(r.name), extra) for r in reqs for extra in ("", *sorted(r.extras))]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue
            for sub in ("", *sorted(req.extras)):
                todo.append((_normalize(req.name), sub))
    return {name for name, _ in seen}


def test_every_package_has_sources() -> None:
    for name, _, project in PACKAGES:
        assert _src_files(project, name), f"no sources under {project}/src/{name}"


@pytest.mark.parametrize("name", ["des_format", "des_routing"])
def test_core_imports_only_the_standard_library(name: str) -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"import {name}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    loaded = json.loads(out)
    assert name in loaded
    foreign = sorted(
        {
            mod.split(".")[0]
            for mod in loaded
            if mod.split(".")[0] not in sys.stdlib_module_names and mod.split(".")[0] != name
        }
    )
    assert foreign == [], f"importing {name} loaded non-stdlib modules: {foreign}"


def test_no_package_imports_a_package_listed_after_it() -> None:
    problems: list[str] = []
    for name, _, project in PACKAGES:
        for path in _src_files(project, name):
            for imp in _imports_of(path):
                if imp.module in ORDER and ORDER[imp.module] > ORDER[name]:
                    problems.append(
                        f"{imp.where()}: {name} imports {imp.module}, which is listed after it"
                    )
    assert problems == []


def test_pyprojects_point_down_the_list() -> None:
    for name, dist, project in PACKAGES:
        for dep in _declared(project):
            later = [n for n, d, _ in PACKAGES if d == dep and ORDER[n] > ORDER[name]]
            assert later == [], f"{dist} declares {dep}, which is listed after it"


def test_imports_come_from_declared_distributions() -> None:
    providers = md.packages_distributions()
    problems: list[str] = []
    for name, dist, project in PACKAGES:
        allowed = _closure(_project_requirements(project)) | {dist}
        for path in _src_files(project, name):
            for imp in _imports_of(path):
                mod = imp.module
                if imp.type_checking or mod in sys.stdlib_module_names or mod == name:
                    continue
                if mod in ORDER:
                    dists = {DIST_OF[mod]}
                else:
                    dists = {_normalize(d) for d in providers.get(mod, [])}
                if not dists:
                    problems.append(f"{imp.where()}: {mod} is not installed in the workspace")
                elif not dists & allowed:
                    problems.append(
                        f"{imp.where()}: {name} imports {mod} (from {', '.join(sorted(dists))}) "
                        f"but {dist}'s pyproject does not require it, directly or through its "
                        "dependencies"
                    )
    assert problems == []


def test_checker_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "import os.path\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    import des_http\n"
        "def f() -> None:\n"
        "    from des_migrate.cli import main\n"
    )
    got = [(i.module, i.lineno, i.type_checking) for i in _imports_of(sample)]
    assert got == [
        ("__future__", 1, False),
        ("os", 2, False),
        ("typing", 3, False),
        ("des_http", 6, True),
        ("des_migrate", 8, False),
    ]


def test_closure_follows_extras_and_nothing_else() -> None:
    fmt = _closure(_project_requirements(ROOT / "packages/des-format"))
    assert {"zstandard", "lz4"} <= fmt
    assert "pyyaml" not in fmt
    assert "boto3" not in fmt
    s3 = _closure(_project_requirements(ROOT / "packages/des-storage-s3"))
    assert {"des-format", "des-routing", "boto3", "botocore"} <= s3
    assert "zstandard" not in s3  # des-format without extras
    packer = _closure(_project_requirements(ROOT / "packages/des-packer"))
    assert {"zstandard", "lz4", "pyyaml", "des-storage-s3"} <= packer
