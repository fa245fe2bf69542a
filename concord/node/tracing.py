"""
Tracing in the raft worker and the log writer (concord/tracing.py has the design).

RaftTracing (raft worker), on any node:
- a request with a sampled traceparent gets a `concord.raft/<op>` span until its reply;
  a write's entry index is remembered with the span's traceparent, so that
- the APPENDs carrying that entry to followers carry a trace map {index: traceparent}
  (`append_trace`), and the PERSIST carrying it to the log writer is preceded by a TRACE
  message (`persist_trace`);
- a follower that receives a traced APPEND starts a `concord.raft.append` span per
  traced entry (`on_append`), ended once its writer persisted it (`on_persisted`), and
  hands its own span's traceparent to its writer the same way.

WriterTracing (log writer): a TRACE message's traceparents get a `concord.wal.fsync`
span (or `concord.wal.write` when no fsync was needed) from its arrival to the end of
the flush that made the PERSIST durable.

Untraced traffic costs an emptiness test of a dict per message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from concord.raft.messages import Entry, Snapshot
from concord.raft.state import HardState
from concord.tracing import NodeTracing, is_sampled, traceparent_of

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["RaftTracing", "TracedSink", "WriterTracing"]

#: Traced entries remembered at most (a leader that never applies them forgets the oldest).
MAX_TRACED = 4096


class RaftTracing:
    """The raft worker's spans; see the module docstring. Not thread-safe."""

    def __init__(self, tracing: NodeTracing) -> None:
        self.tracing = tracing
        self._requests: dict[int, Span] = {}  # request id -> span
        self._entries: dict[int, str] = {}  # entry index -> traceparent its spans hang under
        self._appends: dict[int, Span] = {}  # follower: entry index -> concord.raft.append span
        self._persisting: list[tuple[int, list[Span]]] = []  # (persist number, append spans)

    # -- requests (any node) -------------------------------------------------------------

    def begin_request(self, request_id: int, op: str, traceparent: str | None) -> None:
        """A request the raft worker handles (traced if its traceparent is sampled)."""
        if not is_sampled(traceparent):
            return
        self._requests[request_id] = self.tracing.start(
            f"concord.raft/{op}", traceparent, {"concord.op": op, "concord.node": self.tracing.node})

    def proposed(self, request_id: int, index: int) -> None:
        """The write `request_id` became the entry at `index`: its spans follow the entry."""
        span = self._requests.get(request_id) if self._requests else None
        if span is not None:
            span.set_attribute("concord.index", index)
            self._remember(index, traceparent_of(span))

    def end_request(self, request_id: int, status: str) -> None:
        span = self._requests.pop(request_id, None) if self._requests else None
        if span is not None:
            span.set_attribute("concord.status", status)
            span.end()

    def _remember(self, index: int, traceparent: str) -> None:
        if len(self._entries) >= MAX_TRACED:
            del self._entries[min(self._entries)]
        self._entries[index] = traceparent

    def prune(self, applied: int) -> None:
        """Forget the leader's traced entries at or below `applied`."""
        if self._entries:
            for index in [i for i in self._entries if i <= applied]:
                del self._entries[index]

    # -- replication -----------------------------------------------------------------------

    def append_trace(self, entries: Sequence[Entry]) -> dict[int, str] | None:
        """The trace map of an APPEND carrying `entries`, or None if none is traced."""
        if not self._entries or not entries:
            return None
        traced = self._entries
        found = {e.index: traced[e.index] for e in entries if e.index in traced}
        return found or None

    def on_append(self, sender: str, trace: Mapping[int, str]) -> None:
        """A follower received a traced APPEND: a span per traced entry, until persisted."""
        for index, parent in trace.items():
            if index in self._appends or not is_sampled(parent):
                continue
            span = self.tracing.start("concord.raft.append", parent, {
                "concord.index": index, "concord.from": sender, "concord.node": self.tracing.node})
            self._appends[index] = span
            self._remember(index, traceparent_of(span))
            if len(self._appends) > MAX_TRACED:
                self._appends.pop(min(self._appends)).end()

    def persist_trace(self, number: int, entries: Sequence[Entry]) -> list[str]:
        """The traceparents a PERSIST numbered `number` carries (for the writer's TRACE)."""
        if not self._entries or not entries:
            return []
        traced = self._entries
        found = [traced[e.index] for e in entries if e.index in traced]
        spans = [self._appends.pop(e.index) for e in entries if e.index in self._appends]
        if spans:
            self._persisting.append((number, spans))
        return found

    def on_persisted(self, number: int) -> None:
        """The writer made every PERSIST up to `number` durable: end those append spans."""
        while self._persisting and self._persisting[0][0] <= number:
            _, spans = self._persisting.pop(0)
            for span in spans:
                span.end()

    def shutdown(self) -> None:
        for span in self._requests.values():
            span.end()
        self.tracing.shutdown()


class _Writer(Protocol):
    def persist(self, number: int, entries: Sequence[Entry], hard_state: HardState | None,
                snapshot: Snapshot | None, must_sync: bool) -> None: ...

    def trace(self, number: int, traceparents: list[str]) -> None: ...


class TracedSink:
    """The driver's LogSink when tracing is on: a TRACE message before a traced PERSIST."""

    def __init__(self, writer: _Writer, tracing: RaftTracing) -> None:
        self.writer = writer
        self.tracing = tracing

    def persist(self, number: int, entries: Sequence[Entry], hard_state: HardState | None,
                snapshot: Snapshot | None, must_sync: bool) -> None:
        traced = self.tracing.persist_trace(number, entries)
        if traced:
            self.writer.trace(number, traced)
        self.writer.persist(number, entries, hard_state, snapshot, must_sync)


@dataclass(slots=True)
class _Traced:
    number: int
    traceparents: list[str]
    received_ns: int = field(default_factory=time.time_ns)


class WriterTracing:
    """The log writer's spans; see the module docstring."""

    def __init__(self, tracing: NodeTracing) -> None:
        self.tracing = tracing
        self._waiting: list[_Traced] = []

    def on_trace(self, number: int, traceparents: list[str]) -> None:
        self._waiting.append(_Traced(number, traceparents))

    def on_flushed(self, persisted: int, synced: bool, flush_started_ns: int) -> None:
        """Every PERSIST up to `persisted` is durable (fsynced if `synced`)."""
        if not self._waiting:
            return
        now = time.time_ns()
        name = "concord.wal.fsync" if synced else "concord.wal.write"
        while self._waiting and self._waiting[0].number <= persisted:
            traced = self._waiting.pop(0)
            for parent in traced.traceparents:
                span = self.tracing.start(name, parent, {
                    "concord.node": self.tracing.node, "concord.persist_number": traced.number,
                    "concord.flush_ms": (now - flush_started_ns) / 1e6}, start_ns=traced.received_ns)
                span.end(end_time=now)

    def shutdown(self) -> None:
        self.tracing.shutdown()
