"""
Throughput of the pure consensus core: a 3-node cluster in one process, no IO.

Messages are delivered in memory, every Ready is "persisted" into MemoryStorage at once
and committed entries are applied to a no-op state machine. Measures entries committed
per second (on every node) for proposal batches of 1 and of 100.

    python bench/raft_core.py [--seed N] [--entries N] [--value-bytes N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from concord.ids import NodeId
from concord.raft import ConfState, MemoryStorage, Message, RaftConfig, RawNode, Role


class Cluster:
    def __init__(self, n: int, seed: int, config: dict[str, int]) -> None:
        self.ids = [NodeId(f"n{i + 1}") for i in range(n)]
        cs = ConfState(voters=tuple(self.ids))
        self.storages = {i: MemoryStorage(cs) for i in self.ids}
        self.nodes = {
            i: RawNode(RaftConfig(id=i, **config), self.storages[i], random.Random(seed + k))  # type: ignore[arg-type]
            for k, i in enumerate(self.ids)
        }
        self.queue: deque[Message] = deque()
        self.applied = {i: 0 for i in self.ids}

    def run(self) -> None:
        busy = True
        while busy:
            busy = False
            for node_id in self.ids:
                node = self.nodes[node_id]
                if not node.has_ready():
                    continue
                busy = True
                rd = node.ready()
                self.queue.extend(rd.messages)
                storage = self.storages[node_id]
                if rd.entries:
                    storage.append(rd.entries)
                if rd.hard_state is not None:
                    storage.set_hard_state(rd.hard_state)
                node.on_persisted(rd.number)
                self.queue.extend(rd.messages_after_persist)
                if rd.committed_entries:
                    last = rd.committed_entries[-1].index
                    self.applied[node_id] = last
                    node.on_applied(last)
            while self.queue:
                busy = True
                m = self.queue.popleft()
                self.nodes[m.to].step(m)

    def leader(self) -> RawNode:
        for node in self.nodes.values():
            if node.raft.role == Role.LEADER:
                return node
        raise RuntimeError("no leader")


def measure(
    batch: int, total: int, value: bytes, seed: int, config: dict[str, int]
) -> tuple[float, float]:
    """(entries per wall second, entries per CPU second) for one batch size."""
    cluster = Cluster(3, seed, config)
    cluster.nodes[cluster.ids[0]].campaign()
    cluster.run()
    leader = cluster.leader()
    start_index = leader.raft.log.last_index()
    started = time.perf_counter()
    cpu_started = time.process_time()
    proposed = 0
    while proposed < total:
        for _ in range(batch):
            leader.propose(value)
        proposed += batch
        cluster.run()
    target = start_index + proposed
    # NB: followers learn the last commit index with the leader's next append or
    # heartbeat (docs/architecture.md "Follower lag"): tick the leader until they have.
    for _ in range(100):
        if min(cluster.applied.values()) == target:
            break
        leader.tick()
        cluster.run()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if min(cluster.applied.values()) != target:
        raise RuntimeError(f"not all applied: {cluster.applied} != {target}")
    return proposed / elapsed, proposed / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args()
    config = {"max_inflight_msgs": 256, "max_size_per_msg": 1 << 20}
    print(f"seed={args.seed} nodes=3 entries={args.entries} value_bytes={args.value_bytes}")
    print(f"config={config} (other RaftConfig fields default)")
    value = b"v" * args.value_bytes
    for batch in (1, 100):
        wall, cpu = measure(batch, args.entries, value, args.seed, config)
        print(
            f"batch={batch:<4} committed_entries_per_s={wall:,.0f} "
            f"(per CPU second: {cpu:,.0f})"
        )


if __name__ == "__main__":
    main()
