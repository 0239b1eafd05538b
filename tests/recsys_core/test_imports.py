"""recsys_core's import graph: no cycles, dependencies one way, and never gradio or storage.

The graph is read with ``ast`` from every module's imports, including the ones inside functions and
under ``TYPE_CHECKING`` (a deferred import is still a dependency), and every module is imported once.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import recsys_core

ROOT = Path(recsys_core.__file__).resolve().parent
# Lower layers never import higher ones. service.py (the facade) and the python -m entry modules sit on top;
# config, device, errors and cli_args are shared leaves.
LAYERS = ["data", "encoders", "model", "serving", "training", "evaluation"]
ENTRY_POINTS = {"recsys_core.service", "recsys_core.train", "recsys_core.evaluate", "recsys_core.finetune"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("recsys_core", *path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = {n for n in _imports(path) if n in modules and n != name}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_imports() -> None:
    for info in pkgutil.walk_packages(recsys_core.__path__, "recsys_core."):
        importlib.import_module(info.name)


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_dependencies_run_one_way() -> None:
    def layer(name: str) -> int | None:
        parts = name.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None

    wrong = []
    for name, deps in _graph().items():
        for dep in deps:
            if dep in ENTRY_POINTS:
                wrong.append(f"{name} -> {dep}")  # nothing imports the facade or an entry module
            if name.startswith("recsys_core.labels") and not dep.startswith("recsys_core.labels"):
                wrong.append(f"{name} -> {dep}")  # labels needs only pandas/numpy
            mine, theirs = layer(name), layer(dep)
            # training and evaluation are siblings at the top: evaluation's multimodal scorer trains, and the
            # trainer's validation uses the offline metrics (recsys_core.evaluation.metrics, a leaf).
            sibling = {LAYERS[mine] if mine is not None else "", LAYERS[theirs] if theirs is not None else ""} == {
                "training", "evaluation"}
            if mine is not None and theirs is not None and theirs > mine and not sibling:
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def test_recsys_core_never_imports_gradio_or_storage() -> None:
    offenders = [f"{name}: {n}" for name, path in _modules().items() for n in _imports(path)
                 if n.split(".")[0] in ("gradio", "storage", "studio", "ui")]
    assert offenders == []
