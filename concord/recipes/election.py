"""
Leader election (etcd's `concurrency.Election`): the candidate whose key under `<name>/`
has the lowest create revision leads; the others wait in revision order (fair), and a
leader that dies (its lease expires) or resigns is followed by the next candidate.

The leader's revision is its term token: it grows with every change of leader, so a
resource that remembers the highest token it has seen refuses a deposed leader.
"""

from __future__ import annotations

from typing import Callable

from concord.client.client import Client
from concord.errors import NotFoundError
from concord.recipes.lock import LockLostError, Queue, Waiter

__all__ = ["Election"]


class Election:
    """
    Campaign for, observe and resign leadership of `name`.

    Args:
        client: a concord Client.
        name: the election's name (a key prefix without the trailing "/").
        ttl: seconds a dead leader keeps leading before the next candidate takes over.
    """

    def __init__(self, client: Client, name: str, *, ttl: float = 10.0,
                 on_renew: Callable[[int, float], None] | None = None) -> None:
        self._queue = Queue(client, name, ttl, on_renew)
        self.revision: int | None = None

    def campaign(self, value: object, timeout_s: float | None = None) -> int:
        """
        Become a candidate with `value` and block until leader; returns the term token.

        Raises:
            LockTimeoutError: not leader within `timeout_s` (the candidacy is withdrawn).
            LockLostError: the lease expired while waiting.
        """
        revision = self._queue.enter(value)
        try:
            self._queue.wait_first(timeout_s)
        except BaseException:
            self._queue.leave()
            raise
        self.revision = revision
        return revision

    def is_leader(self) -> bool:
        """Whether this candidate surely leads now (its lease is live)."""
        lease = self._queue.lease
        return self.revision is not None and lease is not None and lease.valid()

    def proclaim(self, value: object) -> None:
        """
        Change the leader's value (keeps its place and term token).

        Raises:
            LockLostError: this candidate does not lead (anymore).
        """
        queue = self._queue
        if not self.is_leader() or queue.key is None or queue.lease is None:
            raise LockLostError("proclaim needs leadership")
        try:
            meta = queue.client.get(queue.key, consistency="strong", meta=True)
        except NotFoundError as exc:
            raise LockLostError(f"{queue.key} is gone: the lease expired") from exc
        # NB: conditional on the key's revision, so a key deleted meanwhile is not re-created
        # (a new key would take a new, later place in the queue).
        queue.client.put_if(queue.key, value, mod_revision=meta.revision, lease=queue.lease.id)

    def leader(self) -> Waiter | None:
        """The current leader's key, term token and value (None: no candidate)."""
        waiters = self._queue.waiters()
        return waiters[0] if waiters else None

    def resign(self) -> None:
        """Stop leading (or withdraw): the next candidate takes over."""
        self.revision = None
        self._queue.leave()
