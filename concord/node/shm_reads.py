"""
A read request answered from the node's shared-memory store, with every check the node
makes on a read: the ONE code path of the read workers (concord.node.read_worker) and of
the reads the front door answers itself (concord.net.door_reads).

- auth (when on): the token, its role's rules and its tenant's keyspace, against the auth
  tables as published in shared memory (concord.node.auth.admit);
- the tenant's read rate, per node (docs/security.md "Rate limits"): each read worker
  allows its share. The front door does not take a share: it declines the reads of a
  tenant with a read rate, and a read worker serves them (and limits them);
- `eventual`: the local published state, whatever it is; before the raft worker's
  first publish (the store is created empty) every read is handed to the raft worker,
  which holds the node's state (and its auth tables) from start-up;
- `leader`: served only while the shm header says this node is the leader and the raft
  worker's read lease (`lease_until_ns`, CLOCK_MONOTONIC, shared by every process of the
  host) runs, checked AFTER reading (ShmView.holds_leader_lease). Otherwise, if another
  node is the leader, `not_leader` with its client endpoint as hint; if not (this node
  leads without a lease yet, e.g. just elected, or no leader is known here), the request
  is handed to the raft worker, which serves it after a ReadIndex round or answers
  `not_leader` / `no_leader` itself;
- `strong`: only through `answer_strong`, after the front door's read barrier
  (concord.net.door_strong): served like `eventual` once this view reached the barrier's
  index, else declined (the raft worker serves it); `answer` refuses it;
- expiry, key and size limits: concord.shm.reader.Reader's, which are kv's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from concord.config import NodeConfig
from concord.errors import ClientError, CorruptionError
from concord.net.door_reads import Verdict
from concord.net.wire import OPS, Request, error_reply, ok_reply, ok_value_reply
from concord.node.auth import RateLimiter, admit
from concord.node.node_machine import kv_config_of
from concord.shm.reader import Reader
from concord.shm.layout import SegmentNames
from concord.shm.view import NodeView, ShmView

__all__ = ["DoorReads", "ShmReads"]

logger = logging.getLogger(__name__)


class ShmReads:
    """
    Answers validated read requests from `view` (module docstring). Not thread-safe.

    Args:
        config: the node configuration (member client endpoints give the leader hint).
        view: the attached store; not closed here.
        rate_share: the part of a tenant's per-node read rate this reader allows (a read
            worker: 1 / read_workers); None: this reader declines a rate-limited
            tenant's reads (the front door).
    """

    def __init__(self, config: NodeConfig, view: ShmView, rate_share: float | None) -> None:
        self.node_id = config.node.id
        self._clients: Mapping[str, str] = {
            m.id: m.client_endpoint for m in config.members if m.client_port
        }
        self.view = view
        self.reader = Reader(view, kv_config_of(config))
        self._max_key_bytes = self.reader.config.max_key_bytes
        # A deliberately broken build for the chaos tool's self-test (docs/chaos.md).
        self._unsafe_leader_reads = config.faults.enabled and config.faults.unsafe_leader_reads
        self._auth_required = config.auth.enabled
        self._rate_share = rate_share
        self._reads = RateLimiter(time.monotonic)

    def answer(self, request: Request) -> bytes | Verdict:
        """The reply to a validated read request, or HAND_OFF / DECLINE (module docstring)."""
        if request.consistency == "strong":
            return error_reply(request.id, "invalid_request",
                               "strong reads are served by the raft worker")
        self.view.sync()  # the auth tables as published, before checking the token
        if not self.view.published:
            # NB: the empty store of a node whose state is not published yet: its auth
            # tables are empty too, so admit() would let any request through.
            return Verdict.HAND_OFF
        return self._serve(request)

    def answer_get(self, request_id: int, key: str, consistency: str) -> bytes | None:
        """
        The reply to a plain `get` (concord.net.door_reads.plain_get) that `answer` would
        give as well, when it is a value: the key is found, auth is off (neither required
        nor active in the tables this read saw, so `admit` lets the request through) and,
        at `leader`, this node holds its lease after reading; the value's stored bytes are
        spliced into the reply (wire.ok_value_reply). Anything else: None, and `answer`
        serves the request with every check, error and refusal.
        """
        view = self.view
        if not (key.isascii() and 0 < len(key) <= self._max_key_bytes):
            return None  # check_key's slow path, or invalid_key
        raw = view.get_encoded(key)  # catches up first
        if raw is None or self._auth_required or self.reader.auth.active or not view.published:
            return None
        if (
            consistency == "leader"
            and not self._unsafe_leader_reads
            and not view.holds_leader_lease()
        ):
            return None
        return ok_value_reply(request_id, raw)

    def answer_strong(self, request: Request, index: int) -> bytes | Verdict:
        """
        The reply to a validated `strong` read whose read barrier answered `index`, from
        this view once synced to `index` or later (auth tables included), else DECLINE.
        """
        self.view.sync()
        if self.view.synced_applied_index() < index or not self.view.published:
            return Verdict.DECLINE  # e.g. a rebuild settled behind: never an older state
        return self._serve(request)

    def answer_strong_get(self, request_id: int, key: str, index: int) -> bytes | None:
        """
        The reply to a plain `strong` get whose read barrier answered `index` that
        `answer_strong` would give as well: `answer_get` at `eventual` (which has no
        check of its own) from this view once synced to `index` or later; else None.
        """
        view = self.view
        if view.synced_applied_index() < index:
            view.sync()
            if view.synced_applied_index() < index:
                return None  # answer_strong declines it
        return self.answer_get(request_id, key, "eventual")

    def _serve(self, request: Request) -> bytes | Verdict:
        """Admit and serve `request` from the synced view (leader: checked after reading)."""
        consistency = request.consistency
        try:
            principal = admit(self.reader.auth, self._auth_required, request, OPS[request.op],
                              self.view.now_ms())
            if principal is not None and principal.tenant is not None:
                quota = self.reader.auth.tenants.get(principal.tenant)
                if quota is not None and quota.read_rate > 0:
                    if self._rate_share is None:
                        return Verdict.DECLINE
                    self._reads.take(principal.tenant, quota.read_rate * self._rate_share, "read")
        except ClientError as exc:
            return error_reply(request.id, exc.code, exc.message)
        args = {k: v for k, v in request.args.items() if k != "consistency"}
        result = self.reader.serve(request.op, args, principal)
        if (
            consistency == "leader"
            and not self._unsafe_leader_reads
            and not self.view.holds_leader_lease()
        ):
            return self._leader_refusal(request)
        if "error" in result:
            return error_reply(request.id, str(result["error"]), str(result.get("message", "")))
        return ok_reply(request.id, result)

    def _leader_refusal(self, request: Request) -> bytes | Verdict:
        """not_leader with the leader's client endpoint as hint, or HAND_OFF."""
        status = self.view.current_status()
        leader = status.leader_id
        if leader is None or leader == self.node_id:
            return Verdict.HAND_OFF
        # The raft worker publishes the endpoint from its address book (members added at
        # run time included); the configured members are the fallback.
        hint = status.leader_client or self._clients.get(leader)
        return error_reply(request.id, "not_leader",
                           f"node {self.node_id} is not the leader; the leader is {leader}",
                           hint)

    def close(self) -> None:
        """Close the view."""
        self.view.close()



