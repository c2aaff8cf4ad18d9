"""Dependency direction and lightness of the core, checked on the sources themselves.

- ``des_format`` and ``des_routing`` load nothing outside the standard library when imported
  in a fresh interpreter.
- No package imports a DES package listed after it (des_format, des_routing, des_storage_s3,
  des_packer, des_migrate, des_http, des_fsspec, des_testing: the test fixtures come last, and
  no product package imports them), and no pyproject requires one. Lazy imports inside
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
    ("des_testing", "des-testing", ROOT / "tools/testing"),
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


# ---- no import cycles inside a package ----------------------------------------------------


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_graph(src: Path, name: str) -> dict[str, set[str]]:
    """Edges ``a -> b`` between the modules of the package ``name`` under ``src``: ``a``
    imports ``b`` at run time, at module level or inside a function (``if TYPE_CHECKING:``
    imports are left out: they never run). ``from . import x`` points at the submodule ``x``
    when there is one, else at the package itself."""
    files = sorted((src / name).rglob("*.py"))
    modules = {_module_name(src, f): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def target(mod: str, base: str, names: list[str]) -> set[str]:
        found = {f"{base}.{n}" for n in names if f"{base}.{n}" in modules}
        if len(found) < len(names) and base in modules:
            found.add(base)
        return found

    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node: ast.AST, mod: str = mod, package: str = package) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for stmt in node.orelse:
                    visit(stmt)
                return
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        graph[mod].add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                if base.split(".")[0] == name:
                    graph[mod] |= target(mod, base, [a.name for a in node.names])
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(tree)
        graph[mod].discard(mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


@pytest.mark.parametrize(
    ("name", "project"), [(n, p) for n, _, p in PACKAGES], ids=[n for n, _, _ in PACKAGES]
)
def test_no_import_cycles(name: str, project: Path) -> None:
    cycles = _cycles(_module_graph(project / "src", name))
    assert cycles == [], f"{name} has import cycles (function-level imports count): {cycles}"


def test_cycle_checker_sees_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from ._a import f\n")
    (pkg / "_a.py").write_text("def f() -> None:\n    from ._b import g\n")
    (pkg / "_b.py").write_text("from . import _a\nfrom typing import TYPE_CHECKING\n")
    (pkg / "_c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._d import x\n"
    )
    (pkg / "_d.py").write_text("from pkg._c import y\n")
    graph = _module_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg._a"},
        "pkg._a": {"pkg._b"},
        "pkg._b": {"pkg._a"},
        "pkg._c": set(),
        "pkg._d": {"pkg._c"},
    }
    assert _cycles(graph) == [["pkg._a", "pkg._b"]]
