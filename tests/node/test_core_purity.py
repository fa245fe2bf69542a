"""The node core is pure: the node's decision modules import no IO."""

from __future__ import annotations

from pathlib import Path

import concord
from tests.raft.test_purity import ALLOWED, imported_modules

ROOT = Path(concord.__file__).parent
#: The node core and the pure modules it builds on (the driver runs in the simulator).
PURE_MODULES = [
    *sorted((ROOT / "node" / "core").glob("*.py")),
    ROOT / "node" / "driver.py",
    ROOT / "node" / "driver_reads.py",
    ROOT / "node" / "driver_types.py",
    ROOT / "node" / "promotion.py",
    ROOT / "storage" / "membership.py",
]
PURE_PACKAGES = ("concord.raft", "concord.node.core")
PURE_EXTRA = {"concord.node.driver", "concord.node.driver_reads", "concord.node.driver_types",
              "concord.node.promotion", "concord.storage.membership"}


def is_allowed(name: str) -> bool:
    return (name in ALLOWED or name in PURE_EXTRA
            or any(name == p or name.startswith(p + ".") for p in PURE_PACKAGES))


def test_node_core_imports_only_pure_modules_when_scanning_every_module() -> None:
    """concord/node/core, the driver, promotion and membership import no IO, clock or rng."""
    offenders = [f"{path.name}: {name}" for path in PURE_MODULES
                 for name in imported_modules(path) if not is_allowed(name)]
    assert [] == offenders


def test_io_modules_are_rejected_when_checking_the_node_allow_list() -> None:
    """The check can fail: the worker's own imports (zmq, time, shm) are refused."""
    worker = ROOT / "node" / "raft_worker.py"
    refused = {n for n in imported_modules(worker) if not is_allowed(n)}
    assert {"zmq", "time", "concord.shm.publisher"} <= refused
