"""The shape of the house, drawn from its imports: no module imports itself in a circle, and
the translation core does no I/O.

Every import counts, at the top of a module, inside a function or under TYPE_CHECKING: an
import made late to dodge a circle is still a circle a reader has to follow. The same walk
prints the graph: `python -m tests.test_layout` (docs/development.md).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"
# What the pure core (translation and wire shapes) may not import.
IO_LIBRARIES = frozenset({"aiohttp", "aiosqlite", "asyncpg", "sqlite3", "socket"})


def module_name(path: Path) -> str:
    parts = path.relative_to(BRIDGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(BRIDGE.rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every name `path` imports (bridge modules by their full name, others by their top)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    yield f"{node.module}.{alias.name}"


def graph() -> dict[str, set[str]]:
    """bridge module -> the bridge modules it imports."""
    known = modules()
    return {
        name: {other for other in imported(path, known) if other in known and other != name}
        for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_in_a_circle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_the_translation_core_does_no_io() -> None:
    known = modules()
    for name, path in known.items():
        if name.startswith(("bridge.translate", "bridge.wire")):
            tops = {module.split(".")[0] for module in imported(path, known)}
            assert not tops & IO_LIBRARIES, (name, tops & IO_LIBRARIES)


if __name__ == "__main__":
    for module, imports in sorted(graph().items()):
        sys.stdout.write(f"{module} -> {', '.join(sorted(imports)) or '-'}\n")
