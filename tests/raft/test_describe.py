"""describe.py's stable text, and the core's log lines (node, term, role on each)."""

from __future__ import annotations

import logging

import pytest

from concord.ids import NodeId
from concord.raft import ConfChange, Entry, EntryType, MessageType
from concord.raft.describe import describe_entry, describe_message, describe_ready
from concord.raft.messages import Message
from tests.raft.network import Network

A, B = NodeId("a"), NodeId("b")


def test_entry_text_is_stable_when_described() -> None:
    """Entries read `term/index Type payload`."""
    assert "2/5 EntryNormal b'x' ts=7" == describe_entry(Entry(2, 5, data=b"x", timestamp_ms=7))
    cc = Entry(2, 6, EntryType.CONF_CHANGE, ConfChange.add_learner(B).encode())
    assert "2/6 EntryConfChange add_learner:b" == describe_entry(cc)


def test_message_text_is_stable_when_described() -> None:
    """Messages read `from->to TYPE Term:t` plus the fields their type uses."""
    m = Message(MessageType.APPEND, B, A, 3, log_term=2, index=4, entries=(Entry(3, 5),), commit=4)
    assert "a->b APPEND Term:3 Log:2/4 Commit:4 Entries:[3/5 EntryNormal b'']" == (
        describe_message(m)
    )
    r = Message(MessageType.APPEND_RESP, A, B, 3, index=4, reject=True, reject_hint=2, log_term=1)
    assert "b->a APPEND_RESP Term:3 Index:4 Rejected (Hint: 2/1)" == describe_message(r)


def test_ready_text_lists_fields_when_described() -> None:
    """A Ready lists its non-empty fields."""
    net = Network(["a"])
    net.nodes[A].campaign()
    rd = net.process_ready(A)
    assert "Ready 1:\nLead:None State:PRE_CANDIDATE" == describe_ready(rd)


def test_log_lines_carry_node_term_and_role_when_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Every core log line has node=, term= and role= pairs (docs/contributing.md "Logging")."""
    caplog.set_level(logging.INFO, logger="concord.raft")
    net = Network(["a", "b", "c"])
    net.elect("a")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("concord.raft")]
    assert any(line.startswith("became leader") for line in lines)
    assert all("node=" in line and "term=" in line and "role=" in line for line in lines)
    assert "became leader last_index=1 node=a term=1 role=leader" in lines
