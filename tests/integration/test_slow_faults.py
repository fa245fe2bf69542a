"""
Slow disk and slow peers on a real 3-node cluster: fdatasync stalls of seconds on the
leader (the test-only disk fault seam) and peer links delayed by seconds (the test-only
link fault filter). Leadership moves or writes wait; nothing acknowledged is lost;
clients see timeouts or refusals, never wrong answers (a recorded history is checked for
linearizability). Run with -s for the figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory
from tests.integration.history import History, Workload, acked_present, per_node_fault_files, set_disk_faults

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(120)
def test_no_wrong_answer_and_nothing_lost_when_leader_fsync_stalls_for_seconds(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    """Every fdatasync of the leader stalls 2 s: writes wait for it (or time out); the history stays linearizable."""
    c = cluster(3, start=False)
    files = per_node_fault_files(c, tmp_path)
    c.start()
    h = History(c)
    w = Workload(h, timeout_ms=5000)
    w.run_for(1.0)
    before = h.counts()
    old = c.wait_leader()
    set_disk_faults(files[old], wal_sync_delay_ms=2000)
    w.run_for(6.0)
    during = {k: v - before[k] for k, v in h.counts().items()}
    set_disk_faults(files[old])
    cleared_at = time.monotonic()
    wait_until(lambda: h.put(c.wait_leader(), "probe", cleared_at) is not None and h.ops[-1].outcome.value == "ok",
               15, lambda: f"statuses={c.statuses()}")
    recovered_s = time.monotonic() - cleared_at
    w.run_for(1.0)
    c.wait_converged()
    checked = acked_present(c, h)
    h.check()
    assert during["writes_ok"] > 0  # writes waited for the stalled fsyncs, then completed
    assert "slow wal flush" in c.nodes[old].log_path.read_text()
    print(f"\nleader {old} fsync stalls 2s for 6s: during={during} leader_after={c.wait_leader()} "
          f"first_write_after_clear_s={recovered_s:.3f} keys_checked_on_every_node={checked} "
          f"total={h.counts()} errors={h.errors}")


def _fault(c: Cluster, ids: list[str], command: dict[str, object]) -> None:
    for nid in ids:
        assert True is c.request(nid, {"op": "fault", "command": command})["ok"]


@pytest.mark.timeout(120)
def test_no_wrong_answer_and_nothing_lost_when_peer_links_are_delayed_by_seconds(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    """The leader's link to one follower delayed 2 s, then all its links both ways: writes go on, leadership moves; no stale read."""
    c = cluster(3, faults={"enabled": True})
    h = History(c)
    w = Workload(h, timeout_ms=1500)
    w.run_for(1.0)
    old = c.wait_leader()
    slow, other = [n for n in c.ids if n != old]
    _fault(c, c.ids, {"cmd": "delay", "src": old, "dst": slow, "ms": 2000})
    mark = h.counts()
    w.run_for(3.0)
    one_link = {k: v - mark[k] for k, v in h.counts().items()}
    assert one_link["writes_ok"] > 0  # the other follower makes the quorum
    # NB: a steady stream of late messages keeps resetting the followers' election
    # timers, so a single slow link only slows writes. Now every link of the leader,
    # both ways, turns slow at once: the followers hear nothing for 2 s and elect a new
    # leader while the old one still believes it leads (and gets its answers 4 s late).
    _fault(c, c.ids, {"cmd": "heal"})
    for follower in (slow, other):
        _fault(c, c.ids, {"cmd": "delay", "src": old, "dst": follower, "ms": 2000})
        _fault(c, c.ids, {"cmd": "delay", "src": follower, "dst": old, "ms": 2000})
    delayed_at = time.monotonic()
    mark = h.counts()
    new = wait_until(lambda: (lead := c.leader([slow, other])) is not None and lead, 20,
                     lambda: f"statuses={c.statuses()}")
    moved_s = time.monotonic() - delayed_at
    w.run_for(4.0)
    both_links = {k: v - mark[k] for k, v in h.counts().items()}
    _fault(c, c.ids, {"cmd": "heal"})
    c.wait_converged()
    checked = acked_present(c, h)
    h.check()
    print(f"\nlinks {old}->{slow}, then {old}->{other} delayed 2s: one_link={one_link} "
          f"all_links_both_ways={both_links} leadership_moved_to={new} in {moved_s:.2f}s "
          f"keys_checked_on_every_node={checked} total={h.counts()} errors={h.errors}")


@pytest.mark.timeout(90)
def test_no_ack_before_the_stalled_fsync_when_node_is_killed_during_the_stall(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    """One node, fdatasync stalled 3 s: a write is not acknowledged within 1 s; SIGKILL mid-stall loses nothing acknowledged."""
    c = cluster(1, start=False)
    files = per_node_fault_files(c, tmp_path)
    c.start()
    h = History(c)
    for i in range(10):
        assert (h.put("n1", f"k{i}", i) or {}).get("ok")
    set_disk_faults(files["n1"], wal_sync_delay_ms=3000)
    stalled = [h.put("n1", f"s{i}", i, timeout_ms=400) for i in range(2)]
    assert [None, None] == stalled, stalled  # silence, not an acknowledgement
    c.nodes["n1"].kill_tree()  # while the writer sleeps in the stalled fdatasync
    c.remove_killed_leftovers()
    set_disk_faults(files["n1"])
    c.restart("n1")
    c.wait_leader()
    checked = acked_present(c, h)
    h.check()
    print(f"\nfsync stalled 3s, SIGKILL mid-stall: acked keys checked={checked} {h.counts()}")
