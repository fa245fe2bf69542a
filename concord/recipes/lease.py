"""
A lease kept alive by a background thread (etcd's `clientv3.KeepAlive`).

The holder's view of validity is local and conservative: after each keepalive the lease
is valid until `sent + ttl - margin`, where `sent` is the monotonic time BEFORE the
keepalive was sent. The node stamps the keepalive entry after it was sent, and the leader
expires the lease only at an entry whose timestamp reaches that stamp plus the ttl, so
the local deadline comes first as long as the nodes' clocks run at the rate of this
host's (the margin absorbs rate differences). A holder past its deadline must stop
acting on what the lease protects: `valid()` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from concord.client.client import Client
from concord.errors import ClientError, ConcordError, NotFoundError

__all__ = ["KeptLease", "LeaseLostError"]

log = logging.getLogger(__name__)

#: Part of the ttl held back from the local deadline (clock rate differences, scheduling).
MARGIN_FRACTION = 0.1


class LeaseLostError(ConcordError):
    """The lease expired (or was revoked) before it was released."""


class KeptLease:
    """
    A lease granted now and renewed every ttl/3 until `revoke()` (or `close()`).

    Args:
        client: a concord Client (shared; the keepalives are ordinary session writes).
        ttl: seconds; the lease (and its keys) die this long after the last keepalive.
        on_renew: called with (lease id, new local deadline as time.monotonic) BEFORE
            `valid()` can see it (the chaos checker logs it there).

    Raises:
        ClientError: the grant failed.
    """

    def __init__(self, client: Client, ttl: float,
                 on_renew: Callable[[int, float], None] | None = None) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        self.client = client
        self.ttl = ttl
        self._margin = ttl * MARGIN_FRACTION
        self._on_renew = on_renew
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lost = threading.Event()
        sent = time.monotonic()
        self.id = client.lease_grant(ttl)
        self._deadline = self._renewed(sent)
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.id}", daemon=True)
        self._thread.start()

    @property
    def deadline(self) -> float:
        """The time.monotonic() until which the lease is surely live."""
        with self._lock:
            return self._deadline

    def valid(self) -> bool:
        """Whether the lease is surely live now (not lost, before the local deadline)."""
        return not self.lost.is_set() and time.monotonic() < self.deadline

    def _renewed(self, sent: float) -> float:
        deadline = sent + self.ttl - self._margin
        if self._on_renew is not None:
            self._on_renew(self.id, deadline)
        return deadline

    def _run(self) -> None:
        period = self.ttl / 3
        while not self._stop.wait(period):
            sent = time.monotonic()
            try:
                self.client.call("lease_keepalive", {"lease": self.id}, timeout_s=period)
            except NotFoundError:
                log.warning("lease lost lease=%d (expired or revoked)", self.id)
                self.lost.set()
                return
            except ClientError as exc:
                log.warning("lease keepalive failed lease=%d error=%s", self.id, exc)
                if time.monotonic() >= self.deadline:
                    self.lost.set()
                continue
            deadline = self._renewed(sent)
            with self._lock:
                self._deadline = max(self._deadline, deadline)

    def close(self) -> None:
        """Stop renewing (the lease then expires after its ttl)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def revoke(self) -> None:
        """Stop renewing and revoke the lease now (its keys are deleted)."""
        self.close()
        self.lost.set()
        try:
            self.client.lease_revoke(self.id)
        except NotFoundError:
            pass  # expired already: its keys are gone too

    def __enter__(self) -> KeptLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()
