"""The import contract: layers, independent rooms, no cycles (also through in-function imports).

Layers, lowest first: the kernel (the spec's models, settings, errors, the store, the Prefect
seam), the rooms (flows, deployments, triggers, mobile_push and the worker), the composition
(the task manager and the stack), the faces (the CLI, the REST API, the control flows behind
the Prefect UI's buttons). A module imports its own layer or lower ones. Imports inside
functions count: the graph with them has no cycle, so none of them only dodges one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bgtasks", "flows", "deployments", "triggers", "mobile_push")

KERNEL = ("bgtasks.models", "bgtasks.installed", "bgtasks.errors", "bgtasks.settings", "bgtasks.durations", "bgtasks.text",
          "bgtasks.home", "bgtasks.retry", "bgtasks.guard", "bgtasks.auth", "bgtasks.store",
          "bgtasks.prefect_seam", "bgtasks.crash", "bgtasks.stored")
WORKER = ("bgtasks.warm_worker", "bgtasks.zygote", "bgtasks.policies")
ROOMS = ("flows", "deployments", "triggers", "mobile_push", *WORKER)
COMPOSITION = ("bgtasks.manager", "bgtasks.stack", "bgtasks.cluster", "bgtasks.service", "bgtasks.parts",
               "bgtasks.prefect_server")
FACES = ("bgtasks.cli", "bgtasks.api", "flows.controls")
LAYERS = (KERNEL, ROOMS, COMPOSITION, FACES)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer_of(module: str) -> int:
    # Most specific first: flows.controls is a face inside the flows room.
    for rank in reversed(range(len(LAYERS))):
        if _within(module, LAYERS[rank]):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to tests/unit/test_import_contract.py")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the product modules it imports, at any depth of its code."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name) if name.split(".")[0] in PACKAGES else None
                if target and target != module:
                    out.add(target)
        graph[module] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
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
                    found.append(sorted(component))
    return found


GRAPH = imports(modules())


def test_every_module_imports_its_own_layer_or_lower_ones() -> None:
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if layer_of(t) > layer_of(m))
    assert upward == []


def test_the_rooms_do_not_import_each_other_where_they_are_independent() -> None:
    """Triggers and push know nothing of each other; no room but the worker imports the worker."""
    crossing = sorted(
        f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
        if (_within(m, ("triggers",)) and _within(t, ("mobile_push",)))
        or (_within(m, ("mobile_push",)) and _within(t, ("triggers",)))
        or (_within(t, WORKER) and not _within(m, WORKER)))
    assert crossing == []


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    assert cycles(GRAPH) == []


def test_the_checks_see_what_they_forbid() -> None:
    """The contract's own machinery, on a graph made for the purpose."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("bgtasks.models") < layer_of("flows.demo") < layer_of("bgtasks.manager") < layer_of("flows.controls")
    assert "bgtasks.cli" in GRAPH and "bgtasks.cli._common" in GRAPH["bgtasks.cli.task_cmds"]
    assert "bgtasks.manager" in GRAPH["flows.controls"]  # in-function imports are in the graph
