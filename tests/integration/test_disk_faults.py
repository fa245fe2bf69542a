"""
Disk faults on real nodes through the test-only seam (concord/storage/faults.py,
`faults.disk_file`): ENOSPC/EIO on WAL append, WAL fdatasync and snapshot write, and
fdatasync stalls. The node never acknowledges an unpersisted write, refuses writes with
`storage_unavailable` while its WAL fails, says so in `status` and its log, and recovers
without a restart; the figures are printed (run with -s to see them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from concord.sim.history import ABSENT
from tests.helpers import wait_until
from tests.integration.cluster import Cluster, StartFailed
from tests.integration.conftest import ClusterFactory
from tests.integration.history import History, Workload, acked_present, per_node_fault_files, set_disk_faults

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def storage(c: Cluster, node: str) -> dict[str, object]:
    st = c.status(node)
    assert st is not None
    value = st["storage"]
    assert isinstance(value, dict)
    return value


def faulty_cluster(cluster: ClusterFactory, tmp_path: Path, n: int, **overrides: object) -> tuple[Cluster, Path]:
    fault_file = tmp_path / "disk-faults.json"
    set_disk_faults(fault_file)
    c = cluster(n, faults={"enabled": True, "disk_file": str(fault_file)}, **overrides)
    return c, fault_file


@pytest.mark.timeout(90)
@pytest.mark.parametrize("site, error", [("wal_write", "ENOSPC"), ("wal_sync", "EIO")])
def test_writes_refused_then_recovered_without_restart_when_wal_fails(
    cluster: ClusterFactory, tmp_path: Path, site: str, error: str
) -> None:
    """A failing WAL: no ack, storage_unavailable, status and log say so; space returns: writes resume; nothing acked lost."""
    c, fault_file = faulty_cluster(cluster, tmp_path, 1)
    h = History(c)
    for i in range(20):
        assert (h.put("n1", f"k{i}", i) or {}).get("ok")
    pid = c.status("n1")["pid"]  # type: ignore[index]
    set_disk_faults(fault_file, **{site: error})
    injected_at = time.monotonic()
    # The write that meets the fault is never acknowledged while the disk is bad. NB: the
    # node's own hard-state write after the last put (its commit index) can meet the fault
    # first; then this put is refused before it is proposed (storage_unavailable).
    during = h.put("n1", "k-during", "x", timeout_ms=500)
    assert during is None or h.ops[-1].outcome.value != "ok"
    refused_first = during is not None and during.get("error") == "storage_unavailable"
    wait_until(lambda: storage(c, "n1")["wal_error"], 10, lambda: f"storage={storage(c, 'n1')}")
    st = storage(c, "n1")
    assert False is st["ok"] and error in str(st["wal_error"])
    refused = h.put("n1", "k-refused", "y")
    assert refused is not None and "storage_unavailable" == refused["error"], refused
    assert "cannot persist writes" in str(refused["message"])
    log = c.nodes["n1"].log_path.read_text()
    assert "wal write failed" in log and "storage failing: refusing writes" in log
    for i in range(5):
        assert h.get("n1", f"k{i}") == i  # committed data stays readable
    set_disk_faults(fault_file)
    cleared_at = time.monotonic()
    wait_until(lambda: storage(c, "n1")["ok"], 10, lambda: f"storage={storage(c, 'n1')}")
    recovered = time.monotonic() - cleared_at
    assert (h.put("n1", "k-after", "z") or {}).get("ok")
    assert pid == c.status("n1")["pid"]  # type: ignore[index]  # recovered without a restart
    assert "wal writable again" in c.nodes["n1"].log_path.read_text()
    # The batch that met the fault was rewritten from memory into a fresh segment; a
    # refused write was never proposed, so nothing of it was applied.
    assert h.get("n1", "k-during") == (ABSENT if refused_first else "x")
    assert h.get("n1", "k-refused") is not None and h.ops[-1].result != "y"
    # Everything acknowledged survives SIGKILL: the sealed segment replays cleanly.
    c.nodes["n1"].kill_tree()
    c.remove_killed_leftovers()
    c.restart("n1")
    c.wait_leader()
    for op in h.ops:
        if op.kind.value == "put" and op.outcome.value == "ok":
            assert h.get("n1", op.key, "strong", timeout_ms=3000) == op.args[0]
    h.check()
    print(f"\ndisk fault {site}={error}: injected_for_s={cleared_at - injected_at:.2f} "
          f"recovery_s={recovered:.3f} {h.counts()} errors={h.errors}")


@pytest.mark.timeout(90)
def test_snapshot_failure_reported_and_cleared_when_snapshot_write_fails(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    """ENOSPC on snapshot write: writes go on, status reports it; space returns: the next snapshot clears it."""
    c, fault_file = faulty_cluster(cluster, tmp_path, 1, storage={"snapshot_entries": 20})
    h = History(c)
    set_disk_faults(fault_file, snapshot_write="ENOSPC")
    i = 0

    def snapshot_failed() -> bool:
        nonlocal i
        i += 1
        assert (h.put("n1", f"s{i}", i) or {}).get("ok")  # the WAL still works
        return storage(c, "n1")["snapshot_error"] is not None

    wait_until(snapshot_failed, 30, lambda: f"storage={storage(c, 'n1')}")
    st = storage(c, "n1")
    assert False is st["ok"] and None is st["wal_error"] and "No space" in str(st["snapshot_error"])
    assert [] == list((c.nodes["n1"].data_dir / "snap").glob("*.tmp"))  # the temp file went
    set_disk_faults(fault_file)
    cleared_at = time.monotonic()

    def cleared() -> bool:
        nonlocal i
        i += 1
        assert (h.put("n1", f"s{i}", i) or {}).get("ok")
        return bool(storage(c, "n1")["ok"])

    wait_until(cleared, 30, lambda: f"storage={storage(c, 'n1')}")
    assert list((c.nodes["n1"].data_dir / "snap").glob("*.snap"))
    h.check()
    print(f"\nsnapshot_write=ENOSPC: writes={i} recovery_s={time.monotonic() - cleared_at:.3f} {h.counts()}")


@pytest.mark.timeout(120)
def test_leadership_moves_and_nothing_is_lost_when_leader_disk_fills(cluster: ClusterFactory, tmp_path: Path) -> None:
    """ENOSPC on the leader's WAL: it hands leadership over, writes go on elsewhere, it recovers and catches up."""
    c = cluster(3, start=False)
    files = per_node_fault_files(c, tmp_path)
    c.start()
    h = History(c)
    w = Workload(h)
    w.run_for(1.0)
    old = c.wait_leader()
    set_disk_faults(files[old], wal_write="ENOSPC")
    injected_at = time.monotonic()

    def moved() -> str | None:
        h.put(old, "trigger", 1, timeout_ms=300)  # an append meets the fault (an idle WAL writes nothing)
        lead = c.leader()
        return lead if lead is not None and lead != old else None

    new = wait_until(moved, 20, lambda: f"statuses={c.statuses()}")
    moved_s = time.monotonic() - injected_at
    assert storage(c, old)["wal_error"] is not None
    w.run_for(2.0)
    # The failing node never acknowledges on its own: it forwards the write to the
    # healthy leader (raft.forward_to_leader), or refuses it.
    refused = h.put(old, "on-old", 1)
    assert refused is not None and (
        refused.get("ok") or refused["error"] in ("not_leader", "storage_unavailable")), refused
    set_disk_faults(files[old])
    cleared_at = time.monotonic()
    wait_until(lambda: storage(c, old)["ok"], 10, lambda: f"storage={storage(c, old)}")
    recovered_s = time.monotonic() - cleared_at
    w.run_for(1.0)
    c.wait_converged()
    checked = acked_present(c, h)
    h.check()
    log = c.nodes[old].log_path.read_text()
    assert "reason=storage_failing" in log
    print(f"\nleader {old} wal_write=ENOSPC: leadership moved to {new} in {moved_s:.2f}s; "
          f"recovery_s={recovered_s:.3f}; keys_checked_on_every_node={checked} {h.counts()} "
          f"errors={h.errors}")


