"""
Wrong clocks: one node of three runs under libfaketime (Debian package `faketime`) with
its wall clock moved at run time (FAKETIME_TIMESTAMP_FILE + FAKETIME_NO_CACHE=1): an hour
ahead, an hour behind, and jumping both ways, while it leads and while it follows.

NB: libfaketime also fakes CLOCK_MONOTONIC (and _RAW, BOOTTIME) unless
FAKETIME_DONT_FAKE_MONOTONIC=1. A real clock fault (an NTP step, a wrong RTC) moves only
CLOCK_REALTIME, so the node runs with FAKETIME_DONT_FAKE_MONOTONIC=1: entries are stamped
with the skewed wall clock, while the lease, ticks and deadlines run on CLOCK_MONOTONIC.

Checked: TTL expiry is identical on every node (same state hash, same live keys), a node
whose clock is an hour ahead serves a TTL key with the same remaining TTL as the others
at every consistency level (reads evaluate TTLs at cluster time, never at the host's wall
clock: docs/formats/shm.md, "Cluster time"), and no stale `leader` read is served (a recorded history is checked for linearizability), also
when the leader's clock steps back an hour and it is then cut off from the others.

Skipped when libfaketime is missing, except under CI=true (.ci/run installs it), where
its absence fails the test.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.cluster import DEV_SHM, Cluster
from tests.integration.conftest import ClusterFactory
from tests.integration.history import History, Workload, acked_present

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAKE = "n1"


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    if found:
        return found[0]
    if os.environ.get("CI") == "true":
        pytest.fail("libfaketime is not installed (.ci/run installs the Debian package faketime)")
    pytest.skip("libfaketime is not installed: apt-get install faketime (CI installs it)")


def set_offset(path: Path, offset: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(offset + "\n")
    os.replace(tmp, path)


def transfer_to(c: Cluster, target: str) -> None:
    def leads() -> bool:
        leader = c.leader()
        if leader == target:
            return True
        if leader is not None:
            c.request(leader, {"op": "transfer_leader", "member_id": target})
        return False

    wait_until(leads, 20, lambda: f"statuses={c.statuses()}")


def fault(c: Cluster, command: dict[str, object]) -> None:
    for nid in c.ids:
        assert True is c.request(nid, {"op": "fault", "command": command})["ok"]


def live_keys(c: Cluster, nid: str) -> list[str]:
    reply = c.request(nid, {"op": "keys", "prefix": "ttl-", "consistency": "eventual", "limit": 1000})
    assert reply["ok"], reply
    keys = reply["keys"]
    assert isinstance(keys, list)
    return sorted(str(k) for k in keys)


def read_ttl(c: Cluster, nid: str, key: str, consistency: str) -> float | None:
    """The remaining TTL `nid` serves for `key` (None: not_found)."""
    reply = c.request(nid, {"op": "get", "key": key, "consistency": consistency, "meta": True})
    if reply.get("error") == "not_found":
        return None
    assert reply["ok"] and reply["value"] == key, (nid, consistency, reply)
    ttl = reply["ttl"]
    assert isinstance(ttl, (int, float)), reply
    return float(ttl)


def ttl_served_alike_when_one_clock_is_ahead(c: Cluster, offset_file: Path) -> None:
    """
    n1 follows with its wall clock an hour ahead; n2 leads on a true clock and writes a
    key with 30 minutes to live. Every node, n1 included, serves it at every read level
    with the same remaining TTL (a wall-clock rule hid it on n1: 30 min < 1 h of skew).
    """
    set_offset(offset_file, "+1h")
    transfer_to(c, "n2")
    key = "skew-ttl"
    assert c.request("n2", {"op": "put", "key": key, "value": key, "ttl": 1800}, retries=3)["ok"]
    c.wait_converged()

    def every_node_answers() -> bool:  # read workers connect to the front door after start-up
        replies = [c.request(nid, {"op": "get", "key": key, "consistency": "eventual"}) for nid in c.ids]
        return all(r.get("ok") or r.get("error") == "not_found" for r in replies)

    wait_until(every_node_answers, 20, "a node's read workers never answered")
    for consistency in ("eventual", "strong"):
        ttls = {nid: read_ttl(c, nid, key, consistency) for nid in c.ids}
        assert all(t is not None for t in ttls.values()), (consistency, ttls)
        values = [t for t in ttls.values() if t is not None]
        # Read one after the other (seconds apart at most on a loaded host): the same
        # cluster time, not one an hour ahead.
        assert max(values) - min(values) < 10 and 1780 < min(values) <= 1800, (consistency, ttls)
    set_offset(offset_file, "+0")


def cut_off_after_step_back(c: Cluster, h: History, offset_file: Path, key: str) -> int:
    """n1 leads with a lease, steps its wall clock back 1 h, is partitioned; returns reads it served."""
    set_offset(offset_file, "+0")
    transfer_to(c, FAKE)
    wait_until(lambda: (st := c.status(FAKE)) is not None and st["lease"], 10, "n1 never got a lease")
    set_offset(offset_file, "-1h")
    fault(c, {"cmd": "partition", "a": [FAKE], "b": ["n2", "n3"]})
    cut_at = time.monotonic()
    served = 0
    new: str | None = None
    j = 0
    while time.monotonic() - cut_at < 2.5:
        j += 1
        if new is None:
            new = c.leader(["n2", "n3"])
        elif h.put(new, key, f"{key}-{j}", timeout_ms=300) is None:
            new = None
        for _ in range(3):
            if h.get(FAKE, key, "leader", timeout_ms=300) is not None:
                served += 1
    fault(c, {"cmd": "heal"})
    set_offset(offset_file, "+0")
    return served


@pytest.mark.timeout(150)
def test_ttl_identical_and_no_stale_leader_read_when_one_clock_jumps(cluster: ClusterFactory, tmp_path: Path) -> None:
    """n1's wall clock +1h, -1h, jumping both ways, leading and following: same TTL expiry everywhere, linearizable reads."""
    lib = libfaketime()
    offset_file = tmp_path / "faketime-n1"
    set_offset(offset_file, "+0")
    c = cluster(3, start=False, faults={"enabled": True})
    c.node_env[FAKE] = {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(offset_file),
                        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    try:
        c.start()
        run_clock_phases(c, offset_file)
    finally:
        c.stop()
        remove_libfaketime_segments(c)


def remove_libfaketime_segments(c: Cluster) -> None:
    """
    libfaketime (0.9.10) preloaded into a process tree creates /dev/shm/faketime_shm_<pid>
    and sem.faketime_sem_<pid> for its top process (the supervisor; the children attach)
    and never removes them: remove ours.
    """
    for pid in c.nodes[FAKE].supervisor_pids:
        for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
            (DEV_SHM / name).unlink(missing_ok=True)


def run_clock_phases(c: Cluster, offset_file: Path) -> None:
    # First, while every leader time so far is true time (once n1 leads an hour ahead,
    # leader time stays an hour ahead: a leader stamps max(previous, wall)).
    ttl_served_alike_when_one_clock_is_ahead(c, offset_file)
    h = History(c)
    w = Workload(h)
    phases = ["+1h", "-1h", "+0", "-1h", "+1h", "-2h", "+0"]
    for i, offset in enumerate(phases):
        set_offset(offset_file, offset)
        transfer_to(c, FAKE if i % 2 == 0 else "n2")
        leader = c.wait_leader()
        for ttl in (0.3, 1.0, 7200):
            reply = c.request(leader, {"op": "put", "key": f"ttl-{i}-{ttl}", "value": offset, "ttl": ttl})
            assert reply.get("ok") or reply.get("error") in ("not_leader", "no_leader"), reply
        w.run_for(1.0)

    # The leader's clock steps back an hour, then it is cut off: its lease must end on
    # time (it is measured on CLOCK_MONOTONIC), not an hour later. Three rounds: the
    # window in which a stretched lease would show (the others elected a new leader and
    # wrote, the old one has not yet stepped down) is short.
    served = 0
    for rnd in range(3):
        served += cut_off_after_step_back(c, h, offset_file, f"z{rnd}")
    c.wait_leader()
    c.wait_converged()  # same applied index and state hash: TTL expiry decided identically
    expired_everywhere = {nid: live_keys(c, nid) for nid in c.ids}
    assert 1 == len({tuple(v) for v in expired_everywhere.values()}), expired_everywhere
    checked = acked_present(c, h)
    result = h.check()
    print(f"\nclock phases {phases} on {FAKE}, then -1h and cut off: reads served by the cut-off "
          f"node={served}; live ttl keys on every node={len(expired_everywhere[FAKE])}; "
          f"keys checked={checked} linearizable_keys={len(result.keys)} {h.counts()} errors={h.errors}")
