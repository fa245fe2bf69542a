"""
Leases: a TTL that several keys share, kept alive by a client; when it expires (or is
revoked) every key attached to it is deleted in the same entry (service registration,
lock ownership).

Deterministic, like the rest of the state machine: a lease's id is the Raft index of the
`lease_grant` entry that created it (unique, never reused), its deadline is that entry's
timestamp plus its TTL (each `lease_keepalive` entry moves it to its own timestamp plus
the TTL), and a lease is expired for any entry whose timestamp reaches the deadline. The
leader proposes `lease_expire` for due leases (as it proposes `expire` for due keys);
applying it removes only leases still due at that entry's time, so a late or duplicate
proposal is harmless. No local clock anywhere.

A key is attached by `put` or `put_if` with `lease`; any later write that replaces the key
without that lease (a put with another or no lease), a delete or an expiry detaches it.

Snapshot rows (kv snapshot format 2): `[lease_id, ttl_ms, expires_at_ms, [key, ...]]`,
leases by id, keys sorted. The table's digest is the sum mod 2**64 of one xxh3_64 per
lease and one per (key, lease) attachment, kept incrementally.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import msgpack
import xxhash
from sortedcontainers import SortedList

from concord.errors import NotFoundError
from concord.kv.commands import LeaseExpire, LeaseGrant, LeaseKeepalive, LeaseRevoke
from concord.kv.record import Change, ChangeType

LeaseCommand = Union[LeaseGrant, LeaseKeepalive, LeaseRevoke, LeaseExpire]
LEASE_COMMANDS = (LeaseGrant, LeaseKeepalive, LeaseRevoke, LeaseExpire)

_MASK = (1 << 64) - 1
_LEASE = struct.Struct("<qqq")


@dataclass(slots=True)
class Lease:
    """One lease: its TTL, its deadline (entry time) and the keys attached to it."""

    lease_id: int
    ttl_ms: int
    expires_at_ms: int
    keys: set[str] = field(default_factory=set)

    def digest(self) -> int:
        return xxhash.xxh3_64_intdigest(_LEASE.pack(self.lease_id, self.ttl_ms, self.expires_at_ms))

    def to_list(self) -> list[object]:
        return [self.lease_id, self.ttl_ms, self.expires_at_ms, sorted(self.keys)]


def _attach_digest(key: str, lease_id: int) -> int:
    return xxhash.xxh3_64_intdigest(msgpack.packb([key, lease_id], use_bin_type=True))


class LeaseTable:
    """The leases of one state machine and the keys attached to them."""

    def __init__(self) -> None:
        self._by_id: dict[int, Lease] = {}
        self._lease_of: dict[str, int] = {}
        self._due: SortedList = SortedList()  # (expires_at_ms, lease_id)
        self.digest = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, lease_id: int) -> Lease | None:
        return self._by_id.get(lease_id)

    def live(self, lease_id: int, ts: int) -> Lease:
        """
        The lease `lease_id` if it exists and is not expired at entry time `ts`.

        Raises:
            NotFoundError: no such lease, or it expired.
        """
        lease = self._by_id.get(lease_id)
        if lease is None or lease.expires_at_ms <= ts:
            raise NotFoundError(f"lease {lease_id} not found (never granted, revoked or expired)")
        return lease

    def grant(self, lease_id: int, ttl_ms: int, ts: int) -> Lease:
        lease = Lease(lease_id, ttl_ms, ts + ttl_ms)
        self._by_id[lease_id] = lease
        self._due.add((lease.expires_at_ms, lease_id))
        self.digest = (self.digest + lease.digest()) & _MASK
        return lease

    def keepalive(self, lease_id: int, ts: int) -> Lease:
        """Move a live lease's deadline to `ts + ttl`. Raises NotFoundError as `live`."""
        lease = self.live(lease_id, ts)
        self._due.remove((lease.expires_at_ms, lease_id))
        self.digest = (self.digest - lease.digest()) & _MASK
        lease.expires_at_ms = ts + lease.ttl_ms
        self._due.add((lease.expires_at_ms, lease_id))
        self.digest = (self.digest + lease.digest()) & _MASK
        return lease

    def remove(self, lease_id: int) -> list[str]:
        """Drop a lease (revoke or expiry); returns its keys, sorted, now detached."""
        lease = self._by_id[lease_id]
        keys = sorted(lease.keys)
        for key in keys:
            self.detach(key)
        del self._by_id[lease_id]
        self._due.remove((lease.expires_at_ms, lease_id))
        self.digest = (self.digest - lease.digest()) & _MASK
        return keys

    def lease_of(self, key: str) -> int:
        """The lease `key` is attached to, 0 for none."""
        return self._lease_of.get(key, 0)

    def attach(self, key: str, lease_id: int) -> None:
        """Attach `key` to a lease (detaching it from any other); 0 only detaches."""
        if self._lease_of.get(key, 0) == lease_id:
            return
        self.detach(key)
        if lease_id:
            self._by_id[lease_id].keys.add(key)
            self._lease_of[key] = lease_id
            self.digest = (self.digest + _attach_digest(key, lease_id)) & _MASK

    def detach(self, key: str) -> None:
        lease_id = self._lease_of.pop(key, 0)
        if lease_id:
            self._by_id[lease_id].keys.discard(key)
            self.digest = (self.digest - _attach_digest(key, lease_id)) & _MASK

    def due(self, now_ms: int, limit: int) -> list[int]:
        """Ids of leases expired at `now_ms`, soonest first, at most `limit`."""
        out: list[int] = []
        for expires_at_ms, lease_id in self._due:
            if expires_at_ms > now_ms or len(out) >= limit:
                break
            out.append(lease_id)
        return out

    def listing(self, now_ms: int) -> list[dict[str, object]]:
        """Every live lease at `now_ms`: id, ttl (granted), remaining (s), keys."""
        return [
            {"lease": lease.lease_id, "ttl": lease.ttl_ms / 1000,
             "remaining": (lease.expires_at_ms - now_ms) / 1000, "keys": sorted(lease.keys)}
            for lease_id, lease in sorted(self._by_id.items())
            if lease.expires_at_ms > now_ms
        ]

    def rows(self) -> list[list[object]]:
        return [self._by_id[i].to_list() for i in sorted(self._by_id)]

    def clear(self) -> None:
        self._by_id.clear()
        self._lease_of.clear()
        self._due.clear()
        self.digest = 0

    def load(self, rows: object) -> None:
        """
        Replace the table with snapshot rows.

        Raises:
            ValueError: a malformed row.
        """
        self.clear()
        if not isinstance(rows, list):
            raise ValueError("leases must be a list")
        for row in rows:
            if not isinstance(row, list) or len(row) != 4:
                raise ValueError("lease row must be a list of 4")
            lease_id, ttl_ms, expires_at_ms, keys = row
            for number in (lease_id, ttl_ms, expires_at_ms):
                if not isinstance(number, int) or isinstance(number, bool):
                    raise ValueError("lease numbers must be integers")
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError("lease keys must be a list of strings")
            if lease_id in self._by_id:
                raise ValueError(f"lease {lease_id} appears twice")
            lease = Lease(lease_id, ttl_ms, expires_at_ms)
            self._by_id[lease_id] = lease
            self._due.add((expires_at_ms, lease_id))
            self.digest = (self.digest + lease.digest()) & _MASK
            for key in keys:
                if key in self._lease_of:
                    raise ValueError(f"key {key!r} is attached to two leases")
                self.attach(key, lease_id)


