"""CURVE key files, the ZAP handler and CURVE peer links; the peer envelope's cluster id."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq

from concord.errors import ConfigError
from concord.ids import NodeId
from concord.net.curve import (
    CurveClient,
    HandshakeWatch,
    PeerKeys,
    ZapHandler,
    generate_key_pair,
    public_key_of,
    read_key_file,
    write_key_pair,
)
from concord.net.peer import PeerCurve, PeerOptions, PeerTransport
from tests.helpers import wait_until
from tests.net.netutil import FakeClock

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
LOCAL = "tcp://127.0.0.1:0"
Ctx = zmq.Context[zmq.Socket[bytes]]


# -- key files ------------------------------------------------------------------------


def test_key_pair_round_trips_when_written_and_read(tmp_path: Path) -> None:
    """generate writes a 0600 secret and a public key that is the secret's public half."""
    pub, key = write_key_pair(tmp_path / "k", "n1")
    assert 0o600 == os.stat(key).st_mode & 0o777
    assert public_key_of(read_key_file(key, "secret")) == read_key_file(pub, "public")
    assert pub.read_text().startswith("concord-curve-public-key 1\n")


def test_existing_key_files_are_kept_when_generating_again(tmp_path: Path) -> None:
    """A second generate with the same name refuses and changes nothing."""
    pub, key = write_key_pair(tmp_path, "n1")
    before = key.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        write_key_pair(tmp_path, "n1")
    assert before == key.read_bytes()


@pytest.mark.parametrize("mode, text, message", [
    (0o644, None, "readable by group or others"),
    (0o600, "concord-curve-public-key 1\n" + "a" * 40 + "\n", "not a secret key file"),
    (0o600, "concord-curve-secret-key 2\n" + "a" * 40 + "\n", "not a secret key file"),
    (0o600, "concord-curve-secret-key 1\n" + "a" * 39 + "\n", "not a CURVE key"),
    (0o600, "concord-curve-secret-key 1\n" + "~" * 40 + "\n", "not a CURVE key"),
])
def test_secret_key_file_is_refused_when_bad(tmp_path: Path, mode: int, text: str | None,
                                              message: str) -> None:
    """A bad secret key file is a ConfigError naming the file and the problem."""
    _, key = write_key_pair(tmp_path, "n1")
    if text is not None:
        key.write_text(text)
    key.chmod(mode)
    with pytest.raises(ConfigError, match=message) as info:
        read_key_file(key, "secret")
    assert str(key) in str(info.value)


def test_peer_keys_reload_when_a_file_changes(tmp_path: Path) -> None:
    """The allow-list folder is re-read only when it changed; a bad file keeps the old keys."""
    peers = tmp_path / "peers"
    peers.mkdir()
    pub1, _ = write_key_pair(tmp_path, "n1")
    shutil.copy(pub1, peers)
    keys = PeerKeys(peers)
    assert [N1] == list(keys.by_node)
    assert False is keys.reload()
    pub2, _ = write_key_pair(tmp_path, "n2")
    shutil.copy(pub2, peers)
    assert True is keys.reload()
    assert {N1, N2} == set(keys.by_key.values())
    (peers / "bad name.pub").write_text("x")
    with pytest.raises(ConfigError, match="not <node-id>.pub"):
        keys.reload()
    assert {N1, N2} == set(keys.by_node)


def test_peer_keys_are_refused_when_the_folder_is_empty(tmp_path: Path) -> None:
    """An empty allow-list is a configuration mistake, not a cluster of one."""
    with pytest.raises(ConfigError, match="no peer key files"):
        PeerKeys(tmp_path)


def test_client_curve_is_refused_when_a_key_is_malformed() -> None:
    """Client-side keys are checked before any socket exists."""
    assert None is CurveClient.of(None)
    with pytest.raises(ConfigError, match="server_key"):
        CurveClient.of("short")
    with pytest.raises(ConfigError, match="needs server_key"):
        CurveClient.of(None, generate_key_pair())


def test_client_gives_up_when_a_handshake_cannot_succeed() -> None:
    """Mechanism mismatch fails at once; unexplained failures only with CURVE, after 3 in a row."""
    failed_protocol, failed = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    mismatch = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    plain = HandshakeWatch("tcp://h:1", curve=False)
    assert "requires CURVE" in (plain.on_event(failed_protocol, mismatch) or "")
    assert [None, None, None] == [plain.on_event(failed, 32) for _ in range(3)]
    secure = HandshakeWatch("tcp://h:1", curve=True)
    assert "does not use CURVE" in (secure.on_event(failed_protocol, mismatch) or "")
    assert [None, None] == [secure.on_event(failed, 32) for _ in range(2)]
    assert None is secure.on_event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)  # resets the count
    assert [None, None] == [secure.on_event(failed, 32) for _ in range(2)]
    assert "server_key" in (secure.on_event(failed, 32) or "")


