"""The shape of `src/llmos`: no import cycles, layers that point down, small modules.

The import graph is read from the source with `ast`, so it sees every import
statement wherever it is: at the top, inside functions, under
`if TYPE_CHECKING:`. An import names the deepest module it spells
(`from llmos.kernel import kernel` and `from llmos.kernel.kernel import Kernel`
both name `llmos.kernel.kernel`); the parent packages whose `__init__.py`
Python also runs are not counted, or every module would depend on `llmos`.

Checks: no cycle between modules; no cycle between top-level packages; nothing
in `llm/` or `storage/` imports a layer above it; no module over 500 lines and
`kernel/kernel.py` not over 400. Each failure lists every offender with the
file and line of the imports involved.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "llmos"
PACKAGES = ("kernel", "agent", "memory", "tools", "access", "llm", "storage", "server", "cli")
# What llm/ and storage/ (the bottom layer) must never import.
ABOVE_THE_BOTTOM = ("memory", "kernel", "agent", "tools", "access", "server", "client", "cli")
MAX_LINES = 500
MAX_LINES_EXCEPTIONS = {"llmos.kernel.kernel": 400}


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # the importing module, e.g. "llmos.agent.loop"
    target: str  # the imported module, e.g. "llmos.kernel.kernel"
    where: str  # "src/llmos/agent/loop.py:31"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The deepest module of the package that `name` spells, or None if outside."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports(root: Path = PACKAGE) -> list[Import]:
    known = modules(root)
    found: list[Import] = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    stem = node.module or ""
                # `from a import b` imports the module a.b when there is one.
                names = [f"{stem}.{alias.name}" for alias in node.names]
            for name in names:
                target = _resolve(name, known)
                if target is not None and target != module:
                    where = f"{path.relative_to(root.parent.parent)}:{node.lineno}"
                    found.append(Import(module, target, where))
    return list(dict.fromkeys(found))  # `from a import b, c` is one import of a


def top(module: str) -> str:
    """The top-level unit a module belongs to: `llmos.kernel`, `llmos.errors`, `llmos`."""
    return ".".join(module.split(".")[:2])


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one node only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _shortest_path(
    graph: dict[str, set[str]], start: str, goal: str, within: set[str]
) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child in within and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
        if goal in previous:
            break
    path = [goal]
    while previous[path[-1]] is not None:
        path.append(previous[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def _site(where: str) -> tuple[str, int]:
    path, _, line = where.rpartition(":")
    return path, int(line)


def cycles(edges: list[tuple[str, str, str]]) -> list[str]:
    """Every import cycle, as lines of text: one block per strongly connected set,
    with cycles through it until every edge inside it is shown (file:line each)."""
    graph: dict[str, set[str]] = defaultdict(set)
    sites: dict[tuple[str, str], list[str]] = defaultdict(list)
    for source, target, where in edges:
        if source != target:
            graph[source].add(target)
            if where not in sites[(source, target)]:
                sites[(source, target)].append(where)
    report: list[str] = []
    for component in _strongly_connected(graph):
        members = set(component)
        report.append(f"cycle among {len(component)}: {', '.join(component)}")
        inner = sorted((s, t) for s in component for t in graph[s] if t in members)
        covered: set[tuple[str, str]] = set()
        for source, target in inner:
            if (source, target) in covered:
                continue
            loop = [source, *_shortest_path(graph, target, source, members)]
            report.append("  " + " -> ".join(loop))
            for a, b in itertools.pairwise(loop):
                covered.add((a, b))
                report.append(f"    {a} -> {b}: {', '.join(sorted(sites[(a, b)], key=_site))}")
    return report


def test_no_import_cycle_between_modules() -> None:
    report = cycles([(i.source, i.target, i.where) for i in imports()])
    assert not report, "import cycles between modules of src/llmos:\n" + "\n".join(report)


def test_no_import_cycle_between_packages() -> None:
    edges = [(top(i.source), top(i.target), i.where) for i in imports()]
    report = cycles(edges)
    assert not report, "import cycles between packages of src/llmos:\n" + "\n".join(report)


def test_llm_and_storage_import_nothing_above_them() -> None:
    bottom = {f"llmos.{p}" for p in ("llm", "storage")}
    above = {f"llmos.{p}" for p in ABOVE_THE_BOTTOM}
    bad = [
        f"  {i.where}: {i.source} imports {i.target}"
        for i in sorted(imports(), key=lambda i: _site(i.where))
        if top(i.source) in bottom and top(i.target) in above
    ]
    assert not bad, "llm/ and storage/ import from the layers above them:\n" + "\n".join(bad)


def test_no_module_is_too_long() -> None:
    long = []
    for module, path in modules().items():
        lines = path.read_text(encoding="utf-8").count("\n")  # as `wc -l` counts
        limit = MAX_LINES_EXCEPTIONS.get(module, MAX_LINES)
        if lines > limit:
            long.append(f"  {path.relative_to(SRC.parent)}: {lines} lines (limit {limit})")
    assert not long, "modules over their size limit:\n" + "\n".join(long)


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Imports at the top, inside functions, under TYPE_CHECKING and relative ones
    are all found; `from a import b` names the module a.b when there is one."""
    files = {
        "__init__.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n"
        ),
        "a/__init__.py": "",
        "a/x.py": "def f():\n    from ..b import y\n    return y\n",
        "b/__init__.py": "",
        "b/y.py": (
            "import os\nimport pkg.a.x as ax\nfrom pkg.b import z\nfrom . import z as again\n"
        ),
        "b/z.py": "from pkg import a\n",
    }
    for name, text in files.items():
        path = tmp_path / "src" / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    found = {(i.source, i.target, i.where) for i in imports(tmp_path / "src" / "pkg")}
    assert found == {
        ("pkg", "pkg.a.x", "src/pkg/__init__.py:3"),
        ("pkg.a.x", "pkg.b.y", "src/pkg/a/x.py:2"),
        ("pkg.b.y", "pkg.a.x", "src/pkg/b/y.py:2"),
        ("pkg.b.y", "pkg.b.z", "src/pkg/b/y.py:3"),
        ("pkg.b.y", "pkg.b.z", "src/pkg/b/y.py:4"),
        ("pkg.b.z", "pkg.a", "src/pkg/b/z.py:1"),
    }
    assert cycles([(s, t, w) for s, t, w in sorted(found)]) == [
        "cycle among 2: pkg.a.x, pkg.b.y",
        "  pkg.a.x -> pkg.b.y -> pkg.a.x",
        "    pkg.a.x -> pkg.b.y: src/pkg/a/x.py:2",
        "    pkg.b.y -> pkg.a.x: src/pkg/b/y.py:2",
    ]
    edges = [("a", "b", "x:1"), ("b", "c", "x:2"), ("c", "a", "x:3"), ("c", "d", "x:4")]
    assert cycles(edges) == [
        "cycle among 3: a, b, c",
        "  a -> b -> c -> a",
        "    a -> b: x:1",
        "    b -> c: x:2",
        "    c -> a: x:3",
    ]
    assert cycles([("a", "b", "x:1"), ("b", "c", "x:2")]) == []


def test_the_package_is_read() -> None:
    found = imports()
    assert {top(i.source) for i in found} >= {f"llmos.{p}" for p in PACKAGES}
