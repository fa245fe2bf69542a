"""Whole-cluster crash and restart (issue 12 #1): a leader every time, nothing lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from concord.chaos.restarts import RestartRounds
from concord.kv.machine import KvStateMachine
from concord.storage.recovery import wal_dir
from concord.storage.replica import apply_entry
from concord.storage.walread import read_wal
from tests.integration.cluster import as_int, as_maps
from tests.integration.conftest import ClusterFactory

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "restart-no-leader"


def _fixture_state(node_id: str, applied: int) -> KvStateMachine:
    """The fixture node's log replayed up to `applied` (or its end)."""
    machine = KvStateMachine()
    for entry in read_wal(wal_dir(FIXTURE / f"{node_id}.data"), repair=False).entries:
        if entry.index > applied:
            break
        apply_entry(machine, entry)
    return machine


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fixture_cluster_elects_a_leader_and_serves_every_key_when_its_snapshots_have_no_voters(
    cluster: ClusterFactory,
) -> None:
    """The data dirs of a cluster left leaderless (snapshots with an empty voter list,
    written before the fix) elect a leader and serve every key of the log."""
    c = cluster(3, start=False)
    for nid in c.ids:
        shutil.copytree(FIXTURE / f"{nid}.data", c.tmp_path / "data" / nid)
    c.start()  # waits for a leader every node agrees on
    leader = c.wait_leader()
    c.wait_converged()
    status = c.status(leader)
    assert status is not None
    assert [("n1", "voter"), ("n2", "voter"), ("n3", "voter")] == sorted(
        (str(m["id"]), str(m["role"])) for m in as_maps(status["members"]))
    expected = _fixture_state(leader, as_int(status["applied"]))
    keys = list(expected.iter_keys())
    assert 32 == len(keys)
    reply = c.request(leader, {"op": "get_many", "keys": keys, "consistency": "strong"})
    assert reply.get("ok"), reply
    assert expected.get_many(keys, expected.last_timestamp_ms)["values"] == reply["values"]
    reply = c.request(leader, {"op": "put", "key": "after-restart", "value": 1})
    assert reply.get("ok"), reply


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_every_acknowledged_write_survives_and_a_leader_is_elected_when_every_process_is_killed_in_rounds(
    tmp_path: Path,
) -> None:
    """Write, snapshot, SIGKILL every process of every node at once, restart, in rounds:
    the first round kills before any snapshot (the next life starts without one), the
    others right after every node wrote one. Every round elects a leader, takes a new
    write, loses no acknowledged write, and no snapshot lacks a membership."""
    rounds = RestartRounds(tmp_path, nodes=3, writers=3, snapshot_entries=150)
    results = []
    try:
        rounds.start()
        for number, snapshot in enumerate((False, True, True), start=1):
            result = rounds.run_round(number, snapshot)
            results.append(result)
            assert result.ok, result
            assert snapshot == result.snapshot, result
    finally:
        pids, segments = rounds.close()
    assert [] == pids, "processes left running"
    assert [] == segments, "shared-memory segments left behind"
    assert 0 < results[-1].acked
