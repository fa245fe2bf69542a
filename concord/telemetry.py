"""
Telemetry hooks for applications: attach a handler to an event, in the style of Erlang's
`telemetry` (docs/observability.md, "Telemetry events").

    import concord.telemetry as telemetry

    def on_call(event, measurements, metadata):
        histogram.labels(metadata["op"], metadata["result"]).observe(measurements["duration_s"])

    telemetry.attach("my-app-latency", "concord.client.call", on_call)
    ...
    telemetry.detach("my-app-latency")

Events (EVENTS is the one table: name -> measurements and metadata keys):

- `concord.client.call`: every client API call, sync (`concord.Client`) or served from
  same-host shared memory;
- `concord.node.status`: the embedded node's status, every `status_interval_s`;
- `concord.node.state_change`: its role, leader or term changed;
- `concord.node.snapshot`: it wrote or installed a newer snapshot.

Handlers run synchronously in the thread that emits the event (the caller's thread for
client calls, the embedded node's watcher thread for node events): keep them short. A
handler that raises is detached, with one WARNING naming it and the exception; the
caller never sees the exception. Thread-safe: attach and detach from any thread.

Process-local: a node's own processes do not emit these (they export Prometheus
metrics, concord.metrics); this module never opens a socket or starts a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["CLIENT_CALL", "EVENTS", "EventSpec", "Handler", "attach", "client_call", "detach",
           "emit", "handlers", "listening"]

log = logging.getLogger(__name__)

Measurements = Mapping[str, float]
Metadata = Mapping[str, object]
Handler = Callable[[str, Measurements, Metadata], None]
"""`handler(event, measurements, metadata)`; its return value is ignored."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What an event carries: numeric measurements and descriptive metadata."""

    measurements: tuple[str, ...]
    metadata: tuple[str, ...]
    doc: str


#: Every event a handler can attach to (docs/observability.md lists them from here).
EVENTS: Mapping[str, EventSpec] = {
    "concord.client.call": EventSpec(
        ("duration_s",),
        ("op", "consistency", "result", "served"),
        "One client API call (sync or asyncio client), from the request's start to its "
        "reply or error. `result` is \"ok\" or the error code (not_found, timeout, ...; "
        "\"unknown\" for a write that may or may not have happened, \"protocol_error\", "
        "\"error\" for anything else); `consistency` is the read's level or None; `served` "
        "is \"wire\" or \"shm\" (same-host shared memory: no request sent).",
    ),
    "concord.node.status": EventSpec(
        ("term", "commit", "applied", "keys", "db_bytes", "members"),
        ("node", "role", "leader", "cluster_id"),
        "The embedded node's `status` (docs/node.md), every `status_interval_s`.",
    ),
    "concord.node.state_change": EventSpec(
        ("term",),
        ("node", "role", "leader", "previous_role", "previous_leader", "previous_term"),
        "The embedded node's role, leader or term differs from the previous status.",
    ),
    "concord.node.snapshot": EventSpec(
        ("index",),
        ("node", "previous_index"),
        "The embedded node's newest snapshot index grew (a snapshot written or installed).",
    ),
}

CLIENT_CALL = "concord.client.call"

_lock = threading.Lock()
# event -> ((name, handler), ...): replaced whole on every change, read without the lock.
_by_event: dict[str, tuple[tuple[str, Handler], ...]] = {}
_names: dict[str, str] = {}  # handler name -> event


def attach(name: str, event: str, handler: Handler) -> None:
    """
    Call `handler(event, measurements, metadata)` on every `event` until `detach(name)`.

    Raises:
        ValueError: `event` is not in EVENTS, or a handler called `name` is attached.
        TypeError: `handler` is not callable.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown telemetry event {event!r} (known: {', '.join(EVENTS)})")
    if not callable(handler):
        raise TypeError(f"telemetry handler {name!r} must be callable, got {handler!r}")
    with _lock:
        if name in _names:
            raise ValueError(f"a telemetry handler named {name!r} is already attached "
                             f"(to {_names[name]})")
        _names[name] = event
        _by_event[event] = (*_by_event.get(event, ()), (name, handler))


def detach(name: str) -> bool:
    """Remove the handler called `name`; False if none was attached."""
    with _lock:
        event = _names.pop(name, None)
        if event is None:
            return False
        kept = tuple(h for h in _by_event.get(event, ()) if h[0] != name)
        if kept:
            _by_event[event] = kept
        else:
            _by_event.pop(event, None)
        return True


def handlers(event: str | None = None) -> list[str]:
    """Names of the attached handlers (of `event`, or all), in attach order."""
    with _lock:
        if event is not None:
            return [n for n, _ in _by_event.get(event, ())]
        return list(_names)


def listening(event: str) -> bool:
    """True if a handler is attached to `event` (emitters skip the work otherwise)."""
    return event in _by_event


def emit(event: str, measurements: Measurements, metadata: Metadata) -> None:
    """
    Run every handler of `event`. Never raises: a handler that raises is detached and
    logged once (WARNING) with its exception.
    """
    for name, handler in _by_event.get(event, ()):
        try:
            handler(event, measurements, metadata)
        except Exception:  # noqa: BLE001 - a handler must never break the caller
            if detach(name):
                log.warning("telemetry handler raised and was detached name=%s event=%s",
                            name, event, exc_info=True)


def client_call(op: str, args: Mapping[str, object] | None, duration_s: float,
                outcome: BaseException | Mapping[str, object] | None, served: str) -> None:
    """
    Emit CLIENT_CALL for one call. `outcome`: None (ok), the exception it raised, or the
    reply map of a same-host read (`{"ok": false, "error": code}` when it failed).
    """
    if isinstance(outcome, Mapping):
        code = outcome.get("error")
        result = str(code) if outcome.get("ok") is False and code else "ok"
    elif outcome is None:
        result = "ok"
    else:
        result = _error_result(outcome)
    consistency = args.get("consistency") if args else None
    emit(CLIENT_CALL, {"duration_s": duration_s},
         {"op": op, "consistency": consistency, "result": result, "served": served})


def _error_result(exc: BaseException) -> str:
    from concord.errors import ClientError, ProtocolError, UnknownResultError  # noqa: PLC0415

    if isinstance(exc, UnknownResultError):
        return "unknown"
    if isinstance(exc, ClientError):
        return str(exc.code)
    if isinstance(exc, ProtocolError):
        return "protocol_error"
    return "error"
