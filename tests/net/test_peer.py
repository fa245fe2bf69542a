"""Peer links: delivery, reconnect, liveness, membership and the fault filter (one process)."""

from __future__ import annotations

import random
from typing import Iterator

import pytest
import zmq

from concord.errors import ConfigError, InvalidRequestError, ShuttingDownError
from concord.ids import NodeId
from concord.net.peer import PeerOptions, PeerTransport
from tests.helpers import wait_until
from tests.net.netutil import FakeClock, closed_port, drain, establish, recv_one

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
LOCAL = "tcp://127.0.0.1:0"
Zmq = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_cluster(
    ctx: zmq.Context[zmq.Socket[bytes]],
    clock: FakeClock,
    ids: tuple[NodeId, ...] = (N1, N2, N3),
    **options: object,
) -> dict[NodeId, PeerTransport]:
    opts = PeerOptions(reconnect_ivl_ms=10, reconnect_ivl_max_ms=100, **options)  # type: ignore[arg-type]
    nodes = {i: PeerTransport(ctx, i, LOCAL, options=opts, clock=clock) for i in ids}
    for node in nodes.values():
        node.set_peers({i: t.endpoint for i, t in nodes.items()})
    return nodes


@pytest.fixture
def cluster(ctx: zmq.Context[zmq.Socket[bytes]], clock: FakeClock) -> Iterator[dict[NodeId, PeerTransport]]:
    nodes = make_cluster(ctx, clock)
    establish(nodes.values(), clock)
    yield nodes
    for node in nodes.values():
        node.close()


@pytest.fixture
def faulty(ctx: zmq.Context[zmq.Socket[bytes]], clock: FakeClock) -> Iterator[dict[NodeId, PeerTransport]]:
    nodes = make_cluster(
        ctx, clock, faults_enabled=True, faults_seed=7, heartbeat_interval_s=1.0, dead_after_s=3.0
    )
    establish(nodes.values(), clock)
    yield nodes
    for node in nodes.values():
        node.close()


def test_messages_delivered_when_three_transports_linked(cluster: dict[NodeId, PeerTransport]) -> None:
    """Every node reaches every other node, and the receiver learns the sender's id."""
    for src, t in cluster.items():
        for dst in cluster:
            if dst != src:
                assert t.send(dst, f"{src}->{dst}".encode())
    for dst, t in cluster.items():
        got = sorted([recv_one(t), recv_one(t)], key=str)
        expected = sorted([(s, f"{s}->{dst}".encode()) for s in cluster if s != dst], key=str)
        assert expected == got


def test_payload_is_opaque_when_bytes_are_arbitrary(cluster: dict[NodeId, PeerTransport]) -> None:
    """Payloads pass through byte for byte, including empty and binary ones."""
    payloads = [b"", bytes(range(256)), b"\x01\x02" * 50000]
    for p in payloads:
        assert cluster[N1].send(N2, p)
    assert [(N1, p) for p in payloads] == [recv_one(cluster[N2]) for _ in payloads]


def test_send_returns_false_when_peer_unknown(cluster: dict[NodeId, PeerTransport]) -> None:
    """A send to a node id with no link is dropped and counted, not raised."""
    assert not cluster[N1].send(NodeId("n9"), b"x")
    assert 1 == cluster[N1].stats.dropped_unknown_peer


def test_send_is_dropped_when_peer_never_connected(
    ctx: zmq.Context[zmq.Socket[bytes]], clock: FakeClock
) -> None:
    """A peer that is not listening makes send return False at once (never blocks)."""
    with PeerTransport(ctx, N1, LOCAL, clock=clock) as t:
        t.add_peer(N2, f"tcp://127.0.0.1:{closed_port()}")
        assert [t.send(N2, b"x") for _ in range(3)] == [False, False, False]
        assert 3 == t.stats.dropped_unreachable


