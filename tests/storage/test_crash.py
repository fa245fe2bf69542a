"""SIGKILL of the writer process at many seeded moments never loses an acknowledged record."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import zmq

from concord.ids import NodeId
from concord.node import log_writer as lw
from concord.node.logwriter.ipc import HelloAnswer
from concord.node.worker_snapshots import load_recovered
from concord.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.storage.recovery import RecoveredState, recover
from concord.storage.replica import apply_entry
from concord.storage.snapshot import write_snapshot
from tests.storage.fake_sm import DictMachine
from tests.storage.util import writer_process

SEED = 20261121
KILL_POINTS = 24
CS = ConfState(voters=(NodeId("n1"),))

State = tuple[tuple[Entry, ...], HardState]


def _next_request(rng: random.Random, state: State) -> tuple[list[Entry], HardState | None, bool, State]:
    """A random Ready-like request and the state after it: appends, conflicting rewrites, hard states."""
    log, hs = list(state[0]), state[1]
    last = log[-1].index if log else 0
    roll = rng.random()
    if roll < 0.15 and last > hs.commit:
        term = hs.term + 1
        start = rng.randint(hs.commit + 1, last)  # rewrite an uncommitted suffix (Raft §5.3)
        entries = [Entry(term, i, data=rng.randbytes(rng.randint(0, 200)), timestamp_ms=i) for i in range(start, start + rng.randint(1, 5))]
        hs = HardState(term, NodeId("n2"), hs.commit)
        del log[start - 1 :]
        log += entries
        return entries, hs, True, (tuple(log), hs)
    if roll < 0.25:
        hs = HardState(hs.term, hs.vote, rng.randint(hs.commit, last))
        return [], hs, False, (tuple(log), hs)  # commit-only: written, not synced
    term = max(hs.term, 1)
    entries = [
        Entry(term, i, data=rng.randbytes(rng.randint(0, 300)), timestamp_ms=i) for i in range(last + 1, last + 1 + rng.randint(1, 20))
    ]
    new_hs = hs if hs.term == term else HardState(term, NodeId("n1"), hs.commit)
    log += entries
    return entries, (new_hs if new_hs != hs or rng.random() < 0.3 else None), True, (tuple(log), new_hs)


def _as_state(recovered: RecoveredState | HelloAnswer) -> State:
    return tuple(recovered.entries), recovered.hard_state


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_acknowledged_records_survive_when_writer_is_killed_at_random_moments(tmp_path: Path, short_dir: Path) -> None:
    """24 seeded SIGKILLs mid-stream: recovery always equals the state after some request at or past the last ack."""
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    endpoint = f"ipc://{short_dir}/w.sock"
    settings = lw.WriterSettings(segment_bytes=4096)
    ctx = zmq.Context()
    allowed: list[State] = [((), HardState())]  # states the next recovery may legally show
    total_acked = 0
    try:
        for round_no in range(KILL_POINTS):
            client = lw.LogWriterClient(endpoint, ctx)
            try:
                with writer_process(tmp_path, endpoint, settings) as proc:
                    state = _as_state(client.handshake(20))
                    assert state in allowed, f"round {round_no}: recovered state is not one the writer may have made durable"
                    n_requests = rng.randint(5, 80)
                    kill_at_ack = rng.randint(0, n_requests)
                    window = rng.choice([1, 3, 8, 32])
                    states = [state]
                    acked = sent = 0
                    while True:
                        while sent < n_requests and sent - acked < window:
                            entries, hs, sync, state = _next_request(rng, state)
                            sent += 1
                            client.persist(sent, entries, hs, None, sync)
                            states.append(state)
                        if acked >= kill_at_ack or acked == n_requests:
                            break
                        events = client.recv(timeout_ms=10_000)
                        assert events, f"round {round_no}: writer stopped answering (acked={acked} sent={sent})"
                        for event in events:
                            assert isinstance(event, lw.Persisted)
                            acked = max(acked, event.number)
                        if acked >= kill_at_ack:
                            break
                    # SIGKILL now, with (sent - acked) requests still in flight.
                    assert proc.pid is not None
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.join(10)
                    total_acked += acked
                    allowed = states[acked:]
            finally:
                client.close()
        final = _as_state(recover(tmp_path))
        assert final in allowed
        assert total_acked > KILL_POINTS
    finally:
        ctx.term()


def _take_snapshot(tmp_path: Path, client: lw.LogWriterClient, acked: State, last_snap: int) -> int:
    """
    As the raft worker: every 15 committed entries, a snapshot of the committed (and
    acknowledged, so durable) prefix, written as its forked child does, then SNAPSHOT_TAKEN.
    Returns the index of the last snapshot taken.
    """
    log, hs = acked
    if hs.commit - last_snap < 15:
        return last_snap
    machine = DictMachine()
    for entry in log[: hs.commit]:
        apply_entry(machine, entry)
    meta = SnapshotMeta(hs.commit, log[hs.commit - 1].term, CS)
    write_snapshot(tmp_path / "snap", Snapshot(meta, machine.snapshot()), machine.state_hash())
    client.snapshot_taken(meta, machine.state_hash())
    return hs.commit


def _replica_matches(recovered: RecoveredState, allowed: list[State]) -> bool:
    """Recovered = some allowed state, seen through its snapshot (entries <= S folded into it)."""
    snap_index = recovered.snapshot.meta.index if recovered.snapshot is not None else 0
    for log, hs in allowed:
        if snap_index > hs.commit or snap_index > len(log):
            continue
        if tuple(recovered.entries) != log[snap_index:]:
            continue
        if recovered.hard_state != HardState(hs.term, hs.vote, max(hs.commit, snap_index)):
            continue
        if recovered.snapshot is not None:
            machine = DictMachine()
            for entry in log[:snap_index]:
                apply_entry(machine, entry)
            if machine.snapshot() != recovered.snapshot.data or log[snap_index - 1].term != recovered.snapshot.meta.term:
                continue
        return True
    return False


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_acknowledged_records_and_snapshots_survive_when_writer_is_killed_during_snapshots(
    tmp_path: Path, short_dir: Path
) -> None:
    """20 seeded SIGKILLs while the worker's snapshots arrive often (SNAPSHOT_TAKEN) and old
    segments and snapshots are removed: nothing acked is lost."""
    seed = SEED + 1
    rng = random.Random(seed)
    print(f"seed={seed}")
    endpoint = f"ipc://{short_dir}/w.sock"
    settings = lw.WriterSettings(segment_bytes=2048)
    ctx = zmq.Context()
    allowed: list[State] = [((), HardState())]
    snapshots_seen = set()
    try:
        for round_no in range(20):
            client = lw.LogWriterClient(endpoint, ctx)
            try:
                with writer_process(tmp_path, endpoint, settings) as proc:
                    # As the raft worker: the snapshot from the file the answer names.
                    recovered, _ = load_recovered(tmp_path, client.handshake(20))
                    assert _replica_matches(recovered, allowed), f"round {round_no}: recovered state was never acknowledged-or-later"
                    last_snap = 0
                    if recovered.snapshot is not None:
                        snapshots_seen.add(recovered.snapshot.meta.index)
                        last_snap = recovered.snapshot.meta.index
                    # Continue from whichever allowed state was recovered.
                    state = next(s for s in allowed if _replica_matches(recovered, [s]))
                    n_requests = rng.randint(5, 60)
                    kill_at_ack = rng.randint(1, n_requests)
                    window = rng.choice([1, 4, 16])
                    states = [state]
                    acked = sent = 0
                    while acked < kill_at_ack:
                        while sent < n_requests and sent - acked < window:
                            entries, hs, sync, state = _next_request(rng, state)
                            sent += 1
                            client.persist(sent, entries, hs, None, sync)
                            states.append(state)
                        events = client.recv(timeout_ms=10_000)
                        assert events, f"round {round_no}: writer stopped answering (acked={acked} sent={sent})"
                        for event in events:
                            if isinstance(event, lw.Persisted):
                                acked = max(acked, event.number)
                        last_snap = _take_snapshot(tmp_path, client, states[acked], last_snap)
                    assert proc.pid is not None
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.join(10)
                    allowed = states[acked:]
            finally:
                client.close()
        assert _replica_matches(recover(tmp_path), allowed)
        assert len(snapshots_seen) >= 3, f"too few snapshots exercised: {sorted(snapshots_seen)}"
    finally:
        ctx.term()
