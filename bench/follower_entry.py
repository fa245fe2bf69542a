"""
The raft worker's per-entry and per-message work that issue 15 cut, timed in one process.

    PYTHONPATH=<checkout> python -m bench.follower_entry [--entries 40] [--rounds 5]

Run it with PYTHONPATH at two checkouts to compare them (docs/benchmarks.md). Each figure
is the least process CPU time of --rounds runs (other processes on a shared machine
disturb it less than wall time), per entry or per message:

  - decode: one AppendEntries of --entries puts (150-byte commands), as a follower
    decodes it (`codec.decode_message_and_trace`);
  - persist: the PERSIST a follower sends its log writer for those entries
    (`encode_persist` with the worker's EntryPacker; new entries each time, so the
    packer packs and evicts, as on a follower);
  - history: the change-stream history of their changes (`user_entries` +
    `EventHistory.append`, with eviction; no subscriber);
  - peer: one peer message sent and received over 127.0.0.1 (`PeerTransport.send`;
    `PeerTransport.recv` after a blocking poll, to the drain's end), in bursts of 50.
"""

from __future__ import annotations

import argparse
import os
import time

import zmq

from bench.kv_apply import best_cpu_s
from concord.ids import NodeId
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.net.event_history import EventHistory, user_entries
from concord.net.peer import PeerTransport
from concord.node.logwriter.ipc import encode_persist
from concord.raft.messages import Entry, EntryType, Message, MessageType
from concord.raft.state import HardState
from concord.storage import codec


def _entries(first: int, count: int) -> list[Entry]:
    return [Entry(3, i, EntryType.NORMAL, os.urandom(150), 1_700_000_000_000 + i)
            for i in range(first, first + count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--entries", type=int, default=40, help="entries per AppendEntries")
    parser.add_argument("--messages", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, messages = args.entries, args.messages
    print(f"load average {os.getloadavg()[0]:.2f}; {n} entries per message, {messages} messages")

    batches = [_entries(1 + m * n, n) for m in range(messages)]
    frames = [codec.encode_message(Message(MessageType.APPEND, NodeId("n2"), NodeId("n1"), 3, 3,
                                           b[0].index - 1, tuple(b), b[0].index - 1))
              for b in batches]

    def decode() -> None:
        for frame in frames:
            codec.decode_message_and_trace(frame)

    packer = codec.EntryPacker()
    hs = HardState(3, NodeId("n1"), 0)

    def persist() -> None:
        fresh = [_entries(1, n) for _ in range(messages)]  # new objects: the follower's case
        t0 = time.process_time()
        for number, batch in enumerate(fresh):
            encode_persist(number, batch, hs, None, True, packer)
        persist_s.append(time.process_time() - t0)

    persist_s: list[float] = []

    changes = [[Change(ChangeType.PUT, Space.USER, f"k{e.index % 2000}",
                       KeyRecord(f"k{e.index % 2000}", b"v" * 100, 0, e.index, e.index, 1, 0),
                       e.index, 5) for e in b] for b in batches]
    history = EventHistory(10_000, 8 << 20)

    def retain() -> None:
        history.reset(0)
        for batch in changes:
            history.append(user_entries(batch, False))

    decode_s = best_cpu_s(args.rounds, decode)
    for _ in range(args.rounds):
        persist()
    history_s = best_cpu_s(args.rounds, retain)
    per_entry = messages * n / 1e6
    print(f"decode   {decode_s / per_entry:6.2f} us/entry")
    print(f"persist  {min(persist_s) / per_entry:6.2f} us/entry")
    print(f"history  {history_s / per_entry:6.2f} us/entry")

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = PeerTransport(ctx, NodeId("n1"), "tcp://127.0.0.1:0")
    b = PeerTransport(ctx, NodeId("n2"), "tcp://127.0.0.1:0")
    a.set_peers({NodeId("n2"): b.endpoint})
    b.set_peers({NodeId("n1"): a.endpoint})
    payload = frames[0][:200]
    try:
        poller = zmq.Poller()
        poller.register(b.router, zmq.POLLIN)

        def exchange() -> None:
            # Bursts of 50: sent, then received as the raft worker does (a poll that
            # blocks, then a drain to its end), so no CPU is spent spinning.
            for _ in range(messages // 50):
                for _ in range(50):
                    if not a.send(NodeId("n2"), payload):
                        raise RuntimeError("peer message dropped")
                got = 0
                while got < 50:
                    poller.poll(1000)
                    while b.recv() is not None:
                        got += 1

        deadline = time.monotonic() + 10.0
        while not a.send(NodeId("n2"), payload):  # until connected
            if time.monotonic() > deadline:
                raise RuntimeError("peer transports did not connect within 10 s")
            time.sleep(0.01)
        while b.recv() is None:
            pass
        peer_s = best_cpu_s(args.rounds, exchange)
        print(f"peer     {peer_s / messages * 1e6:6.2f} us/message (send, receive; bursts of 50)")
    finally:
        a.close()
        b.close()
        ctx.term()


if __name__ == "__main__":
    main()
