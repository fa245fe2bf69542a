"""The change stream of real nodes (tests/integration's cluster fixture): subscribe at a
follower through a leader crash; a slow subscriber under a burst."""

from __future__ import annotations

import pytest

from concord.client import Client, Event
from tests.helpers import wait_until
from tests.integration.conftest import ClusterFactory
from tests.integration.test_faults import Writer

pytestmark = [pytest.mark.integration, pytest.mark.slow]



@pytest.mark.timeout(150)
def test_follower_subscriber_gets_every_acknowledged_write_once_when_leader_killed(
    cluster: ClusterFactory,
) -> None:
    """A subscriber at a follower keeps receiving, exactly once, while the leader is SIGKILLed."""
    c = cluster(3)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with Client(c.nodes[follower].client, shm=False) as client, \
            client.subscribe(prefix="w", since_revision=0) as sub:
        assert follower == sub.node
        w = Writer(c)
        for i in range(40):
            w.put(i)
        c.nodes[leader].kill_tree()
        for i in range(40, 100):
            w.put(i)
        got: list[Event] = []

        def all_arrived() -> bool:
            event = sub.next(0.2)
            while event is not None:
                got.append(event)
                event = sub.next(0.0)
            return set(w.acked) <= {e.key for e in got}

        wait_until(all_arrived, 30, lambda: f"missing {sorted(set(w.acked) - {e.key for e in got})}")
        assert sorted(w.acked) == sorted(e.key for e in got)  # each write exactly once
        assert [("put", w.acked[e.key]) for e in got] == [(e.type, e.value) for e in got]
        assert sorted((e.revision, e.batch_index) for e in got) == [
            (e.revision, e.batch_index) for e in got]
        assert (follower, 0) == (sub.node, sub.switches)


@pytest.mark.timeout(120)
def test_slow_subscriber_gets_every_change_once_when_node_bursts(cluster: ClusterFactory) -> None:
    """RCVHWM=10 at a follower, 25,000 changes (over SNDHWM) unread: gaps repaired, nothing twice."""
    c = cluster(3, events={"history_entries": 100_000})
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with Client(c.nodes[follower].client, shm=False) as reader, \
            Client([c.nodes[n].client for n in c.ids], shm=False) as writer, \
            reader.subscribe(prefix="b:", since_revision=0, hwm=10) as sub:
        for batch in range(100):
            writer.put_many([(f"b:{batch}:{j}", {"j": j, "pad": "x" * 300}) for j in range(250)])
        writer.put("other", 1)
        want = [f"b:{batch}:{j}" for batch in range(100) for j in range(250)]
        got: list[Event] = []
        # Deliberately slow: nothing is read until the whole burst is acknowledged.
        while len(got) < len(want):
            event = sub.next(20.0)
            assert event is not None, f"stream stalled after {len(got)} of {len(want)}"
            got.append(event)
        assert want == [e.key for e in got]
        assert None is sub.next(0.3)
        assert sub.gaps > 0 or sub.fetched > 0, "the burst never overflowed the subscriber"


@pytest.mark.timeout(150)
def test_subscriber_moves_to_another_node_when_its_node_is_killed(cluster: ClusterFactory) -> None:
    """SIGKILL of the subscribed follower: the subscriber resumes at another member by revision."""
    c = cluster(3)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with Client(c.nodes[follower].client, shm=False, timeout_s=2.0) as client, \
            client.subscribe(prefix="w", since_revision=0, dead_after_s=1.0) as sub:
        w = Writer(c)
        for i in range(30):
            w.put(i)
        got: list[Event] = []

        def arrived(count: int) -> bool:
            event = sub.next(0.2)
            while event is not None:
                got.append(event)
                event = sub.next(0.0)
            return len(got) >= count

        wait_until(lambda: arrived(30), 20, lambda: f"got {len(got)}")
        c.nodes[follower].kill_tree()
        for i in range(30, 80):
            w.put(i)
        wait_until(lambda: arrived(80), 40, lambda: f"got {len(got)}, node {sub.node}")
        assert [f"w{i}" for i in range(80)] == [e.key for e in got]
        assert sub.node != follower and sub.switches >= 1
