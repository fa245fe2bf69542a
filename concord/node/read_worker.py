"""
The read worker process: serves reads from the node's shared-memory store.

Attaches the store read-only (`NodeView`: a `ShmView` without value copies or a Python
index per key; never registered with the resource tracker, never unlinked) and answers
the front door's READ requests (`BackendLink`, Backend.READ) with
`concord.node.shm_reads.ShmReads` (the checks, `eventual` and `leader` rules, and the
hand-off to the raft worker are described there). The front door answers the reads of
bounded cost itself with the same code (concord.net.door_reads);
the others, and those the door declines, come here.

Keeps serving the last committed state while the raft worker restarts.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import zmq

from concord.config import NodeConfig
from concord.errors import InvalidRequestError
from concord.metrics.node import ReaderMetrics
from concord.net.backend import BackendLink
from concord.net.wire import Backend, decode_request, error_reply
from concord.node.raft_worker import WorkerEndpoints
from concord.node.shm_reads import ShmReads
from concord.shm.view import NodeView

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
        self.view = NodeView.attach(endpoints.shm)
        # A tenant's read rate is per node: each of the node's read workers allows its
        # share (docs/security.md "Rate limits").
        self.reads = ShmReads(config, self.view, 1.0 / max(1, config.node.read_workers))
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.link = BackendLink(self.ctx, endpoints.backend, Backend.READ,
                                f"read-{self.node_id}-{index}", heartbeat_interval_s=0.1)
        self.poller = zmq.Poller()
        self.link.register(self.poller)
        self._stopping = False
        self.metrics = ReaderMetrics()

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
            self.view.keep_up()

    def handle(self, payload: bytes) -> bytes | None:
        """
        Answer one request payload (a validated wire request) with a reply payload, or
        None: the raft worker must answer it (hand it off).
        """
        try:
            request = decode_request(payload, max_bytes=1 << 30)
        except InvalidRequestError as exc:
            return error_reply(exc.request_id, exc.code, exc.message)
        reply = self.reads.answer(request)
        # NB: not bytes is HAND_OFF: a reader with a rate share never declines.
        return reply if isinstance(reply, bytes) else None

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