class DoorReads:
    """
    The front door's inline reads (concord.net.door_reads): a `ShmReads` over a view of
    its own, attached on a thread so that the door serves at once (building the view's
    key index takes a while with many keys). Until the view is ready, and for good if it
    cannot be attached (logged), every read is declined: read workers serve it.

    Args:
        config: the node configuration.
        names: the node's shm store.
    """

    def __init__(self, config: NodeConfig, names: SegmentNames) -> None:
        self._node_id = config.node.id
        self._reads: ShmReads | None = None
        self._built: list[ShmReads] = []  # filled by the thread; read after it ended
        self._thread = threading.Thread(target=self._attach, args=(config, names),
                                        name="door-shm-attach", daemon=True)
        self._thread.start()

    def _attach(self, config: NodeConfig, names: SegmentNames) -> None:
        try:
            view = NodeView.attach(names)
            try:
                reads = ShmReads(config, view, rate_share=None)
            except BaseException:
                view.close()
                raise
        except (OSError, ValueError, CorruptionError) as exc:
            logger.warning("front door serves no reads itself: cannot attach the store "
                           "node=%s error=%s", self._node_id, exc)
            return
        self._built.append(reads)
        logger.info("front door serves reads itself node=%s", self._node_id)

    @property
    def attaching(self) -> bool:
        """Whether the view is still being attached."""
        return self._thread.is_alive()

    @property
    def ready(self) -> bool:
        """Whether the view is attached (then `answer` serves)."""
        if self._reads is None and self._built and not self._thread.is_alive():
            self._reads = self._built[0]
        return self._reads is not None

    def answer(self, request: Request) -> bytes | Verdict:
        """ShmReads.answer once the view is ready, else DECLINE."""
        if self._reads is None and not self.ready:
            return Verdict.DECLINE
        assert self._reads is not None
        return self._reads.answer(request)

    def answer_get(self, request_id: int, key: str, consistency: str) -> bytes | None:
        """ShmReads.answer_get once the view is ready, else None."""
        if self._reads is None and not self.ready:
            return None
        assert self._reads is not None
        return self._reads.answer_get(request_id, key, consistency)

    def answer_strong_get(self, request_id: int, key: str, index: int) -> bytes | None:
        """ShmReads.answer_strong_get once the view is ready, else None."""
        if self._reads is None and not self.ready:
            return None
        assert self._reads is not None
        return self._reads.answer_strong_get(request_id, key, index)

    def answer_strong(self, request: Request, index: int) -> bytes | Verdict:
        """ShmReads.answer_strong once the view is ready, else DECLINE."""
        if self._reads is None and not self.ready:
            return Verdict.DECLINE
        assert self._reads is not None
        return self._reads.answer_strong(request, index)

    def keep_up(self) -> None:
        """`ShmView.keep_up` of the view, once it is ready."""
        if self._reads is not None or self.ready:
            assert self._reads is not None
            self._reads.view.keep_up()

    def close(self) -> None:
        """Wait for the attaching thread, then close the view."""
        self._thread.join()
        for reads in self._built:
            reads.close()
        self._built.clear()
        self._reads = None
