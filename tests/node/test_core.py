"""The raft worker's decisions as effects (concord/node/core/node.py): assert on effects."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import pytest

from concord.config_schema import StorageSection
from concord.errors import InvalidRequestError
from concord.ids import NodeId
from concord.node.core.effects import (
    DropChanges,
    MintClusterId,
    ProposeAddress,
    ProposeConfChange,
    ProposeExpiry,
    PublishChanges,
    PublishStatus,
    ResyncShm,
    SendReplies,
    SetLease,
    SetPeers,
    TakeSnapshot,
    TransferLeader,
)
from concord.node.core.node import NodeCore, NodeView
from concord.node.core.snapshots import SnapshotPolicy, SnapshotSchedule
from concord.node.promotion import PROMOTE_LAG_ENTRIES, LeaderView
from concord.raft.messages import ConfChange, ConfState, SnapshotMeta
from concord.raft.state import Role

N1, N2, N3, N4 = (NodeId(f"n{i}") for i in range(1, 5))
CONF = ConfState((N1, N2, N3))


def core(shm_applied: int = 0, replay_until: int = 0) -> NodeCore:
    """A node core; from an empty state: started, its (empty) start-up reset published."""
    c = NodeCore(N1, itertools.count(100).__next__, shm_applied, replay_until)
    return published(c) if shm_applied == replay_until == 0 else c


def published(c: NodeCore) -> NodeCore:
    """`c` started from an empty state, and the reset of its start published."""
    assert [ResyncShm(0, True)] == of(c.on_start(view(applied=0, commit=0)), ResyncShm)
    c.on_reset_published()
    return c


def view(applied: int = 5, commit: int = 5, term: int = 2, role: Role = Role.LEADER,
         lease: int = 900, conf: ConfState = CONF, **kw: object) -> NodeView:
    return replace(NodeView(term, N1 if role is Role.LEADER else N2, role, commit, applied, term,
                            lease, conf, known_peers=frozenset({N1, N2, N3})), **kw)  # type: ignore[arg-type]


def leader_view(conf: ConfState = CONF, match: int = 5, committed: int = 5) -> LeaderView:
    return LeaderView(2, True, conf, committed, {m: match for m in (*conf.voters, *conf.learners)})


def of(effects: Sequence[object], kind: type) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


def test_shm_is_not_resynced_when_the_state_is_behind_what_shm_holds() -> None:
    """A worker restarted alone never publishes a state older than shm's (never backwards)."""
    c = core(shm_applied=10)
    assert [DropChanges()] == of(c.after_ready(view(applied=9, commit=9)), DropChanges)
    effects = c.after_ready(view(applied=10, commit=10))
    assert [ResyncShm(10, True)] == of(effects, ResyncShm)
    c.on_reset_published()
    assert [PublishChanges(11)] == of(c.after_ready(view(applied=11, commit=11, has_changes=True)),
                                      PublishChanges)


def test_nothing_else_is_published_when_a_reset_is_being_built() -> None:
    """
    While the reset of a ResyncShm is built in steps: no publish, no lease, write replies
    held (SendReplies.shm_current False), no durable snapshot; once it is published, the
    changes applied meanwhile go in one PublishChanges, and the lease and snapshots resume.
    """
    c = NodeCore(N1, itertools.count(100).__next__, 0, 8,
                 SnapshotSchedule(SnapshotPolicy(1, 0), None))
    effects = c.after_ready(view(applied=8, commit=8, durable_index=8))
    assert [ResyncShm(8, True)] == of(effects, ResyncShm)
    assert [SendReplies(shm_current=False)] == of(effects, SendReplies)
    assert [SetLease(-1)] == of(effects, SetLease)
    for applied in (9, 12):
        effects = c.after_ready(view(applied=applied, commit=applied, has_changes=True,
                                     durable_index=applied))
        assert [] == of(effects, PublishChanges) + of(effects, ResyncShm) + of(effects, TakeSnapshot)
        assert [] == of(effects, SetLease)  # still -1: unchanged
        assert [SendReplies(shm_current=False)] == of(effects, SendReplies)
    c.on_reset_published()
    effects = c.after_ready(view(applied=12, commit=12, has_changes=True, durable_index=12))
    assert [PublishChanges(12)] == of(effects, PublishChanges)
    assert [SetLease(900)] == of(effects, SetLease)
    assert [SendReplies()] == of(effects, SendReplies)
    assert 1 == len(of(effects, TakeSnapshot))


