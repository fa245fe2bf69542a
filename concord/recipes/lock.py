"""
A fair distributed lock with a fencing token (etcd's `concurrency.Mutex`).

How it works (every step an ordinary op):

1. grant a lease kept alive by this process (`KeptLease`), and `put` a key
   `<name>/<lease id>` attached to it: its create revision is this waiter's place in the
   queue, and the FENCING TOKEN once it holds the lock;
2. list the keys under `<name>/` with strong reads; the waiter whose key has the lowest
   create revision holds the lock; every other waits for the key just ahead of its own
   to be deleted (released, or its lease expired), then looks again.

Fair: waiters are served in the order their keys were created (FIFO by revision).
Safe when the holder dies: its lease expires and the leader deletes its key, which lets
the next waiter in. A holder that is alive but cut off must stop at its local lease
deadline (`valid()`), and a resource that checks fencing tokens (refusing any token lower
than the highest it has seen) refuses it even if it does not: tokens grow with every
hand-over. docs/recipes.md shows both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from concord.client.client import Client
from concord.errors import ConcordError, NotFoundError
from concord.recipes.lease import KeptLease

__all__ = ["Lock", "LockLostError", "LockTimeoutError", "Waiter"]

log = logging.getLogger(__name__)

_POLL_S = (0.02, 0.25)  # the backoff of waiting for the key ahead to go


class LockLostError(ConcordError):
    """The lease under a waiter or holder expired: its key is gone, its place lost."""


class LockTimeoutError(ConcordError, TimeoutError):
    """The lock (or leadership) was not obtained within the given time."""


@dataclass(frozen=True, slots=True)
class Waiter:
    """One key of the queue: its create revision orders it."""

    key: str
    revision: int
    value: object


class Queue:
    """
    The keys under `<name>/`, each attached to its owner's lease, ordered by create
    revision: the machinery shared by `Lock` and `concord.recipes.Election`.
    """

    def __init__(self, client: Client, name: str, ttl: float,
                 on_renew: Callable[[int, float], None] | None = None) -> None:
        if not name or name.endswith("/"):
            raise ValueError(f"name must be non-empty and not end with '/', got {name!r}")
        self.client = client
        self.prefix = f"{name}/"
        self.ttl = ttl
        self._on_renew = on_renew
        self.lease: KeptLease | None = None
        self.key: str | None = None
        self.revision: int | None = None

    def waiters(self) -> list[Waiter]:
        """The live keys of the queue, first (the holder) first: strong reads."""
        page = self.client.keys(prefix=self.prefix, consistency="strong", limit=100_000)
        out = []
        for key in page.keys:
            try:
                meta = self.client.get(key, consistency="strong", meta=True)
            except NotFoundError:
                continue  # released (or expired) since the listing
            out.append(Waiter(key, meta.create_revision, meta.value))
        return sorted(out, key=lambda w: w.revision)

    def enter(self, value: object) -> int:
        """Grant a lease and put this waiter's key; returns its create revision."""
        self.lease = KeptLease(self.client, self.ttl, self._on_renew)
        self.key = f"{self.prefix}{self.lease.id:020d}"
        self.client.put(self.key, value, lease=self.lease.id)
        meta = self.client.get(self.key, consistency="strong", meta=True)
        self.revision = meta.create_revision
        return self.revision

    def wait_first(self, timeout_s: float | None) -> None:
        """
        Block until this waiter's key is the first of the queue.

        Raises:
            LockLostError: the lease expired meanwhile.
            LockTimeoutError: `timeout_s` passed (the key stays; call `leave`).
        """
        assert self.lease is not None and self.revision is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._check_lease()
            ahead = [w for w in self.waiters() if w.revision < self.revision]
            if not ahead:
                self._check_lease()
                return
            self._wait_gone(ahead[-1].key, deadline)

    def _wait_gone(self, key: str, deadline: float | None) -> None:
        pause = _POLL_S[0]
        while self.client.get(key, consistency="strong", default=None) is not None:
            self._check_lease()
            if deadline is not None and time.monotonic() + pause > deadline:
                raise LockTimeoutError(f"{self.key} still waits for {key}")
            # NB: polling, not a subscription: one strong read per pause, bounded backoff.
            self.lease.lost.wait(pause)  # type: ignore[union-attr]
            pause = min(pause * 2, _POLL_S[1])

    def _check_lease(self) -> None:
        assert self.lease is not None
        if not self.lease.valid():
            raise LockLostError(f"the lease of {self.key} expired")

    def leave(self) -> None:
        """Revoke the lease: the key goes, and the next waiter moves up."""
        lease, self.lease = self.lease, None
        self.key = self.revision = None
        if lease is not None:
            try:
                lease.revoke()
            except NotFoundError:
                pass


class Lock:
    """
    A fair lock named `name` (its keys live under `<name>/`).

    Args:
        client: a concord Client.
        name: the lock's name (a key prefix without the trailing "/").
        ttl: seconds a dead holder keeps the lock before the next waiter gets it.
        on_renew: see KeptLease (called with the lease id and each new local deadline).
    """

    def __init__(self, client: Client, name: str, *, ttl: float = 10.0,
                 on_renew: Callable[[int, float], None] | None = None) -> None:
        self._queue = Queue(client, name, ttl, on_renew)
        self.token: int | None = None

    def acquire(self, timeout_s: float | None = None) -> int:
        """
        Wait for the lock (FIFO by revision) and return the fencing token.

        Raises:
            LockTimeoutError: not obtained within `timeout_s` (nothing is left behind).
            LockLostError: the lease expired while waiting.
        """
        if self.token is not None:
            raise RuntimeError("this Lock is held already")
        revision = self._queue.enter(value=None)
        try:
            self._queue.wait_first(timeout_s)
        except BaseException:
            self._queue.leave()
            raise
        self.token = revision
        log.info("lock acquired name=%s token=%d", self._queue.prefix, revision)
        return revision

    def valid(self) -> bool:
        """Whether this holder surely still holds the lock (its lease is live)."""
        lease = self._queue.lease
        return self.token is not None and lease is not None and lease.valid()

    @property
    def lease_id(self) -> int | None:
        """The id of the lease under this waiter's key (None before acquire)."""
        lease = self._queue.lease
        return lease.id if lease is not None else None

    @property
    def deadline(self) -> float | None:
        """The time.monotonic() until which the lock is surely held (None: not held)."""
        lease = self._queue.lease
        return lease.deadline if self.token is not None and lease is not None else None

    def release(self) -> None:
        """Release the lock (revoke the lease; the next waiter gets it)."""
        self.token = None
        self._queue.leave()

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
