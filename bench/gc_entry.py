"""
The cyclic GC's share of a follower's per-entry work, with and without the raft worker's
settings (concord.node.gc_settings), timed in one process per setting.

    PYTHONPATH=<checkout> python -m bench.gc_entry [--entries 30] [--messages 2000] [--rounds 3]

Each setting runs in a fresh interpreter (the collector's state is process-wide) that
imports what a raft worker imports, builds a state machine of --keys keys and a memory
log, then, for --messages AppendEntries of --entries puts each, does the follower's
per-entry chain: decode the message, append the entries to the MemoryStorage (compacted
every 10,000 entries, as after a durable snapshot), apply each put to the
NodeMachine (the kv machine and its hash history), retain its changes in the change-stream history. Printed per entry:
the least process CPU of --rounds rounds, and the collector's own CPU in that round
(`gc.callbacks`, process time). "settled" calls `settle_after_start()` after the set-up,
where the raft worker calls it (the start of its loop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import gc, json, os, sys, time
import concord.node.raft_worker  # noqa: F401  what a raft worker has in memory
from concord.ids import NodeId
from concord.kv import encode_command
from concord.net.event_history import EventHistory, user_entries
from concord.node.gc_settings import settle_after_start
from concord.node.members import AddressBook, NodeStateMachine
from concord.node.node_machine import NodeMachine
from concord.raft.messages import ConfState, Entry, EntryType, Message, MessageType
from concord.raft.storage import MemoryStorage
from concord.storage import codec

mode, keys, n, messages, rounds = sys.argv[1], *map(int, sys.argv[2:6])
state = NodeMachine(NodeStateMachine(), AddressBook(()))
index = 0
for k in range(keys):
    index += 1
    state.apply(index, 1_000 + index, encode_command("put", {"key": f"k{k:06d}", "value": b"v" * 100}))
state.changes = []
storage = MemoryStorage(ConfState((NodeId("n1"), NodeId("n2"), NodeId("n3"))))
history = EventHistory(10_000, 8 << 20)
if mode == "settled":
    settle_after_start()

gc_cpu = [0.0, 0.0]
def on_gc(phase, info):
    if phase == "start":
        gc_cpu[1] = time.process_time()
    else:
        gc_cpu[0] += time.process_time() - gc_cpu[1]
gc.callbacks.append(on_gc)

def frames(first):
    out = []
    for m in range(messages):
        batch = tuple(Entry(3, i, EntryType.NORMAL,
                            encode_command("put", {"key": f"k{i % keys:06d}", "value": b"v" * 100}),
                            1_700_000_000_000 + i)
                      for i in range(first + m * n, first + (m + 1) * n))
        out.append(codec.encode_message(Message(MessageType.APPEND, NodeId("n2"), NodeId("n1"),
                                                3, 3, batch[0].index - 1, batch, batch[0].index - 1)))
    return out

best = None
for r in range(rounds):
    first = storage.last_index() + 1
    todo = frames(first)
    gc_cpu[0] = 0.0
    t0 = time.process_time()
    for frame in todo:
        msg, _ = codec.decode_message_and_trace(frame)
        storage.append(msg.entries)
        if storage.last_index() - storage.first_index() > 10_000:
            storage.compact(storage.last_index() - 100)
        for e in msg.entries:
            index += 1
            state.apply(index, e.timestamp_ms, e.data)
        changes, state.changes = state.changes, []
        history.append(user_entries(changes, False))
    spent = time.process_time() - t0
    if best is None or spent < best[0]:
        best = (spent, gc_cpu[0])
per = messages * n / 1e6
print(json.dumps({"mode": mode, "us_per_entry": best[0] / per, "gc_us_per_entry": best[1] / per,
                  "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--entries", type=int, default=30, help="entries per AppendEntries")
    parser.add_argument("--messages", type=int, default=2000, help="messages per round")
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.entries} entries per message, "
          f"{args.messages} messages, {args.keys} keys")
    for mode in ("default", "settled"):
        out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(args.keys), str(args.entries),
                              str(args.messages), str(args.rounds)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the {mode} run failed:\n{out.stderr}")
        got = json.loads(out.stdout)
        print(f"{mode:8s} {got['us_per_entry']:6.2f} us/entry, of which GC "
              f"{got['gc_us_per_entry']:5.2f} (thresholds {tuple(got['threshold'])}, "
              f"{got['frozen']} objects frozen)")


if __name__ == "__main__":
    main()