def test_a_new_reset_replaces_the_one_being_built_when_a_snapshot_is_installed() -> None:
    """A snapshot from the leader during a reset: a new ResyncShm of the restored state."""
    c = core(replay_until=8)
    assert [ResyncShm(8, True)] == of(c.after_ready(view(applied=8, commit=8)), ResyncShm)
    assert [ResyncShm(30, False)] == of(c.after_ready(view(applied=30, commit=30, restored=True)),
                                        ResyncShm)
    assert [] == of(c.after_ready(view(applied=31, commit=31, has_changes=True)), PublishChanges)
    c.on_reset_published()
    assert [PublishChanges(31)] == of(c.after_ready(view(applied=31, commit=31)), PublishChanges)


def test_start_up_replay_is_published_once_when_it_reaches_the_recovered_commit() -> None:
    """Replayed entries are not published one by one: one reset at the recovered commit."""
    c = core(replay_until=8)
    for applied in (3, 7):
        assert [] == of(c.after_ready(view(applied=applied, commit=8)), PublishChanges)
    assert [ResyncShm(8, True)] == of(c.after_ready(view(applied=8, commit=8)), ResyncShm)
    assert [ResyncShm(20, False)] == of(c.after_ready(view(applied=20, commit=20, restored=True)),
                                        ResyncShm)


def test_replies_follow_the_publish_when_a_round_applied_changes() -> None:
    """SendReplies comes after PublishChanges: an acknowledged write is readable here."""
    c = core()
    c.after_ready(view())
    effects = c.after_ready(view(applied=6, commit=6, has_changes=True))
    kinds = [type(e) for e in effects]
    assert kinds.index(PublishChanges) < kinds.index(SendReplies)


def test_lease_is_withdrawn_when_committed_entries_are_not_applied() -> None:
    """Read workers get no lease while applied < commit or no entry of the term is applied."""
    c = core()
    assert [SetLease(900)] == of(c.after_ready(view()), SetLease)
    assert [] == of(c.after_ready(view()), SetLease)  # unchanged: not published again
    assert [SetLease(-1)] == of(c.after_ready(view(applied=5, commit=6)), SetLease)
    assert [SetLease(900)] == of(c.after_ready(view(applied=6, commit=6)), SetLease)
    behind = view(applied=6, commit=6, applied_term=1)
    assert [SetLease(-1)] == of(c.after_ready(behind), SetLease)


def test_status_is_published_when_it_changes_only() -> None:
    """PublishStatus once per change; leader_changed false when only the endpoint moved."""
    c = core()
    assert 1 == len(of(c.after_ready(view()), PublishStatus))
    assert [] == of(c.after_ready(view()), PublishStatus)
    (status,) = of(c.after_ready(view(leader_client="tcp://x:1")), PublishStatus)
    assert isinstance(status, PublishStatus) and not status.leader_changed


def snapshotting_core(every: int = 10, every_bytes: int = 0) -> NodeCore:
    return published(NodeCore(N1, itertools.count(100).__next__,
                              snapshots=SnapshotSchedule(SnapshotPolicy(every, every_bytes), None)))


def test_snapshot_is_taken_at_the_applied_index_with_its_membership_when_due() -> None:
    """TakeSnapshot once `every` entries were applied, at the applied point, membership and all."""
    c = snapshotting_core(every=10)
    assert [] == of(c.after_ready(view(applied=9, commit=9, durable_index=9)), TakeSnapshot)
    changed = ConfState((N1, N2, N3), (N4,))
    effects = c.after_ready(view(applied=10, commit=10, conf=changed, applied_bytes=70,
                                 durable_index=12))
    assert [TakeSnapshot(SnapshotMeta(10, 2, changed), 70)] == of(effects, TakeSnapshot)
    # One at a time: nothing more while it runs, however far the log goes.
    assert [] == of(c.after_ready(view(applied=30, commit=30, durable_index=30)), TakeSnapshot)
    c.on_snapshot_done(view(applied=30, commit=30), ok=True)
    effects = c.after_ready(view(applied=31, commit=31, durable_index=31))
    assert [TakeSnapshot(SnapshotMeta(31, 2, CONF), 0)] == of(effects, TakeSnapshot)


