"""
The per-put work branch writecpu cut, timed in one process.

    PYTHONPATH=<checkout> python -m bench.write_cpu [--entries 10] [--rounds 5]

Run it with PYTHONPATH at two checkouts to compare them (docs/benchmarks.md). Each figure
is the least process CPU time of --rounds runs (other processes on a shared machine
disturb it less than wall time):

  - command: the leader's request -> command of a plain put (`NodeAuth.write_command`,
    auth off; 10-byte key, 100-byte value), per put;
  - writer: the log writer's `handle_batch` of one PERSIST of --entries puts and a hard
    state (fsync off, so the figure is the writer's Python and one write()), per batch;
  - apply: `NodeMachine.apply` of a put over 2,000 keys (kv apply and the hash_kv
    history), per entry;
  - message: `codec.encode_message` of an APPEND of --entries entries (packed once
    before) and of an APPEND_RESP, per message.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import msgpack

from bench.kv_apply import best_cpu_s
from concord.config import AuthSection
from concord.ids import NodeId
from concord.kv import encode_command
from concord.net.wire import decode_validated
from concord.node import log_writer as lw
from concord.node.auth import NodeAuth
from concord.node.members import AddressBook, NodeStateMachine
from concord.node.node_machine import NodeMachine
from concord.raft.messages import Entry, EntryType, Message, MessageType
from concord.raft.state import HardState
from concord.storage import codec


def command_us(rounds: int, count: int = 20_000) -> float:
    machine = NodeStateMachine()
    auth = NodeAuth(AuthSection(enabled=False), machine.kv, lambda: 0, lambda: 0.0)
    request = decode_validated(msgpack.packb({"op": "put", "id": 7, "key": "key-000123",
                                              "value": b"v" * 100}))

    def run() -> None:
        for _ in range(count):
            auth.write_command(request, None)
    return best_cpu_s(rounds, run) / count * 1e6


def writer_us(rounds: int, entries: int, batches: int = 300) -> float:
    data = encode_command("put", {"key": "key-000123", "value": b"v" * 100})
    with tempfile.TemporaryDirectory() as tmp:
        writer = lw.LogWriter(Path(tmp), lw.WriterSettings(fsync=False))
        packer = codec.EntryPacker()
        state = {"index": 1, "number": 1}

        def frames() -> list[bytes]:
            out = []
            for _ in range(batches):
                first = state["index"]
                batch = [Entry(2, i, EntryType.NORMAL, data, 1_700_000_000_000)
                         for i in range(first, first + entries)]
                out.append(lw.encode_persist(state["number"], batch, HardState(2, None, first - 1),
                                             None, True, packer))
                state["index"] += entries
                state["number"] += 1
            return out
        best = float("inf")
        try:
            for _ in range(rounds):
                prepared = frames()

                def persist_all() -> None:
                    for f in prepared:
                        writer.handle_batch([f])

                best = min(best, best_cpu_s(1, persist_all))
        finally:
            writer.close()
    return best / batches * 1e6


def apply_us(rounds: int, count: int = 20_000) -> float:
    commands = [encode_command("put", {"key": f"key-{i % 2000:06d}", "value": b"v" * 100})
                for i in range(count)]
    best = float("inf")
    for _ in range(rounds):
        machine = NodeMachine(NodeStateMachine(), AddressBook())

        def run() -> None:
            for index, command in enumerate(commands, 1):
                machine.apply(index, 1000 + index, command)
        best = min(best, best_cpu_s(1, run))
    return best / count * 1e6


def message_us(rounds: int, entries: int, count: int = 20_000) -> tuple[float, float]:
    data = encode_command("put", {"key": "key-000123", "value": b"v" * 100})
    batch = tuple(Entry(2, i, EntryType.NORMAL, data, 1_700_000_000_000) for i in range(100, 100 + entries))
    append = Message(MessageType.APPEND, NodeId("n2"), NodeId("n1"), term=2, log_term=2, index=99,
                     entries=batch, commit=98)
    resp = Message(MessageType.APPEND_RESP, NodeId("n1"), NodeId("n2"), term=2, index=99 + entries)
    packer = codec.EntryPacker()
    codec.encode_message(append, packer)

    def run(msg: Message) -> None:
        for _ in range(count):
            codec.encode_message(msg, packer)
    return (best_cpu_s(rounds, lambda: run(append)) / count * 1e6,
            best_cpu_s(rounds, lambda: run(resp)) / count * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--entries", type=int, default=10, help="entries per PERSIST and APPEND")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"command (write_command, plain put)   {command_us(args.rounds):6.2f} us per put")
    print(f"writer handle_batch, {args.entries} entries       {writer_us(args.rounds, args.entries):6.2f} us per batch")
    print(f"NodeMachine.apply, put             {apply_us(args.rounds):6.2f} us per entry")
    append, resp = message_us(args.rounds, args.entries)
    print(f"encode_message APPEND of {args.entries}        {append:6.2f} us; APPEND_RESP {resp:6.2f} us")


if __name__ == "__main__":
    main()
