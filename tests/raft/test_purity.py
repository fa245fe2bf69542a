"""The consensus core is pure: it imports only an allow-list of stdlib modules (tests/test_imports.py checks the rest of the graph)."""

from __future__ import annotations

import ast
from pathlib import Path

import concord.raft

RAFT_DIR = Path(concord.raft.__file__).parent

ALLOWED = {
    "__future__",
    "bisect",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "functools",
    "itertools",
    "logging",
    "struct",
    "typing",
    "concord.errors",
    "concord.ids",
}
FORBIDDEN = {"random", "time", "os", "socket", "threading", "asyncio", "subprocess",
             "multiprocessing", "datetime", "secrets", "uuid", "io", "pathlib", "select",
             "signal", "pickle", "msgpack", "zmq", "sys"}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.append("." * node.level + (node.module or ""))
            else:
                names.append(node.module or "")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("__import__", "exec", "eval", "open"):
                names.append(f"<call {node.func.id}>")
    return names


def is_allowed(name: str) -> bool:
    return name in ALLOWED or name.startswith("concord.raft")


def test_core_imports_only_allowed_modules_when_scanning_every_module() -> None:
    """Every import under concord/raft is in the allow-list (stdlib pure modules, raft)."""
    offenders = []
    for path in sorted(RAFT_DIR.rglob("*.py")):
        for name in imported_modules(path):
            if not is_allowed(name):
                offenders.append(f"{path.name}: {name}")
    assert [] == offenders


def test_forbidden_modules_are_rejected_when_checking_the_allow_list() -> None:
    """The checker itself refuses clocks, randomness, IO and threads (it can fail)."""
    assert [] == sorted(name for name in FORBIDDEN if is_allowed(name))
    sample = Path(__file__).with_name("_purity_sample.txt")
    tree_text = "import random\nfrom time import monotonic\nimport concord.raft.core\n"
    sample.write_text(tree_text)
    try:
        assert ["random", "time"] == [n for n in imported_modules(sample) if not is_allowed(n)]
    finally:
        sample.unlink()
