"""
The settings and counters of the Raft peer links: `PeerOptions` (tuning, validated),
`PeerCurve` (this node's CURVE keys and the peers' public keys) and `PeerStats` (what
the links sent, received, dropped and refused). concord.net.peer's `PeerTransport`
takes the first two and keeps the third; it re-exports all three. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.errors import ConfigError
from concord.net.curve import PeerKeys


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """Tuning of the peer links; defaults suit a LAN cluster with 100 ms ticks."""

    heartbeat_interval_s: float = 0.1
    dead_after_s: float = 1.0
    reconnect_ivl_ms: int = 50
    reconnect_ivl_max_ms: int = 1000
    sndhwm: int = 1000
    rcvhwm: int = 10000
    zmtp_heartbeat_ivl_ms: int = 500
    zmtp_heartbeat_timeout_ms: int = 2000
    tcp_keepalive_idle_s: int = 10
    tcp_keepalive_intvl_s: int = 2
    tcp_keepalive_cnt: int = 3
    drop_log_interval_s: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    faults_enabled: bool = False
    faults_seed: int = 0

    def validate(self) -> None:
        """
        Raises:
            ConfigError: naming the bad field.
        """
        if self.heartbeat_interval_s <= 0:
            raise ConfigError(f"peer heartbeat_interval_s must be > 0, got {self.heartbeat_interval_s}")
        if self.dead_after_s <= self.heartbeat_interval_s:
            raise ConfigError(
                f"peer dead_after_s {self.dead_after_s} must exceed heartbeat_interval_s "
                f"{self.heartbeat_interval_s}"
            )
        if self.reconnect_ivl_ms <= 0 or self.reconnect_ivl_max_ms < self.reconnect_ivl_ms:
            raise ConfigError(
                f"peer reconnect intervals must satisfy 0 < reconnect_ivl_ms <= reconnect_ivl_max_ms, "
                f"got {self.reconnect_ivl_ms} and {self.reconnect_ivl_max_ms}"
            )
        if self.sndhwm <= 0 or self.rcvhwm <= 0:
            raise ConfigError(f"peer sndhwm and rcvhwm must be > 0, got {self.sndhwm} and {self.rcvhwm}")
        keepalive = (self.tcp_keepalive_idle_s, self.tcp_keepalive_intvl_s, self.tcp_keepalive_cnt)
        if min(keepalive) <= 0:
            raise ConfigError(f"peer tcp keepalive idle, interval and count must be > 0, got {keepalive}")
        if self.drop_log_interval_s < 0:
            raise ConfigError(f"peer drop_log_interval_s must be >= 0, got {self.drop_log_interval_s}")


@dataclass(frozen=True, slots=True)
class PeerCurve:
    """
    CURVE on the peer links: this node's secret key and the allow-list of peer keys.

    The process must serve a `concord.net.curve.ZapHandler` over the same `keys` in the
    transport's context (the ROUTER's handshakes ask it). `keys` is re-read every
    `reload_interval_s` (`service_timers`); a link whose peer key changed is re-made.
    """

    secret_key: str
    keys: PeerKeys
    reload_interval_s: float = 1.0


@dataclass(slots=True)
class PeerStats:
    """Counters (monotonic; read them for metrics and tests)."""

    sent: int = 0
    received: int = 0
    pings_sent: int = 0
    pings_received: int = 0
    dropped_unreachable: int = 0  # NOBLOCK send refused: peer not connected or HWM reached
    dropped_unknown_peer: int = 0  # send to a node id we have no link to
    dropped_fault: int = 0  # fault filter dropped (send or receive side)
    delayed: int = 0  # fault filter delayed (released later by service_timers)
    bad_envelope: int = 0  # malformed incoming message, discarded
    dropped_unknown_sender: int = 0  # well-formed, but the sender is not a current peer
    refused_other_cluster: int = 0  # the sender's cluster id is known and not ours
    refused_wrong_key: int = 0  # CURVE: the sender id is not the one its key belongs to
    no_peer_key: int = 0  # CURVE: a peer with no key in the allow-list (no link to it)
    refused_handshakes: int = 0  # CURVE: incoming connections whose handshake failed
    send_errors: int = 0  # unexpected zmq error on send (logged, dropped)
