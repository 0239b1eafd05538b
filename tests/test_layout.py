"""The project's layout rules, checked on the source itself.

- every module of the four packages imports;
- no import cycle inside the project, counting every import a module makes (function-level ones
  too: a lazy import that would form a cycle only hides it), except under ``if TYPE_CHECKING:``;
- ``recsys_core`` never imports gradio or storage, ``storage`` never imports torch or gradio
  (not even lazily), and ``ui`` never imports torch.
"""

from __future__ import annotations

import ast
import graphlib
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys_core", "storage", "studio", "ui")
FORBIDDEN = {
    "recsys_core": {"gradio", "storage", "studio", "ui"},
    "storage": {"torch", "gradio", "recsys_core", "studio", "ui", "transformers", "timm", "captum"},
    "ui": {"torch"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        found[package] = ROOT / package / "__init__.py"
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            base = ROOT.joinpath(*info.name.split("."))
            found[info.name] = base / "__init__.py" if info.ispkg else base.with_suffix(".py")
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(module: str, path: Path) -> set[str]:
    """Dotted names this module imports anywhere in its body (absolute, relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
            names.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


GRAPH = {module: _imported_names(module, path) for module, path in MODULES.items()}


def test_every_package_module_is_found():
    # A guard for the walk itself: if it found nothing, the tests below would pass vacuously.
    for package in PACKAGES:
        assert sum(m.startswith(f"{package}.") for m in MODULES) >= 3, package
    assert "recsys_core.service" in MODULES and "storage.repository" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports(module):
    importlib.import_module(module)


def test_no_import_cycles():
    # Only edges between project modules; a package's __init__ importing its own submodules is not
    # counted as the submodules depending on their package.
    edges = {
        module: {dep for dep in deps if dep in MODULES and not module.startswith(f"{dep}.")}
        for module, deps in GRAPH.items()
    }
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        pytest.fail("import cycle: " + " -> ".join(reversed(cycle)))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_keep_their_dependency_direction(package):
    offenders = {
        module: sorted(dep for dep in deps if dep.split(".")[0] in FORBIDDEN[package])
        for module, deps in GRAPH.items()
        if module == package or module.startswith(f"{package}.")
    }
    offenders = {m: deps for m, deps in offenders.items() if deps}
    assert not offenders, f"{package} must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_the_cycle_check_catches_a_cycle():
    # The checker itself: a two-module cycle must be reported.
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())
