"""The one op table (concord.net.wire.OPS) and everything that must agree with it.

kv cannot import net (imports flow one way), so kv keeps its own handler tables; these
tests are what keeps the two, the clients and docs/protocol.md in step with the wire table.
"""

from __future__ import annotations

import re
from pathlib import Path

from concord import aio
from concord.client import Client
from concord.client.local import LOCAL_OPS
from concord.client.plan import OPS_KIND
from concord.kv.commands import CLIENT_WRITE_OPS, ENVELOPE_FIELDS, WRITE_ARGS
from concord.kv.reads import READ_ARGS, READ_OPS
from concord.net import wire
from concord.net.wire import ENVELOPE_ARGS, OPS, Backend, OpKind

ROOT = Path(__file__).resolve().parent.parent

#: Ops with no method of their own on the clients: reached with `Client.call`
#: (test-only fault injection, and the operations ops the CLI drives).
CALL_ONLY = frozenset({"fault", "backup", "hash_kv", "hash_content"})

#: Client methods not named after their op.
METHOD_NAMES = {"index_lookup": "lookup", "lease_list": "leases"}


def _arg_names(op: str) -> frozenset[str]:
    return frozenset(a.name for a in OPS[op].args) - {"consistency"}


def test_kv_reads_are_the_read_worker_ops_when_compared_to_wire_table() -> None:
    """kv serves exactly the ops the wire table sends to read workers, with the same args."""
    wire_reads = {name for name, spec in OPS.items() if spec.backend is Backend.READ}
    assert wire_reads == set(READ_OPS)
    assert {op: _arg_names(op) for op in sorted(wire_reads)} == {op: READ_ARGS[op] for op in sorted(wire_reads)}


def test_kv_builds_every_write_op_when_compared_to_wire_table() -> None:
    """kv builds exactly the wire table's write ops, and understands every arg the table declares."""
    assert set(wire.WRITE_OPS) == set(CLIENT_WRITE_OPS)
    not_understood = {op: sorted(_arg_names(op) - WRITE_ARGS[op]) for op in wire.WRITE_OPS}
    assert {op: [] for op in wire.WRITE_OPS} == not_understood


def test_kv_envelope_fields_match_wire_envelope_when_compared() -> None:
    """The fields kv strips from a request map are the wire envelope plus a read's consistency."""
    assert {"op", "id", "consistency"} | {a.name for a in ENVELOPE_ARGS} == set(ENVELOPE_FIELDS)


def test_derived_sets_follow_the_table_when_rows_are_read() -> None:
    """The client's resend kinds, local ops and session ops are the table's columns."""
    assert {name: spec.kind for name, spec in OPS.items()} == dict(OPS_KIND)
    assert {name for name, spec in OPS.items() if spec.local} == set(LOCAL_OPS)
    assert set(wire.WRITE_OPS) == set(wire.SESSION_OPS)
    assert set(LOCAL_OPS) <= set(wire.READ_OPS)
    assert {name for name, spec in OPS.items() if spec.kind is OpKind.ADMIN} == set(wire.ADMIN_OPS)


def test_clients_have_a_method_per_op_when_compared_to_wire_table() -> None:
    """Client and aio.Client have a method for every op but the call-only ones, and no request
    builder names an op the table lacks."""
    for cls in (Client, aio.Client):
        missing = [op for op in OPS if op not in CALL_ONLY and not hasattr(cls, METHOD_NAMES.get(op, op))]
        assert [] == missing, cls
    builders = ("concord/client/requests.py", "concord/client/auth.py")  # auth ops: their own module
    built = {op for path in builders
             for op in re.findall(r'\bReq\(\s*"([a-z_]+)"', (ROOT / path).read_text())}
    assert set() == built - set(OPS)
    assert set() == set(OPS) - CALL_ONLY - built
    assert set() == CALL_ONLY - set(OPS)


def test_protocol_doc_op_table_is_generated_when_compared_to_describe_ops() -> None:
    """docs/protocol.md's op table is exactly describe_ops() of the wire table (regenerate it
    with `python3 -c "from concord.net.wire import describe_ops; print(describe_ops())"`)."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    match = re.search(r"<!-- op table:[^\n]*-->\n(.*?)\n<!-- end of op table -->", text, re.DOTALL)
    assert match is not None
    assert wire.describe_ops() == match.group(1), (
        "docs/protocol.md's op table is stale: replace it with the output of "
        "python3 -c 'from concord.net.wire import describe_ops; print(describe_ops())'")


def test_protocol_doc_has_a_section_per_op_when_compared_to_op_table() -> None:
    """docs/protocol.md documents every op of the wire table in a section of its own."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    documented = set(re.findall(r"^### `([a-z_]+)`$", text, flags=re.MULTILINE))
    assert set(OPS) == documented
