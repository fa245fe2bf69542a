"""The kv state hashes a node remembers for `hash_kv`: kept as their inputs, digested on demand."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from concord.errors import NotFoundError
from concord.kv import encode_command
from concord.kv.machine import hash_of_point
from concord.net.wire import Request
from concord.node import worker_ops
from concord.node.members import AddressBook, NodeStateMachine
from concord.node.node_machine import NodeMachine


def _machine_with_history() -> tuple[NodeMachine, dict[int, int]]:
    """A NodeMachine after puts, deletes and no-ops, and the state hash after each index."""
    machine = NodeMachine(NodeStateMachine(), AddressBook())
    expected = {0: machine.kv.state_hash()}
    for index in range(1, 31):
        if index % 7 == 0:
            machine.apply_noop(index, 1000 + index)
        elif index % 5 == 0:
            machine.apply(index, 1000 + index, encode_command("delete", {"key": f"k{index - 1}"}))
        else:
            machine.apply(index, 1000 + index, encode_command("put", {"key": f"k{index}", "value": index}))
        expected[index] = machine.kv.state_hash()
    return machine, expected


def test_remembered_points_digest_to_the_hash_after_each_index() -> None:
    """Every remembered point digests to the state hash the machine had right after it."""
    machine, expected = _machine_with_history()
    assert expected == {point[0]: hash_of_point(point) for point in machine.hashes}


def test_hash_kv_answers_a_past_index_with_the_hash_after_it() -> None:
    """The hash_kv op's answer at an older index is the hash right after that index."""
    machine, expected = _machine_with_history()
    worker = cast(Any, SimpleNamespace(machine=machine, node_id="n1",
                                       driver=SimpleNamespace(applied_index=30)))
    for index in (0, 1, 7, 10, 29, 30):
        got = worker_ops.hash_kv(worker, Request(op="hash_kv", id=1, args={"index": index}))
        assert expected[index] == got["hash"], index
    assert None is worker_ops.hash_kv(worker, Request(op="hash_kv", id=1, args={"index": 31}))["hash"]
    machine.hashes.popleft()
    with pytest.raises(NotFoundError, match="holds no state hash at index 0"):
        worker_ops.hash_kv(worker, Request(op="hash_kv", id=1, args={"index": 0}))
