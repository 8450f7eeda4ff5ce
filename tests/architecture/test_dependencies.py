"""The package structure holds: arrows point down, adapters stay at their boundary.

`data_lake` <- `skills` <- `runtime`; `paper_gateway` depends on no project package; only
`runtime/broker.py` imports the IB client library; only `data_lake` talks to SQLite; no
module imports another in a cycle; no production module imports test helpers.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("data_lake", "skills", "runtime", "paper_gateway", "benchmarks")
# which project packages each package may import (besides itself)
ALLOWED = {
    "data_lake": set(),
    "skills": {"data_lake"},
    "runtime": {"data_lake", "skills", "paper_gateway"},  # paper_gateway: the demo embeds it
    "paper_gateway": set(),
    "benchmarks": {"data_lake", "skills", "runtime", "paper_gateway"},
}
IB_LIBRARIES = ("ib_insync", "ib_async", "eventkit")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "__main__.py":
                continue  # importing it would run the command
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module name `path` imports (relative imports resolved), at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If)
        and isinstance(block.test, ast.Name)
        and block.test.id == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue  # annotations only: not a dependency at run time
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


MODULES = _modules()
IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_packages_import_only_the_packages_below_them():
    wrong = []
    for name, imported in IMPORTS.items():
        pkg = name.split(".")[0]
        for mod in imported:
            top = mod.split(".")[0]
            if top in PACKAGES and top != pkg and top not in ALLOWED[pkg]:
                wrong.append(f"{name} imports {mod}")
    assert wrong == []


def test_no_module_imports_another_in_a_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for name, imported in IMPORTS.items():
        for mod in imported:
            if mod in MODULES and mod != name:
                graph[name].add(mod)
    # modules import their package's __init__ implicitly; a package __init__ that re-exports
    # its own modules is not a cycle of ideas, so edges into a package's own __init__ are ignored
    for name in list(graph):
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(MODULES):
        if node not in state:
            visit(node, [node])
    assert cycles == [], cycles


def test_only_the_broker_adapter_imports_the_ib_client_library():
    users = sorted(
        name
        for name, imported in IMPORTS.items()
        if name.split(".")[0] in ("data_lake", "skills", "runtime")
        and any(m.split(".")[0] in IB_LIBRARIES for m in imported)
    )
    assert users == ["runtime.broker"]


def test_only_the_data_lake_talks_to_sqlite():
    users = sorted(
        name
        for name, imported in IMPORTS.items()
        if any(m.split(".")[0] in ("sqlite3", "sqlite_utils") for m in imported)
        and not name.startswith(("data_lake", "paper_gateway"))
    )
    assert users == []


def test_no_production_module_imports_test_helpers():
    """The daemon, its skills, its storage and the paper gateway never import test code.
    (The benchmarks may: they drive the product with the same stand-ins as the tests, such as
    the local Anthropic API server.)"""
    helpers = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests", "conftest", "pytest"}
    wrong = sorted(
        f"{name} imports {mod}"
        for name, imported in IMPORTS.items()
        for mod in imported
        if mod.split(".")[0] in helpers and not name.startswith("benchmarks")
    )
    assert wrong == []


def test_importing_the_broker_adapter_loads_no_client_library():
    """broker.py imports the configured library when a Broker is built, so a machine with only
    one of them installed imports it (and every module above it) without the other."""
    code = (
        "import sys; sys.modules['ib_async'] = None; import runtime.main_loop, runtime.broker; "
        "assert 'ib_insync' not in sys.modules, 'ib_insync loaded at import'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
