"""Imports flow one way (docs/architecture.md "Layers"): the package graph, checked.

The generalisation of tests/raft/test_purity.py (which keeps the consensus core to an
allow-list of pure stdlib modules) to the whole tree: every import of a `concord` or
`supervisor` module, anywhere in a file (also inside functions and `TYPE_CHECKING`
blocks), must point to a lower layer, or to an allowed neighbour in the same one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The layers, lowest first. A unit is a subpackage of concord (`raft`), a top-level
#: module of concord (`config`), the root package (`concord`) or the standalone
#: `supervisor/` package.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "ids", "bulk", "supervisor_clash"}),  # leaves: import nothing of ours
    frozenset({"auth"}),  # tokens, roles, tenants: pure tables and checks over the leaves
    frozenset({"raft", "kv", "metrics"}),  # the pure cores; the metric table and recorder
    frozenset({"storage", "shm", "net", "config", "config_schema", "tracing", "telemetry", "supervisor/"}),  # files, shared memory, sockets
    frozenset({"node", "client", "aio", "audit", "credentials"}),  # the node's processes; the clients beside them; the tools' token and key
    frozenset({"sim", "gateway", "recipes"}),  # the simulator; the HTTP gateway; lock and election recipes over the client
    frozenset({"supervisor"}),  # `python -m concord.supervisor`: one node's process tree
    frozenset({"embedded", "cluster", "cli", "chaos"}),  # what runs nodes: tools, embedding
    frozenset({"concord"}),  # the root package: the public names
)

#: Imports allowed inside one layer (importer, imported).
SIDEWAYS = frozenset({("aio", "client"), ("net", "tracing"), ("tracing", "config"), ("config", "config_schema")})

RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of_module(name: str) -> str | None:
    """The unit a dotted module name belongs to (None: not ours)."""
    parts = name.split(".")
    if parts[0] == "supervisor":
        return "supervisor/"
    if parts[0] != "concord":
        return None
    return parts[1] if len(parts) > 1 else "concord"


def unit_of_path(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    if rel.parts[0] == "supervisor":
        return "supervisor/"
    if len(rel.parts) == 2:
        return "concord" if rel.parts[1] == "__init__" else rel.parts[1]
    return rel.parts[1]


def imports_of(path: Path) -> list[str]:
    """Every module an import statement in `path` names (`from a import b` gives a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            module = node.module or ""
            if module != "concord":  # `from concord import x` imports concord.x, not the root's names
                names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def violations(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported` (None: it may)."""
    if imported == importer:
        return None
    if importer == "supervisor/":
        return "supervisor/ imports nothing from concord"
    if imported not in RANK:
        # `from concord import __version__` names an attribute of the root, not a unit.
        return None if imported.startswith("__") else "not in any layer"
    if RANK[imported] < RANK[importer] or (importer, imported) in SIDEWAYS:
        return None
    return f"layer {RANK[importer]} imports layer {RANK[imported]}"


def graph_offenders(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        importer = unit_of_path(path)
        for name in imports_of(path):
            imported = unit_of_module(name)
            if imported is None:
                continue
            why = violations(importer, imported)
            if why is not None:
                out.append(f"{path.relative_to(ROOT)}: {name} ({importer} -> {imported}: {why})")
    return sorted(set(out))


def _sources() -> list[Path]:
    return sorted([*(ROOT / "concord").rglob("*.py"), *(ROOT / "supervisor").rglob("*.py")])


def test_every_unit_has_a_layer_when_scanning_the_tree() -> None:
    """Each subpackage and top-level module is placed in exactly one layer."""
    units = {unit_of_path(p) for p in _sources()}
    assert set() == units - set(RANK)
    assert sum(len(layer) for layer in LAYERS) == len(RANK)


def test_imports_flow_one_way_when_scanning_every_module() -> None:
    """No module imports a higher layer, or a neighbour in its own layer (client never imports node)."""
    assert [] == graph_offenders(_sources())


def test_graph_check_fails_when_an_import_points_up(tmp_path: Path) -> None:
    """The checker itself catches a wrong-way import (it can fail)."""
    assert "layer 2 imports layer 3" == violations("kv", "net")
    assert "layer 4 imports layer 4" == violations("client", "node")
    assert "supervisor/ imports nothing from concord" == violations("supervisor/", "errors")
    assert violations("node", "kv") is None
    assert violations("aio", "client") is None
    sample = ROOT / "concord" / "kv" / "_imports_sample.py"
    sample.write_text("from concord.net.wire import OPS\n")
    try:
        assert ["concord/kv/_imports_sample.py: concord.net.wire (kv -> net: layer 2 imports layer 3)"] == [
            o for o in graph_offenders([sample]) if "wire (" in o
        ]
    finally:
        sample.unlink()


def test_importing_the_core_loads_nothing_else_when_run_in_a_fresh_interpreter() -> None:
    """`import concord.raft.core` loads the core alone: no client, pyzmq, msgpack or xxhash."""
    code = (
        "import sys, concord.raft.core\n"
        "heavy = ('zmq', 'msgpack', 'xxhash', 'sortedcontainers', 'psutil', 'concord.client',"
        " 'concord.kv', 'concord.net', 'concord.embedded')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=ROOT, check=True)
    assert "[]" == out.stdout.strip()


def test_root_package_names_resolve_when_imported_lazily() -> None:
    """concord.put, concord.Client, concord.start and every __all__ name still resolve."""
    import concord

    missing = [name for name in concord.__all__ if not hasattr(concord, name)]
    assert [] == missing
    assert [] == [n for n in concord.__all__ if n != "errors" and isinstance(getattr(concord, n), types.ModuleType)]
    assert concord.Client.__module__ == "concord.client.client"
    assert "put" in dir(concord)


def test_starting_a_node_loads_no_http_or_asyncio_stack_when_run_in_a_fresh_interpreter() -> None:
    """`import concord.supervisor` (every node start, before the first fork) leaves out
    what only optional children use: wsgiref/http.server (the metrics child imports it),
    asyncio (pulled in by zmq.utils.monitor), prometheus_client and opentelemetry."""
    code = (
        "import sys, concord.supervisor\n"
        "heavy = ('asyncio', 'wsgiref', 'http.server', 'email', 'ssl', 'prometheus_client',"
        " 'opentelemetry', 'zmq.asyncio')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=ROOT, check=True)
    assert "[]" == out.stdout.strip()
