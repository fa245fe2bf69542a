"""
Where a client sends its writes: a node's direct endpoint (docs/protocol.md
"Direct endpoint"), learned from the node's `status` reply (field `direct`).

The request logic (concord.client.plan `CallPlan`) routes by CLIENT endpoints (what the
user gives, what leader hints and `leader_client` name). For an op `eligible` here, the
attempt at client endpoint E is sent to E's direct endpoint instead when it is known:
the raft worker then answers it on that socket, without the front door's hop each way.
What E's direct endpoint is comes from one `status` probe to E (an attempt of its own,
sent before the call's first request to E, once per client and endpoint: `DirectRoutes`
is shared by the calls of a client). A node without one (`direct` nil: off, or the door's
observers are on) is remembered as such; a probe that fails (silence, refused, an error)
is tried again after RETRY_S, the request meanwhile going through E. A direct endpoint
that refuses an attempt (connection down: the raft worker is restarting) or is silent is
forgotten for RETRY_S, and the call goes on through E (a refused attempt was not sent:
resent at once; silence is silence, handled as at E). Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from concord.net.wire import OPS, OpKind

__all__ = ["PROBE_OP", "PROBE_WAIT_S", "RETRY_S", "DirectRoutes", "eligible"]

#: The op that tells a client a node's direct endpoint (its `direct` result field).
PROBE_OP = "status"
#: Seconds before a failed probe, or a direct endpoint that failed, is tried again.
RETRY_S = 5.0
#: The least a probe waits, within half the call's remaining time (the other half is the
#: request's own): `status` is heavier than a write, and a probe given up too soon resets a
#: live socket (Lazy Pirate) for nothing.
PROBE_WAIT_S = 1.0


def eligible(op: str, args: Mapping[str, object]) -> bool:
    """
    Whether a call of `op` goes to direct endpoints: a write. Not a strong read, which the
    endpoint serves too: the client endpoint's door answers strong reads itself after one
    read barrier per pass (concord.net.door_strong), cheaper for the raft worker than one
    ReadIndex read each from 64 clients on (docs/benchmarks.md "Direct endpoint").
    """
    spec = OPS.get(op)
    return spec is not None and spec.kind is OpKind.WRITE


class DirectRoutes:
    """Client endpoint -> its node's direct endpoint, as far as this client knows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, str | None] = {}  # None: that node has none
        self._probing: set[str] = set()
        self._retry_at: dict[str, float] = {}

    def route(self, endpoint: str, now: float) -> tuple[str | None, bool]:
        """
        (the direct endpoint of client endpoint `endpoint` or None, whether the caller
        must probe it first: then it alone does, until `learned`).
        """
        with self._lock:
            if endpoint in self._known:
                return self._known[endpoint], False
            if endpoint in self._probing or self._retry_at.get(endpoint, 0.0) > now:
                return None, False
            self._probing.add(endpoint)
            return None, True

    def learned(self, endpoint: str, reply: Mapping[str, object] | None, now: float) -> None:
        """The probe of `endpoint` ended: its `status` reply, None for silence or refusal."""
        with self._lock:
            self._probing.discard(endpoint)
            if reply is None or reply.get("ok") is not True:
                self._retry_at[endpoint] = now + RETRY_S
                return
            direct = reply.get("direct")
            self._known[endpoint] = direct if isinstance(direct, str) and direct else None

    def failed(self, endpoint: str, now: float) -> None:
        """The direct endpoint of `endpoint` refused or was silent: forget it for a while."""
        with self._lock:
            self._known.pop(endpoint, None)
            self._retry_at[endpoint] = now + RETRY_S

    def known(self, endpoint: str) -> str | None:
        """The direct endpoint known for `endpoint`, None if none or not known (yet)."""
        with self._lock:
            return self._known.get(endpoint)
