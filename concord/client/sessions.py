"""
Client sessions for exactly-once writes with many writes in flight (docs/client.md
"Sessions"): which (client_id, seq) each write call carries and the `min_seq` sent with
it. No I/O; thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["SessionSlots", "Ticket"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """The session of one write call: its (client_id, seq) and where to read min_seq."""

    client_id: str
    seq: int
    slot: int
    slots: SessionSlots

    @property
    def pair(self) -> tuple[str, int]:
        return self.client_id, self.seq

    def min_seq(self) -> int:
        """The slot's lowest seq still in flight (this call's own at most): docs/protocol.md."""
        return self.slots.min_seq(self.slot)


class SessionSlots:
    """
    Session ids for exactly-once writes with many writes in flight. Thread-safe.

    Raft thesis §6.3: every write carries (client_id, seq, min_seq), min_seq being the
    lowest seq of that client_id still in flight here; the state machine keeps the result
    of every seq >= min_seq (concord/kv/sessions.py), so any retry is answered from its
    first result. A session keeps at most 1024 results (kv.sessions), so a slot (one
    client_id) holds at most `WINDOW` writes in flight; beyond that a write takes the next
    slot (`client_id/n`). Seqs of a slot only grow.
    """

    #: Writes in flight per client_id (below the state machine's 1024 results per session).
    WINDOW = 512

    def __init__(self, client_id: str, first_seq: int) -> None:
        self.client_id = client_id
        self._first_seq = first_seq
        self._lock = threading.Lock()
        self._seqs: list[int] = []  # last seq taken, per slot
        self._inflight: list[set[int]] = []  # seqs in flight, per slot
        self.last_seq = first_seq

    def take(self) -> Ticket:
        """A seq on the first slot with room in its window."""
        with self._lock:
            slot = next((n for n, f in enumerate(self._inflight) if len(f) < self.WINDOW), None)
            if slot is None:
                slot = len(self._seqs)
                self._seqs.append(self._first_seq)
                self._inflight.append(set())
            self._seqs[slot] += 1
            seq = self._seqs[slot]
            self._inflight[slot].add(seq)
            self.last_seq = seq
            return Ticket(self.slot_id(slot), seq, slot, self)

    def min_seq(self, slot: int) -> int:
        with self._lock:
            flying = self._inflight[slot]
            return min(flying) if flying else self._seqs[slot] + 1

    def give_back(self, ticket: Ticket) -> None:
        """The call of `ticket` ended (answered or given up): its seq is acknowledged."""
        with self._lock:
            self._inflight[ticket.slot].discard(ticket.seq)

    def slot_id(self, slot: int) -> str:
        return self.client_id if slot == 0 else f"{self.client_id}/{slot}"

    @property
    def slots(self) -> int:
        """How many session ids were ever needed (more than one past WINDOW writes in flight)."""
        with self._lock:
            return len(self._seqs)
