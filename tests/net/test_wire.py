"""The client envelope and op table (pure: no sockets)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.errors import InvalidRequestError, NotLeaderError
from concord.net.backend import (
    KIND_HANDOFF,
    KIND_REPLIES,
    KIND_REPLY,
    pack_batch,
    pack_header,
    unpack_batch,
    unpack_header,
)
from concord.net.frontdoor import route
from concord.net.wire import (
    OPS,
    Backend,
    decode_request,
    decode_validated,
    describe_ops,
    error_reply,
    ok_reply,
    pack,
    peek_id,
    reply_for_error,
)

#: docs/protocol.md: the op names are the contract.
CONTRACT_OPS = {
    "put", "get", "delete", "put_many", "get_many", "delete_many", "touch", "touch_many", "ttl",
    "get_with_ttl", "get_all", "put_if", "delete_if", "keys", "query", "count", "delete_where",
    "events", "status", "members", "add_member", "remove_member", "promote_member", "transfer_leader",
}


def test_op_table_covers_contract_when_compared_to_design() -> None:
    """Every contract op is registered; the extras are fault, the index ops, the
    operations ops of the CLI (backup, hash_kv, hash_content: docs/protocol.md), the
    auth ops (docs/security.md) and the counter and lease ops of the recipes
    (docs/recipes.md)."""
    index_ops = {"create_index", "drop_index", "list_indexes", "index_lookup"}
    operations_ops = {"backup", "hash_kv", "hash_content"}
    auth_ops = {"bootstrap", "whoami", "token_create", "token_list", "token_revoke", "role_put",
                "role_list", "role_delete", "tenant_put", "tenant_list", "tenant_delete",
                "tenant_usage"}
    recipe_ops = {"incr", "decr", "lease_grant", "lease_keepalive", "lease_revoke", "lease_list"}
    assert CONTRACT_OPS | {"fault"} | index_ops | operations_ops | auth_ops | recipe_ops == set(OPS)


VALID = [
    {"op": "put", "id": 1, "key": "k", "value": {"a": [1, 2.5, None, b"b"]}, "ttl": 3, "compress": False},
    {"op": "get", "id": 2, "key": "k", "consistency": "eventual", "meta": True},
    {"op": "put_many", "id": 3, "items": [["a", 1], ["b", 2, 10], ["c", 3, None]]},
    {"op": "touch_many", "id": 4, "items": [["a", 5], ["b", 0.5]]},
    {"op": "put_if", "id": 5, "key": "k", "value": 1, "expected": None},
    {"op": "delete_if", "id": 6, "key": "k", "mod_revision": 9},
    {"op": "query", "id": 7, "prefix": "a", "range": ["a", None], "where": ["eq", "f", 1], "limit": 10, "offset": 0},
    {"op": "events", "id": 8, "since_revision": 0, "prefix": "user:"},
    {"op": "status", "id": 9, "token": "t", "ns": "tenant", "timeout_ms": 100, "client_id": b"c", "seq": 0,
     "traceparent": "00-abc"},
    {"op": "add_member", "id": 10, "member_id": "n4", "host": "h", "client_port": 1, "peer_port": 2,
     "events_port": 3, "learner": True},
    {"op": "transfer_leader", "id": 11},
    {"op": "get", "id": -5, "key": ""},
]


@pytest.mark.parametrize("msg", VALID, ids=[str(m["op"]) for m in VALID])
def test_decode_accepts_request_when_well_formed(msg: dict[str, object]) -> None:
    """Well-formed requests decode; op args and envelope fields are separated; a backend's
    decode of the validated payload gives the same Request."""
    request = decode_request(pack(msg))
    envelope = {"token", "ns", "timeout_ms", "client_id", "seq", "traceparent"}
    expected_args = {k: v for k, v in msg.items() if k not in envelope | {"op", "id"}}
    assert (msg["op"], msg["id"], expected_args) == (request.op, request.id, dict(request.args))
    assert request == decode_validated(pack(msg))


def test_decode_validated_names_the_fault_when_payload_not_validated() -> None:
    """A payload the door would have refused fails decode_validated the same way."""
    for bad in ({"op": ["put"], "id": 1}, {"op": "put", "id": True}, {"op": "nope", "id": 2}, [1]):
        with pytest.raises(InvalidRequestError) as mine:
            decode_validated(pack(bad))  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError) as theirs:
            decode_request(pack(bad))  # type: ignore[arg-type]
        assert (theirs.value.message, theirs.value.request_id) == (
            mine.value.message, mine.value.request_id)


def test_decode_reads_envelope_fields_when_present() -> None:
    """token, ns, timeout_ms, client_id, seq and traceparent land on the Request."""
    request = decode_request(pack(VALID[8]))
    assert ("t", "tenant", 100, b"c", 0, "00-abc") == (
        request.token, request.ns, request.timeout_ms, request.client_id, request.seq, request.traceparent
    )


def test_invalid_request_carries_id_when_id_readable() -> None:
    """An error after the id was read names that id; before, it is None."""
    with pytest.raises(InvalidRequestError) as info:
        decode_request(pack({"op": "nope", "id": 42}))
    assert 42 == info.value.request_id
    with pytest.raises(InvalidRequestError) as info:
        decode_request(msgpack.packb([1]))
    assert info.value.request_id is None


def test_decode_rejects_nested_ext_when_deep_in_value() -> None:
    """Ext types and timestamps are refused anywhere in the payload."""
    value = {"a": [1, {"b": msgpack.Timestamp(1, 0)}]}
    with pytest.raises(InvalidRequestError, match="not allowed"):
        decode_request(pack({"op": "put", "id": 1, "key": "k", "value": value}))


def test_decode_rejects_payload_when_too_deep() -> None:
    """Pathological nesting is refused with invalid_request, not a crash."""
    value: object = 1
    for _ in range(200):
        value = [value]
    with pytest.raises(InvalidRequestError):
        decode_request(pack({"op": "put", "id": 1, "key": "k", "value": value}))


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("bad", [{"value": _nested(80)}, {7: "an int map key"}])
def test_invalid_request_carries_id_when_map_decoded_but_content_refused(bad: dict[object, object]) -> None:
    """The id of a map that decoded is echoed even when a value or key inside is refused."""
    with pytest.raises(InvalidRequestError) as info:
        decode_request(msgpack.packb({"op": "put", "id": 42, "key": "k", **bad}, use_bin_type=True))
    assert 42 == info.value.request_id


def test_route_sends_reads_to_read_pool_when_not_strong() -> None:
    """READ ops go to read workers unless strong; every other op goes to raft."""
    def where(msg: dict[str, object]) -> Backend:
        return route(decode_request(pack({"id": 1, **msg})))

    assert Backend.READ == where({"op": "get", "key": "k"})
    assert Backend.READ == where({"op": "get_many", "keys": ["k"], "consistency": "eventual"})
    assert Backend.RAFT == where({"op": "get", "key": "k", "consistency": "strong"})
    assert Backend.RAFT == where({"op": "put", "key": "k", "value": 1})
    assert Backend.RAFT == where({"op": "events", "since_revision": 1})


def test_replies_have_contract_shape_when_encoded() -> None:
    """ok and error replies carry exactly the §7 fields."""
    assert {"id": 1, "ok": True, "revision": 5} == msgpack.unpackb(ok_reply(1, {"revision": 5}))
    assert {"id": None, "ok": False, "error": "invalid_request", "message": "m", "leader": None} == (
        msgpack.unpackb(error_reply(None, "invalid_request", "m"))
    )
    err = NotLeaderError("not the leader", 3, leader_hint="tcp://h:7400")
    assert {"id": 3, "ok": False, "error": "not_leader", "message": "not the leader",
            "leader": "tcp://h:7400"} == msgpack.unpackb(reply_for_error(err))
    with pytest.raises(ValueError, match="reserved"):
        ok_reply(1, {"ok": False})


def test_peek_id_returns_none_when_payload_garbage() -> None:
    """peek_id reads an id best-effort and never raises."""
    assert 7 == peek_id(ok_reply(7))
    assert peek_id(b"\xc1") is None


def test_describe_ops_lists_every_op_when_rendered() -> None:
    """The generated table names every op once (source for docs/protocol.md)."""
    table = describe_ops()
    assert all(f"| `{name}` |" in table for name in OPS)


def test_backend_header_roundtrips_when_valid_and_rejects_garbage() -> None:
    """The 10-byte backend header decodes back; wrong size, version or kind give None."""
    assert (KIND_REPLY, 2**63 + 5) == unpack_header(pack_header(KIND_REPLY, 2**63 + 5))
    assert (KIND_HANDOFF, 7) == unpack_header(pack_header(KIND_HANDOFF, 7))
    assert unpack_header(b"\x02\x03") is None
    assert (KIND_REPLIES, 0) == unpack_header(pack_header(KIND_REPLIES, 0))
    assert unpack_header(b"\x01\x03" + bytes(8)) is None  # v1: no longer read
    assert unpack_header(b"\x02\x03" + bytes(8)) is None  # v2: no longer read
    assert unpack_header(b"\x03\x03" + bytes(8)) is None  # v3: no longer read
    assert unpack_header(b"\x04\x03" + bytes(8)) is None  # v4: no longer read
    assert (3, 0) == unpack_header(b"\x05\x03" + bytes(8))
    assert (8, 0) == unpack_header(b"\x05\x08" + bytes(8))  # v5: BARRIER_ANSWER
    assert unpack_header(b"\x06\x03" + bytes(8)) is None
    assert unpack_header(b"\x05\x09" + bytes(8)) is None


def test_backend_replies_roundtrip_when_valid_and_rejected_when_malformed() -> None:
    """A REPLIES payload gives back its (token, reply) pairs in order; a truncated, padded
    or empty one gives None."""
    replies = [(2**63 + 1, b"\x81\xa2id\x01"), (7, b""), (9, bytes(300))]
    packed = pack_batch(replies)
    assert replies == unpack_batch(packed)
    assert [(1, b"x")] == unpack_batch(pack_batch([(1, b"x")]))
    assert unpack_batch(packed[:-1]) is None
    assert unpack_batch(packed + b"\x00") is None
    assert unpack_batch(packed[:10]) is None
    assert unpack_batch(b"\x00\x00\x00\x00") is None
    assert unpack_batch(b"") is None


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), children, max_size=4),
    max_leaves=6,
)


@pytest.mark.slow
@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_decode_raises_only_invalid_request_when_bytes_random(payload: bytes) -> None:
    """Arbitrary bytes either decode or raise InvalidRequestError; nothing else escapes
    (decode_validated too: it is given only validated payloads, but fails the same way)."""
    for decode in (decode_request, decode_validated):
        try:
            decode(payload)
        except InvalidRequestError:
            pass


@pytest.mark.slow
@settings(derandomize=True, max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["op", "id", "key", "value", "ttl", "keys", "items", "consistency",
                                         "seq", "client_id", "x"]), _msgpack_values, max_size=6),
       st.sampled_from(sorted(OPS)))
def test_decode_raises_only_invalid_request_when_map_fields_random(
    fields: dict[str, object], op: str
) -> None:
    """Random field values under a real op decode or raise InvalidRequestError, never anything else."""
    msg = {"op": op, **fields}
    try:
        request = decode_request(pack(msg))
    except InvalidRequestError as exc:
        readable = isinstance(msg.get("id"), int) and not isinstance(msg.get("id"), bool)
        assert (msg.get("id") if readable else None) == exc.request_id
    else:
        assert (msg["op"], msg["id"]) == (request.op, request.id)
        assert request == decode_validated(pack(msg))
