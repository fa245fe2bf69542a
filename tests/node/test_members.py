"""The replicated member address entry (concord/node/members.py)."""

from __future__ import annotations

from concord.ids import NodeId
from concord.kv import KvStateMachine
from concord.node.members import MAGIC, Address, AddressBook, decode_address, encode_address


def test_address_round_trips_when_encoded() -> None:
    """An address entry decodes to the same address."""
    address = Address(NodeId("n4"), "127.0.0.1", 7404, 7504, 7604)
    assert address == decode_address(encode_address(address))


def test_decode_returns_none_when_data_is_a_kv_command() -> None:
    """Ordinary commands are not address entries."""
    assert None is decode_address(b"\x81\xa2op\xa3put")
    assert None is decode_address(MAGIC + b"\xc1")


def test_kv_changes_only_applied_index_when_it_applies_an_address_entry() -> None:
    """The writer's replica (plain kv) ends in the state the worker's apply_noop gives."""
    data = encode_address(Address(NodeId("n4"), "h", 1, 2, 3))
    replica, worker = KvStateMachine(), KvStateMachine()
    applied = replica.apply(1, 10, data)
    worker.apply_noop(1, 10)
    assert [] == applied.changes
    assert worker.state_hash() == replica.state_hash()


def test_book_gives_client_endpoint_when_port_is_known() -> None:
    """Port 0 means unknown: no endpoint."""
    book = AddressBook([Address(NodeId("a"), "h", 0, 5, 6), Address(NodeId("b"), "::1", 7, 8, 9)])
    assert (None, "tcp://[::1]:7") == (book.client_endpoint(NodeId("a")),
                                       book.client_endpoint(NodeId("b")))
    assert {"a": "tcp://h:5", "b": "tcp://[::1]:8"} == book.peer_endpoints()
