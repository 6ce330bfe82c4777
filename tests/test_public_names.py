"""Every package's `__all__` agrees with what it defines, imports and loads on first use.

`coachlab`, `coachlab.library` and `coachlab.viz` load some names lazily (a module-level
`__getattr__` and a map from name to module) and name them again under `TYPE_CHECKING` for type
checkers: three lists that must say the same thing.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = sorted(
    ".".join(p.parent.relative_to(SRC).parts)
    for p in (SRC / "coachlab").rglob("__init__.py")
    if "templates" not in p.parts
)


def _type_checking_names(package: str) -> dict[str, str]:
    """Name -> module of the imports under `if TYPE_CHECKING:` in the package's __init__."""
    path = SRC.joinpath(*package.split("."), "__init__.py")
    names: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    names.update({a.asname or a.name: stmt.module for a in stmt.names})
    return names


def _lazy_map(module: Any) -> dict[str, str]:
    """The package's name -> module map of lazily loaded names (empty when it has none)."""
    for attr in ("_LAZY", "_HOME"):
        mapping: dict[str, str] | None = getattr(module, attr, None)
        if mapping is not None:
            prefix = "" if attr == "_LAZY" else f"{module.__name__}."
            return {name: prefix + home for name, home in mapping.items()}
    return {}


def test_packages_are_found() -> None:
    assert {"coachlab", "coachlab.cli", "coachlab.library", "coachlab.viz", "coachlab.experiments"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve(package: str) -> None:
    module = importlib.import_module(package)
    exported: list[str] = list(getattr(module, "__all__", []))
    assert len(exported) == len(set(exported)), f"{package}.__all__ names a name twice"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_lazy_names_agree(package: str) -> None:
    module = importlib.import_module(package)
    lazy = _lazy_map(module)
    typed = _type_checking_names(package)
    exported = set(getattr(module, "__all__", []))
    assert set(lazy) <= exported, f"{package}: loaded lazily but not in __all__: {set(lazy) - exported}"
    assert typed == lazy, f"{package}: the TYPE_CHECKING imports and the lazy map differ"
    for name, home in lazy.items():
        value = getattr(importlib.import_module(home), name)
        assert getattr(module, name) is value, f"{package}.{name} does not load {home}.{name}"
