"""
An in-test network of RawNodes: delivers messages in memory and persists every Ready
into the node's MemoryStorage at once (etcd-io/raft's `network` test helper).

Deterministic: every node's rng is seeded from the network seed; messages are delivered
in FIFO order; `drop` filters simulate partitions and loss.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable, Iterable

from concord.ids import NodeId
from concord.raft.config import RaftConfig
from concord.raft.messages import ConfChange, ConfState, Entry, EntryType, Message, MessageType
from concord.raft.rawnode import RawNode, Ready
from concord.raft.state import HardState, ReadState, Role
from concord.raft.storage import MemoryStorage

_LEN = struct.Struct(">I")


def encode_state(items: list[bytes]) -> bytes:
    """The toy state machine's snapshot: length-prefixed applied commands."""
    return b"".join(_LEN.pack(len(x)) + x for x in items)


def decode_state(data: bytes) -> list[bytes]:
    items = []
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        items.append(data[pos : pos + n])
        pos += n
    return items


def ids(*names: str) -> tuple[NodeId, ...]:
    return tuple(NodeId(n) for n in names)


class Network:
    """
    N RawNodes wired together.

    Args:
        names: node ids; all are voters of the bootstrap configuration unless `voters`.
        seed: seeds each node's election jitter.
        voters, learners: the bootstrap membership (default: all names are voters).
        overrides: RaftConfig fields for every node.
    """

    def __init__(
        self,
        names: Iterable[str],
        seed: int = 1,
        voters: Iterable[str] | None = None,
        learners: Iterable[str] = (),
        **overrides: object,
    ) -> None:
        self.seed = seed
        self.names = [NodeId(n) for n in names]
        voter_ids = tuple(sorted(NodeId(v) for v in (voters if voters is not None else names)))
        self.conf_state = ConfState(
            voters=voter_ids, learners=tuple(sorted(NodeId(n) for n in learners))
        )
        self.overrides = overrides
        self.storages: dict[NodeId, MemoryStorage] = {}
        self.nodes: dict[NodeId, RawNode] = {}
        self.applied: dict[NodeId, list[bytes]] = {}
        self.applied_entries: dict[NodeId, list[Entry]] = {}
        self.read_states: dict[NodeId, list[ReadState]] = {}
        self.readys: dict[NodeId, list[Ready]] = {}
        self.queue: deque[Message] = deque()
        self.delivered: list[Message] = []
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.transform: Callable[[Message], Message] | None = None
        self.now_ms: dict[NodeId, int] = {}
        for i, name in enumerate(self.names):
            self.add_node(name, MemoryStorage(self.conf_state), seed * 1000 + i)

    def config(self, name: NodeId) -> RaftConfig:
        return RaftConfig(id=name, **self.overrides)  # type: ignore[arg-type]

    def add_node(self, name: NodeId, storage: MemoryStorage, rng_seed: int | None = None) -> None:
        if name not in self.names:
            self.names.append(name)
        self.storages[name] = storage
        rng = random.Random(rng_seed if rng_seed is not None else self.seed * 1000 + 999)
        self.nodes[name] = RawNode(self.config(name), storage, rng)
        self.applied[name] = []
        self.applied_entries[name] = []
        self.read_states[name] = []
        self.readys[name] = []

    def restart(self, name: NodeId) -> None:
        """Crash and restart `name` from its storage (only persisted state survives)."""
        storage = self.storages[name]
        snap = storage.snapshot()
        applied = decode_state(snap.data) if not snap.is_empty else []
        self.nodes[name] = RawNode(self.config(name), storage, random.Random(self.seed))
        self.applied[name] = applied
        self.applied_entries[name] = []

    # ------------------------------------------------------------------ processing

    def process_ready(self, name: NodeId) -> Ready:
        """Handle one Ready of `name`: persist, acknowledge, apply; queue its messages."""
        node = self.nodes[name]
        storage = self.storages[name]
        rd = node.ready()
        self.readys[name].append(rd)
        self.queue.extend(rd.messages)
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            self.applied[name] = decode_state(rd.snapshot.data)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        node.on_persisted(rd.number)
        self.queue.extend(rd.messages_after_persist)
        for entry in rd.committed_entries:
            self.applied_entries[name].append(entry)
            if entry.type == EntryType.CONF_CHANGE:
                node.apply_conf_change(ConfChange.decode(entry.data))
            elif entry.data:
                self.applied[name].append(entry.data)
        if rd.committed_entries:
            node.on_applied(rd.committed_entries[-1].index)
        self.read_states[name].extend(rd.read_states)
        return rd

    def deliver(self, m: Message) -> None:
        if m.to not in self.nodes:
            return
        if (m.frm, m.to) in self.cut:
            return
        if self.drop is not None and self.drop(m):
            return
        if self.transform is not None:
            m = self.transform(m)
        self.delivered.append(m)
        self.nodes[m.to].step(m)

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Process Readys and deliver messages until nothing is left to do."""
        for _ in range(max_rounds):
            busy = False
            for name in self.names:
                node = self.nodes.get(name)
                if node is not None and node.has_ready():
                    self.process_ready(name)
                    busy = True
            while self.queue:
                busy = True
                self.deliver(self.queue.popleft())
            if not busy:
                return
        raise AssertionError("network did not stabilize")

    # ------------------------------------------------------------------ inputs

    def tick(self, name: NodeId, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[name].tick()

    def tick_all(self, n: int = 1) -> None:
        """Tick every node n times, stabilizing after each round."""
        for _ in range(n):
            for name in self.names:
                if name in self.nodes:
                    self.nodes[name].tick()
            self.stabilize()

    def heartbeat(self) -> None:
        """
        Every leader sends its heartbeats now, then the network stabilizes: the event
        that tells followers a new commit index when no entries follow it (a leader
        sends no APPEND just for that).
        """
        for name in self.leaders():
            self.nodes[name].raft.step(Message(MessageType.BEAT, name, name))
        self.stabilize()

    def elect(self, name: str) -> None:
        """`name` campaigns; then a heartbeat round, so followers learn the commit."""
        self.nodes[NodeId(name)].campaign()
        self.stabilize()
        self.heartbeat()

    def propose(self, name: str, data: bytes) -> tuple[int, int]:
        """Propose through `name`; then a heartbeat round, so followers learn the commit."""
        index_term = self.nodes[NodeId(name)].propose(data)
        self.stabilize()
        self.heartbeat()
        return index_term

    def isolate(self, name: str) -> None:
        for other in self.names:
            if other != name:
                self.cut.add((NodeId(name), other))
                self.cut.add((other, NodeId(name)))

    def partition(self, *groups: Iterable[str]) -> None:
        sets = [set(g) for g in groups]
        for a in self.names:
            for b in self.names:
                if a != b and not any(a in s and b in s for s in sets):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()
        self.drop = None
        self.transform = None

    def load(self, name: str, entries: list[Entry], term: int) -> None:
        """Replace `name` by a node restarted from a log of `entries` at `term`."""
        storage = MemoryStorage(self.conf_state)
        storage.append(entries)
        storage.set_hard_state(HardState(term=term))
        self.add_node(NodeId(name), storage)

    def compact(self, name: str, index: int) -> None:
        """Snapshot `name`'s toy state machine at `index` and compact its storage."""
        node_id = NodeId(name)
        storage = self.storages[node_id]
        applied = [e for e in self.applied_entries[node_id] if e.index <= index]
        data = [e.data for e in applied if e.type == EntryType.NORMAL and e.data]
        status = self.nodes[node_id].status()
        storage.create_snapshot(index, status.conf_state, encode_state(data))
        storage.compact(index)

    # ------------------------------------------------------------------ views

    def leaders(self) -> list[NodeId]:
        return [n for n, node in self.nodes.items() if node.raft.role == Role.LEADER]

    def leader(self) -> NodeId:
        leaders = self.leaders()
        assert 1 == len(leaders), f"leaders: {leaders}"
        return leaders[0]

    def role(self, name: str) -> Role:
        return self.nodes[NodeId(name)].raft.role

    def term(self, name: str) -> int:
        return self.nodes[NodeId(name)].raft.term

    def committed(self, name: str) -> int:
        return self.nodes[NodeId(name)].raft.log.committed

    def log_entries(self, name: str) -> list[Entry]:
        raft = self.nodes[NodeId(name)].raft
        first = raft.log.first_index()
        return raft.log.slice(first, raft.log.last_index() + 1, None)
