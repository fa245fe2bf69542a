"""The public API surface."""

from __future__ import annotations

import concord


def test_public_names_are_exactly_all() -> None:
    """Every name in concord.__all__ exists, and nothing public is missing from it."""
    for name in concord.__all__:
        assert hasattr(concord, name), name
    public = {n for n in vars(concord) if not n.startswith("_")} - {"annotations"}
    submodules = {"errors", "ids", "raft", "kv", "shm", "storage", "net", "node", "client", "sim"}
    assert set() == public - set(concord.__all__) - submodules