#: Deletes keys for a lease op: (keys, index, ts, change type) -> changes.
DeleteKeys = Callable[[Sequence[str], int, int, ChangeType], list[Change]]


def apply_lease_command(
    table: LeaseTable, command: LeaseCommand, index: int, ts: int, delete: DeleteKeys
) -> tuple[dict[str, object], list[Change]]:
    """
    Apply one lease command (the state machine's hook): grant, keepalive, revoke, expire.

    Raises:
        NotFoundError: keepalive or revoke of a lease that is not live at `ts`.
    """
    if isinstance(command, LeaseGrant):
        lease = table.grant(index, command.ttl_ms, ts)
        return {"lease": lease.lease_id, "ttl": lease.ttl_ms / 1000}, []
    if isinstance(command, LeaseKeepalive):
        lease = table.keepalive(command.lease, ts)
        return {"lease": lease.lease_id, "ttl": lease.ttl_ms / 1000}, []
    if isinstance(command, LeaseRevoke):
        table.live(command.lease, ts)
        changes = delete(table.remove(command.lease), index, ts, ChangeType.DELETE)
        return {"deleted": len(changes)}, changes
    changes = []
    expired = 0
    for lease_id in command.leases:
        due = table.get(lease_id)
        if due is None or due.expires_at_ms > ts:
            continue  # kept alive, revoked or expired since the proposal
        expired += 1
        changes += delete(table.remove(lease_id), index, ts, ChangeType.EXPIRE)
    return {"expired": expired}, changes
