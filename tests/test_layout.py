"""The package's layers read bottom to top: each subpackage imports only from those below it,
and no two modules import each other (at module level or late, inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "nsm"
# bottom to top; subpackages on one level (models, data) may not import each other
LAYERS = {"utils": 0, "nn": 1, "models": 2, "data": 2, "training": 3, "studies": 4, "": 5}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path) -> set[str]:
    """The nsm modules ``module`` imports (relative to nsm: 'nn.layers'), late imports included."""
    pkg = _package(module, path).split(".") if _package(module, path) else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
            elif node.module and (node.module == "nsm" or node.module.startswith("nsm.")):
                base, node_module = [], node.module.split(".", 1)[1] if "." in node.module else None
                found.add(node_module or "")
                continue
            else:
                continue
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if node.module is None:  # from . import x: x is a module of the package
                found.update(".".join(base + [a.name]) for a in node.names)
            else:
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("nsm."))
    return found


MODULES = _modules()


def _top(module: str) -> str:
    head = module.split(".")[0]
    return head if head in LAYERS else ""


def test_the_tree_has_the_documented_subpackages():
    assert {_top(m) for m in MODULES} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES), ids=lambda m: m or "nsm")
def test_no_module_imports_upward_or_sideways(module):
    here = _top(module)
    bad = []
    for target in _imports(module, MODULES[module]):
        if target not in MODULES:
            target = target.rpartition(".")[0]  # from .x import name where x is a module
        there = _top(target)
        if there != here and LAYERS[there] >= LAYERS[here]:
            bad.append(target)
    assert not bad, f"nsm.{module} imports {sorted(bad)}, which are not below its layer"


def test_no_import_cycle():
    graph = {m: {t if t in MODULES else t.rpartition(".")[0] for t in _imports(m, p)} - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t in graph and not state.get(t):
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)
