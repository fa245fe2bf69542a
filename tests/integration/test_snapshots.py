"""The raft worker's durable snapshots on a real node: fork, WAL compaction, restart, retry."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from tests.helpers import wait_until
from tests.integration.cluster import Cluster, as_int
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _snapshots(c: Cluster, nid: str) -> list[int]:
    return sorted(int(p.name.split("-")[0], 16) for p in (c.nodes[nid].data_dir / "snap").glob("*.snap"))


def _first_wal_index(c: Cluster, nid: str) -> int:
    """The first index the oldest WAL segment holds (its name: <seq>-<first index>.wal)."""
    names = sorted(p.name for p in (c.nodes[nid].data_dir / "wal").glob("*.wal"))
    return int(names[0].split(".")[0].split("-")[1], 16) if names else 0


def _raft_pid(c: Cluster, nid: str) -> int:
    status = c.status(nid)
    assert status is not None
    return as_int(status["pid"])


@pytest.mark.timeout(120)
def test_node_snapshots_compacts_its_wal_and_restarts_from_the_snapshot_when_entries_pile_up(
    cluster: ClusterFactory,
) -> None:
    """The worker's forked snapshots: the writer prunes to keep_snapshots and deletes covered
    WAL segments; a restart starts from the newest snapshot and serves every key."""
    c = cluster(1, storage={"snapshot_entries": 40, "segment_bytes": 4096, "keep_snapshots": 2})
    leader = c.wait_leader()
    for i in range(300):
        reply = c.request(leader, {"op": "put", "key": f"k{i:04d}", "value": {"i": i, "pad": "p" * 40}})
        assert reply.get("ok"), reply
    wait_until(lambda: len(_snapshots(c, leader)) == 2 and _first_wal_index(c, leader) > 1, 20,
               lambda: f"snapshots={_snapshots(c, leader)} first_wal_index={_first_wal_index(c, leader)}")
    newest = _snapshots(c, leader)[-1]
    assert newest >= 240
    log = c.nodes[leader].log_path.read_text()
    assert "snapshot written index=" in log and "snapshot taken index=" in log
    assert "state hash mismatch" not in log
    c.stop()
    c.nodes[leader].launch()
    c.nodes[leader].wait_ready()
    leader = c.wait_leader()
    log = c.nodes[leader].log_path.read_text()
    assert f"snapshot_index={newest}" in log.split("raft worker started")[-1].splitlines()[0]
    for i in range(300):
        reply = c.request(leader, {"op": "get", "key": f"k{i:04d}", "consistency": "strong"})
        assert {"i": i, "pad": "p" * 40} == reply.get("value"), reply


@pytest.mark.timeout(180)
def test_snapshot_is_retried_when_its_child_is_killed(cluster: ClusterFactory) -> None:
    """SIGKILL of the forked snapshot child: a WARNING, no temp file, the node serves on,
    and a later snapshot is written; no child outlives the node (teardown checks)."""
    c = cluster(1, storage={"snapshot_entries": 1_000_000, "snapshot_bytes": 1_000_000})
    leader = c.wait_leader()
    raft = psutil.Process(_raft_pid(c, leader))
    killed: list[int] = []
    batch = 0

    def kill_a_child() -> bool:
        nonlocal batch
        items = [[f"b{batch}-{j}", os.urandom(600).hex()] for j in range(200)]
        batch += 1
        assert c.request(leader, {"op": "put_many", "items": items}, timeout_ms=10_000).get("ok")
        for child in raft.children():
            try:
                os.kill(child.pid, signal.SIGKILL)  # the worker's own snapshot child
                killed.append(child.pid)
            except ProcessLookupError:
                pass
        return bool(killed)

    wait_until(kill_a_child, 60, lambda: f"batches={batch} snapshots={_snapshots(c, leader)}")
    wait_until(lambda: "snapshot failed, will retry" in c.nodes[leader].log_path.read_text(), 20,
               lambda: "no failure logged")
    before = _snapshots(c, leader)

    def retried() -> bool:
        nonlocal batch
        items = [[f"b{batch}-{j}", os.urandom(600).hex()] for j in range(200)]
        batch += 1
        assert c.request(leader, {"op": "put_many", "items": items}, timeout_ms=10_000).get("ok")
        return bool(set(_snapshots(c, leader)) - set(before))

    wait_until(retried, 60, lambda: f"snapshots={_snapshots(c, leader)} before={before}")
    assert [] == list((c.nodes[leader].data_dir / "snap").glob("*.tmp"))
    assert raft.is_running() and raft.pid == _raft_pid(c, leader)
