"""Fail on any import loop between modules of the project's packages (``nox -s lint``).

    python tools/import_loops.py [PACKAGE ...]     # default: import-linter's root_packages in pyproject.toml

A loop is a set of modules each reachable from the others through imports (a strongly connected component of the
import graph, found by Tarjan's algorithm). The graph is grimp's (import-linter's own): every ``import`` statement
counts, those under ``if TYPE_CHECKING:`` and inside functions included, so a loop can't hide behind either.
Exit status 1 and one line per loop (its modules, and one cycle through them) when there is one.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import grimp

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

# Loops known and being removed elsewhere; each entry fails the check once the loop is gone (remove it then).
KNOWN_LOOPS: set[frozenset[str]] = set()


def root_packages() -> list[str]:
    """The packages import-linter checks (``[tool.importlinter] root_packages``): declared once, in pyproject."""
    return list(tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["root_packages"])


def find_loops(packages: Iterable[str]) -> list[list[str]]:
    """Every import loop among the modules of ``packages``: each a sorted list of the modules in it."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    for root in edges:  # Tarjan, iteratively (no recursion limit on a deep graph)
        if root in order:
            continue
        work = [(root, iter(edges[root]))]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in order:
                    order[child] = low[child] = len(order)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], order[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    loops.append(sorted(component))
    return sorted(loops)


def cycle(loop: list[str], packages: Iterable[str]) -> list[str]:
    """One cycle through a loop's first module, for the message: a → b → … → a."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    first, members = loop[0], set(loop)
    for nxt in sorted(graph.find_modules_directly_imported_by(first) & members):
        back = graph.find_shortest_chain(importer=nxt, imported=first)
        if back:
            return [first, *back]
    return [first, first]


def main(argv: list[str]) -> int:
    packages = argv or root_packages()
    loops = find_loops(packages)
    found = {frozenset(loop) for loop in loops}
    status = 0
    for loop in loops:
        if frozenset(loop) in KNOWN_LOOPS:
            print(f"import loop (known, being removed): {' → '.join(cycle(loop, packages))}")
            continue
        print(f"import loop: {' → '.join(cycle(loop, packages))} (modules: {', '.join(loop)})")
        status = 1
    for known in KNOWN_LOOPS - found:
        if all(m.split(".")[0] in packages for m in known):
            print(f"no longer a loop: {' ↔ '.join(sorted(known))}: remove it from KNOWN_LOOPS in {__file__}")
            status = 1
    if status == 0:
        others = " other than the known ones above" if found else ""
        print(f"no import loops{others} among the modules of {', '.join(packages)}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
