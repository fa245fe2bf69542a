"""
The member address book of a node, the replicated record that carries it, and the
node's state machine (concord.kv plus the replicated addresses).

Raft's ConfChange entries carry node ids only, so the addresses of a member added at run
time travel in a NORMAL entry proposed by the leader just before the conf change:

    data = MAGIC (4 bytes b"\\xc1CNM") + msgpack [1, id, host, client_port, peer_port,
                                                  events_port]        (version 1)

The cluster id (docs/formats/storage.md) is minted by the first leader of a new cluster
and replicated the same way, so every replica holds the same one:

    data = CLUSTER_ID_MAGIC (4 bytes b"\xc1CNC") + msgpack [1, cluster_id: str]  (version 1)

The first such entry applied sets it; later ones (a second leader that proposed one
before applying the first) change nothing, so every replica keeps the first.

0xc1 is never the first byte of valid msgpack, so it can never be taken for a kv command.
`NodeStateMachine` (the state machine of both the raft worker and the log writer's
replica) recognizes the prefixes, records the address (or the cluster id) and moves kv's
applied index as `apply_noop` does. The addresses and the cluster id are part of its
snapshots, so a node restarting from a snapshot (or installing one) still knows them:

    snapshot = b"CNDS" + msgpack [2, kv_snapshot: bin, [[id, host, client_port,
                                   peer_port, events_port], ...],
                                   cluster_id: str | nil]            (version 2)

Version 1 (the same without cluster_id: a node of an older release) is still read, with
no cluster id; the next leader mints one. A snapshot without the magic is a plain
concord.kv snapshot (no addresses, no cluster id).

Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import uuid

import msgpack
import xxhash

from concord.ids import NodeId
from concord.kv import DEFAULT_CONFIG, KvConfig, KvStateMachine
from concord.kv.machine import Applied

__all__ = [
    "MAGIC",
    "CLUSTER_ID_MAGIC",
    "SNAPSHOT_MAGIC",
    "Address",
    "AddressBook",
    "NodeStateMachine",
    "decode_address",
    "decode_cluster_id",
    "encode_address",
    "encode_cluster_id",
    "new_cluster_id",
]

MAGIC = b"\xc1CNM"
CLUSTER_ID_MAGIC = b"\xc1CNC"
SNAPSHOT_MAGIC = b"CNDS"
_VERSION = 1
_SNAPSHOT_VERSION = 2


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
    return _address_from_fields(obj[1:])


def new_cluster_id() -> str:
    """A fresh cluster id: 32 lower-case hex digits (a random UUID)."""
    return uuid.uuid4().hex


def encode_cluster_id(cluster_id: str) -> bytes:
    """The NORMAL entry data that sets the cluster id (if none is set yet)."""
    body: bytes = msgpack.packb([_VERSION, cluster_id], use_bin_type=True)
    return CLUSTER_ID_MAGIC + body


def decode_cluster_id(data: bytes) -> str | None:
    """The cluster id in an entry made by `encode_cluster_id`, or None if it is not one."""
    if not data.startswith(CLUSTER_ID_MAGIC):
        return None
    try:
        obj = msgpack.unpackb(data[len(CLUSTER_ID_MAGIC):], raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(obj, list) or len(obj) != 2 or obj[0] != _VERSION:
        return None
    cluster_id = obj[1]
    return cluster_id if isinstance(cluster_id, str) and cluster_id else None


def _address_fields(address: Address) -> list[object]:
    return [address.id, address.host, address.client_port, address.peer_port,
            address.events_port]


def _address_from_fields(fields: list[object]) -> Address | None:
    if len(fields) != 5:
        return None
    node_id, host, client_port, peer_port, events_port = fields
    if not isinstance(node_id, str) or not node_id or not isinstance(host, str):
        return None
    ports = (client_port, peer_port, events_port)
    if not all(type(p) is int and 0 <= p <= 65535 for p in ports):
        return None
    assert isinstance(client_port, int) and isinstance(peer_port, int)
    assert isinstance(events_port, int)
    return Address(NodeId(node_id), host, client_port, peer_port, events_port)


class AddressBook:
    """node id -> Address; seeded from the config, updated by replicated address entries."""

    def __init__(self, addresses: Iterable[Address] = ()) -> None:
        self._by_id: dict[NodeId, Address] = {a.id: a for a in addresses}
        # Derived from _by_id, dropped by set(): the raft worker asks on every loop
        # iteration, and an Address formats its endpoints on each access.
        self._clients: dict[NodeId, str | None] = {}
        self._peers: dict[NodeId, str] | None = None
        self._peer_ids: frozenset[NodeId] | None = None

    def get(self, node_id: NodeId | None) -> Address | None:
        return None if node_id is None else self._by_id.get(node_id)

    def set(self, address: Address) -> None:
        self._by_id[address.id] = address
        self._clients.clear()
        self._peers = self._peer_ids = None

    def client_endpoint(self, node_id: NodeId | None) -> str | None:
        if node_id is None:
            return None
        try:
            return self._clients[node_id]
        except KeyError:
            address = self._by_id.get(node_id)
            client = self._clients[node_id] = None if address is None else address.client
            return client

    def peer_endpoints(self) -> dict[NodeId, str]:
        """Member id -> peer endpoint of every member with one (a new dict: the caller's)."""
        if self._peers is None:
            self._peers = {i: p for i, a in self._by_id.items() if (p := a.peer) is not None}
        return dict(self._peers)

    def peer_ids(self) -> frozenset[NodeId]:
        """The keys of `peer_endpoints()`."""
        if self._peer_ids is None:
            self._peer_ids = frozenset(self.peer_endpoints())
        return self._peer_ids


class NodeStateMachine:
    """
    The node's replicated state machine: concord.kv plus the member addresses (module
    docstring). The raft worker applies it and its forked child snapshots it, so every
    member's snapshots and state hashes agree.
    """

    def __init__(self, config: KvConfig = DEFAULT_CONFIG) -> None:
        self.kv = KvStateMachine(config)
        self.addresses: dict[NodeId, Address] = {}
        self.cluster_id: str | None = None  # set once, by the first cluster-id entry

    @property
    def applied_index(self) -> int:
        return self.kv.applied_index

    @property
    def last_timestamp_ms(self) -> int:
        return self.kv.last_ts_ms

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> Applied:
        address = decode_address(data)
        cluster_id = None if address is not None else decode_cluster_id(data)
        if address is None and cluster_id is None:
            return self.kv.apply(index, timestamp_ms, data)
        self.kv.apply_noop(index, timestamp_ms)
        if address is not None:
            self.addresses[address.id] = address
        elif self.cluster_id is None:
            self.cluster_id = cluster_id
        return Applied({}, [])

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        self.kv.apply_noop(index, timestamp_ms)

    def _packed_addresses(self) -> list[list[object]]:
        return [_address_fields(self.addresses[k]) for k in sorted(self.addresses)]

    def snapshot(self) -> bytes:
        body: bytes = msgpack.packb([_SNAPSHOT_VERSION, self.kv.snapshot(),
                                     self._packed_addresses(), self.cluster_id], use_bin_type=True)
        return SNAPSHOT_MAGIC + body

    def restore(self, data: bytes) -> None:
        """
        Raises:
            ValueError: a node snapshot of another version or shape (kv raises its own
                errors for a bad kv snapshot).
        """
        for _ in self.restore_steps(data):
            pass

    def restore_steps(self, data: bytes) -> Iterator[None]:
        """`restore(data)` in bounded steps (see KvStateMachine.restore_steps)."""
        if not data.startswith(SNAPSHOT_MAGIC):
            yield from self.kv.restore_steps(data)
            self.addresses = {}
            self.cluster_id = None
            return
        try:
            obj = msgpack.unpackb(data[len(SNAPSHOT_MAGIC):], raw=False)
        except (TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"malformed node snapshot: {exc}") from exc
        if not isinstance(obj, list) or (obj[:1], len(obj)) not in (([1], 3), ([2], 4)):
            raise ValueError("malformed node snapshot: expected [1, kv, addresses] or "
                             "[2, kv, addresses, cluster_id]")
        kv_data, rows = obj[1], obj[2]
        cluster_id = obj[3] if len(obj) == 4 else None
        if not isinstance(kv_data, bytes) or not isinstance(rows, list):
            raise ValueError("malformed node snapshot: kv bytes or address list")
        if cluster_id is not None and (not isinstance(cluster_id, str) or not cluster_id):
            raise ValueError(f"malformed node snapshot: cluster id {cluster_id!r}")
        addresses: dict[NodeId, Address] = {}
        for row in rows:
            address = _address_from_fields(row) if isinstance(row, list) else None
            if address is None:
                raise ValueError(f"malformed node snapshot: address {row!r}")
            addresses[address.id] = address
        yield from self.kv.restore_steps(kv_data)
        self.addresses = addresses
        self.cluster_id = cluster_id

    def state_hash(self) -> int:
        node_state: list[object] = [*self._packed_addresses()]
        if self.cluster_id is not None:  # NB: a state without one hashes as before
            node_state.append(self.cluster_id)
        packed: bytes = msgpack.packb(node_state, use_bin_type=True)
        return xxhash.xxh3_64_intdigest(packed, seed=self.kv.state_hash())
