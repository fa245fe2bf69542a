"""
The sync client's methods beyond get/put/delete, conditional writes and the change
stream: batches and ttls (`BatchMethods`), counters and leases (`LeaseMethods`),
queries, the `events` catch-up and secondary indexes (`QueryMethods`) and cluster
membership (`MemberMethods`). Each builds its request with concord.client.requests and runs it
through `Client._do` (the retry loop); mixed into `concord.client.Client`, like
concord.client.auth's `AuthMethods`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from concord.client import requests
from concord.client.requests import NO_DEFAULT, Filter, Range, Req
from concord.client.results import BulkDeleteResult, EventsPage, KeysPage, Page, ValueWithTTL

T = TypeVar("T")

Consistency = str  # "eventual" | "leader" | "strong" (checked against the wire table)


class BatchMethods:
    """Batches and ttls of the sync client."""

    def _do(self, req: Req[T]) -> T:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def put_many(self, items: Iterable[tuple[str, object] | tuple[str, object, float | None]]) -> int:
        """
        Store several keys atomically (all or none, at most 500): items are
        (key, value) or (key, value, ttl).

        Returns:
            The one store revision of all the writes.
        """
        return self._do(requests.put_many(items))

    def get_many(self, keys: Iterable[str], consistency: Consistency = "leader") -> dict[str, object]:
        """The values of the keys that exist (absent keys are left out)."""
        return self._do(requests.get_many(keys, consistency))

    def delete_many(self, keys: Iterable[str]) -> BulkDeleteResult:
        """Delete several keys atomically; `deleted` counts those that existed."""
        return self._do(requests.delete_many(keys))

    def touch(self, key: str, ttl: float | None) -> int:
        """
        Give `key` a new ttl (seconds from now); None clears its ttl (never expires).

        Returns:
            The store revision.

        Raises:
            NotFoundError: the key is absent.
        """
        return self._do(requests.touch(key, ttl))

    def touch_many(self, items: Iterable[tuple[str, float]]) -> int:
        """New ttls for several keys atomically; NotFoundError (nothing changes) if one is absent."""
        return self._do(requests.touch_many(items))

    def ttl(self, key: str, consistency: Consistency = "leader") -> float | None:
        """
        Seconds left before `key` expires; None if it never does.

        Raises:
            NotFoundError: the key is absent.
        """
        return self._do(requests.ttl(key, consistency))

    def get_with_ttl(self, key: str, consistency: Consistency = "leader") -> ValueWithTTL:
        """
        The value and seconds left of `key`.

        Raises:
            NotFoundError: the key is absent.
        """
        return self._do(requests.get_with_ttl(key, consistency))

    def get_all(
        self, limit: int | None = None, after: str | None = None, consistency: Consistency = "leader"
    ) -> Page:
        """One page of (key, value) pairs in key order, keys > `after`."""
        return self._do(requests.get_all(limit, after, consistency))


class LeaseMethods:
    """Counters and leases of the sync client."""

    def _do(self, req: Req[T]) -> T:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def incr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        """
        Add `delta` to the integer at `key` in one log entry (absent: 0) and return the new
        value. `ttl` applies only when this call creates the key; an existing key keeps its
        expiry (so `incr(key, ttl=60)` counts in fixed 60 s windows: a rate limiter).

        Raises:
            InvalidRequestError: the value is not an integer, or would leave int64.
        """
        return self._do(requests.incr(key, delta, ttl))

    def decr(self, key: str, delta: int = 1, *, ttl: float | None = None) -> int:
        """`incr` of -delta."""
        return self._do(requests.decr(key, delta, ttl))

    def lease_grant(self, ttl: float) -> int:
        """A new lease of `ttl` seconds; returns its id (keep it alive with lease_keepalive)."""
        return self._do(requests.lease_grant(ttl))

    def lease_keepalive(self, lease: int) -> float:
        """
        Renew `lease` for its ttl (from now, cluster time); returns the ttl.

        Raises:
            NotFoundError: the lease expired or was revoked (its keys are gone).
        """
        return self._do(requests.lease_keepalive(lease))

    def lease_revoke(self, lease: int) -> int:
        """Drop `lease` and delete its keys; returns how many keys were deleted."""
        return self._do(requests.lease_revoke(lease))

    def leases(self, consistency: Consistency = "leader") -> list[dict[str, object]]:
        """The live leases as `{lease, ttl, remaining, keys}` maps (wire op lease_list)."""
        return self._do(requests.lease_list(consistency))


class QueryMethods:
    """Queries, the `events` catch-up and secondary indexes of the sync client."""

    def _do(self, req: Req[T]) -> T:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def keys(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None, consistency: Consistency = "leader",
    ) -> KeysPage:
        """Keys matching every given condition, in key order (one page)."""
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return self._do(requests.keys(args, consistency))

    def query(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None, consistency: Consistency = "leader",
    ) -> Page:
        """(key, value) pairs matching every given condition, in key order (one page)."""
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return self._do(requests.query(args, consistency))

    def count(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None, consistency: Consistency = "leader",
    ) -> int:
        """How many keys match every given condition."""
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return self._do(requests.count(args, consistency))

    def delete_where(
        self, *, prefix: str | None = None, suffix: str | None = None, contains: str | None = None,
        pattern: str | None = None, range: Range | None = None, where: Filter | None = None,
        limit: int | None = None, offset: int | None = None,
    ) -> BulkDeleteResult:
        """Delete every key matching the conditions, atomically."""
        args = requests.query_args(prefix, suffix, contains, pattern, range, where, limit, offset)
        return self._do(requests.delete_where(args))

    def events(self, since_revision: int, prefix: str | None = None, limit: int | None = None) -> EventsPage:
        """Changes after `since_revision` from the retained history (catch-up for PUB/SUB)."""
        return self._do(requests.events(since_revision, prefix, limit))

    def create_index(self, name: str, field: str | Sequence[str | int]) -> bool:
        """Index the values' `field` (a path) under `name`; False if it already existed."""
        return self._do(requests.create_index(name, field))

    def drop_index(self, name: str) -> bool:
        """Drop the index `name`; False if there was none."""
        return self._do(requests.drop_index(name))

    def list_indexes(self, consistency: Consistency = "leader") -> list[dict[str, object]]:
        """The indexes as `{name, field}` maps."""
        return self._do(requests.list_indexes(consistency))

    def lookup(
        self, name: str, value: object = NO_DEFAULT, *, range: tuple[object, object] | None = None,
        limit: int | None = None, consistency: Consistency = "leader",
    ) -> Page:
        """
        (key, value) pairs whose indexed field equals `value`, or lies in the inclusive
        `range` [lo, hi] (None: open end), in (indexed value, key) order (wire op
        `index_lookup`; exactly one of value and range).

        Raises:
            NotFoundError: no index of that name.
        """
        return self._do(requests.index_lookup(name, value, range, limit, consistency))


class MemberMethods:
    """Cluster membership of the sync client."""

    def _do(self, req: Req[T]) -> T:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def members(self) -> list[dict[str, object]]:
        """The cluster members as the node lists them (`members` field)."""
        return self._do(requests.members())

    def add_member(
        self, member_id: str, host: str, client_port: int, peer_port: int, events_port: int,
        learner: bool | None = None,
    ) -> dict[str, object]:
        """
        Add a member; returns the reply fields. `learner`: None, a learner the leader
        promotes once caught up; True, a learner that stays one; False, a voter at once
        (docs/protocol.md `add_member`).
        """
        return self._do(requests.add_member(member_id, host, client_port, peer_port, events_port, learner))

    def remove_member(self, member_id: str) -> dict[str, object]:
        """Remove a member (the leader too); returns the reply fields."""
        return self._do(requests.remove_member(member_id))

    def promote_member(self, member_id: str) -> dict[str, object]:
        """Promote a learner to voter; returns the reply fields."""
        return self._do(requests.promote_member(member_id))
