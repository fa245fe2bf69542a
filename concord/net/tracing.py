"""
The front door's tracing observer (concord.net.observer.DoorObserver): a
`concord.door/<op>` span per traced request, from its arrival to the reply, whose
context replaces the request's traceparent on the way to the backend (so the raft
worker's spans are its children). Only a traced request's payload is re-encoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from concord.net.wire import Request, pack, unpack_map
from concord.tracing import NodeTracing, traceparent_of

__all__ = ["DoorTracing"]


class DoorTracing:
    """Spans at the front door; see the module docstring."""

    hold_replies = False

    def __init__(self, tracing: NodeTracing) -> None:
        self.tracing = tracing

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        if not self.tracing.wants(request.traceparent):
            return None, request, payload
        span = self.tracing.start(f"concord.door/{request.op}", request.traceparent,
                                  {"concord.op": request.op, "concord.node": self.tracing.node},
                                  server=True)
        if not span.is_recording():
            return None, request, payload
        traceparent = traceparent_of(span)
        obj = unpack_map(payload, len(payload))
        obj["traceparent"] = traceparent
        return span, dataclasses.replace(request, traceparent=traceparent), pack(obj)

    def end(self, note: object, reply: Mapping[object, object]) -> None:
        from opentelemetry.trace import Span, StatusCode  # noqa: PLC0415

        assert isinstance(note, Span)
        ok = reply.get("ok") is True
        note.set_attribute("concord.result", "ok" if ok else str(reply.get("error")))
        revision = reply.get("revision")
        if isinstance(revision, int):
            note.set_attribute("concord.revision", revision)
        if not ok:
            note.set_status(StatusCode.ERROR, str(reply.get("error")))
        note.end()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.tracing.shutdown()