def test_peer_reconnects_when_restarted(
    ctx: zmq.Context[zmq.Socket[bytes]], clock: FakeClock, cluster: dict[NodeId, PeerTransport]
) -> None:
    """A peer that restarts on the same endpoint is reached again, both ways, by zmq reconnect."""
    old = cluster[N2]
    endpoint = old.endpoint
    old.close()

    def rebind() -> PeerTransport | None:
        # NB: libzmq closes the old listener asynchronously (in its I/O thread).
        try:
            return PeerTransport(ctx, N2, endpoint, options=old.options, clock=clock)
        except ConfigError:
            return None

    new = wait_until(rebind, 5.0, describe="old listener still bound")
    assert new is not None
    cluster[N2] = new
    new.set_peers({i: t.endpoint for i, t in cluster.items()})

    def round_trip() -> bool:
        cluster[N1].send(N2, b"hello")
        new.send(N1, b"back")
        got_new = recv_one(new, 0.05)
        got_n1 = recv_one(cluster[N1], 0.05)
        return got_new == (N1, b"hello") or got_n1 == (N2, b"back")

    wait_until(round_trip, 10.0, describe=lambda: f"n1={cluster[N1].stats} n2={new.stats}")
    assert cluster[N1].send(N2, b"after")
    # Retried "hello"s may still be ahead of it on the same (FIFO) connection.
    got = recv_one(new)
    while got == (N1, b"hello"):
        got = recv_one(new)
    assert (N1, b"after") == got


def test_unreachable_lists_peer_when_silent_past_dead_after(
    clock: FakeClock, cluster: dict[NodeId, PeerTransport]
) -> None:
    """A peer that stops pinging is reported unreachable after dead_after_s; live ones are not."""
    assert [] == cluster[N1].unreachable()
    cluster[N3].close()

    def one_round() -> list[NodeId]:
        # NB: pings n3 sent before closing may still be in flight; a later round has none.
        now = clock.advance(5.0)
        cluster[N2].service_timers(now)
        wait_until(lambda: (drain(cluster[N1]), cluster[N1].last_heard(N2) == now)[1], 5.0)
        return cluster[N1].unreachable()

    assert [N3] == wait_until(lambda: one_round() == [N3] and [N3], 5.0)


def test_unreachable_grants_grace_when_peer_just_added(ctx: zmq.Context[zmq.Socket[bytes]], clock: FakeClock) -> None:
    """A freshly added peer counts as reachable for dead_after_s, then as unreachable."""
    with PeerTransport(ctx, N1, LOCAL, peers={N2: "tcp://127.0.0.1:1"}, clock=clock) as t:
        assert [] == t.unreachable()
        assert [N2] == t.unreachable(clock.now + t.options.dead_after_s + 0.01)


def test_remove_peer_stops_link_when_member_leaves(cluster: dict[NodeId, PeerTransport]) -> None:
    """After remove_peer the link is gone; add_peer brings it back."""
    endpoint = cluster[N3].endpoint
    cluster[N1].remove_peer(N3)
    assert {N2} == set(cluster[N1].peers)
    assert not cluster[N1].send(N3, b"x")
    cluster[N1].add_peer(N3, endpoint)
    wait_until(lambda: cluster[N1].send(N3, b"again"), 5.0)
    assert (N1, b"again") == recv_one(cluster[N3])


def test_bad_envelope_discarded_when_version_or_shape_wrong(
    ctx: zmq.Context[zmq.Socket[bytes]], cluster: dict[NodeId, PeerTransport]
) -> None:
    """Malformed peer traffic is counted and skipped; good traffic behind it still arrives."""
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(cluster[N1].endpoint)
    try:
        rogue.send_multipart([b"\x01\x01", b"envelope v1"])
        rogue.send_multipart([b"\x02\x01n2", b"envelope v2"])
        rogue.send_multipart([b"\x09\x01\x00n2", b"wrong version"])
        rogue.send_multipart([b"\x03\x07\x00n2", b"unknown kind"])
        rogue.send_multipart([b"\x03\x01\x00\xff\xfe", b"sender not utf-8"])
        rogue.send_multipart([b"\x03\x01\x02\xff\xfen2", b"cluster id not utf-8"])
        rogue.send_multipart([b"\x03\x01\x09n2", b"cluster id longer than the header"])
        rogue.send_multipart([b"only one frame"])
        rogue.send_multipart([b"\x03\x01\x00n2", b"good", b"extra frame"])
        rogue.send_multipart([b"\x03\x01\x00n2", b"good"])
        assert (N2, b"good") == recv_one(cluster[N1])
        assert 9 == cluster[N1].stats.bad_envelope
    finally:
        rogue.close()


