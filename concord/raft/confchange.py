"""
Membership changes: simple (one voter at a time, Raft thesis §4.1) and joint consensus
(thesis §4.3), with learners (thesis §4.2.1). A port of etcd-io/raft's confchange.Changer.

Pure. No IO, no clock, no global randomness; stdlib-only imports.

The changer works on copies and returns a new (config, progress map); the core switches
to them only when the ConfChange entry is applied.
"""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft.messages import ConfChange, ConfChangeSingle, ConfChangeType, ConfState
from concord.raft.progress import Progress
from concord.raft.tracker import ProgressMap, ProgressTracker, TrackerConfig


class ConfChangeError(ValueError):
    """A membership change that cannot be applied to the current configuration."""


class Changer:
    """
    Computes configurations from the tracker's current one.

    Args:
        tracker: the current configuration and progress (not modified).
        last_index: the log's last index; new peers start probing after it.
    """

    def __init__(self, tracker: ProgressTracker, last_index: int) -> None:
        self.tracker = tracker
        self.last_index = last_index

    def enter_joint(
        self, auto_leave: bool, changes: tuple[ConfChangeSingle, ...]
    ) -> tuple[TrackerConfig, ProgressMap]:
        """Enter the joint configuration (C_old, C_new) for `changes`."""
        cfg, prs = self._check_and_copy()
        if cfg.is_joint():
            raise ConfChangeError("config is already joint")
        if not cfg.voters:
            raise ConfChangeError("can't make a zero-voter config joint")
        cfg.voters_outgoing = set(cfg.voters)
        self._apply(cfg, prs, changes)
        cfg.auto_leave = auto_leave
        return self._check_and_return(cfg, prs)

    def leave_joint(self) -> tuple[TrackerConfig, ProgressMap]:
        """Leave the joint configuration for C_new."""
        cfg, prs = self._check_and_copy()
        if not cfg.is_joint():
            raise ConfChangeError("can't leave a non-joint config")
        for node_id in cfg.learners_next:
            cfg.learners.add(node_id)
            prs[node_id].is_learner = True
        cfg.learners_next = set()
        for node_id in cfg.voters_outgoing:
            if node_id not in cfg.voters and node_id not in cfg.learners:
                del prs[node_id]
        cfg.voters_outgoing = set()
        cfg.auto_leave = False
        return self._check_and_return(cfg, prs)

    def simple(self, changes: tuple[ConfChangeSingle, ...]) -> tuple[TrackerConfig, ProgressMap]:
        """Apply changes that alter at most one voter, without joint consensus."""
        cfg, prs = self._check_and_copy()
        if cfg.is_joint():
            raise ConfChangeError("can't apply simple config change in joint config")
        before = set(cfg.voters)
        self._apply(cfg, prs, changes)
        if len(before ^ cfg.voters) > 1:
            raise ConfChangeError("more than one voter changed without entering joint config")
        return self._check_and_return(cfg, prs)

    def restore(self, conf_state: ConfState) -> tuple[TrackerConfig, ProgressMap]:
        """The configuration and fresh progress for a ConfState (from a snapshot)."""
        cfg = TrackerConfig(
            voters=set(conf_state.voters),
            voters_outgoing=set(conf_state.voters_outgoing),
            learners=set(conf_state.learners),
            learners_next=set(conf_state.learners_next),
            auto_leave=conf_state.auto_leave,
        )
        prs: ProgressMap = {}
        # NB: sorted, so that the progress map (and message order) is deterministic.
        for node_id in sorted(cfg.voters | cfg.voters_outgoing | cfg.learners | cfg.learners_next):
            prs[node_id] = self._new_progress(node_id in cfg.learners)
        return self._check_and_return(cfg, prs)

    def _new_progress(self, is_learner: bool) -> Progress:
        # NB: next starts past the log, as in etcd: probing walks back from there.
        pr = Progress(0, max(self.last_index, 1), self.tracker.max_inflight, is_learner)
        pr.recent_active = True
        return pr

    def _apply(
        self, cfg: TrackerConfig, prs: ProgressMap, changes: tuple[ConfChangeSingle, ...]
    ) -> None:
        for change in changes:
            if not change.node_id:
                continue
            if change.type == ConfChangeType.ADD_VOTER:
                self._make_voter(cfg, prs, change.node_id)
            elif change.type == ConfChangeType.ADD_LEARNER:
                self._make_learner(cfg, prs, change.node_id)
            elif change.type == ConfChangeType.REMOVE:
                self._remove(cfg, prs, change.node_id)
            else:
                raise ConfChangeError(f"unknown conf change type {change.type}")
        if not cfg.voters:
            raise ConfChangeError("removed all voters")

    def _make_voter(self, cfg: TrackerConfig, prs: ProgressMap, node_id: NodeId) -> None:
        pr = prs.get(node_id)
        if pr is None:
            prs[node_id] = self._new_progress(False)
            cfg.voters.add(node_id)
            return
        pr.is_learner = False
        cfg.learners.discard(node_id)
        cfg.learners_next.discard(node_id)
        cfg.voters.add(node_id)

    def _make_learner(self, cfg: TrackerConfig, prs: ProgressMap, node_id: NodeId) -> None:
        pr = prs.get(node_id)
        if pr is None:
            prs[node_id] = self._new_progress(True)
            cfg.learners.add(node_id)
            return
        if pr.is_learner:
            return
        self._remove(cfg, prs, node_id)
        prs[node_id] = pr
        # A voter of the outgoing config stays a voter there until the joint config is
        # left (it then becomes a learner): a node is never a voter and a learner at once.
        if node_id in cfg.voters_outgoing:
            cfg.learners_next.add(node_id)
        else:
            pr.is_learner = True
            cfg.learners.add(node_id)

    def _remove(self, cfg: TrackerConfig, prs: ProgressMap, node_id: NodeId) -> None:
        if node_id not in prs:
            return
        cfg.voters.discard(node_id)
        cfg.learners.discard(node_id)
        cfg.learners_next.discard(node_id)
        if node_id not in cfg.voters_outgoing:
            del prs[node_id]

    def _check_and_copy(self) -> tuple[TrackerConfig, ProgressMap]:
        cfg = self.tracker.config.copy()
        prs: ProgressMap = {}
        for node_id, pr in self.tracker.progress.items():
            clone = Progress(pr.match, pr.next, pr.inflights.capacity, pr.is_learner)
            clone.state = pr.state
            clone.pending_snapshot = pr.pending_snapshot
            clone.snapshot_sent_offset = pr.snapshot_sent_offset
            clone.snapshot_acked_offset = pr.snapshot_acked_offset
            clone.snapshot_idle_ticks = pr.snapshot_idle_ticks
            clone.recent_active = pr.recent_active
            clone.msg_app_flow_paused = pr.msg_app_flow_paused
            clone.inflights = pr.inflights
            prs[node_id] = clone
        self._check_invariants(cfg, prs)
        return cfg, prs

    def _check_and_return(
        self, cfg: TrackerConfig, prs: ProgressMap
    ) -> tuple[TrackerConfig, ProgressMap]:
        self._check_invariants(cfg, prs)
        return cfg, prs

    @staticmethod
    def _check_invariants(cfg: TrackerConfig, prs: ProgressMap) -> None:
        for ids in (cfg.voters, cfg.voters_outgoing, cfg.learners, cfg.learners_next):
            for node_id in ids:
                if node_id not in prs:
                    raise ConfChangeError(f"no progress for {node_id}")
        for node_id in cfg.learners_next:
            if node_id not in cfg.voters_outgoing:
                raise ConfChangeError(f"{node_id} is in learners_next, but not voters_outgoing")
            if prs[node_id].is_learner:
                raise ConfChangeError(f"{node_id} is in learners_next, but is already a learner")
        for node_id in cfg.learners:
            if node_id in cfg.voters_outgoing:
                raise ConfChangeError(f"{node_id} is in learners and voters_outgoing")
            if node_id in cfg.voters:
                raise ConfChangeError(f"{node_id} is in learners and voters")
            if not prs[node_id].is_learner:
                raise ConfChangeError(f"{node_id} is in learners, but is not marked as learner")
        if not cfg.is_joint():
            if cfg.learners_next:
                raise ConfChangeError("learners_next must be empty when not joint")
            if cfg.auto_leave:
                raise ConfChangeError("auto_leave must be false when not joint")


def conf_state_after(conf_state: ConfState, cc: ConfChange) -> ConfState:
    """
    The membership after applying the committed change `cc` to `conf_state`, as the
    core's apply_conf_change computes it (for code that folds a log without a core).

    Raises:
        ConfChangeError: `cc` cannot apply to `conf_state`.
    """
    tracker = ProgressTracker(1)
    tracker.config, tracker.progress = Changer(tracker, 0).restore(conf_state)
    changer = Changer(tracker, 0)
    if cc.leave_joint():
        cfg, _ = changer.leave_joint()
    else:
        auto_leave, joint = cc.enter_joint()
        cfg, _ = changer.enter_joint(auto_leave, cc.changes) if joint else changer.simple(cc.changes)
    return cfg.conf_state()
