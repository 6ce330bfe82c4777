"""The import map of `src/coachlab`: packages import only the layers below them, and no module circle.

Every import counts, type-only ones (under `TYPE_CHECKING`) and those inside functions included,
since a circle a type checker follows is still a circle a reader has to untangle. The layers are
the ones docs/architecture.md draws.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[set[str]] = [
    {"errors", "retry", "stats", "schema", "redact"},
    {"envref", "yamlio"},
    {"llm"},
    {"library", "testing"},
    {"agents"},
    {"judging"},
    {"environments"},
    {"explorer"},
    {"experiments"},
    {"viz", "serve"},
    {"cli"},
]
"""Bottom to top: a package imports only from layers below its own."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / "coachlab").rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path], *, module_level_only: bool) -> set[str]:
    """The coachlab modules `path` imports (a name imported from a package counts as its submodule if it is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST]
    if module_level_only:
        nodes = []
        for node in tree.body:
            nodes.append(node)
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks
                nodes.extend(node.body)
    else:
        nodes = list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("coachlab"):
                found.add(target)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_every_package_has_a_layer() -> None:
    packages = {_package(m) for m in _modules()} - {""}
    assert packages == set().union(*LAYERS)


def test_packages_import_only_lower_layers() -> None:
    modules = _modules()
    wrong: list[str] = []
    for module, path in modules.items():
        here = _package(module)
        if not here:
            continue
        for target in _imports(path, modules, module_level_only=False):
            there = _package(target)
            if there and there != here and _layer(there) >= _layer(here):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circle_between_modules() -> None:
    modules = _modules()
    graph: nx.DiGraph[str] = nx.DiGraph()
    for module, path in modules.items():
        for target in _imports(path, modules, module_level_only=True):
            # A package's __init__ re-exporting its own submodules is not a circle a reader follows.
            if target != module and not target.startswith(module + "."):
                graph.add_edge(module, target)
    circles = list(nx.simple_cycles(graph))
    assert not circles, circles
