"""The `cluster(n=3, **overrides)` factory fixture (docs/contributing.md "Tests")."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """
    Start real clusters: `cluster(n=3, storage={"snapshot_entries": 50})`. Every cluster
    made is stopped at teardown (SIGTERM, wait, SIGKILL), then the test fails if any
    process it started is alive, or any /dev/shm segment or ipc folder of a supervisor that
    was not SIGKILLed remains (what SIGKILLed ones left is removed).
    """
    made: list[Cluster] = []

    def make(n: int = 3, start: bool = True, read_workers: int = 1,
             ids: Sequence[str] | None = None, **overrides: Mapping[str, object]) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", n, read_workers, ids, **overrides)
        c.tmp_path.mkdir(parents=True)
        made.append(c)
        return c.start() if start else c

    yield make
    for c in made:
        c.stop()
    for c in made:
        pids, segments = c.leftovers()
        folders = [f for node in c.nodes.values() for f in node.ipc_folders()]
        for node in c.nodes.values():
            node.kill_tree()  # belt and braces: nothing of ours may outlive the test
        assert [] == pids, "processes left running"
        c.remove_killed_leftovers()
        assert [] == segments, "shared-memory segments left behind"
        assert [] == folders, "ipc folders of stopped supervisors left behind"