# -- peer links with CURVE --------------------------------------------------------------


@dataclass
class Node:
    """One node's context, ZAP handler and transport (as in a raft worker)."""

    ctx: Ctx
    zap: ZapHandler
    transport: PeerTransport
    got: list[tuple[NodeId, bytes]] = field(default_factory=list)

    def pump(self) -> None:
        self.zap.handle()
        while (message := self.transport.recv()) is not None:
            self.got.append(message)

    def close(self) -> None:
        self.transport.close()
        self.zap.close()
        self.ctx.term()


def make_node(node_id: NodeId, secret: str, peers: Path, clock: FakeClock,
              curve: bool = True) -> Node:
    ctx: Ctx = zmq.Context()
    keys = PeerKeys(peers)
    zap = ZapHandler(ctx, lambda: keys.by_key, logging.getLogger("tests.curve"))
    opts = PeerOptions(reconnect_ivl_ms=10, reconnect_ivl_max_ms=100)
    transport = PeerTransport(ctx, node_id, LOCAL, options=opts, clock=clock,
                              curve=PeerCurve(secret, keys) if curve else None)
    return Node(ctx, zap, transport)


@pytest.fixture
def keys(tmp_path: Path) -> dict[NodeId, str]:
    """Secret keys of n1..n3; their public keys in tmp_path/peers."""
    (tmp_path / "peers").mkdir()
    out = {}
    for node_id in (N1, N2, N3):
        pub, key = write_key_pair(tmp_path / "secret", node_id)
        shutil.copy(pub, tmp_path / "peers")
        out[node_id] = read_key_file(key, "secret")
    return out


@pytest.fixture
def pair(tmp_path: Path, keys: dict[NodeId, str]) -> Iterator[tuple[Node, Node, FakeClock]]:
    clock = FakeClock()
    a = make_node(N1, keys[N1], tmp_path / "peers", clock)
    b = make_node(N2, keys[N2], tmp_path / "peers", clock)
    a.transport.add_peer(N2, b.transport.endpoint)
    b.transport.add_peer(N1, a.transport.endpoint)
    yield a, b, clock
    a.close()
    b.close()


def deliver(sender: Node, to: NodeId, receiver: Node, payload: bytes, *others: Node) -> None:
    """Resend `payload` until it arrives (the first sends may precede the handshake)."""

    def arrived() -> bool:
        sender.transport.send(to, payload)
        for node in (sender, receiver, *others):
            node.pump()
        return (sender.transport.node_id, payload) in receiver.got

    wait_until(arrived, 10.0, lambda: f"{receiver.transport.stats} zap={receiver.zap.refused}")


def test_messages_flow_when_both_keys_are_allowed(pair: tuple[Node, Node, FakeClock]) -> None:
    """Two allow-listed nodes exchange DATA over CURVE in both directions."""
    a, b, _ = pair
    deliver(a, N2, b, b"hello b")
    deliver(b, N1, a, b"hello a")
    assert 0 == a.zap.refused + b.zap.refused