def test_snapshot_waits_when_the_applied_index_is_not_durable_in_the_log() -> None:
    """The WAL is compacted below a snapshot: it must hold the snapshot's index first."""
    c = snapshotting_core(every=10)
    assert [] == of(c.after_ready(view(applied=12, commit=12, durable_index=11)), TakeSnapshot)
    assert 1 == len(of(c.after_ready(view(applied=12, commit=12, durable_index=12)), TakeSnapshot))


def test_snapshot_is_retried_later_when_its_child_failed() -> None:
    """A failed or killed child is not fatal: retried after a quarter of the trigger."""
    c = snapshotting_core(every=8)
    assert 1 == len(of(c.after_ready(view(applied=8, commit=8, durable_index=8)), TakeSnapshot))
    c.on_snapshot_done(view(applied=8, commit=8, durable_index=8), ok=False)
    assert [] == of(c.after_ready(view(applied=9, commit=9, durable_index=9)), TakeSnapshot)
    effects = c.after_ready(view(applied=10, commit=10, durable_index=10))
    assert [TakeSnapshot(SnapshotMeta(10, 2, CONF), 0)] == of(effects, TakeSnapshot)


def test_snapshot_counts_from_an_installed_one_when_the_leader_sent_it() -> None:
    """A snapshot from the leader is durable too: the next is due `every` entries after it."""
    c = snapshotting_core(every=10)
    c.on_snapshot_installed(SnapshotMeta(50, 2, CONF), 0)
    assert [] == of(c.after_ready(view(applied=55, commit=55, durable_index=55)), TakeSnapshot)
    assert 1 == len(of(c.after_ready(view(applied=60, commit=60, durable_index=60)), TakeSnapshot))


def test_snapshot_is_due_by_size_when_bulk_writes_apply_few_entries() -> None:
    """The byte trigger: few entries, many bytes (put_many)."""
    c = snapshotting_core(every=0, every_bytes=1000)
    assert [] == of(c.after_ready(view(applied=3, commit=3, durable_index=3, applied_bytes=999)),
                    TakeSnapshot)
    effects = c.after_ready(view(applied=4, commit=4, durable_index=4, applied_bytes=1000))
    assert [TakeSnapshot(SnapshotMeta(4, 2, CONF), 1000)] == of(effects, TakeSnapshot)


def test_no_snapshot_is_taken_when_the_core_has_no_schedule() -> None:
    """Without a schedule (or with both triggers off) nothing is ever taken."""
    assert [] == of(core().after_ready(view(applied=10**6, commit=10**6, durable_index=10**6)),
                    TakeSnapshot)
    off = snapshotting_core(every=0, every_bytes=0)
    assert [] == of(off.after_ready(view(applied=10**6, commit=10**6, durable_index=10**6)),
                    TakeSnapshot)


def test_peers_follow_the_membership_when_it_changes() -> None:
    """SetPeers at once when the membership changes."""
    c = core()
    c.after_ready(view())
    changed = ConfState((N1, N2, N3), (N4,))
    effects = c.after_ready(view(applied=7, commit=7, conf=changed))
    assert [SetPeers(frozenset({N1, N2, N3, N4}))] == of(effects, SetPeers)


def test_address_entry_is_proposed_before_the_conf_change_when_a_member_is_added() -> None:
    """add_member: the address record, then links to the member, then ADD_LEARNER."""
    c = core()
    effects = c.add_member(view(), N4, None, request_id=7)
    assert [ProposeAddress, SetPeers, ProposeConfChange] == [type(e) for e in effects]
    assert SetPeers(frozenset({N1, N2, N3, N4})) == effects[1]
    assert ProposeConfChange(7, ConfChange.add_learner(N4), "add_member") == effects[2]
    voter = c.add_member(view(), N4, False, request_id=8)[-1]
    assert ProposeConfChange(8, ConfChange.add_voter(N4), "add_member") == voter


