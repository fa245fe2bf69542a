"""
The member address book of a node, and the replicated record that carries it.

Raft's ConfChange entries carry node ids only, so the addresses of a member added at run
time travel in a NORMAL entry proposed by the leader just before the conf change:

    data = MAGIC (4 bytes b"\\xc1CNM") + msgpack [1, id, host, client_port, peer_port,
                                                  events_port]        (version 1)

0xc1 is never the first byte of valid msgpack, so concord.kv refuses such an entry as a
malformed command and changes nothing but its applied index (exactly what `apply_noop`
does): the log writer's replica and the raft worker's state machine stay identical. The
raft worker's `NodeMachine` recognizes the prefix and updates its address book instead.

Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from concord.ids import NodeId

__all__ = ["MAGIC", "Address", "AddressBook", "decode_address", "encode_address"]

MAGIC = b"\xc1CNM"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Address:
    """Where a member listens (port 0: not known, e.g. this node's own port chosen by the OS)."""

    id: NodeId
    host: str
    client_port: int
    peer_port: int
    events_port: int

    def endpoint(self, port: int) -> str | None:
        if port <= 0:
            return None
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{shown}:{port}"

    @property
    def client(self) -> str | None:
        return self.endpoint(self.client_port)

    @property
    def peer(self) -> str | None:
        return self.endpoint(self.peer_port)

    @property
    def events(self) -> str | None:
        return self.endpoint(self.events_port)

    def as_map(self) -> dict[str, object]:
        return {"id": self.id, "client": self.client, "peer": self.peer, "events": self.events}


def encode_address(address: Address) -> bytes:
    """The NORMAL entry data announcing `address` to every replica."""
    body: bytes = msgpack.packb(
        [_VERSION, address.id, address.host, address.client_port, address.peer_port,
         address.events_port],
        use_bin_type=True,
    )
    return MAGIC + body


def decode_address(data: bytes) -> Address | None:
    """The address in an entry made by `encode_address`, or None if it is not one."""
    if not data.startswith(MAGIC):
        return None
    try:
        obj = msgpack.unpackb(data[len(MAGIC):], raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(obj, list) or len(obj) != 6 or obj[0] != _VERSION:
        return None
    _, node_id, host, client_port, peer_port, events_port = obj
    if not isinstance(node_id, str) or not node_id or not isinstance(host, str):
        return None
    ports = (client_port, peer_port, events_port)
    if not all(type(p) is int and 0 <= p <= 65535 for p in ports):
        return None
    return Address(NodeId(node_id), host, client_port, peer_port, events_port)


class AddressBook:
    """node id -> Address; seeded from the config, updated by replicated address entries."""

    def __init__(self, addresses: Iterable[Address] = ()) -> None:
        self._by_id: dict[NodeId, Address] = {a.id: a for a in addresses}

    def get(self, node_id: NodeId | None) -> Address | None:
        return None if node_id is None else self._by_id.get(node_id)

    def set(self, address: Address) -> None:
        self._by_id[address.id] = address

    def client_endpoint(self, node_id: NodeId | None) -> str | None:
        address = self.get(node_id)
        return None if address is None else address.client

    def peer_endpoints(self) -> dict[NodeId, str]:
        return {i: a.peer for i, a in self._by_id.items() if a.peer is not None}
