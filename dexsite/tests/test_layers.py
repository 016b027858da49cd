"""The packages' layers, read from the source: every import of every module but tests
and migrations, function-local ones included (an import inside a function is still a
dependency, and a common way of hiding a cycle).

    dexsite (app-free infra) <- ledger <- trading <- accounts <- realtime

Each package imports only packages below it. `dexsite` is the project package: its
settings name the apps as strings, and two of its modules wire them together and so
import them: the URLconf (the views) and the ASGI application (the WebSocket routes).
`trust` and `bench` are harnesses above everything and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Bottom first.
LAYERS = ("dexsite", "ledger", "trading", "accounts", "realtime")
APPS = ("ledger", "trading", "accounts", "realtime", "trust", "bench")
WIRING = {"dexsite/urls.py", "dexsite/asgi.py"}


def _modules(package: str) -> list[Path]:
    return sorted(
        p
        for p in (ROOT / package).rglob("*.py")
        if not {"tests", "migrations"} & set(p.relative_to(ROOT).parts) and p.name != "conftest.py"
    )


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) of every absolute import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def _edges() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> where ("path:line"), across LAYERS."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in LAYERS}
    for package in LAYERS:
        for path in _modules(package):
            where = str(path.relative_to(ROOT))
            if where in WIRING:
                continue
            for module, _, line in _imports(path):
                top = module.split(".")[0]
                if top in APPS + LAYERS and top != package:
                    graph[package].setdefault(top, []).append(f"{where}:{line}")
    return graph


def test_the_modules_are_found():
    assert len(_modules("ledger")) >= 4
    assert len(_modules("trading")) > 20
    assert all(any(p.name == "models.py" for p in _modules(p)) for p in LAYERS[1:4])


def test_ledger_imports_no_app():
    assert _edges()["ledger"].keys() <= {"dexsite"}


def test_dexsite_imports_no_app_but_where_it_wires_them():
    assert _edges()["dexsite"] == {}


def test_each_package_imports_only_the_layers_below_it():
    graph = _edges()
    upward = {
        f"{package} -> {imported}": where
        for package, edges in graph.items()
        for imported, where in edges.items()
        if imported not in LAYERS or LAYERS.index(imported) > LAYERS.index(package)
    }
    assert upward == {}


def test_the_package_graph_has_no_cycle():
    graph = {p: set(edges) & set(LAYERS) for p, edges in _edges().items()}
    done: set[str] = set()
    while len(done) < len(graph):
        ready = [p for p, deps in graph.items() if p not in done and deps <= done]
        assert ready, f"a cycle among {sorted(set(graph) - done)}"
        done |= set(ready)


def test_no_package_imports_another_ones_private_names():
    private = [
        f"{path.relative_to(ROOT)}:{line} {module}.{name}"
        for package in LAYERS
        for path in _modules(package)
        for module, names, line in _imports(path)
        for name in names
        if module.split(".")[0] != package and name.startswith("_")
    ]
    assert private == []
