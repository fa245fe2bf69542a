"""The recipes (concord.recipes) and the counter and lease ops against a real node."""

from __future__ import annotations

import threading

import pytest

from concord.client import Client
from concord.errors import NotFoundError
from concord.recipes import Election, KeptLease, Lock
from tests.helpers import wait_until
from tests.integration.conftest import ClusterFactory, cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]


def test_lock_is_fifo_by_revision_and_tokens_grow_when_handed_over(cluster: ClusterFactory) -> None:  # noqa: F811
    """A holds; B then C queue; each release hands over to the next in revision order."""
    c = cluster(1)
    c.wait_leader()
    with Client(c.nodes[c.ids[0]].client, shm=False) as client:
        order: list[tuple[str, int]] = []
        a = Lock(client, "locks/db", ttl=5)
        order.append(("a", a.acquire(timeout_s=10)))
        locks = {"b": Lock(client, "locks/db", ttl=5), "c": Lock(client, "locks/db", ttl=5)}
        done: dict[str, threading.Event] = {name: threading.Event() for name in locks}

        def wait(name: str) -> None:
            token = locks[name].acquire(timeout_s=30)
            order.append((name, token))
            done[name].set()

        b_thread = threading.Thread(target=wait, args=("b",))
        b_thread.start()
        wait_until(lambda: len(client.keys(prefix="locks/db/", consistency="strong").keys) == 2,
                   10.0, describe="b queued")
        c_thread = threading.Thread(target=wait, args=("c",))
        c_thread.start()
        wait_until(lambda: len(client.keys(prefix="locks/db/", consistency="strong").keys) == 3,
                   10.0, describe="c queued")
        assert not done["b"].is_set() and not done["c"].is_set()
        a.release()
        assert done["b"].wait(20)
        assert not done["c"].is_set()
        locks["b"].release()
        assert done["c"].wait(20)
        locks["c"].release()
        b_thread.join(10)
        c_thread.join(10)
        assert ["a", "b", "c"] == [name for name, _ in order]
        tokens = [token for _, token in order]
        assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_lock_passes_to_the_next_waiter_when_the_holder_dies(cluster: ClusterFactory) -> None:  # noqa: F811
    """The holder stops renewing (as if killed): after its ttl the leader deletes its key."""
    c = cluster(1)
    c.wait_leader()
    with Client(c.nodes[c.ids[0]].client, shm=False) as client:
        dead = Lock(client, "locks/job", ttl=1)
        first = dead.acquire(timeout_s=10)
        assert dead._queue.lease is not None
        dead._queue.lease.close()  # no more keepalives: the process "died"
        heir = Lock(client, "locks/job", ttl=5)
        second = heir.acquire(timeout_s=20)
        assert second > first
        assert not dead.valid()  # its local deadline passed before the heir got in
        assert heir.valid()
        heir.release()


def test_election_follows_revision_order_when_the_leader_resigns(cluster: ClusterFactory) -> None:  # noqa: F811
    """The first candidate leads; on resign the next one does; leader() reports the value."""
    c = cluster(1)
    c.wait_leader()
    with Client(c.nodes[c.ids[0]].client, shm=False) as client:
        first = Election(client, "elect/svc", ttl=5)
        term = first.campaign("node-a", timeout_s=10)
        second = Election(client, "elect/svc", ttl=5)
        won = threading.Event()
        def campaign() -> None:
            second.campaign("node-b", timeout_s=30)
            won.set()

        thread = threading.Thread(target=campaign)
        thread.start()
        leader = first.leader()
        assert leader is not None and ("node-a", term) == (leader.value, leader.revision)
        first.proclaim("node-a2")
        leader = first.leader()
        assert leader is not None and ("node-a2", term) == (leader.value, leader.revision)
        first.resign()
        assert won.wait(20)
        thread.join(10)
        assert second.is_leader() and second.revision is not None and second.revision > term
        leader = second.leader()
        assert leader is not None and "node-b" == leader.value
        second.resign()
        assert second.leader() is None


def test_lease_keys_vanish_together_when_the_lease_expires(cluster: ClusterFactory) -> None:  # noqa: F811
    """Two keys share a lease kept alive for a while; once it stops, both go in one revision."""
    c = cluster(1)
    c.wait_leader()
    with Client(c.nodes[c.ids[0]].client, shm=False) as client:
        lease = KeptLease(client, 1.0)
        client.put("svc/web/1", "10.0.0.1:80", lease=lease.id)
        client.put("svc/web/2", "10.0.0.2:80", lease=lease.id)
        assert [lease.id] == [entry["lease"] for entry in client.leases()]
        assert ["svc/web/1", "svc/web/2"] == client.leases()[0]["keys"]
        lease.close()
        wait_until(lambda: client.count(prefix="svc/web/", consistency="strong") == 0, 10.0,
                   describe="the lease's keys deleted")
        with pytest.raises(NotFoundError):
            client.lease_keepalive(lease.id)
        assert [] == client.leases()


def test_concurrent_increments_are_all_counted_when_threads_share_a_client(cluster: ClusterFactory) -> None:  # noqa: F811
    """16 threads x 25 incr: the counter ends at 400 (no lost update, no double apply)."""
    c = cluster(1)
    c.wait_leader()
    with Client(c.nodes[c.ids[0]].client, shm=False, timeout_s=30.0) as client:
        def work() -> None:
            for _ in range(25):
                client.incr("hits")

        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert 400 == client.get("hits", consistency="strong")
        assert 399 == client.decr("hits")
        assert 13 == client.update("hits", lambda v: 13 if v == 399 else -1)
