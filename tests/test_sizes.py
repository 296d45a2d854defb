"""Issue #20's size limits, read from the source (ast): a core a newcomer reads in an evening.

The core is train.py and every package module it imports, directly or not (lazy imports inside
functions count too); lines are physical lines (`wc -l`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dkdlib"
CORE_LINES, PACKAGE_LINES, FUNCTION_LINES = 2700, 4500, 60


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package modules `tree` imports anywhere: `from .x import`, `from dkdlib.x import`,
    `from . import x`, `import dkdlib.x`. `from . import name` of a name that is not a module reads
    the package's __init__, which only hands names on: not an edge."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("dkdlib")):
            module = (node.module or "").removeprefix("dkdlib").lstrip(".").split(".")[0]
            out |= {module} if module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dkdlib.")}
    return out & modules


def _graph() -> dict[str, set[str]]:
    trees = _modules()
    return {name: _imports(tree, set(trees) - {"__init__"}) for name, tree in trees.items()}


def _lines(name: str) -> int:
    return len((PACKAGE / f"{name}.py").read_text().splitlines())


def _core() -> set[str]:
    graph, seen, todo = _graph(), set(), ["train"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    return seen


def test_the_core_fits_in_an_evening():
    core = _core()
    total = sum(_lines(m) for m in core)
    sizes = ", ".join(f"{m} {_lines(m)}" for m in sorted(core, key=_lines, reverse=True))
    assert total <= CORE_LINES, f"the core is {total} lines (limit {CORE_LINES}): {sizes}"


def test_the_whole_package_stays_small():
    total = sum(_lines(p.stem) for p in PACKAGE.glob("*.py"))
    assert total <= PACKAGE_LINES, f"dkdlib/ is {total} lines (limit {PACKAGE_LINES})"


def test_no_function_is_long():
    long = [
        f"{name}.py:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > FUNCTION_LINES
    ]
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"


def test_no_import_circle():
    graph = _graph()
    graph.pop("__init__")  # the package's face imports everything; nothing imports it back as a module

    def circle_from(start: str) -> list[str] | None:
        path, todo = {start: [start]}, [start]
        while todo:
            here = todo.pop()
            for there in graph[here]:
                if there == start:
                    return path[here] + [start]
                if there not in path:
                    path[there] = path[here] + [there]
                    todo.append(there)
        return None

    circles = [c for name in sorted(graph) if (c := circle_from(name))]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .a import x", {"a"}),
        ("from dkdlib.a import x", {"a"}),
        ("from . import a, version", {"a"}),
        ("import dkdlib.a", {"a"}),
        ("def f():\n    from .a import x", {"a"}),  # a lazy import counts
        ("import torch\nfrom torch import nn", set()),
    ],
)
def test_the_import_reader(source, expected):
    assert _imports(ast.parse(source), {"a", "b"}) == expected
