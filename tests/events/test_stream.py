"""
The change stream over real sockets: a standalone node (tests/events/feed.py: a
KvStateMachine applying commands, an EventStream, a ROUTER serving status and events)
in a thread, and subscribers in the test thread.
"""

from __future__ import annotations

from typing import Iterator

import msgpack
import pytest
import zmq

from concord.client import Client, Event
from concord.client.subscribe import Subscription
from concord.errors import CompactedError, ConfigError, RemoteProtocolError
from tests.events.feed import Feed, Published
from tests.helpers import wait_until


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    yield f
    f.stop()


def burst(feed: Feed, count: int, prefix_mix: bool = True) -> None:
    """Queue `count` writes: puts, bulk puts, deletes and touches with TTLs."""
    n = 0
    while n < count:
        kind = n % 10
        key = f"user:{n % 997}" if (not prefix_mix or n % 2) else f"other:{n % 89}"
        if kind == 3:
            feed.submit("put_many", {"items": [[f"{key}/{j}", j] for j in range(5)]})
        elif kind == 6:
            feed.submit("delete", {"key": key})
        elif kind == 8:
            feed.submit("put", {"key": key, "value": n, "ttl": 30})
            feed.submit("touch", {"key": key, "ttl": 60})
            n += 1
        else:
            feed.submit("put", {"key": key, "value": {"n": n}})
        n += 1


def positions(events: list[Event]) -> list[tuple[int, int, str, str]]:
    return [(e.revision, e.batch_index, e.type, e.key) for e in events]


def expected(feed: Feed, prefix: str = "") -> list[tuple[int, int, str, str]]:
    return [(p.revision, p.index, p.type, p.key) for p in feed.published if p.key.startswith(prefix)]


def read(sub: Subscription, count: int, timeout_s: float = 20.0) -> list[Event]:
    out: list[Event] = []
    while len(out) < count:
        event = sub.next(timeout_s)
        assert event is not None, f"stream stalled after {len(out)} of {count} events"
        out.append(event)
    return out


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_slow_subscriber_receives_every_change_once_in_order_when_burst_of_50000() -> None:
    """Small HWMs drop messages under a 50,000-write burst; subscribe repairs every gap."""
    feed = Feed(sndhwm=10, batch=256)
    try:
        with Client(feed.client_endpoint, shm=False) as client, \
                client.subscribe(since_revision=0, hwm=10) as sub:
            burst(feed, 50_000)
            wait_until(feed.idle, 60.0, describe=feed.backlog)
            want = expected(feed)
            got = read(sub, len(want))
            assert want == positions(got)
            assert None is sub.next(0.3)  # nothing more, nothing twice
            assert sub.gaps > 0, (sub.received, sub.fetched, sub.epochs, sub.switches)
    finally:
        feed.stop()


@pytest.mark.slow
def test_prefix_subscriber_receives_every_matching_change_once_when_hwm_small() -> None:
    """With a prefix, seqs count only matching keys: gaps are found and repaired exactly."""
    feed = Feed(sndhwm=5)
    try:
        with Client(feed.client_endpoint, shm=False) as client, \
                client.subscribe(prefix="user:", since_revision=0, hwm=5) as sub:
            burst(feed, 10_000)
            wait_until(feed.idle, 30.0, describe="feed never drained its queue")
            want = expected(feed, "user:")
            assert want == positions(read(sub, len(want)))
            assert None is sub.next(0.2)
    finally:
        feed.stop()


