"""The folders show the pipeline, and the imports keep them honest: every arrow points down the layers below,
no module imports one that imports it back, and only the demo reaches into the sandboxes.

The layers, lowest first (a module may import from its own package and from any lower layer):

    foundation   worker.errors, clock, config, logs, rulefile, terminal
    store        worker.store
    stages       worker.sync, worker.scoring  →  worker.alerting  →  worker.delivery
    rules        worker.rulebook
    cycle        worker.cycle
    around it    worker.analysis, worker.ops, worker.service, worker.demo (none imports another)
    commands     worker.cli

The tables more than one stage reads (the outbox, overrides, silences) are written by one module each.

`connectors` are libraries of their own: they never import the worker, and the worker outside `worker.demo`
imports only their clients, never a sandbox.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("worker.errors",),
    ("worker.clock", "worker.config", "worker.logs", "worker.rulefile", "worker.terminal"),
    ("worker.store",),
    ("worker.sync", "worker.scoring"),
    ("worker.alerting",),
    ("worker.delivery",),
    ("worker.rulebook",),
    ("worker.cycle",),
    ("worker.analysis", "worker.ops", "worker.service", "worker.demo"),
    ("worker.cli",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in ("worker", "connectors") for p in sorted((ROOT / top).rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module this one imports (at the top, inside functions, or for type checking), with its line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in MODULES else base), node.lineno


def _unit(module: str) -> str | None:
    """The layer unit a worker module belongs to: its package under worker/, or the top-level module itself."""
    if not module.startswith("worker."):
        return None
    parts = module.split(".")
    return ".".join(parts[:2])


def _arrows() -> list[tuple[str, str, int]]:
    return [(name, target, line) for name, path in MODULES.items() for target, line in _imports(name, path)
            if target.startswith(("worker", "connectors"))]


@pytest.mark.parametrize("top", ["worker", "connectors"])
def test_every_folder_of_code_is_a_package_that_pip_install_ships(top: str) -> None:
    """setuptools' `packages.find` skips a folder without `__init__.py`: `pip install .` (the Docker image)
    would leave it out, while an editable install and the tests would still find it."""
    folders = {path.parent for path in (ROOT / top).rglob("*.py")}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()) == []


def test_every_worker_package_has_a_layer() -> None:
    units = {_unit(name) for name in MODULES if name.startswith("worker.")} - {None}
    assert sorted(unit for unit in units if unit not in RANK) == []


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for source, target, line in _arrows():
        a, b = _unit(source), _unit(target)
        if a is None or b is None or a == b:
            continue
        if RANK[b] >= RANK[a]:
            wrong.append(f"{source}:{line} imports {target} ({a} may not import {b})")
    assert wrong == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for source, target, _ in _arrows():
        if target in MODULES and target != source:
            graph[source].add(target)
    circles = _circles(graph)
    assert circles == [], "modules that import each other: " + "; ".join(", ".join(c) for c in circles)


def test_connectors_never_import_the_worker() -> None:
    assert [f"{s}:{line} imports {t}" for s, t, line in _arrows()
            if s.startswith("connectors") and t.startswith("worker")] == []


@pytest.mark.parametrize("sandbox", ["sandbox", "sandboxes"])
def test_only_the_demo_imports_a_sandbox(sandbox: str) -> None:
    reaching = [f"{s}:{line} imports {t}" for s, t, line in _arrows()
                if s.startswith("worker.") and not s.startswith("worker.demo")
                and t.startswith("connectors.") and sandbox in t.split(".")]
    assert reaching == []


TABLE_OWNERS = {"outbox": "worker.store.outbox", "overrides": "worker.scoring.overrides",
                "silences": "worker.alerting.silences"}


@pytest.mark.parametrize(("table", "owner"), sorted(TABLE_OWNERS.items()))
def test_only_its_owning_module_writes_a_shared_table(table: str, owner: str) -> None:
    writes = re.compile(rf"(INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+{table}\b|"
                        rf"(insert_missing|upsert|insert_all|insert)\(\s*[\"']{table}[\"']", re.IGNORECASE)
    writers = [name for name, path in MODULES.items()
               if name not in (owner, "worker.store.schema") and writes.search(path.read_text())]
    assert writers == []


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each listed in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
