"""
The front door's request metrics as a door observer (concord.net.observer.DoorObserver):
per answered request, `concord_server_request_duration_seconds{op, consistency, result}`
from its arrival to its reply, and `concord_server_reads_served_total{by}` per read by
the kind of backend it went to (docs/observability.md). The families and their labels
are concord.metrics' (concord/metrics/node.py, DoorMetrics); this module only feeds them.

The result is read from the reply's first bytes (concord.metrics.node.reply_result):
observing a request decodes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from concord.metrics.node import DoorMetrics, reply_result
from concord.net.observer import DoorReply
from concord.net.wire import Backend, OpSpec, Request

__all__ = ["DoorMetricsObserver"]

_READ = Backend.READ  # NB: a module global: an enum member lookup per request costs more


#: A request's note: op, consistency label (the read's level; "none": not a read), and
#: its arrival on the door's clock. A tuple: one allocation per request, on the hot path.
_Note = tuple[str, str, float]


class DoorMetricsObserver:
    """Times every request from `begin` to `end` on the door's clock; see the module docstring."""

    hold_replies = False

    def __init__(self, metrics: DoorMetrics, registry: Mapping[str, OpSpec],
                 clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self._reads = frozenset(op for op, spec in registry.items() if spec.backend is Backend.READ)
        self._clock = clock

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        op = request.op
        note: _Note = (op, request.consistency if op in self._reads else "none", self._clock())
        return note, request, payload

    def end(self, note: object, reply: DoorReply) -> None:
        op, consistency, started = cast(_Note, note)  # the note our begin returned
        by = None if consistency == "none" else (
            "door" if reply.inline else "read_worker" if reply.backend is _READ else "raft_worker")
        self.metrics.on_done(op, consistency, reply_result(reply.payload),
                             self._clock() - started, by)

    def flush(self) -> None:
        pass