@pytest.mark.timeout(120)
def test_documented_way_forward_works_when_a_snapshot_is_corrupt_at_start_up(cluster: ClusterFactory) -> None:
    """Every snapshot of n3 damaged: start-up fails naming the file and offset; moving the data dir aside, it rejoins and catches up."""
    c = cluster(3, storage={"snapshot_entries": 20})
    h = History(c)
    w = Workload(h)
    while h.counts()["writes_ok"] < 80:
        w.step()
    c.wait_converged()
    c.stop()
    node = c.nodes["n3"]
    snaps = sorted((node.data_dir / "snap").glob("*.snap"))
    assert snaps
    for snap in snaps:
        raw = bytearray(snap.read_bytes())
        raw[-1] ^= 0xFF  # a flipped bit in the compressed body
        snap.write_bytes(bytes(raw))
    node.launch()
    with pytest.raises(StartFailed) as failed:
        node.wait_ready()
    assert 0 != failed.value.code
    assert str(snaps[0].parent) in failed.value.stderr and "offset" in failed.value.stderr
    assert "Recovering from corruption" in failed.value.stderr
    node.terminate()  # reap the failed supervisor (and close its stdout pipe)
    # The documented way forward (docs/formats/storage.md): move the data dir aside and
    # let the node rejoin from its peers.
    for nid in ("n1", "n2"):
        c.restart(nid)
    node.data_dir.rename(node.data_dir.with_name("n3.corrupt"))
    started = time.monotonic()
    c.restart("n3")
    c.wait_converged()
    rejoined_s = time.monotonic() - started
    checked = acked_present(c, h)
    h.check()
    print(f"\ncorrupt snapshots on n3: start-up refused; rejoined from peers in {rejoined_s:.2f}s; "
          f"keys_checked_on_every_node={checked} {h.counts()}")
