"""The package's import graph: no cycles, and the arrows of ``../shared/DESIGN.md`` point down.

The graph is read from the source with :mod:`ast`, not by importing. Every ``import`` counts:
at module level, inside functions (a deferred import is still a dependency of the design, and
a cycle through one only waits for the right call order to break) and under
``if TYPE_CHECKING:`` (a module that names another's types in its signatures depends on it).
An edge goes to the module an import names: ``from tempscope.x import y`` reaches the module
``tempscope.x.y`` when there is one, else the package ``tempscope.x``. The parent packages
Python runs first (``tempscope/__init__.py`` before any ``tempscope.x``) are not edges: every
module has them, so they say nothing about its layer.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from itertools import pairwise
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "tempscope"

Graph = dict[str, dict[str, int]]  # module -> {imported module: first line}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, whether it is a package)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph() -> Graph:
    """Edges from each module of the package to the package's modules it imports."""
    modules = _modules()

    def deepest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Graph = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*here[:len(here) - node.level + 1], *filter(None, [base])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    found = deepest(target)
                    if found is not None and found != name:
                        edges.setdefault(found, node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def _describe(graph: Graph, cycle: list[str]) -> str:
    """``a:12 -> b:40 -> a``: each module with the line of its import of the next."""
    steps = [f"{a}:{graph[a][b]}" for a, b in pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]]) + " (module:line of the import)"


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph: Graph) -> None:
    """The reader finds module-level, relative, function-level and TYPE_CHECKING imports (a
    check on the checker, on edges the code has today)."""
    assert len(graph) > 50
    assert "tempscope.sampling.base" in graph["tempscope.sampling.truncation"]  # module level
    assert "tempscope.engine.backend" in graph["tempscope.engine"]  # relative or absolute
    assert "tempscope.engine.loader" in graph["tempscope.cli.model_args"]  # inside a function
    assert "tempscope.engine.backend" in graph["tempscope.cli.limits"]  # TYPE_CHECKING


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_no_import_cycles(graph: Graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {_describe(graph, cycle)}"


# (importing modules, modules they must not import): DESIGN.md's arrows point down only,
# `cli`, `server` -> `lab` -> `study`, `report` -> `engine` -> `sampling` -> `distribution`,
# `errors`, `table`.
STUDY = ["tempscope.study*", "tempscope.report*"]
SHELLS = ["tempscope.server*", "tempscope.cli*"]
RULES: list[tuple[list[str], list[str]]] = [
    # The math at the bottom: pure functions, the sampler chain and its registry.
    (["tempscope.distribution", "tempscope.errors"], ["tempscope*"]),
    (["tempscope.table"], ["tempscope*", "!tempscope.distribution", "!tempscope.errors"]),
    (["tempscope.sampling*"], ["tempscope*", "!tempscope.sampling*", "!tempscope.distribution",
                               "!tempscope.errors"]),
    # Engines run models; they know nothing of studies, reports, the lab or the shells.
    (["tempscope.engine*"], ["tempscope.lab", *STUDY, *SHELLS]),
    # Studies and reports sit under the lab and the shells; a report reads what a study
    # wrote, never the other way round.
    (STUDY, ["tempscope.lab", *SHELLS]),
    (["tempscope.study*"], ["tempscope.report*"]),
    # The lab's library logic sits under the shells that show it.
    (["tempscope.lab"], SHELLS),
    # The server is a shell of its own, beside the command line, not under it.
    (["tempscope.server*"], ["tempscope.cli*"]),
    # Only the command line imports the command line; nothing imports the facade.
    (["tempscope*", "!tempscope.cli*"], ["tempscope.cli*"]),
    (["tempscope.*"], ["tempscope"]),
]


def _matches(name: str, patterns: list[str]) -> bool:
    """Whether ``name`` matches a pattern and no ``!``-pattern after it."""
    hit = False
    for pattern in patterns:
        if pattern.startswith("!"):
            hit = hit and not fnmatch(name, pattern[1:])
        else:
            hit = hit or fnmatch(name, pattern)
    return hit


def _violations(graph: Graph) -> list[str]:
    """Every import that breaks a rule, once, sorted."""
    return sorted({f"{name} (line {line}) imports {target}"
                   for importers, forbidden in RULES
                   for name, edges in graph.items() if _matches(name, importers)
                   for target, line in edges.items() if _matches(target, forbidden)})


def test_arrows_point_down(graph: Graph) -> None:
    wrong = _violations(graph)
    assert not wrong, "imports against DESIGN.md's layers:\n" + "\n".join(wrong)


def test_studies_and_commands_reach_a_server_through_the_generator(graph: Graph) -> None:
    """One interface, two implementations (:mod:`tempscope.engine.generator`): the studies and
    the commands do not import the remote implementation (only its client, to make one).
    ``next`` still prints a server's next-token view
    (:class:`~tempscope.engine.remote.engine.RemoteNextToken`) with its own table."""
    users = ["tempscope.study*", "tempscope.cli*", "!tempscope.cli.next_cmd"]
    wrong = sorted(f"{name} (line {line}) imports {target}"
                   for name, edges in graph.items() if _matches(name, users)
                   for target, line in edges.items()
                   if fnmatch(target, "tempscope.engine.remote*")
                   and target != "tempscope.engine.remote.client")
    assert not wrong, "\n".join(wrong)


def test_a_rule_catches_an_upward_import() -> None:
    bad: Graph = {"tempscope.sampling.x": {"tempscope.engine.backend": 3},
                  "tempscope.server.app": {"tempscope.cli.common": 9},
                  "tempscope.study.grid": {"tempscope": 1, "tempscope.report.sweep": 2}}
    assert _violations(bad) == [
        "tempscope.sampling.x (line 3) imports tempscope.engine.backend",
        "tempscope.server.app (line 9) imports tempscope.cli.common",
        "tempscope.study.grid (line 1) imports tempscope",
        "tempscope.study.grid (line 2) imports tempscope.report.sweep",
    ]
