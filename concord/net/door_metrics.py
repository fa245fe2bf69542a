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
from dataclasses import dataclass

from concord.metrics.node import DoorMetrics, reply_result
from concord.net.observer import DoorReply
from concord.net.wire import Backend, OpSpec, Request

__all__ = ["DoorMetricsObserver"]


@dataclass(slots=True)
class _Note:
    op: str
    consistency: str  # the read's level; "none": not a read
    started: float


class DoorMetricsObserver:
    """Times every request from `begin` to `end` on the door's clock; see the module docstring."""

    hold_replies = False

    def __init__(self, metrics: DoorMetrics, registry: Mapping[str, OpSpec],
                 clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self._registry = registry
        self._clock = clock

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        is_read = self._registry[request.op].backend is Backend.READ
        note = _Note(request.op, request.consistency if is_read else "none", self._clock())
        return note, request, payload

    def end(self, note: object, reply: DoorReply) -> None:
        assert isinstance(note, _Note)
        by_read = None if note.consistency == "none" else reply.backend is Backend.READ
        self.metrics.on_done(note.op, note.consistency, reply_result(reply.payload),
                             self._clock() - note.started, by_read)

    def flush(self) -> None:
        pass
