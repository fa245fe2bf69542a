"""
A fake network between simulated nodes: per-link delay, loss, duplication, reordering,
one-way and two-way partitions, and clogging (FoundationDB's clog and swizzle-clog).

Pure. All randomness comes from the injected `SimRandom`; all time from the `EventLoop`.

Links are directed (a -> b). Each link delivers in FIFO order unless a reorder fault
lets a message overtake; a clogged link (or node) holds its messages until the clog
ends, then delivers them in order. A partition drops what crosses it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from dataclasses import dataclass

from concord.ids import NodeId
from concord.raft.messages import Message
from concord.sim.buggify import buggify
from concord.sim.loop import EventLoop
from concord.sim.rng import SimRandom

__all__ = ["LinkFaults", "Network"]


@dataclass(slots=True)
class LinkFaults:
    """Fault rates of the whole network (per message)."""

    min_delay_ms: int = 1
    max_delay_ms: int = 8
    drop_p: float = 0.0
    duplicate_p: float = 0.0
    reorder_p: float = 0.0
    long_delay_p: float = 0.0
    long_delay_ms: int = 300


class Network:
    """
    Delivers messages between registered endpoints through the event loop.

    Args:
        loop: virtual time.
        rng: the network's own stream.
        faults: the rates in force (mutable: the nemesis changes them).
    """

    def __init__(self, loop: EventLoop, rng: SimRandom, faults: LinkFaults) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self._handlers: dict[NodeId, Callable[[Message], None]] = {}
        self._blocked: set[tuple[NodeId, NodeId]] = set()
        self._clogged_until: dict[tuple[NodeId, NodeId], int] = {}
        self._node_clogged_until: dict[NodeId, int] = {}
        self._last_delivery: dict[tuple[NodeId, NodeId], int] = {}
        self.sent = 0
        self.dropped = 0
        self.delivered = 0

    def register(self, node: NodeId, handler: Callable[[Message], None]) -> None:
        self._handlers[node] = handler

    def unregister(self, node: NodeId) -> None:
        """A crashed node receives nothing (messages in flight to it are lost)."""
        self._handlers.pop(node, None)

    # -- faults -------------------------------------------------------------------------

    def block(self, frm: NodeId, to: NodeId) -> None:
        """One-way partition: messages frm -> to are dropped."""
        self._blocked.add((frm, to))

    def unblock(self, frm: NodeId, to: NodeId) -> None:
        """Open the one way frm -> to again (the rest of a partition stays)."""
        self._blocked.discard((frm, to))

    def is_blocked(self, frm: NodeId, to: NodeId) -> bool:
        """Whether messages from `frm` to `to` are cut."""
        return (frm, to) in self._blocked

    def partition(self, side_a: list[NodeId], side_b: list[NodeId]) -> None:
        """Two-way partition between the sides."""
        for a in side_a:
            for b in side_b:
                self._blocked.add((a, b))
                self._blocked.add((b, a))

    def isolate(self, node: NodeId, others: list[NodeId]) -> None:
        self.partition([node], [o for o in others if o != node])

    def clog_link(self, frm: NodeId, to: NodeId, until_ms: int) -> None:
        self._clogged_until[(frm, to)] = max(self._clogged_until.get((frm, to), 0), until_ms)

    def clog(self, node: NodeId, until_ms: int) -> None:
        """Hold every message to and from `node` until `until_ms`."""
        self._node_clogged_until[node] = max(self._node_clogged_until.get(node, 0), until_ms)

    def heal(self) -> None:
        """Remove every partition and clog (messages already held still arrive late)."""
        self._blocked.clear()
        self._clogged_until.clear()
        self._node_clogged_until.clear()

    @property
    def partitions(self) -> int:
        return len(self._blocked)

    # -- delivery -----------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.sent += 1
        link = (msg.frm, msg.to)
        if link in self._blocked:
            self.dropped += 1
            return
        f = self.faults
        rng = self.rng
        if rng.chance(f.drop_p) or buggify("net.drop"):
            self.dropped += 1
            return
        copies = 2 if rng.chance(f.duplicate_p) else 1
        for _ in range(copies):
            delay = rng.randint(f.min_delay_ms, f.max_delay_ms)
            if rng.chance(f.long_delay_p) or buggify("net.long_delay"):
                delay += rng.randint(f.long_delay_ms // 4, f.long_delay_ms)
            at = self.loop.now + delay
            hold = max(
                self._clogged_until.get(link, 0),
                self._node_clogged_until.get(msg.frm, 0),
                self._node_clogged_until.get(msg.to, 0),
            )
            at = max(at, hold)
            if not rng.chance(f.reorder_p):
                # FIFO per link, like one TCP connection.
                at = max(at, self._last_delivery.get(link, 0))
                self._last_delivery[link] = at
            self.loop.at(at, partial(self._deliver, msg))

    def _deliver(self, msg: Message) -> None:
        if (msg.frm, msg.to) in self._blocked:
            self.dropped += 1
            return
        handler = self._handlers.get(msg.to)
        if handler is None:
            self.dropped += 1
            return
        self.delivered += 1
        handler(msg)
