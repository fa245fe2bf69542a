"""
The node's CURVE settings (config [curve], docs/encryption.md), read from the key files.

`load_links(config)` reads the files the [curve] section names and returns what each
process applies to its sockets: the raft worker's peer links (`peer`), its events
endpoint (`events`) and the front door's client endpoint (`client`). The supervisor calls
it once before starting anything, so a missing or bad key stops start-up with one line
naming the config key; each child calls it again in its own process.

Reads files; opens no socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from concord.config import CurveSection
from concord.errors import ConfigError
from concord.net.curve import CurveServer, PeerKeys, read_key_file
from concord.net.peer import PeerCurve

__all__ = ["CLIENT_DOMAIN", "EVENTS_DOMAIN", "NodeLinks", "load_links"]

CLIENT_DOMAIN = "client"
EVENTS_DOMAIN = "events"


@dataclass(frozen=True, slots=True)
class NodeLinks:
    """CURVE per endpoint of a node; None = that endpoint is plaintext."""

    peer: PeerCurve | None = None
    client: CurveServer | None = None
    events: CurveServer | None = None


def load_links(curve: CurveSection) -> NodeLinks:
    """
    Read the key files named by [curve].

    Raises:
        ConfigError: `curve.<key>: <what is wrong>` for a missing, unreadable or bad file.
    """
    peer = client = events = None
    try:
        if curve.secret_key_file:
            secret = read_key_file(Path(curve.secret_key_file), "secret")
            try:
                keys = PeerKeys(Path(curve.peer_keys_dir))
            except ConfigError as exc:
                raise ConfigError(f"curve.peer_keys_dir: {exc}") from exc
            peer = PeerCurve(secret, keys)
    except ConfigError as exc:
        if str(exc).startswith("curve."):
            raise
        raise ConfigError(f"curve.secret_key_file: {exc}") from exc
    if curve.client_secret_key_file:
        try:
            server_secret = read_key_file(Path(curve.client_secret_key_file), "secret")
        except ConfigError as exc:
            raise ConfigError(f"curve.client_secret_key_file: {exc}") from exc
        client = CurveServer(server_secret, CLIENT_DOMAIN)
        events = CurveServer(server_secret, EVENTS_DOMAIN)
    return NodeLinks(peer, client, events)
