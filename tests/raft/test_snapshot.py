"""InstallSnapshot (Raft §7), chunked: followers behind the leader's first index."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft import ConfChange, MessageType
from concord.raft.messages import Message
from concord.raft.progress import ProgressState
from tests.raft.network import Network

A, B, C, D = NodeId("a"), NodeId("b"), NodeId("c"), NodeId("d")
VALUES = [b"value-%03d-" % i + b"p" * 80 for i in range(30)]


def lagging_cluster(**overrides: int | bool) -> Network:
    """c misses 30 entries, then a compacts its log past them."""
    net = Network(["a", "b", "c"], 1, None, (), snapshot_chunk_bytes=256, **overrides)
    net.elect("a")
    net.isolate("c")
    for value in VALUES:
        net.propose("a", value)
    net.compact("a", net.committed("a"))
    net.heal()
    return net


def snapshot_chunks(net: Network) -> list[Message]:
    return [m for m in net.delivered if m.type == MessageType.SNAPSHOT]


def test_follower_installs_snapshot_when_behind_first_index() -> None:
    """Raft §7: a follower missing compacted entries receives the snapshot in chunks,
    assembles it, and hands it over once in Ready.snapshot."""
    net = lagging_cluster()
    net.tick_all(3)
    chunks = snapshot_chunks(net)
    first_len = len(chunks[0].snapshot.data) if chunks and chunks[0].snapshot else 0
    assert 256 == first_len
    offsets = [m.snapshot_offset for m in chunks]
    assert list(range(0, 256 * len(chunks), 256)) == offsets
    assert [False] * (len(chunks) - 1) + [True] == [m.snapshot_done for m in chunks]
    installed = [rd.snapshot for rd in net.readys[C] if rd.snapshot is not None]
    assert 1 == len(installed)
    assert net.committed("a") == installed[0].meta.index
    assert VALUES == net.applied[C]
    net.propose("a", b"after")
    assert VALUES + [b"after"] == net.applied[C]
    assert ProgressState.REPLICATE == net.nodes[A].raft.tracker.progress[C].state


def test_transfer_resumes_when_a_chunk_is_lost() -> None:
    """A lost chunk leaves a gap; the follower asks for the missing offset and the
    leader resends from there."""
    net = lagging_cluster()
    dropped: list[int] = []

    def drop_third(m: Message) -> bool:
        if m.type == MessageType.SNAPSHOT and m.snapshot_offset == 512 and not dropped:
            dropped.append(m.snapshot_offset)
            return True
        return False

    net.drop = drop_third
    net.tick_all(3)
    assert [512] == dropped
    rejects = [m for m in net.delivered if m.type == MessageType.SNAPSHOT_RESP and m.reject]
    assert 512 in [m.snapshot_offset for m in rejects]
    assert VALUES == net.applied[C]


def test_transfer_restarts_when_follower_loses_the_partial_snapshot() -> None:
    """A follower that restarts mid-transfer asks for offset 0: the transfer restarts."""
    net = lagging_cluster(snapshot_inflight_chunks=1)
    restarted: list[bool] = []

    def restart_once(m: Message) -> bool:
        if m.type == MessageType.SNAPSHOT and m.snapshot_offset == 768 and not restarted:
            restarted.append(True)
            net.restart(C)
        return False

    net.drop = restart_once
    net.tick_all(3)
    assert [True] == restarted
    offsets = [m.snapshot_offset for m in snapshot_chunks(net)]
    assert offsets.index(0, 1) > 0  # the transfer started over from offset 0
    assert VALUES == net.applied[C]


def test_leader_resends_when_the_last_chunk_is_lost() -> None:
    """With nothing after the lost chunk to reveal a gap, the leader resends after an
    election timeout without acknowledgement."""
    net = lagging_cluster(election_ticks=10, check_quorum=False)
    lost: list[bool] = []

    def drop_last(m: Message) -> bool:
        if m.type == MessageType.SNAPSHOT and m.snapshot_done and not lost:
            lost.append(True)
            return True
        return False

    net.drop = drop_last
    net.tick_all(2)
    assert [] == net.applied[C]
    net.tick_all(12)
    assert VALUES == net.applied[C]


def test_leader_waits_for_newer_snapshot_when_member_was_added_after_it() -> None:
    """A learner added after the leader's snapshot would ignore it (it is not in that
    configuration): the leader sends nothing until a snapshot that includes it exists,
    then the learner installs that one and catches up."""
    net = Network(["a", "b", "c", "d"], 1, voters=["a", "b", "c"], snapshot_chunk_bytes=256,
                  election_ticks=10)
    net.elect("a")
    for value in VALUES:
        net.propose("a", value)
    net.compact("a", net.committed("a"))  # configuration a, b, c: without d
    net.nodes[A].propose_conf_change(ConfChange.add_learner(D))
    net.stabilize()
    assert (D,) == net.nodes[A].status().conf_state.learners
    net.tick_all(30)  # three election timeouts of heartbeats and resend timers
    to_d = [m for m in snapshot_chunks(net) if m.to == D]
    assert [] == to_d
    assert [] == net.applied[D]
    net.compact("a", net.committed("a"))  # the application's next snapshot includes d
    net.tick_all(3)
    installed = [rd.snapshot for rd in net.readys[D] if rd.snapshot is not None]
    assert 1 == len(installed)
    assert (D,) == installed[0].meta.conf_state.learners
    assert VALUES == net.applied[D]
    assert ProgressState.REPLICATE == net.nodes[A].raft.tracker.progress[D].state


def test_leader_drops_snapshot_when_follower_assembled_but_did_not_restore_it() -> None:
    """A follower that received every chunk and answers below the snapshot did not
    restore it: the leader stops resending that snapshot and probes again."""
    net = lagging_cluster(election_ticks=10, check_quorum=False)
    answered: list[Message] = []

    def refuse_install(m: Message) -> Message:
        # c answers the assembled snapshot as if it ignored it (its committed index).
        if (m.type == MessageType.APPEND_RESP and m.frm == C and not m.reject and m.index >= 30
                and not answered):
            answered.append(m)
            return Message(MessageType.APPEND_RESP, m.to, m.frm, m.term, index=0)
        return m

    net.transform = refuse_install
    net.tick_all(3)
    assert 1 == len(answered)
    pr = net.nodes[A].raft.tracker.progress[C]
    sends_after_refusal = len(snapshot_chunks(net))
    net.transform = None
    net.tick_all(12)
    # c really holds the snapshot: the probe finds it, no chunk is sent again.
    assert sends_after_refusal == len(snapshot_chunks(net))
    assert ProgressState.REPLICATE == pr.state
    assert VALUES == net.applied[C]