@pytest.mark.slow
def test_prefix_filtering_happens_in_zmq_when_sub_subscribes_user(feed: Feed) -> None:
    """A raw SUB on b"user:" receives only user: keys, each with a seq for b"user:"."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"user:")
        sub.connect(feed.stream.endpoint)
        assert sub.poll(5000), "no sync for the subscription"
        topic, payload = sub.recv_multipart()
        assert (b"user:", "sync") == (topic, msgpack.unpackb(payload)["type"])
        burst(feed, 2000)
        feed.submit("put", {"key": "user:last", "value": 0})
        topics: list[bytes] = []
        seqs: list[int] = []
        while not topics or topics[-1] != b"user:last":
            assert sub.poll(5000), f"stream stalled after {len(topics)} messages"
            topic, payload = sub.recv_multipart()
            msg = msgpack.unpackb(payload, raw=False)
            if msg["type"] == "sync":
                continue
            topics.append(topic)
            seqs.append(dict((bytes(p), s) for p, s in msg["seqs"])[b"user:"])
        wait_until(feed.idle, 10.0, describe=feed.backlog)
        assert all(t.startswith(b"user:") for t in topics)
        assert [p.key.encode() for p in feed.published if p.key.startswith("user:")] == topics
        assert list(range(1, len(topics) + 1)) == seqs
    finally:
        sub.close(0)
        ctx.term()


def test_subscriber_catches_up_from_since_revision_when_history_holds_it(feed: Feed) -> None:
    """Changes before the subscription are fetched through `events`, then live ones follow."""
    burst(feed, 300)
    wait_until(feed.idle, 10.0, describe="feed never drained its queue")
    middle = feed.published[len(feed.published) // 2].revision
    with Client(feed.client_endpoint, shm=False) as client, \
            client.subscribe(since_revision=middle) as sub:
        burst(feed, 50)
        wait_until(feed.idle, 10.0, describe="feed never drained its queue")
        want = [p for p in expected(feed) if p[0] > middle]
        assert want == positions(read(sub, len(want), 5.0))
        assert 0 < sub.fetched


@pytest.mark.slow
def test_subscriber_yields_only_new_changes_when_since_revision_none(feed: Feed) -> None:
    """since_revision None: only changes after the subscription (and types filter)."""
    burst(feed, 100)
    wait_until(feed.idle, 10.0, describe="feed never drained its queue")
    before = len(feed.published)
    with Client(feed.client_endpoint, shm=False) as client, \
            client.subscribe(types=["delete"]) as sub:
        burst(feed, 100)
        wait_until(feed.idle, 10.0, describe="feed never drained its queue")
        want = [p for p in expected(feed)[before:] if p[2] == "delete"]
        assert want == positions(read(sub, len(want), 5.0))
        assert None is sub.next(0.2)


@pytest.mark.slow
def test_subscribe_raises_compacted_when_history_no_longer_holds_since() -> None:
    """Asking for changes the node evicted raises CompactedError instead of skipping."""
    feed = Feed(history_entries=50)
    try:
        burst(feed, 500)
        wait_until(feed.idle, 10.0, describe="feed never drained its queue")
        with Client(feed.client_endpoint, shm=False) as client:
            with pytest.raises(CompactedError, match="no longer retained"):
                client.subscribe(since_revision=1)
            floor = feed.stream.history.floor
            with client.subscribe(since_revision=floor) as sub:
                want = [p for p in expected(feed) if p[0] > floor]
                assert want == positions(read(sub, len(want), 5.0))
    finally:
        feed.stop()


@pytest.mark.slow
def test_subscriber_continues_in_new_epoch_when_publisher_restarts_at_its_revision(feed: Feed) -> None:
    """A restarted history (new epoch) is caught up through events with no loss."""
    with Client(feed.client_endpoint, shm=False) as client, \
            client.subscribe(since_revision=0) as sub:
        burst(feed, 100)
        wait_until(feed.idle, 10.0, describe="feed never drained its queue")
        first = read(sub, len(feed.published), 5.0)
        feed.reset_stream()
        wait_until(lambda: sub.next(0.05) is None and sub.epochs == 2, 5.0,
                   describe=lambda: f"epochs={sub.epochs}")
        burst(feed, 100)
        wait_until(feed.idle, 10.0, describe="feed never drained its queue")
        rest = read(sub, len(feed.published) - len(first), 5.0)
        assert expected(feed) == positions(first + rest)


@pytest.mark.slow
def test_subscriber_switches_node_and_loses_nothing_when_its_node_dies() -> None:
    """The subscribed node stops; the subscriber moves to the other and catches up."""
    a, b = Feed("a"), Feed("b")
    a.peers, b.peers = [b], [a]
    stopped = False
    try:
        def both(count: int) -> None:
            for f in (a, b):
                burst(f, count)

        with Client(a.client_endpoint, shm=False, timeout_s=1.0) as client, \
                client.subscribe(since_revision=0, dead_after_s=0.5) as sub:
            both(200)
            wait_until(lambda: a.idle() and b.idle(), 10.0, describe="feeds never drained")
            first = read(sub, len(a.published) // 2, 5.0)
            assert "a" == sub.node
            a.stop()
            stopped = True
            burst(b, 200)
            wait_until(b.idle, 10.0, describe="feed b never drained")
            rest = read(sub, len(b.published) - len(first), 10.0)
            assert expected(b) == positions(first + rest)
            assert ("b", 1) == (sub.node, sub.switches)
    finally:
        if not stopped:
            a.stop()
        b.stop()


def test_published_positions_match_between_feeds_when_same_commands() -> None:
    """Two nodes applying the same log publish the same (revision, i) positions."""
    a, b = Feed("a"), Feed("b")
    try:
        for f in (a, b):
            burst(f, 100)
        wait_until(lambda: a.idle() and b.idle(), 10.0, describe="feeds never drained")
        assert a.published == b.published
        assert isinstance(a.published[0], Published)
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
def test_subscriber_fetches_lost_tail_when_heartbeat_sync_reveals_it() -> None:
    """The last changes of a burst never arrive; the next heartbeat sync tells, events repairs."""
    feed = Feed(lose=lambda topic, msg: topic.startswith(b"user:tail"))
    try:
        assert feed.proxy is not None
        with Client(feed.client_endpoint, shm=False) as client, \
                client.subscribe(since_revision=0, events_endpoint=feed.proxy.endpoint) as sub:
            assert feed.proxy.endpoint == sub.events_endpoint
            burst(feed, 100)
            for n in range(5):
                feed.submit("put", {"key": f"user:tail{n}", "value": n})
            wait_until(feed.idle, 10.0, describe=feed.backlog)
            want = expected(feed)
            assert want == positions(read(sub, len(want), 5.0))
            assert (1, 5) == (sub.gaps, feed.proxy.lost)
    finally:
        feed.stop()


@pytest.mark.slow
def test_prefix_subscriber_repairs_exactly_the_lost_matching_changes_when_every_third_lost() -> None:
    """Losing every third user: change is detected from the user: seqs and repaired."""
    def every_third(topic: bytes, msg: dict[str, object]) -> bool:
        seqs = msg.get("seqs")
        return isinstance(seqs, list) and any(p == b"user:" and s % 3 == 0 for p, s in seqs)

    feed = Feed(lose=every_third)
    try:
        assert feed.proxy is not None
        with Client(feed.client_endpoint, shm=False) as client, \
                client.subscribe(prefix="user:", since_revision=0,
                                 events_endpoint=feed.proxy.endpoint) as sub:
            burst(feed, 600)
            wait_until(feed.idle, 10.0, describe=feed.backlog)
            want = expected(feed, "user:")
            assert want == positions(read(sub, len(want), 5.0))
            assert None is sub.next(0.2)
            assert feed.proxy.lost == sub.gaps
            assert len(want) - feed.proxy.lost == sub.received
    finally:
        feed.stop()


@pytest.mark.slow
def test_subscribe_raises_when_publisher_cannot_track_the_prefix() -> None:
    """Beyond max_prefixes the sync says untracked and subscribe refuses, never unsequenced."""
    feed = Feed(max_prefixes=1)
    try:
        with Client(feed.client_endpoint, shm=False) as client, \
                client.subscribe(prefix="a") as first:
            with pytest.raises(RemoteProtocolError, match="too many subscription prefixes"):
                client.subscribe(prefix="b")
            feed.submit("put", {"key": "a1", "value": 1})
            event = first.next(5.0)
            assert event is not None and "a1" == event.key
    finally:
        feed.stop()


@pytest.mark.parametrize("bad", [{"types": ["put", "nope"]}, {"since_revision": -1}, {"hwm": -1}])
def test_subscribe_refuses_when_argument_bad(bad: dict[str, object]) -> None:
    """Bad arguments raise ConfigError before anything is sent."""
    with Client("tcp://127.0.0.1:1", shm=False) as client:
        with pytest.raises(ConfigError):
            client.subscribe(**bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_stream_resets_in_new_epoch_when_revisions_go_backwards(feed: Feed) -> None:
    """An out-of-order publish restarts the history (new epoch) instead of failing the loop."""
    from concord.kv.record import Change, ChangeType, Space

    stream = feed.stream
    stale = Change(ChangeType.DELETE, Space.USER, "k", None, 1, 5)
    burst(feed, 20)
    wait_until(feed.idle, 10.0, describe=feed.backlog)
    feed.stop_loop()
    epoch = stream.epoch
    stream.publish([stale])
    assert epoch != stream.epoch
    assert (0, 1, 1) == (stream.history.floor, stream.history.head, len(stream.history))


@pytest.mark.slow
def test_subscriber_delivers_what_it_has_then_raises_compacted_when_it_falls_behind() -> None:
    """Falling behind a small history: every event up to the hole, then CompactedError, for good."""
    feed = Feed(history_entries=100, lose=lambda topic, msg: topic == b"user:lost")
    try:
        assert feed.proxy is not None
        with Client(feed.client_endpoint, shm=False) as client, \
                client.subscribe(since_revision=0, events_endpoint=feed.proxy.endpoint) as sub:
            feed.submit("put", {"key": "user:first", "value": 0})
            feed.submit("put", {"key": "user:lost", "value": 0})
            burst(feed, 400)  # pushes user:lost out of the history before the next sync
            wait_until(feed.idle, 10.0, describe=feed.backlog)
            first = sub.next(5.0)
            assert first is not None and "user:first" == first.key
            with pytest.raises(CompactedError):
                while True:
                    event = sub.next(5.0)
                    assert event is not None and event.key != "user:lost"
            with pytest.raises(CompactedError):
                sub.next(0.1)
    finally:
        feed.stop()


@pytest.mark.slow
def test_subscriber_subscribes_again_when_its_first_sync_is_lost() -> None:
    """A lost sync leaves no baseline: the subscriber resubscribes and gets a new one."""
    syncs: list[bytes] = []

    def first_sync(topic: bytes, msg: dict[str, object]) -> bool:
        if msg.get("type") != "sync" or msg.get("prefix") != b"k":
            return False
        syncs.append(topic)
        return len(syncs) == 1

    feed = Feed(lose=first_sync, heartbeat_s=60.0)
    try:
        assert feed.proxy is not None
        with Subscription(feed.client_endpoint, prefix="k", since_revision=0,
                          events_endpoint=feed.proxy.endpoint, sync_timeout_s=0.2) as sub:
            assert 2 == len(syncs)
            feed.submit("put", {"key": "k1", "value": 1})
            event = sub.next(5.0)
            assert event is not None and "k1" == event.key
    finally:
        feed.stop()


def test_changes_retained_but_not_sent_when_no_prefix_subscribed(feed: Feed) -> None:
    """With no subscription the changes go to the history only (nobody would use them);
    once a prefix is subscribed they are sent again."""
    burst(feed, 50)
    wait_until(feed.idle, 10.0, describe=feed.backlog)
    assert len(feed.stream.history) == len(feed.published) > 0
    assert 0 == feed.stream.published
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(feed.stream.endpoint)
        assert sub.poll(5000), "no sync for the subscription"
        feed.submit("put", {"key": "user:after", "value": 1})
        wait_until(feed.idle, 10.0, describe=feed.backlog)
        assert 1 == feed.stream.published
    finally:
        sub.close(0)
        ctx.term()
