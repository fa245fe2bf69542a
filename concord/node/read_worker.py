"""
The read worker process: serves reads from the node's shared-memory store.

Attaches the store read-only (`ShmView`, never registered with the resource tracker,
never unlinked) and answers the front door's READ requests (`BackendLink`,
Backend.READ) with `concord.shm.reader.Reader`:

- `eventual`: the local published state, whatever it is;
- `leader` (the default): served only while the shm header says this node is the leader
  and the raft worker's read lease (`lease_until_ns`, on CLOCK_MONOTONIC, shared by
  every process of the host) has not run out. Otherwise, if another node is the leader,
  `not_leader` with its client endpoint as hint; if not (this node leads without a
  lease yet, e.g. just elected, or no leader is known here), the request is handed to
  the raft worker (backend HANDOFF), which serves it after a ReadIndex round or answers
  `not_leader` / `no_leader` itself;
- `strong` never arrives here (the front door sends it to the raft worker).

Keeps serving the last committed state while the raft worker restarts.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping
from types import FrameType

import zmq

from concord.config import NodeConfig
from concord.errors import ClientError, InvalidRequestError
from concord.metrics.node import ReaderMetrics
from concord.net.backend import BackendLink
from concord.net.wire import OPS, Backend, Request, decode_request, error_reply, ok_reply
from concord.node.auth import RateLimiter, admit
from concord.node.raft_worker import WorkerEndpoints, kv_config_of
from concord.shm.reader import Reader
from concord.shm.view import ShmView

__all__ = ["ReadWorker", "run_read_worker"]

logger = logging.getLogger(__name__)


class ReadWorker:
    """
    One read worker's loop. Not thread-safe.

    Args:
        config: the node configuration (member client endpoints give the leader hint).
        endpoints: the front door's backend endpoint and the shm names.
        index: this worker's number (its backend name is read-<node>-<index>).
    """

    def __init__(self, config: NodeConfig, endpoints: WorkerEndpoints, index: int) -> None:
        self.node_id = config.node.id
        self._clients: Mapping[str, str] = {
            m.id: m.client_endpoint for m in config.members if m.client_port
        }
        self.view = ShmView.attach(endpoints.shm)
        self.reader = Reader(self.view, kv_config_of(config))
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.link = BackendLink(self.ctx, endpoints.backend, Backend.READ,
                                f"read-{self.node_id}-{index}", heartbeat_interval_s=0.1)
        self.poller = zmq.Poller()
        self.link.register(self.poller)
        self._stopping = False
        self.metrics = ReaderMetrics()
        # A deliberately broken build for the chaos tool's self-test (docs/chaos.md).
        self._unsafe_leader_reads = config.faults.enabled and config.faults.unsafe_leader_reads
        self._auth_required = config.auth.enabled
        # A tenant's read rate is per node: each of the node's read workers allows its
        # share (docs/security.md "Rate limits").
        self._workers = max(1, config.node.read_workers)
        self._reads = RateLimiter(time.monotonic)

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        while not self._stopping:
            timeout_s = self.link.next_deadline() - time.monotonic()
            self.poller.poll(max(0, int(timeout_s * 1000)) + 1)
            self.link.service_timers(time.monotonic())
            served = handed_off = 0
            for _ in range(1000):
                req = self.link.recv()
                if req is None:
                    break
                reply = self.handle(req.payload)
                if reply is None:
                    handed_off += 1
                    self.link.hand_off(req.token, req.payload)
                else:
                    served += 1
                    self.link.reply(req.token, reply)
            self.metrics.on_round(served, handed_off)

    def handle(self, payload: bytes) -> bytes | None:
        """
        Answer one request payload (a validated wire request) with a reply payload, or
        None: the raft worker must answer it (hand it off).
        """
        try:
            request = decode_request(payload, max_bytes=1 << 30)
        except InvalidRequestError as exc:
            return error_reply(exc.request_id, exc.code, exc.message)
        consistency = request.consistency
        if consistency == "strong":
            return error_reply(request.id, "invalid_request",
                               "strong reads are served by the raft worker")
        self.view.sync()  # the auth tables as published, before checking the token
        try:
            principal = admit(self.reader.auth, self._auth_required, request, OPS[request.op],
                              self.view.now_ms())
            if principal is not None and principal.tenant is not None:
                quota = self.reader.auth.tenants.get(principal.tenant)
                if quota is not None and quota.read_rate > 0:
                    self._reads.take(principal.tenant, quota.read_rate / self._workers, "read")
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

    def _leader_refusal(self, request: Request) -> bytes | None:
        """not_leader with the leader's client endpoint as hint; None: hand it off."""
        status = self.view.current_status()
        leader = status.leader_id
        if leader is None or leader == self.node_id:
            return None
        # The raft worker publishes the endpoint from its address book (members added at
        # run time included); the configured members are the fallback.
        hint = status.leader_client or self._clients.get(leader)
        return error_reply(request.id, "not_leader",
                           f"node {self.node_id} is not the leader; the leader is {leader}",
                           hint)

    def close(self) -> None:
        self.link.close()
        self.ctx.term()
        self.view.close()


def run_read_worker(config: NodeConfig, endpoints: WorkerEndpoints, index: int) -> None:
    """Process entry point (a supervisor child): attach, report READY, serve until SIGTERM."""
    from supervisor import notify_ready

    worker = ReadWorker(config, endpoints, index)

    def on_term(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, on_term)
    notify_ready({"index": index})
    try:
        worker.run()
    except Exception as exc:  # the process's top level: log once, exit non-zero (restart)
        logger.exception("read worker failed node=%s index=%d", config.node.id, index)
        raise SystemExit(1) from exc
    finally:
        worker.close()
