"""Crashes and partitions of a real 3-node cluster: no acknowledged write is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from concord.errors import RequestTimeoutError
from concord.shm.layout import SegmentNames
from concord.shm.view import ShmView
from tests.helpers import wait_until
from tests.integration.cluster import Cluster, as_int
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Writer:
    """
    A client that writes `w<i> = i` in order with exactly-once sessions, following leader
    hints and trying other nodes on silence; records what was acknowledged and when.
    """

    def __init__(self, c: Cluster, client_id: str = "writer") -> None:
        self.c = c
        self.client_id = client_id
        self.seq = 0
        self.acked: dict[str, int] = {}
        self.ack_times: list[float] = []
        self.target = c.wait_leader()

    def put(self, i: int, deadline_s: float = 20.0) -> None:
        self.seq += 1
        msg = {"op": "put", "key": f"w{i}", "value": i, "client_id": self.client_id,
               "seq": self.seq}
        end = time.monotonic() + deadline_s
        candidates = list(self.c.ids)
        while time.monotonic() < end:
            if not self.c.nodes[self.target].running:
                self.target = candidates[(candidates.index(self.target) + 1) % len(candidates)]
                continue
            try:
                reply = self.c.request(self.target, msg, timeout_ms=400)
            except RequestTimeoutError:
                self.target = candidates[(candidates.index(self.target) + 1) % len(candidates)]
                continue
            if reply.get("ok"):
                self.acked[f"w{i}"] = i
                self.ack_times.append(time.monotonic())
                return
            hint = reply.get("leader")
            if reply.get("error") == "not_leader" and isinstance(hint, str):
                self.target = next(n for n, p in self.c.nodes.items() if p.client == hint)
            else:  # no_leader (an election is running) or an unknown outcome: try on
                self.target = candidates[(candidates.index(self.target) + 1) % len(candidates)]
        raise AssertionError(f"write w{i} not acknowledged within {deadline_s}s")


def assert_all_present(c: Cluster, node_id: str, acked: dict[str, int]) -> None:
    keys = sorted(acked)
    for start in range(0, len(keys), 400):
        chunk = keys[start:start + 400]
        msg = {"op": "get_many", "keys": chunk, "consistency": "strong"}
        replies: list[dict[str, object]] = []

        def answered() -> bool:
            try:
                replies[:] = [c.request(node_id, msg)]
            except RequestTimeoutError:
                return False
            return replies[0].get("error") not in ("no_leader", "not_leader", "timeout")

        wait_until(answered, 15, lambda: f"{node_id}: {replies}")
        assert {k: acked[k] for k in chunk} == replies[0]["values"]


@pytest.mark.timeout(150)
def test_new_leader_takes_writes_when_leader_is_killed(cluster: ClusterFactory) -> None:
    """SIGKILL of the leader: a new leader within ~one election timeout; nothing lost;
    the old leader restarts and catches up through a snapshot (its log was compacted)."""
    c = cluster(3, storage={"snapshot_entries": 40})
    w = Writer(c)
    for i in range(30):
        w.put(i)
    old = c.wait_leader()
    killed_at = time.monotonic()
    c.nodes[old].kill_tree()
    w.put(30)
    failover_s = w.ack_times[-1] - killed_at
    print(f"failover: first write acknowledged {failover_s:.3f}s after SIGKILL of the "
          f"leader (election timeout {10 * 0.05:.2f}..{20 * 0.05:.2f}s)")
    assert failover_s < 5.0
    # Enough entries for snapshots to compact the log past where the old leader stopped
    # (the driver keeps 100 entries below a snapshot for slow followers).
    for i in range(31, 260):
        w.put(i)
    new = c.wait_leader([n for n in c.ids if n != old])
    status = c.status(new)
    assert status is not None and as_int(status["first_index"]) > 40
    c.restart(old)
    c.wait_converged()
    assert "snapshot installed" in c.nodes[old].stderr()
    for nid in c.ids:
        assert_all_present(c, nid, w.acked)


@pytest.mark.timeout(150)
def test_acknowledged_writes_survive_when_every_process_is_killed(cluster: ClusterFactory) -> None:
    """SIGKILL of every process of every node at once, then restart: nothing acknowledged lost."""
    c = cluster(3, storage={"snapshot_entries": 25})
    w = Writer(c)
    for i in range(60):
        w.put(i)
    for node in c.nodes.values():
        node.remember_children()
    # All at once: one pass of SIGKILL over every pid before waiting on any.
    pids = [p for node in c.nodes.values() for p in node.alive_pids()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for node in c.nodes.values():
        node.kill_tree()
    for nid in c.ids:
        c.nodes[nid].launch()
    for nid in c.ids:
        c.nodes[nid].wait_ready()
    leader = c.wait_leader()
    assert_all_present(c, leader, w.acked)
    w.target = leader
    w.put(60)
    c.wait_converged()


@pytest.mark.timeout(120)
def test_eventual_reads_never_fail_when_raft_worker_is_killed(cluster: ClusterFactory) -> None:
    """SIGKILL of the raft worker alone: it is restarted; reads from shm go on throughout."""
    c = cluster(3, storage={"snapshot_entries": 20})
    w = Writer(c)
    for i in range(50):
        w.put(i)
    victim = c.wait_leader()
    c.wait_converged()
    status = c.status(victim)
    assert status is not None
    old_pid = as_int(status["pid"])
    shm = status["shm"]
    assert isinstance(shm, dict)
    # Attach the store the way a same-host client does (read-only, never unlinked).
    view = ShmView.attach(SegmentNames(str(shm["node"]), str(shm["token"])))
    applied = [view.applied_index_now()]
    os.kill(old_pid, signal.SIGKILL)
    reads = 0
    restarted_at: float | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = c.request(victim, {"op": "get", "key": "w49", "consistency": "eventual"},
                          timeout_ms=2000)
        assert 49 == reply.get("value"), reply
        reads += 1
        applied.append(view.applied_index_now())
        assert applied[-2] <= applied[-1], "the published state went backwards"
        if restarted_at is None:
            st = c.status(victim)
            if st is not None and as_int(st["pid"]) != old_pid:
                restarted_at = time.monotonic()
        elif time.monotonic() - restarted_at > 0.5:
            break
    assert restarted_at is not None, "raft worker was not restarted"
    assert reads > 10
    w.put(50)
    c.wait_converged()
    assert_all_present(c, victim, w.acked)
    wait_until(lambda: view.applied_index_now() > applied[0], 10, "shm not updated after restart")
    view.close()


@pytest.mark.timeout(150)
def test_old_leader_stops_serving_when_partitioned_from_majority(cluster: ClusterFactory) -> None:
    """The leader cut off by the fault filter: the majority elects another; the old one
    refuses writes and leader reads; after healing every node converges."""
    c = cluster(3, faults={"enabled": True})
    w = Writer(c)
    for i in range(10):
        w.put(i)
    old = c.wait_leader()
    rest = [n for n in c.ids if n != old]
    cut = c.request(old, {"op": "fault", "command": {"cmd": "partition", "a": [old], "b": rest}})
    assert True is cut["ok"]
    for nid in rest:
        c.request(nid, {"op": "fault", "command": {"cmd": "partition", "a": [old], "b": rest}})
    new = c.wait_leader(rest)
    assert old != new
    for i in range(10, 20):
        w.target = new
        w.put(i)

    def old_refuses() -> bool:
        try:
            write = c.request(old, {"op": "put", "key": "lost", "value": 1}, timeout_ms=3000)
        except RequestTimeoutError:
            write = {"ok": False}  # not acknowledged either
        lease = c.request(old, {"op": "get", "key": "w0", "consistency": "leader"})
        return not write.get("ok") and lease.get("error") in ("not_leader", "no_leader")

    wait_until(old_refuses, 15, "old leader still acknowledges")
    for nid in c.ids:
        c.request(nid, {"op": "fault", "command": {"cmd": "heal"}})
    c.wait_leader()
    c.wait_converged()
    for nid in c.ids:
        assert_all_present(c, nid, w.acked)
        assert "not_found" == c.request(nid, {"op": "get", "key": "lost",
                                              "consistency": "strong"})["error"]
