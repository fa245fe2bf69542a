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


def test_book_answers_from_the_new_address_when_one_is_set() -> None:
    """The endpoints the book remembers follow set(): a changed or added member is seen."""
    book = AddressBook([Address(NodeId("a"), "h", 1, 5, 6)])
    assert ("tcp://h:1", frozenset({"a"})) == (book.client_endpoint(NodeId("a")), book.peer_ids())
    assert None is book.client_endpoint(NodeId("b"))
    book.set(Address(NodeId("a"), "h2", 11, 15, 16))
    book.set(Address(NodeId("b"), "h3", 21, 25, 26))
    assert ("tcp://h2:11", "tcp://h3:21") == (book.client_endpoint(NodeId("a")),
                                              book.client_endpoint(NodeId("b")))
    assert {"a": "tcp://h2:15", "b": "tcp://h3:25"} == book.peer_endpoints()
    assert frozenset({"a", "b"}) == book.peer_ids()
    book.peer_endpoints().clear()  # the caller's copy
    assert 2 == len(book.peer_endpoints())


def test_node_machine_snapshot_keeps_addresses_when_restored() -> None:
    """Addresses survive snapshot/restore; the state hash covers them."""
    from concord.node.members import NodeStateMachine

    machine = NodeStateMachine()
    machine.apply(1, 5, encode_address(Address(NodeId("n4"), "h", 1, 2, 3)))
    machine.apply(2, 6, b"\x83\xa1v\x01\xa2op\xa3put\xa3key\xa1a")  # may be refused by kv
    copy = NodeStateMachine()
    copy.restore(machine.snapshot())
    assert machine.addresses == copy.addresses
    assert machine.state_hash() == copy.state_hash()
    assert 2 == copy.applied_index
    empty = NodeStateMachine()
    empty.kv.restore(machine.kv.snapshot())
    assert machine.state_hash() != empty.state_hash()


def test_node_machine_restores_plain_kv_snapshot_when_magic_is_absent() -> None:
    """A plain concord.kv snapshot restores with no addresses."""
    from concord.node.members import NodeStateMachine

    kv = KvStateMachine()
    kv.apply_noop(3, 1)
    machine = NodeStateMachine()
    machine.restore(kv.snapshot())
    assert (3, {}) == (machine.applied_index, machine.addresses)


def test_node_machine_keeps_the_first_cluster_id_when_two_are_applied() -> None:
    """Two leaders' proposals: every replica keeps the first applied; the second is a no-op."""
    from concord.node.members import NodeStateMachine, encode_cluster_id

    machine = NodeStateMachine()
    assert [] == machine.apply(1, 10, encode_cluster_id("a" * 32)).changes
    machine.apply(2, 11, encode_cluster_id("b" * 32))
    assert ("a" * 32, 2) == (machine.cluster_id, machine.applied_index)


def test_node_machine_snapshot_keeps_cluster_id_when_restored() -> None:
    """The cluster id travels in the node snapshot (v2) and is part of the state hash."""
    from concord.node.members import NodeStateMachine, encode_cluster_id

    machine = NodeStateMachine()
    without = machine.state_hash()
    machine.apply(1, 10, encode_cluster_id("c" * 32))
    copy = NodeStateMachine()
    copy.restore(machine.snapshot())
    assert ("c" * 32, machine.state_hash()) == (copy.cluster_id, copy.state_hash())
    assert without != machine.state_hash()


def test_node_machine_restores_a_version_1_snapshot_when_it_has_no_cluster_id() -> None:
    """An older release's snapshot ([1, kv, addresses]) is read, with no cluster id."""
    import msgpack

    from concord.node.members import SNAPSHOT_MAGIC, NodeStateMachine

    kv = KvStateMachine()
    kv.apply_noop(1, 10)
    machine = NodeStateMachine()
    machine.restore(SNAPSHOT_MAGIC + msgpack.packb([1, kv.snapshot(), [["n1", "h", 1, 2, 3]]]))
    assert (None, 1, ["n1"]) == (machine.cluster_id, machine.applied_index, list(machine.addresses))
