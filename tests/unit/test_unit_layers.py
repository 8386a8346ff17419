"""The server package's layering, as docs/architecture.md draws it, checked on the import statements themselves:
a lower layer never imports a higher one, the HTTP layer reaches storage only through the registry logic, and no
layer imports a feature subpackage (features are wired in by the composition root)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import docker_registry.server

PACKAGE = "docker_registry.server"
ROOT = Path(docker_registry.server.__file__).parent

LAYERS = {
    "config": 0,
    "store": 1,
    "registry": 2,
    "http": 3,
    "preparation": 5,
    "application": 6,
    "runtime": 7,
    "cli": 8,
    "__main__": 9,
}
"""Rank of each top-level part of the server package; a module may import parts of lower rank or its own part."""
FEATURES = frozenset({"auth", "gc", "proxy", "v1", "notifications", "metrics", "health", "ui", "maintenance"})
"""Feature subpackages rank between the HTTP layer and the composition root: each uses the layers below it and is
used by none of them (nor by another feature)."""
FEATURE_RANK = 4
FORBIDDEN = {("http", "store")}
"""Pairs (importer, imported) that skip a layer on purpose forbidden: handlers reach storage through the registry."""


def _part(module: str) -> str:
    return module.removeprefix(PACKAGE + ".").split(".")[0]


def _rank(part: str) -> int:
    return FEATURE_RANK if part in FEATURES else LAYERS[part]


def _imports(path: Path, module: str) -> list[str]:
    """Modules of the server package that `module` (in file `path`) imports, absolute."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found += [f"{base}.{alias.name}" if not node.module or node.level else base for alias in node.names]
    return [name for name in found if name.startswith(PACKAGE + ".")]


def _modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        if not parts or "migrations" in parts:
            continue
        modules.append((".".join([PACKAGE, *parts]), path))
    return modules


def test_every_part_of_the_package_has_a_rank() -> None:
    parts = {_part(module) for module, _ in _modules()}
    assert parts <= set(LAYERS) | FEATURES, "a new top-level part needs its place in LAYERS (and the docs)"


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_follow_the_layers(module: str, path: Path) -> None:
    importer = _part(module)
    for imported_module in _imports(path, module):
        imported = _part(imported_module)
        if imported == importer or imported_module == PACKAGE:
            continue
        assert (importer, imported) not in FORBIDDEN, f"{module} imports {imported_module}: skips a layer"
        assert imported not in FEATURES or importer in ("application", "runtime", "cli"), (
            f"{module} imports the feature {imported_module}: only the composition root wires features in"
        )
        assert _rank(imported) < _rank(importer), f"{module} ({importer}) imports {imported_module}, a higher layer"


def test_the_check_sees_relative_imports() -> None:
    """Guards the checker itself: a known upward dependency would be caught."""
    imports = _imports(ROOT / "application.py", f"{PACKAGE}.application")
    assert f"{PACKAGE}.http.v2" in imports or any(i.startswith(f"{PACKAGE}.http") for i in imports)
    assert any(i.startswith(f"{PACKAGE}.store") for i in imports)
