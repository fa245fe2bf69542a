"""
The front door's requests to its backends, sent per pass of its loop (backend link v4).

The door queues each request it routes during one pass over its sockets; at the end of
the pass every backend gets what was queued for it as one REQUESTS message (a lone
request as REQUEST), cut by `concord.net.backend.batches` at MAX_BATCH_BYTES, in the
order the door took them. A backend then wakes once per pass of the door, not once per
request. Nothing here decides where a request goes or what a failed send means: the
door does (one retry on another backend, else `no_leader`).

Never blocks: sends are NOBLOCK.
"""

from __future__ import annotations

import logging

import zmq

from concord.errors import ShuttingDownError
from concord.net._zmqutil import send_frames
from concord.net.backend import KIND_REQUEST, KIND_REQUESTS, batches, pack_batch, pack_header

__all__ = ["RequestOutbox"]

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]

_REQUESTS_HEADER = pack_header(KIND_REQUESTS, 0)


class RequestOutbox:
    """
    Requests routed and not yet sent, per backend. Not thread-safe (the door's loop).

    Args:
        socket: the door's backend ROUTER (not owned).
    """

    def __init__(self, socket: Socket) -> None:
        self._socket = socket
        self._queued: dict[bytes, list[tuple[int, bytes]]] = {}
        self.messages = 0  # REQUEST and REQUESTS messages sent
        self.requests = 0  # requests sent in them
        self.unreachable: list[bytes] = []  # backends a send found gone (EHOSTUNREACH)

    def __bool__(self) -> bool:
        return bool(self._queued)

    def queue(self, backend: bytes, token: int, payload: bytes) -> None:
        """Send request `token` to `backend` with the others of this pass (`send`)."""
        self._queued.setdefault(backend, []).append((token, payload))

    def send(self) -> list[tuple[bytes, int, bytes]]:
        """
        Send everything queued. Returns the (backend, token, payload) of the requests that
        could not be sent (backend gone, or full), in order.
        """
        queued, self._queued = self._queued, {}
        failed: list[tuple[bytes, int, bytes]] = []
        for backend, items in queued.items():
            for batch in batches(items):
                if not self.send_now(backend, batch):
                    failed += ((backend, token, payload) for token, payload in batch)
        return failed

    def send_now(self, backend: bytes, batch: list[tuple[int, bytes]]) -> bool:
        """Send `batch` (token, payload) to `backend` at once: one REQUEST or REQUESTS."""
        if len(batch) == 1:
            frames = [backend, pack_header(KIND_REQUEST, batch[0][0]), batch[0][1]]
        else:
            frames = [backend, _REQUESTS_HEADER, pack_batch(batch)]
        try:
            send_frames(self._socket, frames)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise ShuttingDownError(f"front door backend socket failed: {exc}") from exc
            log.warning("backend unreachable, forgotten name=%r", backend)
            self.unreachable.append(backend)
            return False
        self.messages += 1
        self.requests += len(batch)
        return True