def test_message_dropped_when_sender_not_a_peer(
    ctx: zmq.Context[zmq.Socket[bytes]], cluster: dict[NodeId, PeerTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only current peers are served: a stranger's well-formed message is counted, logged once."""
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(cluster[N1].endpoint)
    cluster[N1].remove_peer(N3)
    try:
        with caplog.at_level("WARNING", logger="concord.net.peer"):
            for sender in (b"n9", b"n3", b"n1", b"n9"):
                rogue.send_multipart([b"\x03\x01\x00" + sender, b"from a stranger"])
            rogue.send_multipart([b"\x03\x01\x00n2", b"from a peer"])
            assert (N2, b"from a peer") == recv_one(cluster[N1])
        assert 4 == cluster[N1].stats.dropped_unknown_sender
        dropped = [r for r in caplog.records if "reason=dropped_unknown_sender" in r.getMessage()]
        assert 1 == len(dropped), "rate-limited: one line per reason per interval"
    finally:
        rogue.close()


def test_config_error_when_endpoint_or_id_invalid(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Bad bind endpoints, node ids and options raise ConfigError, not zmq errors."""
    with pytest.raises(ConfigError, match="cannot bind peer endpoint"):
        PeerTransport(ctx, N1, "tcp://256.0.0.1:0")
    with pytest.raises(ConfigError, match="node id"):
        PeerTransport(ctx, NodeId(""), LOCAL)
    with pytest.raises(ConfigError, match="dead_after_s"):
        PeerTransport(ctx, N1, LOCAL, options=PeerOptions(dead_after_s=0.05))


def test_send_raises_shutting_down_when_closed(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Using a closed transport raises ShuttingDownError."""
    t = PeerTransport(ctx, N1, LOCAL)
    t.close()
    with pytest.raises(ShuttingDownError):
        t.send(N2, b"x")


# -- fault filter ----------------------------------------------------------------------


def test_fault_command_rejected_when_faults_disabled(cluster: dict[NodeId, PeerTransport]) -> None:
    """With faults.enabled off, every fault command is refused with a clear error."""
    with pytest.raises(InvalidRequestError, match="fault injection is disabled"):
        cluster[N1].apply_fault_command({"cmd": "heal"})


@pytest.mark.parametrize(
    ("cmd", "match"),
    [
        ({"cmd": "explode"}, "unknown fault command"),
        ({}, "unknown fault command"),
        ({"cmd": "drop", "src": "n1", "dst": "n2"}, "probability must be a number"),
        ({"cmd": "drop", "src": "n1", "dst": "n2", "probability": 1.5}, "out of range"),
        ({"cmd": "drop", "src": "n1", "dst": "n2", "probability": True}, "must be a number"),
        ({"cmd": "delay", "src": "n1", "dst": "n2", "min_ms": 5, "max_ms": 1}, "out of range"),
        ({"cmd": "delay", "src": "n1", "dst": "n2", "ms": 5, "max_ms": 9}, "not both"),
        ({"cmd": "block", "src": "n1"}, "dst must be a non-empty node id"),
        ({"cmd": "block", "src": "n1", "dst": "n1"}, "self-link"),
        ({"cmd": "block", "src": "n1", "dst": "n2", "extra": 1}, "does not take extra"),
        ({"cmd": "partition", "a": ["n1"], "b": []}, "non-empty list"),
        ({"cmd": "partition", "a": ["n1"], "b": ["n1", "n2"]}, "overlap"),
        ({"cmd": "seed", "seed": "x"}, "seed must be an integer"),
    ],
)
def test_fault_command_rejected_when_malformed(
    faulty: dict[NodeId, PeerTransport], cmd: dict[str, object], match: str
) -> None:
    """Malformed fault commands raise InvalidRequestError naming the problem and change nothing."""
    with pytest.raises(InvalidRequestError, match=match):
        faulty[N1].apply_fault_command(cmd)
    assert [] == faulty[N1].faults.rules()


def test_messages_dropped_when_drop_probability_one(faulty: dict[NodeId, PeerTransport]) -> None:
    """probability 1.0 drops everything on that link only; other links still deliver."""
    faulty[N1].apply_fault_command({"cmd": "drop", "src": "n1", "dst": "n2", "probability": 1.0})
    assert [False] * 5 == [faulty[N1].send(N2, b"x") for _ in range(5)]
    assert 5 == faulty[N1].stats.dropped_fault
    assert faulty[N1].send(N3, b"y")
    assert (N1, b"y") == recv_one(faulty[N3])


def test_drops_follow_seeded_rng_when_probability_partial(faulty: dict[NodeId, PeerTransport]) -> None:
    """Partial drops are drawn from the seeded RNG, so the same seed drops the same messages."""
    t = faulty[N1]
    t.apply_fault_command({"cmd": "seed", "seed": 42})
    t.apply_fault_command({"cmd": "drop", "src": "n1", "dst": "n2", "probability": 0.5})
    rng = random.Random(42)
    expected = [rng.random() >= 0.5 for _ in range(200)]
    assert expected == [t.send(N2, b"m") for _ in range(200)]
    got = [recv_one(faulty[N2]) for _ in range(sum(expected))]
    assert sum(expected) == len([g for g in got if g == (N1, b"m")])


def test_delayed_message_released_when_service_timers_reaches_deadline(
    clock: FakeClock, faulty: dict[NodeId, PeerTransport]
) -> None:
    """A delayed message leaves only when service_timers(now) passes its release time."""
    t = faulty[N1]
    t.apply_fault_command({"cmd": "delay", "src": "n1", "dst": "n2", "ms": 500})
    start = clock.now
    assert t.send(N2, b"late")
    assert start + 0.5 == pytest.approx(t.next_deadline())
    t.service_timers(start + 0.499)
    assert 0 == t.stats.sent
    t.service_timers(start + 0.5)
    assert 1 == t.stats.sent
    assert (N1, b"late") == recv_one(faulty[N2])


def test_random_delay_within_bounds_when_min_below_max(
    clock: FakeClock, faulty: dict[NodeId, PeerTransport]
) -> None:
    """Random delays fall within [min_ms, max_ms] and messages are released in time order."""
    t = faulty[N1]
    t.apply_fault_command({"cmd": "delay", "src": "n1", "dst": "n2", "min_ms": 100, "max_ms": 300})
    start = clock.now
    for i in range(20):
        t.send(N2, str(i).encode())
    t.service_timers(start + 0.0999)
    assert 0 == t.stats.sent
    t.service_timers(start + 0.3)
    assert 20 == t.stats.sent
    assert 20 == len([recv_one(faulty[N2]) for _ in range(20)])


def test_one_way_block_drops_only_that_direction_when_blocked(faulty: dict[NodeId, PeerTransport]) -> None:
    """block n1->n2 stops n1's messages to n2 while n2 still reaches n1."""
    faulty[N1].apply_fault_command({"cmd": "block", "src": "n1", "dst": "n2"})
    assert not faulty[N1].send(N2, b"x")
    assert faulty[N2].send(N1, b"y")
    assert (N2, b"y") == recv_one(faulty[N1])


def test_block_applies_at_receiver_when_only_receiver_holds_rule(faulty: dict[NodeId, PeerTransport]) -> None:
    """A block rule held only by the receiver discards incoming messages on that link."""
    faulty[N2].apply_fault_command({"cmd": "block", "src": "n1", "dst": "n2"})
    assert faulty[N1].send(N2, b"dropped")
    assert faulty[N3].send(N2, b"kept")
    assert (N3, b"kept") == recv_one(faulty[N2])
    assert 1 == faulty[N2].stats.dropped_fault


def test_partition_isolates_node_both_ways_when_applied_on_one_node(
    clock: FakeClock, faulty: dict[NodeId, PeerTransport]
) -> None:
    """partition {n1} | {n2, n3} sent to n1 alone cuts n1 off both ways; heal restores it."""
    n1 = faulty[N1]
    n1.apply_fault_command({"cmd": "partition", "a": ["n1"], "b": ["n2", "n3"]})
    assert not n1.send(N2, b"x") and not n1.send(N3, b"x")
    assert faulty[N2].send(N1, b"in") and faulty[N2].send(N3, b"peer")
    assert (N2, b"peer") == recv_one(faulty[N3])
    # Let time pass with pings flowing: n1 hears nobody, n2 and n3 hear each other.
    def one_round() -> tuple[list[NodeId], list[NodeId]]:
        # NB: pings sent before the partition may still be in flight; a later round has none.
        now = clock.advance(5.0)
        for t in faulty.values():
            t.service_timers(now)
        wait_until(lambda: (drain(faulty[N2]), faulty[N2].last_heard(N3) == now)[1], 5.0)
        assert [] == drain(n1)
        return n1.unreachable(), faulty[N2].unreachable()

    assert ([N2, N3], [N1]) == wait_until(lambda: (r := one_round()) == ([N2, N3], [N1]) and r, 5.0)

    result = n1.apply_fault_command({"cmd": "heal"})
    assert {"enabled": True, "rules": []} == result
    assert n1.send(N2, b"healed")
    assert (N1, b"healed") == recv_one(faulty[N2])


def test_heal_link_clears_both_directions_when_src_dst_given(faulty: dict[NodeId, PeerTransport]) -> None:
    """heal with src/dst removes that link's rules both ways and keeps the others."""
    t = faulty[N1]
    t.apply_fault_command({"cmd": "partition", "a": ["n1"], "b": ["n2", "n3"]})
    rules = t.apply_fault_command({"cmd": "heal", "src": "n2", "dst": "n1"})["rules"]
    assert isinstance(rules, list)
    assert [("n1", "n3"), ("n3", "n1")] == [(r["src"], r["dst"]) for r in rules]
    assert t.send(N2, b"ok")
    assert not t.send(N3, b"no")


def test_add_peer_repoints_link_when_endpoint_changes(
    ctx: Zmq, clock: FakeClock, cluster: dict[NodeId, PeerTransport]
) -> None:
    """add_peer with a new endpoint for a known id moves the link there."""
    moved = PeerTransport(ctx, N3, LOCAL, peers={N1: cluster[N1].endpoint},
                          options=cluster[N3].options, clock=clock)
    try:
        cluster[N1].add_peer(N3, moved.endpoint)
        assert moved.endpoint == cluster[N1].peers[N3]
        wait_until(lambda: cluster[N1].send(N3, b"moved"), 5.0)
        assert (N1, b"moved") == recv_one(moved)
    finally:
        moved.close()


def test_ping_is_skipped_when_data_went_to_the_peer_within_the_interval(
    clock: FakeClock, cluster: dict[NodeId, PeerTransport]
) -> None:
    """A peer sent DATA since the last ping round gets no PING (it heard from us); others do."""
    t1 = cluster[N1]
    interval = t1.options.heartbeat_interval_s
    now = clock.advance(interval * 10)
    t1.service_timers(now)  # a ping round for every peer
    before = t1.stats.pings_sent
    t1.send(N2, b"data")
    now = clock.advance(interval)
    t1.service_timers(now)  # due again: only N3 is pinged (N2 got DATA just now)
    assert before + 1 == t1.stats.pings_sent
    now = clock.advance(interval)
    t1.service_timers(now)  # no DATA since the last round: both are pinged
    assert before + 3 == t1.stats.pings_sent