def test_stranger_key_is_refused_when_not_in_the_allow_list(
        tmp_path: Path, pair: tuple[Node, Node, FakeClock], keys: dict[NodeId, str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A node posing as n3 with a key of its own cannot send (the ZAP handler refuses and
    logs it) nor read (n1 dials n3 with the real n3's public key: the handshake fails)."""
    a, b, clock = pair
    own = tmp_path / "stranger-peers"
    shutil.copytree(tmp_path / "peers", own)
    pub, secret = write_key_pair(tmp_path / "stranger", "n3")
    shutil.copy(pub, own)
    # The stranger holds a key of its own; n1's allow-list has the real n3's key.
    stranger = make_node(N3, read_key_file(secret, "secret"), own, clock)
    try:
        stranger.transport.add_peer(N1, a.transport.endpoint)
        a.transport.add_peer(N3, stranger.transport.endpoint)

        def refused() -> bool:
            stranger.transport.send(N1, b"let me in")
            a.transport.send(N3, b"for n3 only")
            for node in (a, b, stranger):
                node.pump()
            return a.zap.refused > 0 and stranger.transport.stats.refused_handshakes > 0

        with caplog.at_level("WARNING"):
            wait_until(refused, 10.0, lambda: str(a.transport.stats))
        assert [] == [m for m in a.got if m[0] == N3]
        assert any("peer refused: its public key is not in the allow-list" in r.getMessage()
                   for r in caplog.records)
        assert [] == stranger.got
    finally:
        stranger.close()


def test_plaintext_peer_is_refused_when_links_use_curve(
        tmp_path: Path, pair: tuple[Node, Node, FakeClock], keys: dict[NodeId, str]) -> None:
    """A node without CURVE fails the handshake; the CURVE node counts and logs it."""
    a, b, clock = pair
    plain = make_node(N3, keys[N3], tmp_path / "peers", clock, curve=False)
    try:
        plain.transport.add_peer(N1, a.transport.endpoint)
        a.transport.add_peer(N3, plain.transport.endpoint)

        def refused() -> bool:
            plain.transport.send(N1, b"plaintext")
            for node in (a, plain):
                node.pump()
            return a.transport.stats.refused_handshakes > 0

        wait_until(refused, 10.0, lambda: str(a.transport.stats))
        assert [] == [m for m in a.got if m[0] == N3]
    finally:
        plain.close()


def test_sender_id_must_match_its_key_when_links_use_curve(
        tmp_path: Path, pair: tuple[Node, Node, FakeClock], keys: dict[NodeId, str]) -> None:
    """An allow-listed node (n3) that claims to be n2 is refused: the key belongs to n3."""
    a, b, clock = pair
    liar = make_node(N2, keys[N3], tmp_path / "peers", clock)  # n3's key, n2's id
    try:
        liar.transport.add_peer(N1, a.transport.endpoint)

        def refused() -> bool:
            liar.transport.send(N1, b"as n2")
            for node in (a, liar):
                node.pump()
            return a.transport.stats.refused_wrong_key > 0

        wait_until(refused, 10.0, lambda: str(a.transport.stats))
        assert [] == [m for m in a.got if m[1] == b"as n2"]
    finally:
        liar.close()


def test_key_rotation_takes_effect_when_the_allow_list_folder_changes(
        tmp_path: Path, pair: tuple[Node, Node, FakeClock]) -> None:
    """n2 restarts with a new key pair; n1 re-reads the folder and links to it again."""
    a, b, clock = pair
    deliver(a, N2, b, b"before")
    b.close()
    pub, secret = write_key_pair(tmp_path / "rotated", "n2")
    shutil.copy(pub, tmp_path / "peers" / "n2.pub")
    b2 = make_node(N2, read_key_file(secret, "secret"), tmp_path / "peers", clock)
    try:
        port = b2.transport.endpoint
        b2.transport.add_peer(N1, a.transport.endpoint)
        a.transport.set_peers({N2: port})
        clock.advance(2.0)
        a.transport.service_timers(clock())  # the reload: n2's new key
        deliver(a, N2, b2, b"after", b2)
        deliver(b2, N1, a, b"back")
    finally:
        b2.close()


# -- cluster id in the peer envelope ---------------------------------------------------


@pytest.fixture
def plain_pair() -> Iterator[tuple[PeerTransport, PeerTransport]]:
    ctx: Ctx = zmq.Context()
    opts = PeerOptions(reconnect_ivl_ms=10, reconnect_ivl_max_ms=100)
    a = PeerTransport(ctx, N1, LOCAL, options=opts)
    b = PeerTransport(ctx, N2, LOCAL, options=opts)
    a.add_peer(N2, b.endpoint)
    b.add_peer(N1, a.endpoint)
    yield a, b
    a.close()
    b.close()
    ctx.term()


def send_until(a: PeerTransport, to: NodeId, b: PeerTransport, payload: bytes) -> None:
    wait_until(lambda: a.send(to, payload) and b.recv() == (a.node_id, payload), 10.0,
               lambda: str(b.stats))


def test_other_cluster_is_refused_when_both_ids_are_known(
        plain_pair: tuple[PeerTransport, PeerTransport], caplog: pytest.LogCaptureFixture) -> None:
    """Known and different cluster ids: refused, counted, and logged with both ids."""
    a, b = plain_pair
    a.cluster_id, b.cluster_id = None, None
    send_until(a, N2, b, b"no ids yet")          # a new cluster: no id on either side
    a.cluster_id = "a" * 32
    send_until(a, N2, b, b"receiver has none")   # a joining node takes any cluster's traffic
    b.cluster_id = "a" * 32
    send_until(a, N2, b, b"same cluster")
    b.cluster_id = "b" * 32
    with caplog.at_level("WARNING", logger="concord.net.peer"):
        wait_until(lambda: a.send(N2, b"other cluster") and b.recv() is None
                   and b.stats.refused_other_cluster > 0, 10.0, lambda: str(b.stats))
    assert any(f"cluster_id={'b' * 32} peer_cluster_id={'a' * 32}" in r.getMessage()
               for r in caplog.records)
    a.cluster_id = None
    send_until(a, N2, b, b"sender has none")     # a node that has not learnt its id yet