def test_learner_is_promoted_by_the_tick_when_added_without_flag_and_caught_up() -> None:
    """Auto-promotion (concord.node.promotion) wired into ticks; one proposal at a time."""
    c = core()
    c.add_member(view(), N4, None, request_id=7)
    conf = ConfState((N1, N2, N3), (N4,))
    lagging = leader_view(conf, match=5 - PROMOTE_LAG_ENTRIES - 1)
    assert [] == of(c.on_tick(view(conf=conf), lagging, 0), ProposeConfChange)
    (promote,) = of(c.on_tick(view(conf=conf), leader_view(conf), 0), ProposeConfChange)
    assert isinstance(promote, ProposeConfChange)
    assert ConfChange.add_voter(N4) == promote.change
    assert [] == of(c.on_tick(view(conf=conf), leader_view(conf), 0), ProposeConfChange)
    assert c.on_reply(promote.request_id)  # the core's own: nobody else waits for it
    assert 1 == len(of(c.on_tick(view(conf=conf), leader_view(conf), 0), ProposeConfChange))


def test_membership_requests_are_refused_when_they_name_no_such_member() -> None:
    """remove_member of a stranger, promote_member of a voter: invalid_request."""
    c = core()
    with pytest.raises(InvalidRequestError):
        c.remove_member(CONF, N4, 1)
    with pytest.raises(InvalidRequestError):
        c.promote_member(CONF, N2, 1)


def test_leader_proposes_expiry_and_cluster_id_when_due_only() -> None:
    """One expiry proposal in flight, at most every EXPIRY_INTERVAL_MS; the cluster id once."""
    c = core()
    first = c.on_tick(view(), leader_view(), 1000, has_cluster_id=False)
    assert 1 == len(of(first, MintClusterId)) and 1 == len(of(first, ProposeExpiry))
    again = c.on_tick(view(), leader_view(), 5000, has_cluster_id=False)
    assert [] == of(again, MintClusterId) + of(again, ProposeExpiry)
    (expiry,) = of(first, ProposeExpiry)
    assert isinstance(expiry, ProposeExpiry) and c.on_reply(expiry.request_id)
    assert 1 == len(of(c.on_tick(view(), leader_view(), 5000), ProposeExpiry))
    assert [] == of(c.on_tick(view(role=Role.FOLLOWER), leader_view(), 9000), ProposeExpiry)


def test_leader_hands_over_when_its_wal_starts_failing() -> None:
    """A failing WAL: writes refused, leadership to the best other voter (once)."""
    c = core()
    assert [TransferLeader(N2, "storage_failing")] == c.on_disk("EIO", Role.LEADER, N2)
    assert c.refuses_writes
    assert [] == c.on_disk("EIO", Role.LEADER, N2)
    assert [] == c.on_disk(None, Role.LEADER, N2) and not c.refuses_writes


def test_default_snapshot_triggers_bound_the_replay_when_keys_are_bulk_loaded() -> None:
    """
    With the config's defaults, 1,000,000 keys put 500 at a time (2,000 entries of ~58,000
    bytes) leave at most ~145,000 keys after the last snapshot for a restart to replay
    (the old 64 MiB default left 447,500).
    """
    storage = StorageSection()
    c = published(NodeCore(N1, itertools.count(100).__next__, snapshots=SnapshotSchedule(
        SnapshotPolicy(storage.snapshot_entries, storage.snapshot_bytes), None)))
    entry_bytes, keys_per_entry, snapshots, last = 58_000, 500, 0, 0
    for index in range(1, 2_001):
        point = view(applied=index, commit=index, durable_index=index,
                     applied_bytes=index * entry_bytes)
        for effect in of(c.after_ready(point), TakeSnapshot):
            assert isinstance(effect, TakeSnapshot)
            c.on_snapshot_done(point, ok=True)
            snapshots, last = snapshots + 1, effect.meta.index
    assert (2_000 - last) * keys_per_entry <= 145_000
    assert 6 == snapshots  # every 290 entries
